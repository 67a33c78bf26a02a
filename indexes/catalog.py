"""IndexCatalog: the indexes of a data dir, one folder each, opened on first use and kept open."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import msgspec

from indexes.config import IndexConfig, check_name
from indexes.errors import IndexExists, IndexNotFound
from indexes.store import DATABASE, IndexStore


class IndexCatalog:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, IndexStore] = {}
        self._lock = threading.Lock()

    def _folder(self, name: str) -> Path:
        return self.root / check_name(name)  # the name pattern keeps every path inside the root

    def create(self, config: IndexConfig) -> IndexStore:
        config = msgspec.structs.replace(config, created_at=int(time.time()))
        check_name(config.name)
        with self._lock:
            folder = self._folder(config.name)
            if folder.exists():
                raise IndexExists(config.name)
            store = IndexStore(folder, config)
            self._open[config.name] = store
            return store

    def get(self, name: str) -> IndexStore:
        with self._lock:
            store = self._open.get(name)
            if store is None:
                folder = self._folder(name)
                if not (folder / DATABASE).exists():
                    raise IndexNotFound(name)
                store = self._open[name] = IndexStore(folder)
            return store

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / DATABASE).exists())

    def delete(self, name: str) -> None:
        with self._lock:
            folder = self._folder(name)
            if not (folder / DATABASE).exists():
                raise IndexNotFound(name)
            store = self._open.pop(name, None)
            if store is not None:
                store.close(checkpoint=False)
            shutil.rmtree(folder)

    def close(self) -> None:
        with self._lock:
            for store in self._open.values():
                store.close()
            self._open.clear()
