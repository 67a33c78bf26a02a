"""IndexCatalog: the indexes of a data dir, one folder each.

A folder named after an index exists only once the index is complete: create builds it under a temporary name and
renames it into place, delete renames it aside before removing it. Leftovers of a crash (temporary folders, or an
incomplete folder from an older version) are removed or skipped with a log line, never listed.

At most `max_open` indexes are kept open (each holds file descriptors); callers borrow a store with `use(name)`,
and only stores nobody is using are closed to make room.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from indexes.config import IndexConfig, check_name
from indexes.errors import IndexExists, IndexNotFound, IndexUnavailable
from indexes.store import DATABASE, IndexStore

log = logging.getLogger("vsearch")
CREATING, DELETING = ".creating-", ".deleting-"


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds an index whose creation finished (its config is recorded)."""
    if not (folder / DATABASE).is_file():
        return False
    try:
        with sqlite3.connect(f"file:{folder / DATABASE}?mode=ro", uri=True) as db:
            return db.execute("SELECT 1 FROM meta WHERE key = 'config'").fetchone() is not None
    except sqlite3.Error:
        return False


@dataclass
class _Open:
    store: IndexStore
    users: int = 0


class IndexCatalog:
    def __init__(self, root: Path, max_open: int = 256) -> None:
        self.root = root
        self.max_open = max_open
        root.mkdir(parents=True, exist_ok=True)
        self._open: OrderedDict[str, _Open] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._reported: set[str] = set()
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
            if folder.exists():
                if is_complete(folder):
                    raise IndexExists(config.name)
                log.warning("index folder %s is incomplete (an interrupted create): replacing it", folder)
                self._set_aside(folder)
            staging = self.root / f"{CREATING}{config.name}-{uuid.uuid4().hex[:8]}"
            try:
                IndexStore(staging, config).close()
                staging.rename(folder)
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
                entry = self._open[name] = _Open(self._load(name))
            entry.users += 1
            self._open.move_to_end(name)
            idle = [n for n, e in self._open.items() if e.users == 0][: max(0, len(self._open) - self.max_open)]
            evicted = [self._open.pop(n).store for n in idle]
        for store in evicted:  # outside the lock: closing checkpoints
            store.close()
        return entry.store

    def _load(self, name: str) -> IndexStore:
        folder = self._folder(name)
        if not is_complete(folder):
            raise IndexNotFound(name)
        try:
            return IndexStore(folder)
        except OSError as exc:  # out of file descriptors, or a disk that will not read
            raise IndexUnavailable(name, str(exc)) from exc
        except Exception as exc:  # a damaged index must not take the others down with it
            log.exception("index %s could not be opened", name)
            raise IndexUnavailable(name, f"{type(exc).__name__}: {exc}") from exc

    def names(self) -> list[str]:
        """The complete indexes, by name; incomplete folders are skipped (and logged once)."""
        names = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            if folder.name in self._open or is_complete(folder):
                names.append(folder.name)
            elif folder.name not in self._reported:
                self._reported.add(folder.name)
                log.warning("skipping %s: not a complete index (creating it again replaces it)", folder)
        return names

    def delete(self, name: str) -> None:
        with self._lock:
            folder = self._folder(name)
            if not is_complete(folder):
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
            try:
                store.close()
            except Exception:  # closed all the same: the next open catches up from SQLite
                log.exception("could not checkpoint index %s; it will be caught up from SQLite", store.config.name)
