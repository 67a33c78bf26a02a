"""Database: the one way this project touches SQLite (indexes, jobs, files, the embedding cache). Whoever needs the
driver's module (its errors, a connection of their own) imports `sqlite3` from here: it may not be Python's own.

One connection per thread (WAL lets readers run beside the writer), explicit transactions, and `IN (...)` lists
batched under SQLite's bound-parameter limit. The async boundary is here: `await db.run(work)` runs storage work in
a worker thread, and a connection is never handed out on a thread that runs an event loop (BlockingCallOnLoop).
The schema version is here too: `migrate(steps)` runs numbered steps in order and records the version in the
file's header (PRAGMA user_version); a file newer than the code is refused (SchemaTooNew).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

try:  # SQLite 3.51, where its wheel exists (Linux x86-64; pyproject.toml): FTS5 ranks by bm25() about 30% faster
    # than 3.40, which Debian 12's Python links (SciFact lexical query p50 2.38 -> 1.72 ms)
    import pysqlite3 as sqlite3
except ImportError:  # elsewhere, the SQLite that Python links
    import sqlite3

from indexes.databases.loop import forbid_event_loop, run
from indexes.errors import SchemaTooNew

IN_BATCH = 500  # values per `IN (...)`, well under SQLite's bound-parameter limit
Synchronous = Literal["FULL", "NORMAL"]
# A schema step: step N (1-based) brings a file at version N-1 to N, inside the migration's transaction. Steps are
# written so that a file an older vsearch made before versions were recorded (version 0, tables there) passes
# through them unharmed.
Migration = Callable[[sqlite3.Connection], None]


def batches(values: Sequence[Any], size: int = IN_BATCH) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


class DatabaseClosed(sqlite3.ProgrammingError):
    pass


class Database:
    def __init__(self, path: Path, synchronous: Synchronous = "FULL") -> None:
        """`synchronous`: FULL where an acknowledged write must survive power loss; NORMAL for what can be
        recomputed (a cache)."""
        self.path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, in autocommit mode (transactions are explicit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            forbid_event_loop("SQLite database", self.path.name)
            if self._closed:  # never reopen the path: another database may live there now
                raise DatabaseClosed(f"{self.path} is closed")
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            with self._lock:
                if self._closed:  # closed while this one was opening: close() could not see it
                    conn.close()
                    raise DatabaseClosed(f"{self.path} is closed")
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    run = staticmethod(run)  # await db.run(work, *args): `work` in a worker thread, the only way in from async code

    def migrate(self, steps: Sequence[Migration]) -> int:
        """Bring the file to version len(steps), each step in its own transaction with the version it reaches;
        returns the version found. SchemaTooNew for a file written by a newer vsearch."""
        found = self.version()
        if found > len(steps):
            raise SchemaTooNew(str(self.path), found, len(steps))
        for version, step in enumerate(steps[found:], start=found + 1):
            with self.transaction() as db:
                step(db)
                db.execute(f"PRAGMA user_version = {int(version)}")
        return found

    def version(self) -> int:
        return int(self.execute("PRAGMA user_version").fetchone()[0])

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (the write lock up front, so two writers never deadlock), COMMIT or ROLLBACK."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own, read-only, in one read transaction: a long read (a snapshot) sees one instant
        while writers go on beside it (WAL), and shares nothing with this thread's connection."""
        forbid_event_loop("SQLite database", self.path.name)
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN")  # the snapshot is taken at the first read
            yield conn
        finally:
            conn.close()  # ends the transaction

    def copy_to(self, target: Path) -> None:
        """This database, as of one instant, into the file `target` (made or replaced): SQLite's online backup, so
        writers may go on meanwhile (a backup of a running server), and a restore replaces a file whole."""
        forbid_event_loop("SQLite database", self.path.name)
        source = sqlite3.connect(self.path, timeout=30)
        try:
            destination = sqlite3.connect(target, timeout=30)
            try:
                source.backup(destination)
            finally:
                destination.close()
        finally:
            source.close()

    def select_in(self, sql: str, values: Sequence[Any], params: Sequence[Any] = ()) -> Iterator[tuple]:
        """Rows of `sql`, whose `{marks}` becomes the placeholders of each batch of `values` (after `params`).
        Also for DELETE ... RETURNING."""
        for part in batches(values):
            yield from self.conn.execute(sql.format(marks=",".join("?" * len(part))), [*params, *part])

    def disconnect(self) -> None:
        """Close this thread's connection: a short-lived thread's, before it ends."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
                conn.close()
        self._local.conn = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
