"""A snapshot as the API shows it, stored beside its file as it is sent."""

from __future__ import annotations

from typing import Literal

import msgspec


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    object: Literal["index.snapshot"] = "index.snapshot"
    index: str
    created_at: int  # Unix seconds
    bytes: int  # the file's size
    document_count: int
    vector_count: int
    checksum: str  # "sha256:<hex>" of the whole file, as downloaded
    format_version: int
    scheduled: bool = False  # made by the schedule (snapshot_interval_h), and pruned by it (snapshot_keep)


class SnapshotSource(msgspec.Struct, frozen=True, kw_only=True):
    """What a restore reads: a snapshot of this server (by id, from any index), or a file uploaded for it."""

    snapshot_id: str | None = None
    index: str | None = None  # the index whose snapshot `snapshot_id` is (default: the index being restored)
