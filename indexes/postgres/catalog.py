"""PgCatalog: the named indexes in PostgreSQL (the CatalogContract's second implementation).

`vsearch_indexes` holds each index's name, config and table prefix (`vs{id}`: a name made anew gets new tables,
so a store still lent out for a deleted index fails with IndexNotFound instead of reading its successor). Creating
or deleting an index is one transaction: its row and its tables appear, or go, together. So is a restore: new
tables filled by COPY under a row of a temporary name, indexed, then the old row and tables dropped and the new row
renamed, all committed at once (a crash part-way leaves nothing behind; a reader that waited on the swap finds the
old tables gone and its store raises IndexReplaced). A store is a thin view
built from the row at each acquire(), so a config changed through another replica is seen at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from indexes.config import IndexConfig, check_config, check_name
from indexes.databases.postgres import PgDatabase
from indexes.errors import IndexExists, IndexNotFound, InvalidConfig
from indexes.postgres.filters import FUNCTIONS
from indexes.postgres.store import TEXT_SEARCH_CONFIGS, PgIndexStore, schema, table_indexes, tables
from indexes.values import DocumentRecord, PathObserver

SCHEMA = [
    *FUNCTIONS,
    "CREATE TABLE IF NOT EXISTS vsearch_indexes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "name text UNIQUE NOT NULL, config jsonb NOT NULL)",
]


def _offered(config: IndexConfig) -> IndexConfig:
    if config.lexical_tokenizer not in TEXT_SEARCH_CONFIGS:
        raise InvalidConfig(
            f"lexical_tokenizer '{config.lexical_tokenizer}' is not offered with PostgreSQL storage; use one of "
            f"{sorted(TEXT_SEARCH_CONFIGS)}.",
            "lexical_tokenizer",
        )
    return config


def _copy_batch(cursor: psycopg.Cursor, table: str, batch: Sequence[DocumentRecord]) -> None:
    """One batch of documents and their chunks into the restore's tables, by binary COPY."""
    now = time.time()
    with cursor.copy(f"COPY {table}_documents FROM STDIN (FORMAT BINARY)") as copy:  # type: ignore[arg-type]
        copy.set_types(["text", "text", "jsonb", "text", "int4", "float8", "float8"])
        for doc in batch:
            copy.write_row((doc.doc_id, doc.text, Jsonb(doc.metadata), doc.content_hash, len(doc.chunks),
                            doc.created_at or now, doc.updated_at or now))  # fmt: skip
    with cursor.copy("COPY restored_chunks FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "int4", "int4", "int4", "vector"])
        for doc in batch:
            for index, chunk in enumerate(doc.chunks):
                copy.write_row((doc.doc_id, index, chunk.start, chunk.end, chunk.vector))


class PgCatalog:
    def __init__(self, db: PgDatabase, on_search: PathObserver | None = None) -> None:
        """`on_search`: told the path of each search (/metrics)."""
        self.db = db
        self._on_search = on_search
        db.migrate("catalog", [SCHEMA])

    def create(self, config: IndexConfig) -> None:
        config = _offered(check_config(msgspec.structs.replace(config, created_at=int(time.time()))))
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

    def restore(self, config: IndexConfig, batches: Iterable[Sequence[DocumentRecord]]) -> None:
        config = _offered(check_config(config))
        text_config = TEXT_SEARCH_CONFIGS[config.lexical_tokenizer]
        with self.db.transaction() as conn:
            conn.execute("SET LOCAL statement_timeout = 0")  # building an HNSW index over a large table takes long
            (index_id,) = conn.execute(
                "INSERT INTO vsearch_indexes (name, config) VALUES (%s, %s) RETURNING id",
                (f".restore-{uuid.uuid4().hex}", Jsonb(msgspec.to_builtins(config))),
            ).fetchone()  # type: ignore[misc]
            table = f"vs{int(index_id)}"
            for statement in tables(table, config):
                conn.execute(statement)  # type: ignore[arg-type]
            conn.execute(
                f'CREATE TEMP TABLE restored_chunks (doc_id text COLLATE "C", chunk_index integer, start integer, '
                f'"end" integer, embedding vector({config.dimensions})) ON COMMIT DROP'
            )
            with conn.cursor() as cursor:
                for batch in batches:
                    _copy_batch(cursor, table, batch)
            # Each chunk's metadata and lexical vector are derived from its document, as upsert does.
            conn.execute(
                f'INSERT INTO {table}_chunks (doc_id, chunk_index, start, "end", metadata, embedding, lexical) '
                f'SELECT c.doc_id, c.chunk_index, c.start, c."end", d.metadata, c.embedding, '
                f"to_tsvector('{text_config}', substr(d.text, c.start + 1, c.\"end\" - c.start)) "
                f"FROM restored_chunks c JOIN {table}_documents d USING (doc_id) ORDER BY c.doc_id, c.chunk_index"
            )  # type: ignore[arg-type]
            for statement in table_indexes(table, config):
                conn.execute(statement)  # type: ignore[arg-type]
            old = conn.execute("DELETE FROM vsearch_indexes WHERE name = %s RETURNING id", (config.name,)).fetchone()
            if old is not None:  # waits for the searches reading it; those after find it gone
                conn.execute(f"DROP TABLE vs{int(old[0])}_chunks, vs{int(old[0])}_documents")
            conn.execute("UPDATE vsearch_indexes SET name = %s WHERE id = %s", (config.name, index_id))

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
