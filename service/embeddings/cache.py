"""An embedding cache in SQLite, keyed by (model, dimensions, sha256 of the input), bounded in entries."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from indexes.postgres.database import PgDatabase
from indexes.sqlite import Database
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
        self._lock = threading.Lock()  # one writer at a time, and the counters with it
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Database(path, synchronous="NORMAL")  # a cache: losing the last writes in a power cut is fine
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
        rows = self._db.select_in("SELECT key, vector FROM embeddings WHERE key IN ({marks})", keys)
        found = {key: np.frombuffer(blob, dtype="<f4") for key, blob in rows}
        with self._lock:
            if found:
                now = time.time()
                with self._db.transaction() as db:
                    db.executemany("UPDATE embeddings SET used = ? WHERE key = ?", [(now, k) for k in found])
            self.hits += len(found)
            self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, items: dict[bytes, np.ndarray]) -> None:
        now = time.time()
        keys = list(items)
        with self._lock:
            with self._db.transaction() as db:
                known_rows = self._db.select_in("SELECT count(*) FROM embeddings WHERE key IN ({marks})", keys)
                entries = self._entries + len(keys) - sum(row[0] for row in known_rows)
                db.executemany(
                    "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                    [(k, np.ascontiguousarray(v, dtype="<f4").tobytes(), now) for k, v in items.items()],
                )
                excess = entries - self.max_entries
                if excess > 0:  # least recently used go first
                    db.execute(
                        "DELETE FROM embeddings WHERE key IN (SELECT key FROM embeddings ORDER BY used LIMIT ?)",
                        (excess,),
                    )
                    entries -= excess
            self._entries = entries  # once committed

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self._entries)

    def close(self) -> None:
        self._db.close()


class CachedEmbedder:
    """Wraps an embedder: inputs seen before (same model, dimensions, truncation) come from the cache."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache
        self.model_id = inner.model_id
        self.max_input_tokens = inner.max_input_tokens
        self.special_tokens = inner.special_tokens
        self.supports_dimensions = inner.supports_dimensions
        self.created = inner.created
        self.owned_by = inner.owned_by
        self.base_model = inner.base_model

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions  # a remote model may learn it only at start

    async def start(self) -> None:
        await self.inner.start()

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_offsets(text)

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


PG_SCHEMA = [
    "CREATE UNLOGGED TABLE IF NOT EXISTS vsearch_embedding_cache (key bytea PRIMARY KEY, "
    "vector bytea NOT NULL, used double precision NOT NULL)",  # unlogged: a cache, rebuilt by use
    "CREATE INDEX IF NOT EXISTS vsearch_embedding_cache_used ON vsearch_embedding_cache (used)",
]


class PgEmbeddingCache(EmbeddingCache):
    """The same cache in PostgreSQL, shared by replicas (hits and misses are counted per replica)."""

    def __init__(self, db: PgDatabase, max_entries: int) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._pg = db
        db.migrate(PG_SCHEMA)
        self._entries = self._count()

    def _count(self) -> int:
        return int(self._pg.execute("SELECT count(*) FROM vsearch_embedding_cache")[0][0])

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        rows = self._pg.execute(
            "UPDATE vsearch_embedding_cache SET used = %s WHERE key = ANY(%s) RETURNING key, vector",
            (time.time(), list(keys)),
        )
        found = {bytes(key): np.frombuffer(bytes(blob), dtype="<f4") for key, blob in rows}
        with self._lock:
            self.hits += len(found)
            self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, items: dict[bytes, np.ndarray]) -> None:
        now = time.time()
        with self._pg.transaction() as conn:
            conn.cursor().executemany(
                "INSERT INTO vsearch_embedding_cache VALUES (%s, %s, %s) ON CONFLICT (key) DO UPDATE "
                "SET vector = excluded.vector, used = excluded.used",
                [(k, np.ascontiguousarray(v, dtype="<f4").tobytes(), now) for k, v in items.items()],
            )
            entries = conn.execute("SELECT count(*) FROM vsearch_embedding_cache").fetchone()[0]  # type: ignore[index]
            excess = entries - self.max_entries
            if excess > 0:  # least recently used go first
                conn.execute(
                    "DELETE FROM vsearch_embedding_cache WHERE key IN "
                    "(SELECT key FROM vsearch_embedding_cache ORDER BY used LIMIT %s)",
                    (excess,),
                )
                entries -= excess
        self._entries = entries

    def close(self) -> None:
        pass  # the database belongs to whoever made it
