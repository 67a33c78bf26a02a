"""IndexCatalog: the indexes of a data dir, one folder each.

A folder named after an index exists only once the index is complete: create builds it under a temporary name and
renames it into place, delete renames it aside before removing it. A restore builds the new index under a
temporary name too, then renames the old folder aside (`.replaced-`) and the new one into place; a crash between
the two renames is undone at the next start (the old folder is put back). Leftovers of a crash (temporary folders,
or an incomplete folder from an older version) are removed or skipped with a log line, never listed.

At most `max_open` indexes are kept open (each holds file descriptors); callers borrow a store with `use(name)`,
and only stores nobody is using are closed to make room.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import msgspec

from indexes.config import IndexConfig, check_config, check_name
from indexes.databases.sqlite import Database, sqlite3
from indexes.embedded.record import DATABASE, export
from indexes.embedded.store import DEFAULT_OPTIONS, IndexStore, StoreOptions
from indexes.errors import IndexExists, IndexNotFound, IndexUnavailable
from indexes.values import DocumentRecord, IndexExport

log = logging.getLogger("vsearch")
CREATING, DELETING, REPLACED = ".creating-", ".deleting-", ".replaced-"
T = TypeVar("T")


def close_quietly(store: IndexStore) -> None:
    """Checkpoint and close; a failed checkpoint is logged (the store is closed all the same, and the next open
    catches its FAISS index up from SQLite)."""
    try:
        store.close()
    except Exception:
        log.exception("could not checkpoint index %s; it will be caught up from SQLite", store.config.name)


def out_of_descriptors(exc: BaseException) -> bool:
    """EMFILE/ENFILE, as the OS says it, or as SQLite does (it cannot open a file it knows is there)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    return (
        isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN
    )


FolderState = Literal["absent", "incomplete", "complete", "damaged"]


def folder_state(folder: Path) -> FolderState:
    """complete: an index whose creation finished (its config is recorded); incomplete: a create that stopped
    before that (no tables yet); damaged: not an SQLite database. Being out of file descriptors is not an answer:
    that error is raised."""
    path = folder / DATABASE
    if not path.is_file():
        return "absent"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            return "incomplete"
        return "complete" if db.execute("SELECT 1 FROM meta WHERE key = 'config'").fetchone() else "incomplete"
    except sqlite3.DatabaseError as exc:
        if out_of_descriptors(exc):
            raise
        return "damaged"
    finally:
        db.close()


@contextmanager
def exported(folder: Path, batch: int = 1000) -> Iterator[IndexExport]:
    """The index in `folder` as of one instant, read from its SQLite file alone, read-only: safe beside a server
    that has the index open (a backup while it runs). FAISS is not read: it is derived, and rebuilt on restore."""
    if folder_state(folder) != "complete":
        raise IndexNotFound(folder.name)
    with Database(folder / DATABASE).reading() as conn:
        yield export(conn, batch)


@dataclass
class _Open:
    store: IndexStore
    users: int = 0


class IndexCatalog:
    def __init__(self, root: Path, max_open: int = 128, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        self.root = root
        self.max_open = max_open
        self.options = options
        root.mkdir(parents=True, exist_ok=True)
        self._open: OrderedDict[str, _Open] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._reported: set[str] = set()
        for replaced in root.glob(f"{REPLACED}*"):  # a restore stopped between its two renames
            folder = root / replaced.name[len(REPLACED) :].rsplit("-", 1)[0]
            if folder_state(folder) == "complete":
                shutil.rmtree(replaced, ignore_errors=True)
            else:
                log.warning("putting %s back: a restore of it was interrupted", folder)
                shutil.rmtree(folder, ignore_errors=True)
                replaced.rename(folder)
        for leftover in root.glob(".*-*"):
            if leftover.name.startswith((CREATING, DELETING)):
                log.warning("removing %s, left by an interrupted create or delete", leftover)
                shutil.rmtree(leftover, ignore_errors=True)

    def _folder(self, name: str) -> Path:
        return self.root / check_name(name)  # the name pattern keeps every path inside the root

    def _set_aside(self, folder: Path) -> None:
        """Remove a folder so that a crash halfway leaves no partial index under its name."""
        doomed = self.root / f"{DELETING}{folder.name}-{uuid.uuid4().hex[:8]}"
        folder.rename(doomed)
        shutil.rmtree(doomed)

    def create(self, config: IndexConfig) -> None:
        config = msgspec.structs.replace(config, created_at=int(time.time()))
        with self._lock:
            folder = self._folder(config.name)
            state = self._with_descriptors(lambda: folder_state(folder))
            if state in ("complete", "damaged"):
                raise IndexExists(config.name)
            if folder.exists():
                log.warning("index folder %s is incomplete (an interrupted create): replacing it", folder)
                self._set_aside(folder)

            def build() -> None:
                staging = self.root / f"{CREATING}{config.name}-{uuid.uuid4().hex[:8]}"  # fresh for each try
                try:
                    IndexStore(staging, config, self.options).close()
                    staging.rename(folder)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)

            self._with_descriptors(build)

    def restore(self, config: IndexConfig, batches: Iterable[Sequence[DocumentRecord]]) -> None:
        """Build the index in a folder of its own (no lock held: the old index serves meanwhile), then swap the
        folders under the catalog lock once the store in use has finished its reads and write."""
        config = check_config(config)
        staging = self.root / f"{CREATING}{config.name}-{uuid.uuid4().hex[:8]}"
        try:
            store = IndexStore(staging, config, self.options)
            try:
                for batch in batches:
                    store.upsert(batch)
            except BaseException:
                store.close(checkpoint=False)
                raise
            store.close()  # a checkpoint: the new index opens without rebuilding FAISS
            with self._lock:
                folder = self._folder(config.name)
                entry = self._open.pop(config.name, None)
                if entry is not None:
                    entry.store.retire()
                aside = self.root / f"{REPLACED}{config.name}-{uuid.uuid4().hex[:8]}"
                if folder.exists():
                    folder.rename(aside)
                staging.rename(folder)
            shutil.rmtree(aside, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @contextmanager
    def use(self, name: str) -> Iterator[IndexStore]:
        """The open store of index `name`, kept open while the caller uses it."""
        store = self.acquire(name)
        try:
            yield store
        finally:
            self.release(store)

    def release(self, store: IndexStore) -> None:
        """Ends a use begun with acquire()."""
        with self._lock:
            entry = self._open.get(store.config.name)
            if entry is not None and entry.store is store:  # not if it was deleted (and maybe made anew) since
                entry.users -= 1

    def acquire(self, name: str) -> IndexStore:
        """The open store of index `name`, not closed to make room until release(store)."""
        with self._lock:
            entry = self._open.get(name)
            if entry is None:
                entry = self._open[name] = _Open(self._with_descriptors(lambda: self._load(name)))
            entry.users += 1
            self._open.move_to_end(name)
            idle = [n for n, e in self._open.items() if e.users == 0][: max(0, len(self._open) - self.max_open)]
            evicted = [self._open.pop(n).store for n in idle]
        for store in evicted:  # outside the lock: closing checkpoints
            close_quietly(store)
        return entry.store

    def _with_descriptors(self, work: Callable[[], T]) -> T:
        """`work()`; if the process is out of file descriptors, close every index nobody uses and try once more.
        (Called under the catalog lock, so no index is acquired meanwhile.)"""
        try:
            return work()
        except (OSError, sqlite3.OperationalError) as exc:
            if not out_of_descriptors(exc):
                raise
            idle = [name for name, entry in self._open.items() if entry.users == 0]
            log.warning("out of file descriptors: closing %d idle indexes", len(idle))
            for name in idle:  # no checkpoint: writing one needs a descriptor; SQLite catches FAISS up on open
                self._open.pop(name).store.close(checkpoint=False)
            return work()

    def _load(self, name: str) -> IndexStore:
        folder = self._folder(name)
        state = folder_state(folder)
        if state in ("absent", "incomplete"):
            raise IndexNotFound(name)
        if state == "damaged":
            raise IndexUnavailable(name, f"{folder / DATABASE} is not an SQLite database")
        try:
            return IndexStore(folder, options=self.options)
        except (OSError, sqlite3.OperationalError) as exc:
            if out_of_descriptors(exc):
                raise  # for _with_descriptors
            if isinstance(exc, OSError):  # a disk that will not read
                raise IndexUnavailable(name, str(exc)) from exc
            log.exception("index %s could not be opened", name)
            raise IndexUnavailable(name, f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # a damaged index must not take the others down with it
            log.exception("index %s could not be opened", name)
            raise IndexUnavailable(name, f"{type(exc).__name__}: {exc}") from exc

    def names(self) -> list[str]:
        """The indexes, by name (damaged ones too: they are named in errors, and can be deleted); incomplete
        folders are skipped, and logged once."""
        with self._lock:
            return self._with_descriptors(self._scan)

    def _scan(self) -> list[str]:
        names = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            if folder.name in self._open or folder_state(folder) in ("complete", "damaged"):
                names.append(folder.name)
            elif folder.name not in self._reported:
                self._reported.add(folder.name)
                log.warning("skipping %s: not a complete index (creating it again replaces it)", folder)
        return names

    def delete(self, name: str) -> None:
        with self._lock:
            folder = self._folder(name)
            if self._with_descriptors(lambda: folder_state(folder)) in ("absent", "incomplete"):
                raise IndexNotFound(name)
            entry = self._open.pop(name, None)
            if entry is not None:
                entry.store.close(checkpoint=False)  # waits for a write in progress; later ones get IndexNotFound
            self._set_aside(folder)

    def close(self) -> None:
        """Checkpoint and close every open index; one that fails is logged and the others still close."""
        with self._lock:
            stores = [entry.store for entry in self._open.values()]
            self._open.clear()
        for store in stores:
            close_quietly(store)
