"""PgDatabase: the one way this project touches PostgreSQL (indexes, files, jobs, adapters, the embedding cache).

A pool of connections in autocommit mode (transactions are explicit), each with pgvector's types registered and a
statement timeout; schema changes run under an advisory lock, so replicas that start together never race on them.
PostgreSQL being unreachable or too slow becomes StorageUnavailable (503), never a 500. As with SQLite
(indexes/databases/sqlite.py), the async boundary is here (`await db.run(work)`; no connection on an event loop's
thread) and so is the schema version: each component (catalog, files, jobs, adapters, cache) has a row in
`vsearch_schema`, and `migrate(component, steps)` runs its numbered steps in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector

from indexes.databases.loop import forbid_event_loop, run
from indexes.errors import SchemaTooNew, StorageUnavailable

MIGRATION_LOCK = 0x76736561726368  # "vsearch": the advisory lock key schema changes take
# A schema step: its statements, or a function of the connection (inside the migration's transaction). Step N
# (1-based) brings a component at version N-1 to N; the first steps are CREATE ... IF NOT EXISTS, so that tables an
# older vsearch made before versions were recorded (version 0) pass through them unharmed.
PgMigration = Sequence[str] | Callable[[psycopg.Connection], None]
VERSIONS = "CREATE TABLE IF NOT EXISTS vsearch_schema (component text PRIMARY KEY, version integer NOT NULL)"


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
        forbid_event_loop("PostgreSQL")
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

    run = staticmethod(run)  # await db.run(work, *args): `work` in a worker thread, the only way in from async code

    def migrate(self, component: str, steps: Sequence[PgMigration]) -> int:
        """Bring `component` to version len(steps), in one transaction under the lock (replicas that start together
        take turns); returns the version found. SchemaTooNew for a database written by a newer vsearch."""
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(VERSIONS)  # type: ignore[arg-type]
            row = conn.execute("SELECT version FROM vsearch_schema WHERE component = %s", (component,)).fetchone()
            found = row[0] if row else 0
            if found > len(steps):
                raise SchemaTooNew(f"PostgreSQL's {component} tables", found, len(steps))
            for step in steps[found:]:
                if callable(step):
                    step(conn)
                else:
                    for statement in step:
                        conn.execute(statement)  # type: ignore[arg-type]
            conn.execute(
                "INSERT INTO vsearch_schema VALUES (%s, %s) ON CONFLICT (component) DO UPDATE SET version = %s",
                (component, len(steps), len(steps)),
            )
        return found

    def versions(self) -> dict[str, int]:
        """Each component's schema version."""
        self.execute(VERSIONS)
        return dict(self.execute("SELECT component, version FROM vsearch_schema"))  # type: ignore[arg-type]

    def close(self) -> None:
        self.pool.close()
