"""PgDatabase: the one way this project touches PostgreSQL (indexes, files, jobs, adapters, the embedding cache).

A pool of connections in autocommit mode (transactions are explicit), each with pgvector's types registered and a
statement timeout; schema changes run under an advisory lock, so replicas that start together never race on them.
PostgreSQL being unreachable or too slow becomes StorageUnavailable (503), never a 500.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector

from indexes.errors import StorageUnavailable

MIGRATION_LOCK = 0x76736561726368  # "vsearch": the advisory lock key schema changes take


class PgDatabase:
    def __init__(self, url: str, pool_size: int = 10, statement_timeout_ms: int = 30_000) -> None:
        self.url = url
        options = {"autocommit": True, "options": f"-c statement_timeout={int(statement_timeout_ms)}"}
        try:
            # The type must exist before the pool's connections register it.
            with psycopg.connect(url, **options) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"PostgreSQL is unreachable: {exc}") from None
        # check: a connection is tested as it leaves the pool (one round trip), so that connections PostgreSQL
        # dropped (a restart, a failover) are replaced instead of failing a request.
        self.pool = psycopg_pool.ConnectionPool(
            url, kwargs=options, min_size=1, max_size=pool_size, configure=register_vector, open=True, timeout=30,
            check=psycopg_pool.ConnectionPool.check_connection,
        )  # fmt: skip

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in autocommit mode."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout:
            raise StorageUnavailable("No PostgreSQL connection became free in time; retry shortly.") from None
        except psycopg.errors.QueryCanceled:
            raise StorageUnavailable("A PostgreSQL statement ran past the statement timeout.") from None
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"PostgreSQL is unreachable: {exc}") from None

    @contextmanager
    def transaction(self, snapshot: bool = False) -> Iterator[psycopg.Connection]:
        """One transaction, committed on leaving, rolled back on an error. `snapshot`: a read-only one whose
        statements all see the same moment (REPEATABLE READ), for a search's several queries."""
        with self.connection() as conn, conn.transaction():
            if snapshot:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple]:
        """One statement in its own transaction; its rows, if it returns any."""
        with self.connection() as conn:
            cursor = conn.execute(sql, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def migrate(self, statements: Sequence[str]) -> None:
        """Idempotent schema statements (CREATE ... IF NOT EXISTS), run in one transaction under the lock."""
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def close(self) -> None:
        self.pool.close()
