"""PgCatalog: the named indexes in PostgreSQL (the CatalogContract's second implementation).

`vsearch_indexes` holds each index's name, config and table prefix (`vs{id}`: a name made anew gets new tables,
so a store still lent out for a deleted index fails with IndexNotFound instead of reading its successor). Creating
or deleting an index is one transaction: its row and its tables appear, or go, together. A store is a thin view
built from the row at each acquire(), so a config changed through another replica is seen at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from indexes.config import IndexConfig, check_config, check_name
from indexes.databases.postgres import PgDatabase
from indexes.errors import IndexExists, IndexNotFound, InvalidConfig
from indexes.postgres.filters import FUNCTIONS
from indexes.postgres.store import TEXT_SEARCH_CONFIGS, PgIndexStore, schema
from indexes.values import PathObserver

SCHEMA = [
    *FUNCTIONS,
    "CREATE TABLE IF NOT EXISTS vsearch_indexes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "name text UNIQUE NOT NULL, config jsonb NOT NULL)",
]


class PgCatalog:
    def __init__(self, db: PgDatabase, on_search: PathObserver | None = None) -> None:
        """`on_search`: told the path of each search (/metrics)."""
        self.db = db
        self._on_search = on_search
        db.migrate("catalog", [SCHEMA])

    def create(self, config: IndexConfig) -> None:
        config = check_config(msgspec.structs.replace(config, created_at=int(time.time())))
        if config.lexical_tokenizer not in TEXT_SEARCH_CONFIGS:
            raise InvalidConfig(
                f"lexical_tokenizer '{config.lexical_tokenizer}' is not offered with PostgreSQL storage; use one of "
                f"{sorted(TEXT_SEARCH_CONFIGS)}.",
                "lexical_tokenizer",
            )
        try:
            with self.db.transaction() as conn:
                (index_id,) = conn.execute(
                    "INSERT INTO vsearch_indexes (name, config) VALUES (%s, %s) RETURNING id",
                    (config.name, Jsonb(msgspec.to_builtins(config))),
                ).fetchone()  # type: ignore[misc]
                for statement in schema(f"vs{index_id}", config):
                    conn.execute(statement)  # type: ignore[arg-type]
        except psycopg.errors.UniqueViolation:
            raise IndexExists(config.name) from None

    def delete(self, name: str) -> None:
        with self.db.transaction() as conn:
            row = conn.execute("DELETE FROM vsearch_indexes WHERE name = %s RETURNING id", (check_name(name),))
            found = row.fetchone()
            if found is None:
                raise IndexNotFound(name)
            conn.execute(f"DROP TABLE vs{int(found[0])}_chunks, vs{int(found[0])}_documents")

    def names(self) -> list[str]:
        return [row[0] for row in self.db.execute('SELECT name FROM vsearch_indexes ORDER BY name COLLATE "C"')]

    @contextmanager
    def use(self, name: str) -> Iterator[PgIndexStore]:
        yield self.acquire(name)

    def acquire(self, name: str) -> PgIndexStore:
        rows = self.db.execute("SELECT id, config FROM vsearch_indexes WHERE name = %s", (name,))
        if not rows:
            raise IndexNotFound(name)
        index_id, config = rows[0]
        return PgIndexStore(self.db, f"vs{int(index_id)}", msgspec.convert(config, IndexConfig), self._on_search)

    def release(self, store: PgIndexStore) -> None:
        pass  # a store holds nothing of its own

    def close(self) -> None:
        pass  # the database (and its pool) belongs to whoever made it
