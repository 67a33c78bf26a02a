"""The storage engine's value types: what goes into an index, what comes out, and how a search is asked."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import numpy as np

from indexes.filters import MetadataFilter

Mode = Literal["dense", "lexical", "hybrid"]  # nearest vectors, BM25 over the texts, or both fused


class ChunkRecord(msgspec.Struct):
    start: int  # character offsets of the chunk in its document's text
    end: int
    vector: np.ndarray


class DocumentRecord(msgspec.Struct):
    doc_id: str
    text: str
    metadata: dict[str, Any]
    content_hash: str
    chunks: list[ChunkRecord]  # filled in once embedded


class UpsertResult(msgspec.Struct, frozen=True):
    created: list[str]
    updated: list[str]


class StoredDocument(msgspec.Struct, frozen=True):
    doc_id: str
    text: str
    metadata: dict[str, Any]
    chunk_count: int
    created_at: float
    updated_at: float


class Hit(msgspec.Struct, frozen=True):
    id: str  # the document id, or "{document id}#{chunk}" for a chunk of a split document
    score: float
    text: str
    metadata: dict[str, Any]
    parent_id: str | None
    vector: np.ndarray | None  # when asked for (SearchRequest.with_vectors)
    ranks: dict[str, int]  # rank of the hit in each list it came from ("dense", "lexical")


class IndexStats(msgspec.Struct, frozen=True):
    document_count: int
    vector_count: int  # chunks in SQLite, the record
    faiss_vectors: int  # live vectors in FAISS, derived: equal to vector_count
    bytes: int


class Fusion(msgspec.Struct, frozen=True, kw_only=True):
    """Weighted reciprocal-rank fusion of the dense and lexical lists (hybrid mode)."""

    k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0


class SearchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One search of one index; the query vector and text travel beside it."""

    mode: Mode = "dense"
    top_k: int = 10
    filter: MetadataFilter | None = None  # compiled, so a bad filter fails before anything is embedded
    min_score: float | None = None
    fusion: Fusion = Fusion()
    with_vectors: bool = False  # read each hit's stored vector (otherwise the blobs are not touched)
