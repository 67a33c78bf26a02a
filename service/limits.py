"""Every request limit, in one place. Limits holds the ones an operator may change (settings, validated with
these bounds at load); the constants are fixed by the API's shape and used by its schemas."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

MAX_DOCUMENT_ID_LENGTH = 512
MAX_PAGE_SIZE = 1000  # `limit` of list routes (indexes' documents, jobs, events, checkpoints)
MAX_FILES_PAGE_SIZE = 10_000  # `limit` of GET /v1/files, as OpenAI allows
MAX_BATCH_QUERIES = 100  # `queries` in one query request
MAX_UPLOAD_PARTS = 16  # multipart parts in one upload
MAX_FORM_FIELD_BYTES = 4096  # each multipart part other than the file (purpose)
MAX_RESTORE_BODY_BYTES = 4096  # a restore by snapshot id (JSON); from a file: max_snapshot_upload_bytes


class Limits(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    max_request_bytes: Annotated[int, Meta(ge=1024)] = 16 * 1024 * 1024  # JSON bodies; uploads: max_upload_bytes
    max_upload_bytes: Annotated[int, Meta(ge=1)] = 512 * 1024 * 1024
    # A snapshot file sent to POST /v1/indexes/{name}/snapshots/restore (1M 384-d vectors make about 1.5 GB)
    max_snapshot_upload_bytes: Annotated[int, Meta(ge=1)] = 64 * 1024**3
    max_inputs_per_request: Annotated[int, Meta(ge=1)] = 2048  # /v1/embeddings inputs
    max_documents_per_request: Annotated[int, Meta(ge=1)] = 1000
    max_top_k: Annotated[int, Meta(ge=1)] = 1000
    max_requests_in_flight: Annotated[int, Meta(ge=1)] = 256  # beyond it: 429 with Retry-After, never a queue
