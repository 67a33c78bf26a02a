"""The storage engine's value types: what goes into an index, what comes out, and how a search is asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import msgspec
import numpy as np

from indexes.config import IndexConfig
from indexes.errors import InvalidDocument
from indexes.filters import MetadataFilter

Mode = Literal["dense", "lexical", "hybrid"]  # nearest vectors, BM25 over the texts, or both fused
FusionMethod = Literal["rrf", "convex"]  # reciprocal ranks, or a weighted sum of normalised scores
Normalization = Literal["minmax", "zscore"]  # how convex fusion puts each list's scores on one scale
GroupBy = Literal["chunk", "document"]  # one hit per chunk, or per document (its best chunk)
# How a search found its dense list, as /metrics counts it per engine: no filter; the filter's few matches scored
# exactly; FAISS with an ID selector over the listed matches (embedded); FAISS over-fetch, candidates tested
# (embedded); pgvector's HNSW walked until enough pass (PostgreSQL). "lexical": a BM25-only search, no dense list.
SearchPath = Literal["unfiltered", "exact", "selector", "overfetch", "iterative", "lexical"]
PathObserver = Callable[[SearchPath], None]


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
    # When the document was first stored and last changed (epoch seconds): given by a restore, which keeps a
    # snapshot's times; None for a new write (the store's clock).
    created_at: float | None = None
    updated_at: float | None = None


def check_dimensions(documents: Sequence[DocumentRecord], dimensions: int) -> None:
    """InvalidDocument unless every chunk's vector has the index's width."""
    for doc in documents:
        for chunk in doc.chunks:
            if chunk.vector.shape != (dimensions,):
                raise InvalidDocument(
                    f"Document '{doc.doc_id}' has a vector of {chunk.vector.size} dimensions; the index has "
                    f"{dimensions}.",
                    "documents",
                )


class IndexExport(msgspec.Struct, frozen=True):
    """An index's content as of one instant (writes go on meanwhile): its config and counts, then every document
    with its chunks' spans and vectors, in id order (bytewise), a batch at a time."""

    config: IndexConfig
    documents: int
    vectors: int
    batches: Iterator[list[DocumentRecord]]


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


class ChunkMatch(msgspec.Struct, frozen=True):
    """Another matching chunk of a grouped hit's document."""

    id: str
    score: float
    start: int
    end: int


class Hit(msgspec.Struct, frozen=True):
    id: str  # the document id, or "{document id}#{chunk}" for a chunk of a split document
    score: float
    text: str
    metadata: dict[str, Any]
    parent_id: str | None
    vector: np.ndarray | None  # when asked for (SearchRequest.with_vectors)
    ranks: dict[str, int]  # rank of the hit in each list it came from ("dense", "lexical")
    chunks: list[ChunkMatch] = []  # group_by "document": the document's other matching chunks, best first
    start: int = 0  # the chunk's character span in its document's text (read with the documents, else 0)
    end: int = 0


class IndexStats(msgspec.Struct, frozen=True):
    document_count: int
    vector_count: int  # chunks in SQLite, the record
    faiss_vectors: int  # live vectors in FAISS, derived: equal to vector_count
    bytes: int


class Fusion(msgspec.Struct, frozen=True, kw_only=True):
    """How hybrid mode fuses the dense and lexical lists (each its best HYBRID_DEPTH candidates).

    rrf: sum of weight / (k + rank) over the lists. convex: alpha * dense + (1 - alpha) * lexical, each list's
    scores normalised over its candidates (ranking.normalized)."""

    method: FusionMethod = "convex"  # chosen on SciFact's train queries (scripts/eval_beir.py; README)
    k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    alpha: float = 0.4  # chosen on SciFact's train queries (README): between 0.4 and 0.5 nDCG@10 is flat
    normalization: Normalization = "minmax"


class SearchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One search of one index; the query vector and text travel beside it."""

    mode: Mode = "dense"
    top_k: int = 10
    filter: MetadataFilter | None = None  # validated, so a bad filter fails before anything is embedded
    min_score: float | None = None
    fusion: Fusion = Fusion()
    with_vectors: bool = False  # read each hit's stored vector (otherwise the blobs are not touched)
    # Read each hit's text, metadata and chunk spans. False: they are left empty (text "", metadata {}, spans 0),
    # and a store may name the hits from memory without reading its documents (the SQLite store does).
    with_documents: bool = True
    group_by: GroupBy = "chunk"
    diversity: float | None = None  # MMR's lambda: 1 ranks by relevance alone, lower trades it for novelty


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length, as float32 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)).astype(np.float32)
