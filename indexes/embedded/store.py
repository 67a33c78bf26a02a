"""IndexStore: one index folder of the embedded engine, the IndexStoreContract's first implementation. SQLite (WAL)
is the record (record.py); the FAISS index is derived from it (vectors.py).

A write is acknowledged once its SQLite transaction commits. FAISS is updated in memory right after, under the
same write lock, and checkpointed to disk now and then with the change sequence it reflects; on open, a missing,
stale or damaged checkpoint is caught up or rebuilt from SQLite, so a crash at any instant loses nothing that
was acknowledged. The parts: writes and reads here; search in search.py (under the read lock), the filter
planner in planner.py, background work in maintenance.py; what they share in state.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec
import numpy as np

from indexes.config import FieldType, IndexConfig, check_config
from indexes.databases.loop import forbid_event_loop
from indexes.embedded.filters import SqlFilter, compile_sqlite
from indexes.embedded.maintenance import Maintenance, recover_vectors
from indexes.embedded.planner import FilterPlanner
from indexes.embedded.record import DATABASE, IndexRecord, export, index_fields
from indexes.embedded.search import PrefetchedList, StoreSnapshot
from indexes.embedded.state import DEFAULT_OPTIONS, VECTORS, OpenIndex, StoreOptions
from indexes.errors import DocumentNotFound
from indexes.filters import MetadataFilter
from indexes.searching import ranked_search, search_depth
from indexes.values import (
    DocumentRecord,
    Hit,
    IndexExport,
    IndexStats,
    SearchRequest,
    StoredDocument,
    UpsertResult,
    check_dimensions,
)

__all__ = ["DEFAULT_OPTIONS", "IndexStore", "StoreOptions"]


class IndexStore:
    def __init__(
        self, folder: Path, config: IndexConfig | None = None, options: StoreOptions = DEFAULT_OPTIONS
    ) -> None:
        """Open the index in `folder` (its schema brought up to date), creating it with `config` when given."""
        if config is not None:
            folder.mkdir(parents=True, exist_ok=False)
        record = IndexRecord(folder / DATABASE, check_config(config) if config is not None else None)
        vectors, checkpoint_seq = recover_vectors(record, options, folder / VECTORS)
        self._index = OpenIndex(folder, record, vectors, options)
        self._planner = FilterPlanner(options.planner)
        self.maintenance = Maintenance(self._index, checkpoint_seq)
        self.maintenance.after_open(created=config is not None)

    @property
    def config(self) -> IndexConfig:
        return self._index.config

    @contextmanager
    def _reading(self) -> Iterator[OpenIndex]:
        forbid_event_loop("index", self.config.name)  # a search may read no SQLite page, yet takes the lock
        with self._index.lock.read():
            self._index.check_open()
            yield self._index

    @contextmanager
    def _writing(self) -> Iterator[OpenIndex]:
        forbid_event_loop("index", self.config.name)
        with self._index.lock.write():
            self._index.check_open()
            yield self._index

    def _compiled(self, where: MetadataFilter) -> SqlFilter:
        """The filter in SQLite's dialect, over this index's declared fields (so that their B-trees are used)."""
        return compile_sqlite(where, self.config.metadata_indexes)

    # --- writes ---------------------------------------------------------------------------------------------------

    def upsert(self, documents: Sequence[DocumentRecord]) -> UpsertResult:
        """Insert or replace documents and their chunks in one transaction; returns which were new."""
        check_dimensions(documents, self.config.dimensions)
        with self._writing() as index:
            record = index.record
            with record.db.transaction() as db:
                seq = record.next_seq(db)
                removed = record.delete_chunks(db, [doc.doc_id for doc in documents], seq)
                result, new_ids, new_vectors, names = record.write_documents(db, documents, seq, time.time())
            # Committed: now mirror it in FAISS before any reader can look.
            index.version += 1
            index.vectors.remove(np.array(removed, dtype=np.int64))
            if new_ids:
                index.vectors.add(np.array(new_ids, dtype=np.int64), np.stack(new_vectors))
            if index.directory is not None:
                index.directory.remove(removed)
                index.directory.add(names)
            merged = self.maintenance.merge_if_due()
        self.maintenance.after_write(merged)
        return result

    def delete(self, doc_ids: Sequence[str]) -> list[str]:
        """Delete documents and their chunks; returns the ids that existed."""
        with self._writing() as index:
            record = index.record
            with record.db.transaction() as db:
                existing = list(record.content_hashes(doc_ids))
                if not existing:
                    return []
                seq = record.next_seq(db)
                removed = record.delete_chunks(db, existing, seq)
                record.delete_documents(existing)
            index.version += 1
            index.vectors.remove(np.array(removed, dtype=np.int64))
            if index.directory is not None:
                index.directory.remove(removed)
            self.maintenance.merge_when_quiet()
        self.maintenance.after_write(merged=False)
        return existing

    def delete_matching(self, where: MetadataFilter) -> list[str]:
        with self._reading() as index:
            matching = index.record.matching_documents(self._compiled(where))
        return self.delete(matching)

    def set_config(self, config: IndexConfig) -> None:
        """Change what may change after creation (ef_search, query_model)."""
        with self._writing() as index:
            with index.record.db.transaction() as db:
                index.record.save_config(db, config)
            self._configure(config)

    def add_metadata_indexes(self, fields: dict[str, FieldType]) -> None:
        """Declare more indexed metadata fields (and build their indexes from the stored documents)."""
        with self._writing() as index:
            new = {field: kind for field, kind in fields.items() if field not in index.config.metadata_indexes}
            if not new:
                return
            config = check_config(msgspec.structs.replace(
                index.config, metadata_indexes={**index.config.metadata_indexes, **new}))  # fmt: skip
            with index.record.db.transaction() as db:
                index_fields(db, new)
                index.record.save_config(db, config)
            self._configure(config)

    def _configure(self, config: IndexConfig) -> None:
        """Under the write lock."""
        self._index.config = self._index.record.config = self._index.vectors.config = config

    # --- reads ----------------------------------------------------------------------------------------------------

    def content_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of `doc_ids` that exists (to skip unchanged documents)."""
        with self._reading() as index:
            return index.record.content_hashes(doc_ids)

    def get(self, doc_id: str) -> StoredDocument:
        with self._reading() as index:
            document = index.record.document(doc_id)
        if document is None:
            raise DocumentNotFound(doc_id)
        return document

    def list(self, limit: int, after: str | None = None) -> tuple[list[StoredDocument], bool]:
        """A page of documents in id order, after the cursor `after`; and whether more follow."""
        with self._reading() as index:
            return index.record.documents(limit, after)

    def stats(self) -> IndexStats:
        with self._reading() as index:  # one consistent moment for both stores
            documents, vectors = index.record.counts()
            live = index.vectors.live
        # The index's own files, each stat()ed by name: listing the folder would take a file descriptor, which a
        # server at its limit may not have (the catalog frees them where it opens files, not here).
        files = [*index.record.size_files(), index.vectors_path]
        return IndexStats(documents, vectors, live, sum(path.stat().st_size for path in files if path.exists()))

    def prefetch_lexical(self, request: SearchRequest, text: str) -> PrefetchedList | None:
        """A hybrid search's lexical list, computed ahead (while the query is being embedded); search() uses it
        only if no write has landed since, so results are still one snapshot."""
        if request.mode != "hybrid":
            return None
        _, depth = search_depth(request)
        with self._reading() as index:
            where = self._compiled(request.filter) if request.filter else None
            ranked = index.record.lexical(text, depth, where)
            return PrefetchedList(index.version, text, depth, request.filter, ranked)

    def search(
        self,
        request: SearchRequest,
        vector: np.ndarray | None,
        text: str | None,
        prefetched: PrefetchedList | None = None,
    ) -> list[Hit]:
        """The `top_k` best chunks (or documents, grouped) that pass the filter, best first (searching.py).
        `prefetched`: this search's lexical list from prefetch_lexical(), used if nothing was written since."""
        with self._reading() as index:
            where = self._compiled(request.filter) if request.filter else None  # once, for both lists of hybrid
            ready = None
            if prefetched is not None and prefetched.valid_for(index.version, text, request.filter):
                ready = (prefetched.depth, prefetched.ranked)
            snapshot = StoreSnapshot(index, self._planner, where, ready)
            hits = ranked_search(snapshot, request, vector, text)
        if index.options.on_search is not None:
            index.options.on_search(snapshot.path)
        return hits

    @contextmanager
    def export(self, batch: int = 1000) -> Iterator[IndexExport]:
        """Everything in the index as of one instant, read on a connection of its own: writes and searches go on
        meanwhile (the store's lock is not held)."""
        with self._reading() as index:
            db = index.record.db
        with db.reading() as conn:
            yield export(conn, batch)

    def checkpoint(self) -> None:
        self.maintenance.checkpoint()

    def retire(self) -> None:
        """Close for a restore that puts another index in this one's place: waits for the reads and write in
        progress; whoever holds this store afterwards gets IndexReplaced (and acquires the new one)."""
        self.maintenance.wait_for_checkpoint()
        with self._index.lock.write():
            self._index.closed = self._index.replaced = True
            self._index.record.db.close()

    def close(self, checkpoint: bool = True) -> None:
        """Checkpoint (unless the index is being deleted) and close. Waits for the write or reads in progress;
        whoever holds this store afterwards gets IndexNotFound, never a database reopened at the same path."""
        try:
            if checkpoint and not self._index.closed:
                self.maintenance.checkpoint()
            else:
                self.maintenance.wait_for_checkpoint()
        finally:
            with self._index.lock.write():
                self._index.closed = True
                self._index.record.db.close()
