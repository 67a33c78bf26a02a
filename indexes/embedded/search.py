"""Search on the embedded engine: StoreSnapshot is the index under its read lock as the shared search steps
(indexes/searching.py) see it, a RankingSource. Dense lists come from FAISS (quantized candidates rescored from
SQLite's float32 vectors), or, with a filter, by the path the planner picks; lexical lists from FTS5's BM25; hits
are named from the ChunkDirectory when nothing but ids and scores is asked for, else read from SQLite."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from indexes.embedded.filters import SqlFilter
from indexes.embedded.planner import FilterPlanner
from indexes.embedded.state import OpenIndex
from indexes.embedded.vectors import RESCORE_FACTOR
from indexes.filters import MetadataFilter
from indexes.ranking import RankedList
from indexes.searching import EMPTY, ChunkRow, Others, build_hits, lists_for, wanted_rows
from indexes.values import Hit, Mode, SearchPath, SearchRequest


class PrefetchedList(msgspec.Struct, frozen=True):
    """A lexical list computed ahead of its search, and what it was computed for."""

    version: int  # the index's write count then
    text: str
    depth: int
    filter: MetadataFilter | None
    ranked: RankedList

    def valid_for(self, version: int, text: str | None, where: MetadataFilter | None) -> bool:
        return (self.version, self.text, self.filter) == (version, text, where)


class StoreSnapshot:
    """One search, under the index's read lock (the caller holds it for as long as this is used)."""

    def __init__(
        self,
        index: OpenIndex,
        planner: FilterPlanner,
        where: SqlFilter | None,
        lexical: tuple[int, RankedList] | None = None,
    ) -> None:
        self.index = index
        self.record = index.record
        self.vectors = index.vectors
        self.planner = planner
        self.where = where
        self.lexical = lexical  # (depth, list) computed ahead
        self.threads = index.options.search_threads
        self.path: SearchPath = "lexical"  # how the dense list was found (the last one, if grouping looked deeper)

    # --- RankingSource --------------------------------------------------------------------------------------------

    def ranked_lists(
        self, mode: Mode, depth: int, vector: np.ndarray | None, text: str | None
    ) -> dict[str, RankedList]:
        return lists_for(mode, depth, vector, text, self.dense, self.lexical_list)

    def documents_of(self, ids: Sequence[int]) -> dict[int, str]:
        directory = self.index.directory
        if directory is not None:
            return {chunk_id: name.doc_id for chunk_id, name in directory.names(ids).items()}
        return self.record.documents_of(ids)

    def stored_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The float32 vectors of chunks `ids`, in that order."""
        found, matrix = self.record.vectors_of(ids.tolist())
        row = {chunk_id: i for i, chunk_id in enumerate(found.tolist())}
        return matrix[[row[i] for i in ids.tolist()]]

    def hits(
        self,
        scores: np.ndarray,
        ids: np.ndarray,
        ranks: dict[int, dict[str, int]],
        others: Others,
        request: SearchRequest,
    ) -> list[Hit]:
        if not len(ids):
            return []
        directory = self.index.directory
        if directory is not None and not request.with_documents and not request.with_vectors:
            names = directory.names(wanted_rows(ids, others))  # in memory: no page of SQLite read
            named = {i: ChunkRow(n.doc_id, n.chunk_index, 0, 0, None, "", {}, n.chunk_count) for i, n in names.items()}
            return build_hits(scores, ids, named, ranks, others)
        return build_hits(scores, ids, self.record.hit_rows(wanted_rows(ids, others), request.with_vectors), ranks,
                          others)  # fmt: skip

    # --- the lists ------------------------------------------------------------------------------------------------

    def lexical_list(self, text: str, depth: int) -> RankedList:
        if self.lexical is not None and self.lexical[0] == depth:
            return self.lexical[1]
        return self.record.lexical(text, depth, self.where)

    def dense(self, query: np.ndarray, top_k: int) -> RankedList:
        """The `top_k` nearest chunks that pass the filter; for a filter, by the path the planner picks."""
        where = self.where
        if where is None:
            self.path = "unfiltered"
            return self._rescored(query, top_k, *self.vectors.search(query, top_k, self.threads))
        plan = self.planner.plan(self.index, where)
        self.path = plan.path
        if plan.path == "overfetch":
            return self._overfetch(query, top_k, where, plan.share)
        if not len(plan.ids):
            return EMPTY
        if plan.path == "exact":
            return self._score_exactly(query, plan.ids.tolist(), top_k)
        return self._rescored(query, top_k, *self.vectors.search(query, top_k, self.threads, plan.ids))

    def _score_exactly(self, query: np.ndarray, ids: Sequence[int], top_k: int) -> RankedList:
        """The best `top_k` of `ids`, scored from SQLite's float32 vectors."""
        found, matrix = self.record.vectors_of(ids)
        if not len(found):
            return EMPTY
        scores = self.vectors.exact_scores(query, matrix)
        best = np.argsort(-scores, kind="stable")[:top_k]
        return scores[best], found[best]

    def _rescored(self, query: np.ndarray, top_k: int, scores: np.ndarray, ids: np.ndarray) -> RankedList:
        """FAISS's candidates, best first; a quantized index's approximate ones are rescored exactly."""
        if not self.vectors.approximate:
            return scores[:top_k], ids[:top_k]
        depth = top_k * RESCORE_FACTOR[self.index.config.quantization]
        return self._score_exactly(query, [int(i) for i in ids[:depth]], top_k)

    def _overfetch(self, query: np.ndarray, top_k: int, where: SqlFilter, share: float) -> RankedList:
        """The best `top_k` that pass a broad filter: FAISS's best k' of everything (k' from the estimated share,
        with a margin), filtered, and k' widened x4 until `top_k` pass or k' covers the whole index. Exact for flat:
        every passing vector better than the last one kept is within FAISS's exact top k'."""
        total = self.vectors.ntotal
        wanted = max(top_k * 2, int(top_k / share * 2))
        while True:
            scores, ids = self.vectors.search(query, min(wanted, total), threads=self.threads)
            tested = self.record.passing(ids.tolist(), where)
            keep = np.fromiter((tested.get(i, False) for i in ids.tolist()), dtype=bool, count=len(ids))
            if keep.sum() >= top_k or wanted >= total:
                return self._rescored(query, top_k, scores[keep], ids[keep])
            wanted *= 4
