"""OpenIndex: what an open index holds in memory, shared by the parts that work on it: the store (writes and reads),
its searches (StoreSnapshot) and its background work (Maintenance).

The lock is the one rule: readers (searches, reads, stats) hold lock.read() from their FAISS search to their SQLite
fetch; a change to `vectors`, `directory`, `version`, `config` or `closed` happens under lock.write(), so readers
see a batch entirely or not at all.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from indexes.config import IndexConfig
from indexes.embedded.directory import ChunkDirectory
from indexes.embedded.planner import PlannerLimits
from indexes.embedded.record import IndexRecord
from indexes.embedded.rwlock import RWLock
from indexes.embedded.vectors import MERGE_SIZE, VectorIndex
from indexes.errors import IndexNotFound, IndexReplaced
from indexes.values import PathObserver

VECTORS = "vectors.faiss"


class StoreOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How an open index runs (not part of its config: the same index can be opened with others)."""

    search_threads: int = 1  # FAISS's OpenMP threads for one search (VectorIndex.search)
    build_threads: int = 0  # ... for a merge into `main` (0: every core)
    merge_size: int = MERGE_SIZE  # fresh vectors that trigger a merge
    compact_ratio: float = 0.2  # tombstones, as a share of `main`, that trigger a rebuild
    planner: PlannerLimits = PlannerLimits()
    on_search: PathObserver | None = None  # told the path of each search (/metrics)


DEFAULT_OPTIONS = StoreOptions()


class OpenIndex:
    def __init__(self, folder: Path, record: IndexRecord, vectors: VectorIndex, options: StoreOptions) -> None:
        self.folder = folder
        self.vectors_path = folder / VECTORS
        self.record = record
        self.vectors = vectors
        self.options = options
        self.config: IndexConfig = record.config
        self.lock = RWLock()  # readers: searches and reads; writer: a commit plus its FAISS update
        self.directory: ChunkDirectory | None = None  # loaded in the background after the open; None till then
        self.version = 0  # bumped by every committed write (prefetched lists, plans)
        self.closed = False  # after it, every read and write is IndexNotFound
        self.replaced = False  # closed because a restore put another index in its place: IndexReplaced

    def check_open(self) -> None:
        if self.closed:  # deleted, replaced or shut down while the caller held on to it
            raise IndexReplaced(self.config.name) if self.replaced else IndexNotFound(self.config.name)
