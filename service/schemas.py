"""msgspec Structs for every request and response body, in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

PositiveInt = Annotated[int, Meta(ge=1)]


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

Metric = Literal["cosine", "ip", "l2"]
IndexKind = Literal["flat", "hnsw"]
HnswInt = Annotated[int, Meta(ge=2, le=4096)]
Metadata = dict[str, Any]
Filter = dict[str, Any]


class HnswParams(Struct, forbid_unknown_fields=True, kw_only=True):
    m: HnswInt = 32
    ef_construction: HnswInt = 200
    ef_search: HnswInt = 128


LexicalTokenizer = Literal["porter", "unicode61", "trigram"]


class CreateIndexRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    model: str
    dimensions: PositiveInt | None = None
    metric: Metric = "cosine"
    kind: IndexKind = "flat"
    hnsw: HnswParams | None = None
    query_model: str | None = None
    # FTS5 tokenizer for lexical search: porter (English stemming, default), unicode61 (no stemming), trigram.
    lexical_tokenizer: LexicalTokenizer = "porter"


class UpdateIndexRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    ef_search: HnswInt | None = None
    # A fine-tuned model whose base is the index's model; null goes back to the index's model.
    query_model: str | None | msgspec.UnsetType = msgspec.UNSET


class IndexObject(Struct, kw_only=True):
    id: str
    object: Literal["index"] = "index"
    name: str
    model: str
    query_model: str | None
    dimensions: int
    metric: Metric
    kind: IndexKind
    hnsw: HnswParams | None
    lexical_tokenizer: LexicalTokenizer
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


class DocumentIn(Struct, forbid_unknown_fields=True, kw_only=True):
    id: Annotated[str, Meta(min_length=1, max_length=512)] | None = None
    text: str | None = None
    metadata: Metadata | None = None
    vector: list[float] | None = None


class Chunking(Struct, forbid_unknown_fields=True, kw_only=True):
    """`split` (default): texts over the model's window become overlapping chunks of `max_tokens` tokens
    (default: the window) overlapping by `overlap_tokens` (default 32). `truncate`: only the first window is
    embedded (the whole text is still stored)."""

    strategy: Literal["split", "truncate"] = "split"
    max_tokens: PositiveInt | None = None
    overlap_tokens: Annotated[int, Meta(ge=0)] = 32


class AddDocumentsRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    documents: list[DocumentIn]
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


Include = Literal["text", "metadata", "vector"]


class FusionWeights(Struct, forbid_unknown_fields=True, kw_only=True):
    dense: Annotated[float, Meta(ge=0)] = 1.0
    lexical: Annotated[float, Meta(ge=0)] = 1.0


class QueryRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """Exactly one of `query` (a text), `vector`, or `queries` (a batch of texts)."""

    query: str | None = None
    vector: list[float] | None = None
    queries: Annotated[list[str], Meta(min_length=1, max_length=100)] | None = None
    top_k: PositiveInt = 10  # at most max_top_k (1000 by default)
    filter: Filter | None = None
    include: list[Include] = msgspec.field(default_factory=lambda: ["text", "metadata"])
    min_score: float | None = None
    # dense: nearest vectors; lexical: BM25 over the texts; hybrid: reciprocal-rank fusion of the two lists.
    mode: Literal["dense", "lexical", "hybrid"] = "dense"
    rrf_k: Annotated[int, Meta(ge=1, le=10_000)] = 60
    weights: FusionWeights | None = None


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

Auto = Literal["auto"]
JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class Hyperparameters(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    batch_size: Auto | Annotated[int, Meta(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Meta(gt=0, le=100)] = "auto"
    n_epochs: Auto | Annotated[int, Meta(ge=1, le=200)] = "auto"
    beta: Auto | Annotated[float, Meta(gt=0, le=2)] | None = None  # dpo only; accepted, not used by the trainer


class SupervisedMethod(Struct, forbid_unknown_fields=True, kw_only=True):
    hyperparameters: Hyperparameters | None = None


class Method(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    type: Literal["supervised", "dpo"]
    supervised: SupervisedMethod | None = None
    dpo: SupervisedMethod | None = None


class WandbIntegration(Struct, forbid_unknown_fields=True, kw_only=True):
    project: str
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = None


class Integration(Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["wandb"]
    wandb: WandbIntegration


class HardNegatives(Struct, forbid_unknown_fields=True, kw_only=True):
    """vsearch extension: mine hard negatives for each training query from an index embedded with the job's
    model (its nearest documents that are not the query's positive)."""

    index: str
    count: Annotated[int, Meta(ge=1, le=32)] = 4


class CreateJobRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2147483647)] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated by OpenAI in favour of method
    integrations: list[Integration] | None = None
    metadata: Annotated[dict[str, Annotated[str, Meta(max_length=512)]], Meta(max_length=16)] | None = None
    hard_negatives: HardNegatives | None = None


class JobError(Struct, kw_only=True):
    code: str
    message: str
    param: str | None


class FineTuningJob(Struct, kw_only=True):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str] = msgspec.field(default_factory=list)
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    integrations: list[Integration] | None = None
    seed: int
    estimated_finish: int | None = None
    method: Method
    metadata: dict[str, str] | None = None
    suffix: str | None = None
    hard_negatives: HardNegatives | None = None


class FineTuningJobList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class JobEvent(Struct, kw_only=True):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class JobEventList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[JobEvent]
    has_more: bool


class CheckpointMetrics(Struct, kw_only=True, omit_defaults=True):
    step: float
    train_loss: float
    train_mean_token_accuracy: float
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class JobCheckpoint(Struct, kw_only=True):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


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
