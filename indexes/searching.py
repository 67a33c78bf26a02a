"""The steps of a search that every store shares: rank, fuse, cut at min_score, group by document, look deeper when
grouping used up the candidates, diversify (MMR), and build the hits. A store supplies what needs its storage
(the RankingSource), inside one consistent snapshot of its own (a read lock, a database transaction)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from indexes.ranking import RankedList, fuse, maximal_marginal_relevance, ranks_by_id
from indexes.values import ChunkMatch, Hit, Mode, SearchRequest

HYBRID_DEPTH = 100  # hybrid fuses the best this-many (or top_k, if more) of each list
CANDIDATES_PER_RESULT = 4  # grouping by document and diversity choose among this many candidates per result
MAX_CANDIDATES = 16_000  # how deep grouping looks for top_k distinct documents
EMPTY: RankedList = (np.empty(0, np.float32), np.empty(0, np.int64))

Others = dict[int, list[tuple[int, float]]]  # a grouped hit's chunk id -> its document's other chunks and scores


class ChunkRow(NamedTuple):
    """A chunk as a hit is made of it: where it sits in its document, and the document."""

    doc_id: str
    chunk_index: int
    start: int
    end: int
    vector: np.ndarray | None  # only when asked for
    text: str  # the document's
    metadata: dict[str, Any]
    chunk_count: int


class RankingSource(Protocol):
    """What a store gives the shared search steps, all from one snapshot."""

    def ranked_lists(
        self, mode: Mode, depth: int, vector: np.ndarray | None, text: str | None
    ) -> dict[str, RankedList]:
        """The best `depth` chunks passing the search's filter, per list ("dense", "lexical") the mode needs."""
        ...

    def documents_of(self, ids: Sequence[int]) -> dict[int, str]:
        """The document id of each chunk id."""
        ...

    def stored_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The float32 vectors of chunks `ids`, in that order."""
        ...

    def hits(
        self,
        scores: np.ndarray,
        ids: np.ndarray,
        ranks: dict[int, dict[str, int]],
        others: Others,
        request: SearchRequest,
    ) -> list[Hit]:
        """The hits, with what `request` asks each to carry (with_vectors, with_documents)."""
        ...


def lists_for(
    mode: Mode,
    depth: int,
    vector: np.ndarray | None,
    text: str | None,
    dense: Callable[[np.ndarray, int], RankedList],
    lexical: Callable[[str, int], RankedList],
) -> dict[str, RankedList]:
    """The ranked lists `mode` needs, each `depth` deep, from an engine's own dense and lexical searches (a
    RankingSource's ranked_lists, for both engines)."""
    lists: dict[str, RankedList] = {}
    if mode in ("dense", "hybrid"):
        assert vector is not None  # ranked_search() refuses a dense search without one
        lists["dense"] = dense(vector, depth)
    if mode in ("lexical", "hybrid"):
        lists["lexical"] = lexical(text or "", depth)
    return lists


def search_depth(request: SearchRequest) -> tuple[int, int]:
    """(results wanted before grouping and diversity choose top_k of them, depth of each ranked list)."""
    choosing = request.group_by == "document" or request.diversity is not None
    wanted = request.top_k * (CANDIDATES_PER_RESULT if choosing else 1)
    return wanted, wanted if request.mode != "hybrid" else max(wanted, HYBRID_DEPTH)


def ranked_search(
    source: RankingSource, request: SearchRequest, vector: np.ndarray | None, text: str | None
) -> list[Hit]:
    """The `top_k` best chunks (or documents, grouped), best first. dense ranks by `vector` ([1, d]), lexical by
    `text`, hybrid fuses both lists; diversity reorders by MMR."""
    if request.mode in ("dense", "hybrid") and vector is None:
        raise ValueError(f"{request.mode} search needs a query vector")
    wanted, depth = search_depth(request)
    while True:
        lists = source.ranked_lists(request.mode, depth, vector, text)
        ranks = ranks_by_id(lists)
        scores, ids = fuse(lists, request.fusion) if request.mode == "hybrid" else lists[request.mode]
        if request.min_score is not None:
            keep = scores >= request.min_score
            scores, ids = scores[keep], ids[keep]
        others: Others = {}
        if request.group_by == "document":
            scores, ids, others = grouped(source.documents_of(ids.tolist()), scores, ids)
        exhausted = all(len(found) < depth for _, found in lists.values())
        if len(ids) >= wanted or exhausted or depth >= MAX_CANDIDATES:
            break
        depth *= 4  # documents with many matching chunks used up the candidates: look deeper
    if request.diversity is not None:
        order = maximal_marginal_relevance(
            scores[:wanted], source.stored_vectors(ids[:wanted]), request.diversity, request.top_k
        )
        scores, ids = scores[order], ids[order]
    return source.hits(scores[: request.top_k], ids[: request.top_k], ranks, others, request)


def grouped(document_of: dict[int, str], scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, Others]:
    """One entry per document, its best chunk, in order; and each best chunk's other matching chunks."""
    head: dict[str, int] = {}
    others: Others = {}
    keep = []
    for position, (score, chunk_id) in enumerate(zip(scores.tolist(), ids.tolist(), strict=True)):
        doc_id = document_of.get(chunk_id)
        if doc_id is None:
            continue
        if doc_id not in head:
            head[doc_id] = chunk_id
            others[chunk_id] = []
            keep.append(position)
        else:
            others[head[doc_id]].append((chunk_id, score))
    return scores[keep], ids[keep], others


def build_hits(
    scores: np.ndarray, ids: np.ndarray, rows: dict[int, ChunkRow], ranks: dict[int, dict[str, int]], others: Others
) -> list[Hit]:
    """The hits of ranked chunk ids, from their rows (a chunk without a row is left out: never invent a result). A
    chunk of a split document is "{document id}#{chunk}", its text the chunk's span."""
    hits = []
    for score, chunk_id in zip(scores.tolist(), ids.tolist(), strict=True):
        row = rows.get(chunk_id)
        if row is None:
            continue
        split = row.chunk_count > 1
        matches = [
            ChunkMatch(f"{row.doc_id}#{rows[i].chunk_index}", other, rows[i].start, rows[i].end)
            for i, other in others.get(chunk_id, [])
            if i in rows
        ]
        hits.append(
            Hit(
                id=f"{row.doc_id}#{row.chunk_index}" if split else row.doc_id,
                score=score,
                text=row.text[row.start : row.end] if split else row.text,
                metadata=row.metadata,
                parent_id=row.doc_id if split else None,
                vector=row.vector,
                ranks=ranks.get(chunk_id, {}),
                chunks=matches,
                start=row.start,
                end=row.end,
            )
        )
    return hits


def wanted_rows(ids: np.ndarray, others: Others) -> list[int]:
    """The chunk ids whose rows build_hits() reads: the hits' and their documents' other matching chunks'."""
    return ids.tolist() + [i for head in ids.tolist() for i, _ in others.get(head, [])]
