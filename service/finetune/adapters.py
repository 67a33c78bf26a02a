"""Where fine-tuned adapters' weights are kept: the AdapterStore Protocol, and its two implementations side by side:
AdapterFiles (.npy files under the data dir) and PgAdapters (PostgreSQL: every replica loads them). Coroutines:
the reads and writes run in a worker thread."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from indexes.databases.loop import run
from indexes.databases.postgres import PgDatabase

PG_MIGRATIONS = [["CREATE TABLE IF NOT EXISTS vsearch_adapters (name text PRIMARY KEY, weights bytea NOT NULL)"]]


@runtime_checkable  # Litestar checks a dependency's type with isinstance()
class AdapterStore(Protocol):
    async def save(self, name: str, weights: np.ndarray) -> None: ...

    async def load(self, name: str) -> np.ndarray | None:
        """The weights saved under `name`, or None."""
        ...


class AdapterFiles:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def save(self, name: str, weights: np.ndarray) -> None:
        await run(np.save, self.folder / f"{name}.npy", weights)

    async def load(self, name: str) -> np.ndarray | None:
        path = self.folder / f"{name}.npy"
        return await run(lambda: np.load(path) if path.exists() else None)


class PgAdapters:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        db.migrate("adapters", PG_MIGRATIONS)

    async def save(self, name: str, weights: np.ndarray) -> None:
        out = io.BytesIO()
        np.save(out, weights)
        await self._db.run(
            self._db.execute,
            "INSERT INTO vsearch_adapters VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET weights = excluded.weights",
            (name, out.getvalue()),
        )

    async def load(self, name: str) -> np.ndarray | None:
        rows = await self._db.run(self._db.execute, "SELECT weights FROM vsearch_adapters WHERE name = %s", (name,))
        return np.load(io.BytesIO(bytes(rows[0][0]))) if rows else None
