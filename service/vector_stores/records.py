"""Vector stores' records, in OpenAI's shapes (the `openai` package's types/vector_store*): the requests, the
store, its files and file batches. The record store keeps them as they are, and the API sends them as they are."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

StoreStatus = Literal["in_progress", "completed", "expired"]
FileStatus = Literal["in_progress", "completed", "cancelled", "failed"]
FileErrorCode = Literal["server_error", "unsupported_file", "invalid_file"]
AttributeValue = str | int | float | bool
Metadata = dict[str, str]  # OpenAI's: at most 16 keys of 64 characters, values of 512 (checked by check_metadata)
Attributes = dict[str, AttributeValue]  # the same limits, values also numbers and booleans

MIN_CHUNK_TOKENS, MAX_CHUNK_TOKENS = 100, 4096  # OpenAI's bounds on max_chunk_size_tokens
AUTO_CHUNK_TOKENS, AUTO_OVERLAP_TOKENS = 800, 400  # what `auto` means at OpenAI


class StaticChunkSizes(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    max_chunk_size_tokens: Annotated[int, Meta(ge=MIN_CHUNK_TOKENS, le=MAX_CHUNK_TOKENS)]
    chunk_overlap_tokens: Annotated[int, Meta(ge=0)]  # at most half of max_chunk_size_tokens


class AutoChunking(Struct, forbid_unknown_fields=True, frozen=True, tag="auto", tag_field="type"):
    pass


class StaticChunking(Struct, forbid_unknown_fields=True, frozen=True, tag="static", tag_field="type"):
    static: StaticChunkSizes


ChunkingStrategy = AutoChunking | StaticChunking


class ExpiresAfter(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    anchor: Literal["last_active_at"]
    days: Annotated[int, Meta(ge=1, le=365)]


class FileCounts(Struct, kw_only=True, frozen=True):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class VectorStore(Struct, kw_only=True, frozen=True):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    description: str | None = None
    usage_bytes: int = 0
    file_counts: FileCounts = FileCounts()
    status: StoreStatus = "completed"
    expires_after: ExpiresAfter | None = None
    expires_at: int | None = None
    last_active_at: int | None = None
    metadata: Metadata = {}
    model: str  # vsearch extension: the model that embeds the store's chunks (and its queries)


class LastError(Struct, kw_only=True, frozen=True):
    code: FileErrorCode
    message: str


class VectorStoreFile(Struct, kw_only=True, frozen=True):
    id: str  # the File's id (/v1/files)
    object: Literal["vector_store.file"] = "vector_store.file"
    created_at: int
    vector_store_id: str
    status: FileStatus = "in_progress"
    last_error: LastError | None = None
    usage_bytes: int = 0
    attributes: Attributes = {}
    # As it is applied here: `auto` and sizes past the model's window are resolved to what is used (README).
    chunking_strategy: StaticChunking
    batch_id: str | None = None  # vsearch extension: the batch that attached it, if any
    filename: str = ""  # vsearch extension: the File's name, as search results give it


class FileBatch(Struct, kw_only=True, frozen=True):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: FileStatus = "in_progress"
    file_counts: FileCounts = FileCounts()


class TextContent(Struct, kw_only=True, frozen=True):
    type: Literal["text"] = "text"
    text: str


class SearchResult(Struct, kw_only=True, frozen=True):
    file_id: str
    filename: str
    score: float  # the chunk's cosine similarity to the query, clipped to 0..1
    attributes: dict[str, Any]
    content: list[TextContent]  # the chunk
    metadata: dict[str, Any]  # vsearch extension: the chunk's page or heading, and its span in the file's text


class SearchPage(Struct, kw_only=True, frozen=True):
    object: str = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None


# --- requests -----------------------------------------------------------------------------------------------------


class NewVectorStore(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: str = ""
    description: str | None = None
    file_ids: list[str] = []
    chunking_strategy: ChunkingStrategy | None = None  # for file_ids; default auto
    expires_after: ExpiresAfter | None = None
    metadata: Metadata | None = None
    model: str | None = None  # vsearch extension; default: the `vector_store_model` setting


class VectorStoreChange(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: str | None = None
    expires_after: ExpiresAfter | None | msgspec.UnsetType = msgspec.UNSET  # null: never expires
    metadata: Metadata | None = None


class NewStoreFile(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class StoreFileChange(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    attributes: Attributes | None


class NewFileBatch(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`file_ids` with one `attributes` and `chunking_strategy` for all, or `files`, each with its own."""

    file_ids: list[str] | None = None
    files: list[NewStoreFile] | None = None
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class RankingOptions(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # auto (and OpenAI's dated name for it): hybrid, dense and BM25 fused; none: dense alone
    ranker: Literal["auto", "none", "default-2024-11-15"] = "auto"
    score_threshold: Annotated[float, Meta(ge=0, le=1)] = 0.0


class StoreSearch(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    query: str | list[str]
    max_num_results: Annotated[int, Meta(ge=1, le=50)] = 10
    # OpenAI's comparison ({key, type, value}) or compound ({type: and|or, filters}) filter: read by store_filter()
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions = RankingOptions()
    rewrite_query: bool = False  # accepted; the query is searched as written (there is no LLM here to rewrite it)
