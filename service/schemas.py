"""msgspec Structs for every request and response body, in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from service.embeddings.base import InputType
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
    IndexProjection,
    IndexSpec,
    Kind,
    LexicalTokenizer,
    Metric,
    Mode,
    NewDocument,
    Normalization,
    Quantization,
)
from service.snapshots.records import Snapshot
from service.vector_stores.records import TextContent, VectorStore, VectorStoreFile

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
    user: str | None = None  # accepted and ignored, as a label for the caller's own records
    # vsearch extension (as Cohere, Voyage and Nomic take it): the model's declared prompt for that kind of input is
    # put before each input. A 400 for a model that declares none.
    input_type: InputType | None = None


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
Filter = Annotated[
    dict[str, Any],
    Meta(
        description="Metadata filter, Mongo/Chroma style: {field: value} for equality; $eq $ne $gt $gte $lt $lte "
        "$in $nin $exists per field; $and $or $not to combine; dotted paths reach nested objects. Values compare "
        'by JSON type (1 is not true nor "1").',
        examples=[{"year": {"$gte": 2020}}, {"$or": [{"tag": {"$in": ["faq", "guide"]}}, {"author.name": "Ada"}]}],
    ),
]

# Requests to create or change an index, and documents to add, are the search domain's own values:
CreateIndexRequest = IndexSpec
UpdateIndexRequest = IndexChange
ReprojectIndexRequest = IndexProjection


class IndexObject(Struct, kw_only=True):
    id: str
    object: Literal["index"] = "index"
    name: str
    model: str
    query_model: str | None
    query_prompt: str | None  # put before each query when it is embedded
    document_prompt: str | None  # put before each document chunk when it is embedded
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


class FusionWeights(Struct, forbid_unknown_fields=True, kw_only=True):
    dense: Annotated[float, Meta(ge=0)] = 1.0
    lexical: Annotated[float, Meta(ge=0)] = 1.0


class QueryRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """Exactly one of `query` (a text), `vector`, or `queries` (a batch of texts)."""

    query: Annotated[str, Meta(description="A text to search for.", examples=["how do tides work"])] | None = None
    vector: (
        Annotated[list[float], Meta(description="A query vector of the index's width (dense mode only).")] | None
    ) = None
    queries: (
        Annotated[list[str], Meta(min_length=1, max_length=MAX_BATCH_QUERIES, description="Texts searched alike.")]
        | None
    ) = None
    top_k: Annotated[int, Meta(ge=1, description="Hits (documents with group_by=document); at most max_top_k.")] = 10
    filter: Filter | None = None
    include: Annotated[
        list[Include],
        Meta(description="What each hit carries besides id, score and ranks: text, metadata, vector (the stored "
             "one), chunks (group_by=document: the document's other matching chunks). [] is the fastest: hits are "
             "named from memory, without reading the documents.",
             examples=[["text", "metadata"], ["metadata", "chunks"]]),
    ] = msgspec.field(default_factory=lambda: ["text", "metadata"])  # fmt: skip
    min_score: Annotated[float, Meta(description="Drop hits scoring below this.")] | None = None
    mode: Annotated[
        Mode,
        Meta(description="dense: nearest vectors; lexical: BM25 over the chunk texts; hybrid: both lists fused."),
    ] = "dense"
    fusion: Annotated[
        FusionMethod,
        Meta(description="hybrid: convex (alpha * dense + (1 - alpha) * lexical over normalised scores; default) "
             "or rrf (reciprocal ranks)."),
    ] = Fusion().method  # fmt: skip
    alpha: Annotated[float, Meta(ge=0, le=1, description="convex fusion: the dense list's weight.")] = Fusion().alpha
    normalization: Annotated[
        Normalization, Meta(description="convex fusion: min-max to [0, 1] (default) or z-scores, per list.")
    ] = Fusion().normalization
    rrf_k: Annotated[int, Meta(ge=1, le=10_000, description="rrf: the k in 1 / (k + rank).")] = 60
    weights: FusionWeights | None = None  # rrf: each list's weight
    group_by: Annotated[
        GroupBy, Meta(description="document: one hit per document, its best chunk; top_k counts documents.")
    ] = "chunk"
    diversity: (
        Annotated[float, Meta(ge=0, le=1, description="MMR's lambda: 1 keeps relevance order, lower favours "
                                                      "novelty (0.5 drops near-duplicates).")]
        | None
    ) = None  # fmt: skip


class QueryHit(Struct, kw_only=True, omit_defaults=True):
    id: str
    # Higher is better. dense: cosine or inner product, or minus the Euclidean distance for l2; lexical: BM25
    # (PostgreSQL: ts_rank); hybrid: the fused score (convex: alpha * dense + (1 - alpha) * lexical over each list's
    # normalised scores, in [0, 1]; rrf: the sum of weight / (k + rank)).
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
    # One list per query, and a batch has at least one: minItems tells it apart, in the response's oneOf, from a
    # single query's QueryResult with no hits (`"data": []` would match both).
    data: Annotated[list[QueryResultList], Meta(min_length=1)]
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


# --- vector stores ------------------------------------------------------------------------------------------------


class SnapshotList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Snapshot]
    first_id: str | None
    last_id: str | None
    has_more: bool = False  # every snapshot of the index, in one page


class VectorStoreList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[VectorStore]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VectorStoreFileList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[VectorStoreFile]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileContentPage(Struct, kw_only=True):
    """The parsed text of a vector store's file, a part per section (a PDF's pages), all on one page."""

    object: Literal["vector_store.file_content.page"] = "vector_store.file_content.page"
    data: list[TextContent]
    has_more: bool = False
    next_page: str | None = None
