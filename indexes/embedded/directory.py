"""ChunkDirectory: what a hit needs to be named (its document's id, its chunk index, its document's chunk count),
for every chunk id, in memory.

A search that returns ids and scores only (no text, metadata or vectors) answers from here and FAISS, without
touching SQLite, whose rows cost ~30 random page reads a query at a million chunks, each a disk read once the
page cache has let the file go (1M sq8 in-process, hits from SQLite: 1.2 ms cached, 5 to 6 ms evicted). It
costs ~40 bytes a chunk (numpy arrays; an id of up to 15 bytes lives inside numpy's string array, with no object
of its own).

Not thread-safe by itself: the store changes it under its write lock and reads it under its read lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from numpy.dtypes import StringDType

FOLD_AT = 50_000  # added or removed chunks kept aside before they are folded into the arrays (~10 MB of dict)


class ChunkName(NamedTuple):
    doc_id: str
    chunk_index: int
    chunk_count: int  # of its document


class ChunkDirectory:
    def __init__(self, ids: np.ndarray, doc_ids: np.ndarray, numbers: np.ndarray) -> None:
        """`ids` ascending (int64); `doc_ids` (numpy strings) and `numbers` ([n, 2] int64: chunk index, chunk
        count) in the same order."""
        self._ids, self._doc_ids, self._numbers = ids, doc_ids, numbers
        self._added: dict[int, ChunkName] = {}  # newer than every id in the arrays (ids only grow)
        self._removed: set[int] = set()  # in the arrays, but deleted

    @classmethod
    def scan(cls, pages: Iterable[Sequence[tuple[str, int]]]) -> ChunkDirectory:
        """From every chunk's (document id, chunk id), ordered by both, in pages: what the chunks table's index on
        doc_id holds (~20 bytes a chunk, where the table's rows carry the vectors). A document's chunks are written
        together, in order, and ids only grow, so ordered by id they are its chunks 0, 1, 2..."""
        doc_ids, ids = [], []
        for rows in pages:
            doc_ids.append(np.array([row[0] for row in rows], dtype=StringDType()))
            ids.append(np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows)))
        if not ids:
            return cls(np.empty(0, np.int64), np.empty(0, StringDType()), np.empty((0, 2), np.int64))
        all_doc_ids, all_ids = np.concatenate(doc_ids), np.concatenate(ids)
        first = np.flatnonzero(np.concatenate([[True], all_doc_ids[1:] != all_doc_ids[:-1]]))  # of each document
        counts = np.diff(np.append(first, len(all_ids)))
        chunk_index = np.arange(len(all_ids)) - np.repeat(first, counts)
        numbers = np.stack([chunk_index, np.repeat(counts, counts)], axis=1)
        order = np.argsort(all_ids, kind="stable")
        return cls(all_ids[order], all_doc_ids[order], numbers[order])

    def __len__(self) -> int:
        return len(self._ids) - len(self._removed) + len(self._added)

    def add(self, names: dict[int, ChunkName]) -> None:
        """New chunks, whose ids are above every id already here."""
        self._added.update(names)
        self._fold_if_due()

    def remove(self, ids: Iterable[int]) -> None:
        for chunk_id in ids:
            if self._added.pop(chunk_id, None) is None:
                self._removed.add(chunk_id)
        self._fold_if_due()

    def names(self, ids: Sequence[int]) -> dict[int, ChunkName]:
        """The name of each of `ids` that is here."""
        found = {i: self._added[i] for i in ids if i in self._added}
        wanted = np.fromiter((i for i in ids if i not in found and i not in self._removed), dtype=np.int64)
        if not len(self._ids) or not len(wanted):
            return found
        at = np.minimum(np.searchsorted(self._ids, wanted), len(self._ids) - 1)
        here = self._ids[at] == wanted
        at = at[here]
        for chunk_id, doc_id, (index, count) in zip(
            wanted[here].tolist(), self._doc_ids[at].tolist(), self._numbers[at].tolist(), strict=True
        ):
            found[chunk_id] = ChunkName(doc_id, index, count)
        return found

    def _fold_if_due(self) -> None:
        """Fold the chunks kept aside into the arrays (a copy of them), once there are enough to be worth it."""
        if len(self._added) + len(self._removed) < FOLD_AT:
            return
        keep = ~np.isin(self._ids, np.fromiter(self._removed, dtype=np.int64, count=len(self._removed)))
        added = sorted(self._added.items())
        self._ids = np.concatenate([self._ids[keep], np.array([i for i, _ in added], dtype=np.int64)])
        self._doc_ids = np.concatenate(
            [self._doc_ids[keep], np.array([name.doc_id for _, name in added], dtype=StringDType())]
        )
        new_numbers = np.array([(name.chunk_index, name.chunk_count) for _, name in added], dtype=np.int64)
        self._numbers = np.concatenate([self._numbers[keep], new_numbers.reshape(-1, 2)])
        self._added, self._removed = {}, set()
