"""The search domain's typed values: what callers hand SearchService, and what it hands back.

Storage value types (Hit, IndexConfig, the validated MetadataFilter, ...) are the storage engine's own; they are
named here because they are part of this door, so callers never reach into `indexes/`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, overload

import msgspec
import numpy as np
from msgspec import Meta, Struct

from indexes.config import FieldType, HnswConfig, HnswInt, IndexConfig, Kind, LexicalTokenizer, Metric, Quantization
from indexes.filters import MetadataFilter, parse_filter
from indexes.values import (
    ChunkMatch,
    Fusion,
    FusionMethod,
    GroupBy,
    Hit,
    IndexStats,
    Mode,
    Normalization,
    SearchRequest,
    StoredDocument,
)
from service.chunking import DEFAULT_OVERLAP_TOKENS
from service.errors import translates_store_errors
from service.limits import MAX_DOCUMENT_ID_LENGTH

__all__ = [
    "ChunkMatch", "Chunking", "DocumentPage", "FieldType", "Fusion", "FusionMethod", "GroupBy", "HnswConfig", "Hit",
    "IndexChange", "IndexInfo", "IndexSpec", "IngestResult", "Kind", "LexicalTokenizer", "MetadataFilter", "Metric",
    "Mode", "NewDocument", "Normalization", "Quantization", "QueryOutcome", "SearchQuery", "SearchRequest",
    "StoredDocument", "metadata_filter",
]  # fmt: skip

PositiveInt = Annotated[int, Meta(ge=1)]


class IndexSpec(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What a new index is: its name, the model that embeds its documents, and how vectors are stored."""

    name: str
    model: str
    dimensions: PositiveInt | None = None  # what the model is asked for; default: its native width
    metric: Metric = "cosine"
    kind: Kind = "flat"
    hnsw: HnswConfig | None = None  # kind hnsw only; defaults m 32, ef_construction 200, ef_search 128
    # How FAISS holds the vectors in memory: none (float32), sq8 (1 byte a dimension), binary (1 bit; cosine only).
    # Quantized candidates are rescored from the float32 vectors kept in SQLite.
    quantization: Quantization = "none"
    query_model: str | None = None  # a fine-tuned model over `model` that embeds queries
    # Text put before each query / document chunk when it is embedded (not for lexical search). Default: the prompts
    # the model's sentence-transformers config declares (none for most); "" for none. Fixed at creation.
    query_prompt: Annotated[str, Meta(max_length=1000)] | None = None
    document_prompt: Annotated[str, Meta(max_length=1000)] | None = None
    # FTS5 tokenizer for lexical search: porter (English stemming, default), unicode61 (no stemming), trigram.
    lexical_tokenizer: LexicalTokenizer = "porter"
    # Metadata fields to index for filters, {"year": "integer", "tag": "keyword"}; dotted paths reach nested ones.
    metadata_indexes: dict[str, FieldType] = msgspec.field(default_factory=dict)


class IndexChange(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What may change after creation."""

    ef_search: HnswInt | None = None
    # A fine-tuned model whose base is the index's model; null goes back to the index's model.
    query_model: str | None | msgspec.UnsetType = msgspec.UNSET
    # More metadata fields to index (built from the stored documents); declared ones cannot be removed.
    metadata_indexes: dict[str, FieldType] | None = None


class IndexProjection(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A new index made from an existing one's stored full-width vectors, re-projected by a fitted projection over
    its model: nothing is embedded. The source index is left as it is (delete it to free its space)."""

    name: str  # the new index
    model: str  # a projection (fine-tuning method "projection") over the source index's model
    dimensions: PositiveInt | None = None  # up to the projection's width (a prefix); default: all of it
    kind: Kind | None = None  # default: the source's
    hnsw: HnswConfig | None = None
    quantization: Quantization | None = None


class IndexInfo(Struct, frozen=True):
    config: IndexConfig
    stats: IndexStats


class NewDocument(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A document to add or replace: a text to embed, or a vector of the index's width (then text is stored)."""

    id: Annotated[str, Meta(min_length=1, max_length=MAX_DOCUMENT_ID_LENGTH)] | None = None  # default: made up
    text: str | None = None
    metadata: dict[str, Any] | None = None
    vector: list[float] | None = None


class Chunking(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`split` (default): texts over the model's window become overlapping chunks of `max_tokens` tokens
    (default: the window) overlapping by `overlap_tokens` (default 32). `truncate`: only the first window is
    embedded (the whole text is still stored)."""

    strategy: Literal["split", "truncate"] = "split"
    max_tokens: PositiveInt | None = None
    overlap_tokens: Annotated[int, Meta(ge=0)] = DEFAULT_OVERLAP_TOKENS


class IngestResult(Struct, frozen=True, kw_only=True):
    ids: list[str]
    created: int
    updated: int
    unchanged: int
    prompt_tokens: int


class DocumentPage(Struct, frozen=True):
    documents: list[StoredDocument]
    has_more: bool


class SearchQuery(Struct, frozen=True, kw_only=True):
    """One search, or a batch of texts searched alike: exactly one of `texts` and `vector`, and how each is searched
    (the engine's SearchRequest as it is; its filter validated by metadata_filter(), before anything is embedded)."""

    texts: list[str] | None = None
    vector: list[float] | None = None  # dense mode only
    request: SearchRequest = SearchRequest()


class QueryOutcome(Struct, frozen=True):
    hits: list[list[Hit]]  # one list per query text (one for a vector)
    model: str
    prompt_tokens: int
    vectors: np.ndarray | None = None  # the query texts' embeddings, one row each (None when lexical)


@overload
def metadata_filter(spec: dict[str, Any]) -> MetadataFilter: ...
@overload
def metadata_filter(spec: None) -> None: ...
@translates_store_errors
def metadata_filter(spec: dict[str, Any] | None) -> MetadataFilter | None:
    """A filter as given by a caller, validated into its typed form (InvalidFilter naming the bad part)."""
    return None if spec is None else parse_filter(spec)
