"""Where fine-tuned adapters' weights are kept: files under the data dir, or PostgreSQL (every replica loads them)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Protocol

import numpy as np

from indexes.postgres.database import PgDatabase

PG_SCHEMA = ["CREATE TABLE IF NOT EXISTS vsearch_adapters (name text PRIMARY KEY, weights bytea NOT NULL)"]


class AdapterStore(Protocol):
    def save(self, name: str, weights: np.ndarray) -> None: ...

    def load(self, name: str) -> np.ndarray | None:
        """The weights saved under `name`, or None."""
        ...


class AdapterFiles:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, name: str, weights: np.ndarray) -> None:
        np.save(self.folder / f"{name}.npy", weights)

    def load(self, name: str) -> np.ndarray | None:
        path = self.folder / f"{name}.npy"
        return np.load(path) if path.exists() else None


class PgAdapters:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        db.migrate(PG_SCHEMA)

    def save(self, name: str, weights: np.ndarray) -> None:
        out = io.BytesIO()
        np.save(out, weights)
        self._db.execute(
            "INSERT INTO vsearch_adapters VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET weights = excluded.weights",
            (name, out.getvalue()),
        )

    def load(self, name: str) -> np.ndarray | None:
        rows = self._db.execute("SELECT weights FROM vsearch_adapters WHERE name = %s", (name,))
        return np.load(io.BytesIO(bytes(rows[0][0]))) if rows else None
