"""msgspec Structs for every request and response body, in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from service.finetune.records import FineTuningJob, JobCheckpoint, JobEvent
from service.limits import MAX_BATCH_QUERIES
from service.search.values import (
    Chunking,
    ChunkMatch,
    FieldType,
    Fusion,
    FusionMethod,
    GroupBy,
    HnswConfig,
    IndexChange,
    IndexSpec,
    Kind,
    LexicalTokenizer,
    Metric,
    Mode,
    NewDocument,
    Normalization,
    Quantization,
)

PositiveInt = Annotated[int, Meta(ge=1)]


# --- errors -------------------------------------------------------------------------------------------------------


class ErrorBody(Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(Struct, kw_only=True):
    """OpenAI's error object: every 4xx and 5xx has this body."""

    error: ErrorBody


# --- embeddings ---------------------------------------------------------------------------------------------------


class EmbeddingRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    # A string, an array of strings, an array of token ids, or an array of token-id arrays. msgspec cannot
    # express a union of array types, so the element types are checked after decoding.
    input: str | list[str | int | list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None
    user: str | None = None


class Embedding(Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # a base64 string of little-endian float32 when encoding_format is base64


class EmbeddingUsage(Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# --- models -------------------------------------------------------------------------------------------------------


class Model(Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]


# --- indexes ------------------------------------------------------------------------------------------------------

Metadata = dict[str, Any]
Filter = dict[str, Any]

# Requests to create or change an index, and documents to add, are the search domain's own values:
CreateIndexRequest = IndexSpec
UpdateIndexRequest = IndexChange


class IndexObject(Struct, kw_only=True):
    id: str
    object: Literal["index"] = "index"
    name: str
    model: str
    query_model: str | None
    dimensions: int
    metric: Metric
    kind: Kind
    hnsw: HnswConfig | None
    quantization: Quantization
    lexical_tokenizer: LexicalTokenizer
    metadata_indexes: dict[str, FieldType]  # fields with an index of their own, for filters
    created_at: int
    document_count: int
    vector_count: int  # chunks stored (a document split into chunks has one vector each)
    faiss_vectors: int  # vectors live in the FAISS index: equals vector_count (a check on recovery)
    bytes: int


class IndexList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[IndexObject]
    has_more: bool = False


class DeletedObject(Struct, kw_only=True):
    id: str
    object: str
    deleted: bool = True


class AddDocumentsRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    documents: list[NewDocument]
    chunking: Chunking | None = None


class AddDocumentsResponse(Struct, kw_only=True):
    object: Literal["index.documents.result"] = "index.documents.result"
    ids: list[str]
    created: int
    updated: int
    unchanged: int  # same text, metadata and vector as stored: nothing was embedded or written
    usage: EmbeddingUsage


class DocumentObject(Struct, kw_only=True):
    id: str
    object: Literal["document"] = "document"
    text: str
    metadata: Metadata
    chunks: int
    created_at: int
    updated_at: int


class DocumentList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[DocumentObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeleteDocumentsRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    ids: list[str] | None = None
    filter: Filter | None = None


class DeleteDocumentsResponse(Struct, kw_only=True):
    object: Literal["index.documents.deleted"] = "index.documents.deleted"
    ids: list[str]
    deleted: int


Include = Literal["text", "metadata", "vector", "chunks"]  # chunks: a grouped hit's other matching chunks
UnitInterval = Annotated[float, Meta(ge=0, le=1)]


class FusionWeights(Struct, forbid_unknown_fields=True, kw_only=True):
    dense: Annotated[float, Meta(ge=0)] = 1.0
    lexical: Annotated[float, Meta(ge=0)] = 1.0


class QueryRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """Exactly one of `query` (a text), `vector`, or `queries` (a batch of texts)."""

    query: str | None = None
    vector: list[float] | None = None
    queries: Annotated[list[str], Meta(min_length=1, max_length=MAX_BATCH_QUERIES)] | None = None
    top_k: PositiveInt = 10  # at most max_top_k (1000 by default)
    filter: Filter | None = None
    include: list[Include] = msgspec.field(default_factory=lambda: ["text", "metadata"])
    min_score: float | None = None
    # dense: nearest vectors; lexical: BM25 over the texts; hybrid: both lists fused.
    mode: Mode = "dense"
    # hybrid: convex (alpha * dense + (1 - alpha) * lexical over normalised scores) or rrf (reciprocal ranks).
    fusion: FusionMethod = Fusion().method
    alpha: UnitInterval = Fusion().alpha  # convex: the dense list's weight
    normalization: Normalization = Fusion().normalization  # convex: how each list's scores are put on one scale
    rrf_k: Annotated[int, Meta(ge=1, le=10_000)] = 60  # rrf
    weights: FusionWeights | None = None  # rrf: each list's weight
    group_by: GroupBy = "chunk"  # document: one hit per document, its best chunk; top_k counts documents
    diversity: UnitInterval | None = None  # MMR's lambda: 1 is plain relevance order, lower favours novelty


class QueryHit(Struct, kw_only=True, omit_defaults=True):
    id: str
    # Higher is better. dense: cosine or inner product, or minus the Euclidean distance for l2; lexical: BM25;
    # hybrid: the reciprocal-rank-fusion score.
    score: float
    ranks: dict[str, int] | None = None  # the hit's 1-based rank in each list it came from: dense, lexical
    text: str | None = None
    metadata: Metadata | None = None
    vector: list[float] | None = None
    parent_id: str | None = None  # set on chunks of a split document
    chunks: list[ChunkMatch] | None = None  # group_by document and include "chunks": its other matching chunks


class QueryResult(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[QueryHit]
    model: str
    usage: EmbeddingUsage


class QueryResultList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[QueryHit]


class BatchQueryResult(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[QueryResultList]
    model: str
    usage: EmbeddingUsage


# --- files --------------------------------------------------------------------------------------------------------


class FileObject(Struct, kw_only=True):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    status_details: str | None = None
    expires_at: int | None = None


class FileList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


# --- fine-tuning --------------------------------------------------------------------------------------------------
# A job's request, record, events and checkpoints are the domain's own types (service/finetune/records.py), in
# OpenAI's shapes; the lists below wrap them.


class FineTuningJobList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class JobEventList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[JobEvent]
    has_more: bool


class JobCheckpointList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[JobCheckpoint]
    first_id: str | None
    last_id: str | None
    has_more: bool


class CacheStatsObject(Struct, kw_only=True):
    object: Literal["cache.stats"] = "cache.stats"
    hits: int  # inputs served from the cache since the start
    misses: int  # inputs that had to be embedded
    entries: int
    max_entries: int
