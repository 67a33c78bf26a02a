"""The embedding cache, keyed by (model, dimensions, sha256 of the input), bounded in entries: the EmbeddingCache
Protocol and its two implementations side by side (SQLite in the data dir; PostgreSQL, shared by replicas)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec
import numpy as np

from indexes.databases.postgres import PgDatabase
from indexes.databases.sqlite import Database, sqlite3
from service.embeddings.base import Embedder, EmbeddingInput, EmbeddingResult


class CacheStats(msgspec.Struct, frozen=True):
    hits: int
    misses: int
    entries: int


def cache_key(model: str, dimensions: int | None, item: EmbeddingInput, truncate: bool) -> bytes:
    return hashlib.sha256(msgspec.json.encode([model, dimensions, truncate, item])).digest()


@runtime_checkable  # Litestar checks a dependency's type with isinstance()
class EmbeddingCache(Protocol):
    max_entries: int

    async def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The cached vectors of those `keys` that are cached (each marked as used now)."""
        ...

    async def put_many(self, items: dict[bytes, np.ndarray]) -> None:
        """Cache these, dropping the least recently used past max_entries."""
        ...

    def stats(self) -> CacheStats:
        """In memory: no storage is read."""
        ...

    def close(self) -> None: ...


class HitCounter:
    """Hits and misses since start (per process; with replicas, per replica), shared by both caches."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def count(self, asked: Sequence[bytes], found: dict[bytes, np.ndarray]) -> None:
        with self._lock:
            self.hits += len(found)
            self.misses += len(set(asked)) - len(found)


def _cache_table(db: sqlite3.Connection) -> None:
    """Version 1 (IF NOT EXISTS: a file from before schema versions has it)."""
    db.execute("CREATE TABLE IF NOT EXISTS embeddings (key BLOB PRIMARY KEY, vector BLOB NOT NULL, used REAL NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used)")


SQLITE_MIGRATIONS = [_cache_table]


class SqliteEmbeddingCache:
    def __init__(self, db: Database, max_entries: int) -> None:
        """`db`: opened with synchronous=NORMAL (a cache: losing the last writes in a power cut is fine)."""
        self.max_entries = max_entries
        self.counter = HitCounter()
        self._writing = threading.Lock()  # one writer at a time, and the entry count with it
        self._db = db
        db.migrate(SQLITE_MIGRATIONS)
        # Kept up to date by put_many, so neither writes nor stats scan the table.
        self._entries = db.execute("SELECT count(*) FROM embeddings").fetchone()[0]

    async def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        def get_many() -> dict[bytes, np.ndarray]:
            rows = self._db.select_in("SELECT key, vector FROM embeddings WHERE key IN ({marks})", keys)
            found = {key: np.frombuffer(blob, dtype="<f4") for key, blob in rows}
            if found:
                with self._writing, self._db.transaction() as db:
                    db.executemany("UPDATE embeddings SET used = ? WHERE key = ?", [(time.time(), k) for k in found])
            return found

        found = await self._db.run(get_many)
        self.counter.count(keys, found)
        return found

    async def put_many(self, items: dict[bytes, np.ndarray]) -> None:
        def put_many() -> None:
            now = time.time()
            keys = list(items)
            with self._writing:
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

        await self._db.run(put_many)

    def stats(self) -> CacheStats:
        return CacheStats(self.counter.hits, self.counter.misses, self._entries)

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
        self.prompts = inner.prompts

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions  # a remote model may learn it only at start

    async def start(self) -> None:
        await self.inner.start()

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_offsets(text)

    async def embed(
        self, inputs: Sequence[EmbeddingInput], dimensions: int | None = None, truncate: bool = False,
        bulk: bool = False,
    ) -> EmbeddingResult:  # fmt: skip
        keys = [cache_key(self.inner.model_id, dimensions, item, truncate) for item in inputs]
        found = await self.cache.get_many(keys)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        tokens = 0
        if missing:
            first_input = {k: inputs[i] for i, k in reversed(list(enumerate(keys)))}
            result = await self.inner.embed([first_input[k] for k in missing], dimensions, truncate, bulk)
            fresh = dict(zip(missing, result.vectors, strict=True))
            await self.cache.put_many(fresh)
            found.update(fresh)
            tokens = result.prompt_tokens
        return EmbeddingResult(np.stack([found[k] for k in keys]).astype(np.float32), tokens)

    def close(self) -> None:
        self.inner.close()


PG_MIGRATIONS = [[
    "CREATE UNLOGGED TABLE IF NOT EXISTS vsearch_embedding_cache (key bytea PRIMARY KEY, "
    "vector bytea NOT NULL, used double precision NOT NULL)",  # unlogged: a cache, rebuilt by use
    "CREATE INDEX IF NOT EXISTS vsearch_embedding_cache_used ON vsearch_embedding_cache (used)",
]]  # fmt: skip


class PgEmbeddingCache:
    """The same cache in PostgreSQL, shared by replicas (hits and misses are counted per replica)."""

    def __init__(self, db: PgDatabase, max_entries: int) -> None:
        self.max_entries = max_entries
        self.counter = HitCounter()
        self._db = db
        db.migrate("cache", PG_MIGRATIONS)
        self._entries = int(db.execute("SELECT count(*) FROM vsearch_embedding_cache")[0][0])

    async def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        rows = await self._db.run(
            self._db.execute,
            "UPDATE vsearch_embedding_cache SET used = %s WHERE key = ANY(%s) RETURNING key, vector",
            (time.time(), list(keys)),
        )
        found = {bytes(key): np.frombuffer(bytes(blob), dtype="<f4") for key, blob in rows}
        self.counter.count(keys, found)
        return found

    async def put_many(self, items: dict[bytes, np.ndarray]) -> None:
        def put_many() -> None:
            now = time.time()
            with self._db.transaction() as conn:
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

        await self._db.run(put_many)

    def stats(self) -> CacheStats:
        return CacheStats(self.counter.hits, self.counter.misses, self._entries)

    def close(self) -> None:
        pass  # the database belongs to whoever made it
