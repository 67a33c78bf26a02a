"""Maintenance: the background work of one open index, as its own unit (as Qdrant's optimizers are): FAISS recovered
from its checkpoint and SQLite on open, checkpoints, merges of `fresh` into `main` (when due, and once writes
pause), compaction past a share of tombstones, `main` moved to huge pages, and the chunk directory's first load.

Each piece of work takes the index's lock as it needs (OpenIndex's rule); a failure in a background thread is
logged, since the record is SQLite and the next checkpoint or open makes up for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from indexes.embedded.directory import ChunkDirectory
from indexes.embedded.record import IndexRecord
from indexes.embedded.state import OpenIndex, StoreOptions
from indexes.embedded.vectors import VectorIndex

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 30
# Writes quiet this long: what is left in FAISS's `fresh` is merged into `main`. Every search scans `fresh`
# exhaustively (10,000 384-d vectors: 0.57 ms a query, 20,000: 1.1 ms), and with no further write nothing else
# would merge it.
QUIET_SECONDS = 5


def recover_vectors(record: IndexRecord, options: StoreOptions, path: Path) -> tuple[VectorIndex, int]:
    """FAISS as SQLite has it: the checkpoint at `path` caught up (removals logged after it, chunks added after it
    into `fresh`, searched exactly: the first query needs no merge); or, if it is missing, damaged, of another
    shape or ahead of SQLite, rebuilt. Returns the vectors and the sequence of the checkpoint used (-1: none)."""
    seq = record.seq()
    loaded = VectorIndex.load(path, record.config, options.merge_size)
    if loaded is not None and loaded[1] <= seq:
        vectors, checkpoint = loaded
        vectors.remove(record.removed_since(checkpoint))
        for ids, matrix in record.vector_pages(since=checkpoint):
            vectors.add(ids, matrix)
        if vectors.live == record.counts()[1]:
            return vectors, checkpoint
    return rebuild_vectors(record, options), -1


def rebuild_vectors(record: IndexRecord, options: StoreOptions) -> VectorIndex:
    vectors = VectorIndex(record.config, merge_size=options.merge_size)
    for ids, matrix in record.vector_pages():
        vectors.add(ids, matrix)
        vectors.merge(options.build_threads)
    return vectors


class Maintenance:
    def __init__(self, index: OpenIndex, checkpoint_seq: int) -> None:
        self.index = index
        self.options = index.options
        self._checkpoint_lock = threading.Lock()  # one checkpoint (or huge-page pass) at a time
        self._saving = threading.Event()  # a checkpoint is writing FAISS's `main`: merges wait
        self._checkpoint_seq = checkpoint_seq
        self._last_checkpoint = time.monotonic()
        self._last_write = time.monotonic()
        self._quiet_merge_armed = False  # a thread waits for writes to pause, to merge `fresh`
        self.quiet_seconds = QUIET_SECONDS
        self._wake = threading.Event()  # the quiet wait looks again (set_quiet_seconds)

    def after_open(self, created: bool) -> None:
        if self.index.vectors.merge_due():  # much was written after the checkpoint: serve now, merge in background
            self._in_background(self.merge, "merge")
        else:
            self.merge_when_quiet()
        if self.index.vectors.main.ntotal:
            self.settle_main()
        if created:  # nothing to read
            self.index.directory = ChunkDirectory.scan([])
        else:
            self._in_background(self._load_directory, "chunk directory")

    # --- after each write -----------------------------------------------------------------------------------------

    def merge_if_due(self) -> bool:
        """Under the write lock, after a write: merge `fresh` if it is merge-sized (not while a checkpoint writes
        `main`: the next write merges instead); arm the quiet merge. True if it merged (then call settle_main())."""
        vectors = self.index.vectors
        merged = vectors.merge_due() and not self._saving.is_set()
        if merged:
            vectors.merge(self.options.build_threads)
        self.merge_when_quiet()
        return merged

    def after_write(self, merged: bool) -> None:
        """Outside the lock, after a write: huge pages for a grown `main`, compaction, a checkpoint if due."""
        if merged:
            self.settle_main()
        self._compact_if_due()
        # Writing FAISS costs time in proportion to its size, so not after every batch, and in the background:
        # what a crash loses in between is replayed from SQLite on the next open. (checkpoint() skips it when
        # nothing changed.)
        if time.monotonic() - self._last_checkpoint > CHECKPOINT_SECONDS and not self._checkpoint_lock.locked():
            self._last_checkpoint = time.monotonic()
            self._in_background(self.checkpoint, "checkpoint")

    # --- the work -------------------------------------------------------------------------------------------------

    def merge(self) -> None:
        """Move FAISS's `fresh` vectors into `main`; not while a checkpoint is writing `main` (the next write
        merges instead)."""
        index = self.index
        with index.lock.write():
            if index.closed or self._saving.is_set():
                return
            index.vectors.merge(self.options.build_threads)
        self.settle_main()

    def checkpoint(self) -> None:
        """Write FAISS to disk with the sequence it reflects, then forget the deletions it includes. Writers and
        readers wait only while `fresh` and the tombstones are copied, not while the file is written."""
        index = self.index
        with self._checkpoint_lock:
            with index.lock.read():
                if index.closed:
                    return
                seq = index.record.seq()
                if seq == self._checkpoint_seq and index.vectors_path.exists():
                    return
                snapshot = index.vectors.snapshot()
                self._saving.set()  # no merge changes `main` until it is written
            try:
                snapshot.save(index.vectors_path, seq)
            finally:
                self._saving.clear()
            index.record.prune_deleted(seq)
            self._checkpoint_seq = seq
            self._last_checkpoint = time.monotonic()

    def wait_for_checkpoint(self) -> None:
        """A background checkpoint still writing in the folder: let it finish (before a close without one)."""
        with self._checkpoint_lock:
            pass

    def settle_main(self) -> None:
        """In a background thread, back FAISS's `main` with huge pages. After whatever (re)built `main`: the open,
        each merge (what it grew was allocated anew), a compaction. Memory already on huge pages costs nothing."""
        self._in_background(self._back_main_with_huge_pages, "huge pages")

    def _back_main_with_huge_pages(self) -> None:
        """VectorIndex.back_with_huge_pages, holding merges back meanwhile as a checkpoint does; searches go on."""
        index = self.index
        with self._checkpoint_lock:
            with index.lock.read():
                if index.closed:
                    return
                vectors = index.vectors
                self._saving.set()
            try:
                vectors.back_with_huge_pages()
            finally:
                self._saving.clear()

    def merge_when_quiet(self) -> None:
        """After a write (under the write lock) or the open: once writes pause for QUIET_SECONDS, merge `fresh`."""
        self._last_write = time.monotonic()
        if self.index.vectors.fresh.ntotal and not self._quiet_merge_armed:
            self._quiet_merge_armed = True
            self._in_background(self._merge_once_quiet, "merge")

    def set_quiet_seconds(self, seconds: float) -> None:
        """How long writes must pause before `fresh` is merged; a wait under way looks again at once."""
        self.quiet_seconds = seconds
        self._wake.set()

    def _merge_once_quiet(self) -> None:
        index = self.index
        try:
            while True:
                self._wake.wait(max(0.0, self._last_write + self.quiet_seconds - time.monotonic()))
                self._wake.clear()
                with index.lock.write():
                    if index.closed:
                        return
                    if time.monotonic() - self._last_write >= self.quiet_seconds and not self._saving.is_set():
                        self._quiet_merge_armed = False  # under the lock: a write after this arms a new wait
                        index.vectors.merge(self.options.build_threads)
                        break
                time.sleep(0.5)  # a write came meanwhile (wait on), or a checkpoint is writing `main` (try again)
        except BaseException:
            self._quiet_merge_armed = False  # a failed merge: the next write tries again
            raise
        self.settle_main()

    def _compact_if_due(self) -> None:
        """Deleted vectors stay in `main` as tombstones; past a share of it, rebuild it without them."""
        index = self.index
        vectors = index.vectors
        if len(vectors.tombstones) <= self.options.compact_ratio * max(vectors.ntotal, 1):
            return
        with index.lock.write():
            if index.closed:
                return
            index.vectors = rebuild_vectors(index.record, self.options)
            self._checkpoint_seq = -1
        self.checkpoint()
        self.settle_main()

    def _load_directory(self) -> None:
        """Read every chunk's name into the ChunkDirectory, under the read lock: writes wait for it (~1.2 s at 1M
        chunks, once after an open), and so does close(), which must never close the connection in use here.
        Until it is installed, hits are named from SQLite."""
        index = self.index
        with index.lock.read():
            if index.closed:
                return
            index.directory = ChunkDirectory.scan(index.record.chunk_names())

    def _in_background(self, task: Callable[[], None], what: str) -> None:
        """Run `task` in a thread of its own; its SQLite connection is closed when it ends."""
        name = self.index.config.name

        def run() -> None:
            try:
                task()
            except Exception:
                log.exception("%s of index '%s' failed", what, name)
            finally:
                self.index.record.db.disconnect()

        threading.Thread(target=run, name=f"{what}-{name}", daemon=True).start()
