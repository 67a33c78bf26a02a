"""An embedding cache in SQLite, keyed by (model, dimensions, sha256 of the input), bounded in entries."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from service.embeddings.base import Embedder, EmbeddingInput, EmbeddingResult


@dataclass
class CacheStats:
    hits: int
    misses: int
    entries: int


class EmbeddingCache:
    def __init__(self, path: Path, max_entries: int) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()  # one connection, used from worker threads one at a time
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last writes in a power cut is fine
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (key BLOB PRIMARY KEY, vector BLOB NOT NULL, used REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used)")
        # Kept up to date by put_many, so neither writes nor stats scan the table.
        self._entries = self._db.execute("SELECT count(*) FROM embeddings").fetchone()[0]

    @staticmethod
    def key(model: str, dimensions: int | None, item: EmbeddingInput, truncate: bool) -> bytes:
        return hashlib.sha256(msgspec.json.encode([model, dimensions, truncate, item])).digest()

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = list(keys[start : start + 500])
                marks = ",".join("?" * len(part))
                for key, blob in self._db.execute(f"SELECT key, vector FROM embeddings WHERE key IN ({marks})", part):
                    found[key] = np.frombuffer(blob, dtype="<f4")
            if found:
                now = time.time()
                self._db.executemany("UPDATE embeddings SET used = ? WHERE key = ?", [(now, k) for k in found])
            self.hits += len(found)
            self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, items: dict[bytes, np.ndarray]) -> None:
        now = time.time()
        keys = list(items)
        with self._lock:
            self._db.execute("BEGIN")
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                known = self._db.execute(f"SELECT count(*) FROM embeddings WHERE key IN ({marks})", part).fetchone()[0]
                self._entries += len(part) - known
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(k, np.ascontiguousarray(v, dtype="<f4").tobytes(), now) for k, v in items.items()],
            )
            excess = self._entries - self.max_entries
            if excess > 0:  # least recently used go first
                self._db.execute(
                    "DELETE FROM embeddings WHERE key IN (SELECT key FROM embeddings ORDER BY used LIMIT ?)", (excess,)
                )
                self._entries -= excess
            self._db.execute("COMMIT")

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self._entries)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedEmbedder:
    """Wraps an embedder: inputs seen before (same model, dimensions, truncation) come from the cache."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)  # model_id, dimensions, token_offsets, ...

    async def embed(
        self, inputs: Sequence[EmbeddingInput], dimensions: int | None = None, truncate: bool = False
    ) -> EmbeddingResult:
        keys = [EmbeddingCache.key(self.inner.model_id, dimensions, item, truncate) for item in inputs]
        found = await asyncio.to_thread(self.cache.get_many, keys)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        tokens = 0
        if missing:
            first_input = {k: inputs[i] for i, k in reversed(list(enumerate(keys)))}
            result = await self.inner.embed([first_input[k] for k in missing], dimensions, truncate)
            fresh = dict(zip(missing, result.vectors, strict=True))
            await asyncio.to_thread(self.cache.put_many, fresh)
            found.update(fresh)
            tokens = result.prompt_tokens
        return EmbeddingResult(np.stack([found[k] for k in keys]).astype(np.float32), tokens)

    def close(self) -> None:
        self.inner.close()
