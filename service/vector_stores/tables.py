"""VectorStoreTables: vector stores, their files and file batches, as records in SQLite (one node: the data dir) or
PostgreSQL (shared by replicas). The SQL is written once, portable; a Dialect says what differs (placeholders, the
row lock of a claim, the clock, the schema steps).

Files are processed by whoever claims them: claim() takes the oldest `in_progress` file nobody holds (or whose
holder's lease ran out: it died) and holds it under a lease that renew() extends, as fine-tuning's jobs are claimed.
A record is written whole (its JSON body) together with the columns that are queried (status, batch, lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from indexes.databases.postgres import PgDatabase
from indexes.databases.sqlite import Database, sqlite3
from service.errors import NotFound
from service.finetune.files import Order
from service.finetune.jobs import Page
from service.vector_stores.records import FileBatch, FileCounts, FileStatus, VectorStore, VectorStoreFile

T = TypeVar("T")

SQLITE_TABLES = [
    "CREATE TABLE vector_stores (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, "
    "body TEXT NOT NULL, expires_at INTEGER, expired INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE vector_store_files (seq INTEGER PRIMARY KEY AUTOINCREMENT, store_id TEXT NOT NULL, "
    "file_id TEXT NOT NULL, batch_id TEXT, status TEXT NOT NULL, usage_bytes INTEGER NOT NULL, body TEXT NOT NULL, "
    "owner TEXT, lease_until REAL, UNIQUE (store_id, file_id))",
    "CREATE TABLE vector_store_batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, "
    "store_id TEXT NOT NULL, body TEXT NOT NULL, cancelled INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX vector_store_files_status ON vector_store_files (status, seq)",
    "CREATE INDEX vector_store_files_batch ON vector_store_files (store_id, batch_id)",
]
PG_TABLES = [
    statement.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    .replace("INTEGER", "bigint")
    .replace("REAL", "double precision")
    .replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ")
    .replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ")
    for statement in SQLITE_TABLES
]


@dataclass(frozen=True)
class Dialect:
    transaction: Callable[[], AbstractContextManager[Any]]  # a connection inside BEGIN ... COMMIT
    read: Callable[[], AbstractContextManager[Any]]  # a connection for reads only (no write lock taken)
    run: Callable[..., Any]  # the database's run(): blocking work off the event loop
    mark: str  # the placeholder
    lock_skip: str  # appended to the claim's SELECT: rows another replica is claiming are skipped
    now: str  # SQL for the time, in seconds since the epoch (leases use the database's clock)
    close: Callable[[], None]  # a SQLite file is the tables' own; a PostgreSQL pool belongs to its maker


def sqlite_dialect(db: Database) -> Dialect:
    """The records' work runs on one thread of their own: one connection, so a few file descriptors, not three on
    every worker thread that ever touched them (a server under a low `ulimit -n` has none to spare)."""

    def tables(conn: sqlite3.Connection) -> None:
        for statement in SQLITE_TABLES:
            conn.execute(statement)

    db.migrate([tables])
    thread = ThreadPoolExecutor(1, thread_name_prefix="vector-stores")

    async def run(work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(thread, functools.partial(work, *args))

    def close() -> None:
        thread.shutdown(wait=True)
        db.close()

    return Dialect(transaction=db.transaction, read=lambda: contextlib.nullcontext(db.conn), run=run, mark="?",
                   lock_skip="", now="((julianday('now') - 2440587.5) * 86400.0)", close=close)  # fmt: skip


def pg_dialect(db: PgDatabase) -> Dialect:
    db.migrate("vector_stores", [PG_TABLES])
    return Dialect(
        transaction=db.transaction,
        read=lambda: db.transaction(snapshot=True),
        run=db.run,
        mark="%s",
        lock_skip=" FOR UPDATE SKIP LOCKED",
        now="extract(epoch from now())",
        close=lambda: None,
    )


def store_not_found(store_id: str) -> NotFound:
    return NotFound(f"No vector store found with id '{store_id}'.", param="vector_store_id",
                    code="vector_store_not_found")  # fmt: skip


def file_not_found(store_id: str, file_id: str) -> NotFound:
    return NotFound(f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id",
                    code="file_not_found")  # fmt: skip


def batch_not_found(batch_id: str) -> NotFound:
    return NotFound(f"No file batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found")


class VectorStoreTables:
    def __init__(self, dialect: Dialect) -> None:
        self._d = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self._d.mark)

    def _rows(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return list(conn.execute(self._sql(sql), tuple(params)).fetchall())

    def _exec(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> int:
        return conn.execute(self._sql(sql), tuple(params)).rowcount

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; the rows it changed."""
        return await self._run(lambda conn: self._exec(conn, sql, params))

    async def _run(self, work: Callable[[Any], T]) -> T:
        """`work(conn)` in a write transaction, in a worker thread."""

        def in_transaction() -> T:
            with self._d.transaction() as conn:
                return work(conn)

        return await self._d.run(in_transaction)

    async def _read(self, work: Callable[[Any], T]) -> T:
        """`work(conn)` reading only, in a worker thread (on SQLite, beside the writer rather than behind it)."""

        def reading() -> T:
            with self._d.read() as conn:
                return work(conn)

        return await self._d.run(reading)

    # --- stores -------------------------------------------------------------------------------------------------

    async def create_store(self, store: VectorStore) -> None:
        await self._write("INSERT INTO vector_stores (id, body, expires_at) VALUES (?, ?, ?)",
                          (store.id, _json(store), store.expires_at))  # fmt: skip

    def _store(self, conn: Any, store_id: str) -> VectorStore:
        rows = self._rows(conn, "SELECT body, expired FROM vector_stores WHERE id = ?", (store_id,))
        if not rows:
            raise store_not_found(store_id)
        return self._with_counts(conn, msgspec.json.decode(rows[0][0], type=VectorStore), bool(rows[0][1]))

    def _with_counts(self, conn: Any, store: VectorStore, expired: bool) -> VectorStore:
        counts, usage = self._counts(conn, "store_id = ?", (store.id,))
        status = "expired" if expired else "in_progress" if counts.in_progress else "completed"
        return msgspec.structs.replace(store, file_counts=counts, usage_bytes=usage, status=status)

    def _counts(self, conn: Any, where: str, params: Sequence[Any]) -> tuple[FileCounts, int]:
        rows = self._rows(conn, f"SELECT status, count(*), coalesce(sum(usage_bytes), 0) FROM vector_store_files "
                                f"WHERE {where} GROUP BY status", params)  # fmt: skip
        by_status = {status: int(count) for status, count, _ in rows}
        counts = FileCounts(total=sum(by_status.values()), **by_status)
        return counts, sum(int(usage) for *_, usage in rows)

    async def get_store(self, store_id: str) -> VectorStore:
        return await self._read(lambda conn: self._store(conn, store_id))

    async def list_stores(self, limit: int, order: Order, after: str | None, before: str | None) -> Page[VectorStore]:
        def stores(conn: Any) -> Page[VectorStore]:
            rows, more = self._page(conn, "vector_stores", "body, expired", "1 = 1", (), limit, order, after, before)
            found = [self._with_counts(conn, msgspec.json.decode(body, type=VectorStore), bool(e)) for body, e in rows]
            return found, more

        return await self._read(stores)

    def _page(
        self, conn: Any, table: str, columns: str, where: str, params: Sequence[Any], limit: int, order: Order,
        after: str | None, before: str | None, cursor_column: str = "id", status: str | None = None,
    ) -> tuple[list[tuple], bool]:  # fmt: skip
        """A page of the rows of `table` that match `where` (and `status`, if given), in seq order (`order`), after
        the row whose `cursor_column` is `after` or before the one that is `before` (the cursor row need not have
        the status); and whether more follow (limit + 1 rows are read)."""
        clauses, values = [where], list(params)
        if status is not None:
            clauses, values = [*clauses, "status = ?"], [*values, status]
        scan = order
        for cursor, forward in ((after, True), (before, False)):
            if cursor is None:
                continue
            seq = self._rows(conn, f"SELECT seq FROM {table} WHERE {where} AND {cursor_column} = ?", [*params, cursor])
            if not seq:
                raise NotFound(f"No object with id '{cursor}' to page from.", param="after" if forward else "before")
            greater = (order == "asc") == forward
            clauses.append(f"seq {'>' if greater else '<'} ?")
            values.append(seq[0][0])
            if not forward:  # read backwards from the cursor, then put the page back in order
                scan = "desc" if order == "asc" else "asc"
        rows = self._rows(conn, f"SELECT {columns} FROM {table} WHERE {' AND '.join(clauses)} "
                                f"ORDER BY seq {scan.upper()} LIMIT ?", [*values, limit + 1])  # fmt: skip
        page, more = rows[:limit], len(rows) > limit
        return (page[::-1] if scan != order else page), more

    async def update_store(self, store_id: str, change: Callable[[VectorStore], VectorStore]) -> VectorStore:
        """Read, change and write the store in one transaction."""

        def update(conn: Any) -> VectorStore:
            store = change(self._store(conn, store_id))
            self._exec(conn, "UPDATE vector_stores SET body = ?, expires_at = ? WHERE id = ?",
                       (_json(store), store.expires_at, store_id))  # fmt: skip
            return self._store(conn, store_id)

        return await self._run(update)

    async def delete_store(self, store_id: str) -> None:
        def delete(conn: Any) -> None:
            if not self._exec(conn, "DELETE FROM vector_stores WHERE id = ?", (store_id,)):
                raise store_not_found(store_id)
            self._exec(conn, "DELETE FROM vector_store_files WHERE store_id = ?", (store_id,))
            self._exec(conn, "DELETE FROM vector_store_batches WHERE store_id = ?", (store_id,))

        await self._run(delete)

    async def expire(self, now: float) -> list[str]:
        """Mark the stores whose time has come expired; returns them (each is returned once, to one caller)."""

        def expire(conn: Any) -> list[str]:
            rows = self._rows(conn, "SELECT id FROM vector_stores WHERE expired = 0 AND expires_at IS NOT NULL AND "
                                    f"expires_at <= ?{self._d.lock_skip}", (now,))  # fmt: skip
            for (store_id,) in rows:
                self._exec(conn, "UPDATE vector_stores SET expired = 1 WHERE id = ?", (store_id,))
                self._exec(conn, "DELETE FROM vector_store_files WHERE store_id = ?", (store_id,))
            return [row[0] for row in rows]

        return await self._run(expire)

    # --- files --------------------------------------------------------------------------------------------------

    async def attach(self, store_id: str, files: Sequence[VectorStoreFile]) -> None:
        """Attach files (again, for one attached before: it is processed anew), all in one transaction."""

        def attach(conn: Any) -> None:
            self._store(conn, store_id)
            for file in files:
                self._exec(
                    conn,
                    "INSERT INTO vector_store_files (store_id, file_id, batch_id, status, usage_bytes, body) "
                    "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (store_id, file_id) DO UPDATE SET "
                    "batch_id = excluded.batch_id, status = excluded.status, usage_bytes = 0, body = excluded.body, "
                    "owner = NULL, lease_until = NULL",
                    (store_id, file.id, file.batch_id, file.status, _json(file)),
                )

        await self._run(attach)

    def _file(self, conn: Any, store_id: str, file_id: str) -> VectorStoreFile:
        rows = self._rows(conn, "SELECT body FROM vector_store_files WHERE store_id = ? AND file_id = ?",
                          (store_id, file_id))  # fmt: skip
        if not rows:
            self._store(conn, store_id)
            raise file_not_found(store_id, file_id)
        return msgspec.json.decode(rows[0][0], type=VectorStoreFile)

    async def get_file(self, store_id: str, file_id: str) -> VectorStoreFile:
        return await self._read(lambda conn: self._file(conn, store_id, file_id))

    async def list_files(
        self, store_id: str, status: FileStatus | None, batch_id: str | None, limit: int, order: Order,
        after: str | None, before: str | None,
    ) -> Page[VectorStoreFile]:  # fmt: skip
        def files(conn: Any) -> Page[VectorStoreFile]:
            self._store(conn, store_id)
            where, params = "store_id = ?", [store_id]
            if batch_id is not None:
                where, params = where + " AND batch_id = ?", [*params, batch_id]
            rows, more = self._page(conn, "vector_store_files", "body", where, params, limit, order, after, before,
                                    cursor_column="file_id", status=status)  # fmt: skip
            return [msgspec.json.decode(body, type=VectorStoreFile) for (body,) in rows], more

        return await self._read(files)

    async def update_file(
        self, store_id: str, file_id: str, change: Callable[[VectorStoreFile], VectorStoreFile | None],
        owner: str | None = None,
    ) -> VectorStoreFile | None:  # fmt: skip
        """Read, change and write a file in one transaction; `change` returns None to leave it as it is. With
        `owner`: only while that worker holds the file (a file attached again meanwhile is no longer its). Returns
        the file as written, or None if nothing was written."""

        def update(conn: Any) -> VectorStoreFile | None:
            if owner is not None:
                held = self._rows(conn, "SELECT owner FROM vector_store_files WHERE store_id = ? AND file_id = ?",
                                  (store_id, file_id))  # fmt: skip
                if not held or held[0][0] != owner:
                    return None
            file = change(self._file(conn, store_id, file_id))
            if file is None:
                return None
            self._write_file(conn, file)
            return file

        return await self._run(update)

    def _write_file(self, conn: Any, file: VectorStoreFile) -> None:
        done = file.status != "in_progress"  # a finished file is held by nobody
        self._exec(conn, "UPDATE vector_store_files SET status = ?, usage_bytes = ?, body = ?"
                         + (", owner = NULL, lease_until = NULL" if done else "")
                         + " WHERE store_id = ? AND file_id = ?",
                   (file.status, file.usage_bytes, _json(file), file.vector_store_id, file.id))  # fmt: skip

    async def detach(self, store_id: str, file_id: str) -> None:
        def detach(conn: Any) -> None:
            self._file(conn, store_id, file_id)
            self._exec(conn, "DELETE FROM vector_store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id))

        await self._run(detach)

    async def claim(self, owner: str, lease_s: float) -> VectorStoreFile | None:
        """The oldest file waiting to be processed that nobody holds, now held by `owner` for `lease_s`."""

        def claim(conn: Any) -> VectorStoreFile | None:
            rows = self._rows(
                conn,
                "SELECT store_id, file_id FROM vector_store_files WHERE status = 'in_progress' AND "
                f"(lease_until IS NULL OR lease_until < {self._d.now}) ORDER BY seq LIMIT 1{self._d.lock_skip}",
            )
            if not rows:
                return None
            self._exec(conn, f"UPDATE vector_store_files SET owner = ?, lease_until = {self._d.now} + ? "
                             "WHERE store_id = ? AND file_id = ?", (owner, lease_s, *rows[0]))  # fmt: skip
            return self._file(conn, *rows[0])

        return await self._run(claim)

    async def renew(self, file: VectorStoreFile, owner: str, lease_s: float) -> bool:
        """Extend `owner`'s lease on `file`; False if it no longer holds it."""
        changed = await self._write(f"UPDATE vector_store_files SET lease_until = {self._d.now} + ? WHERE store_id = ? "
                                    "AND file_id = ? AND owner = ? AND status = 'in_progress'",
                                    (lease_s, file.vector_store_id, file.id, owner))  # fmt: skip
        return bool(changed)

    async def release_all(self) -> None:
        """Forget every lease (one node alone: whoever held them died with the last process)."""
        await self._write("UPDATE vector_store_files SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL")

    # --- batches ------------------------------------------------------------------------------------------------

    async def create_batch(self, batch: FileBatch, files: Sequence[VectorStoreFile]) -> None:
        await self._write("INSERT INTO vector_store_batches (id, store_id, body) VALUES (?, ?, ?)",
                          (batch.id, batch.vector_store_id, _json(batch)))  # fmt: skip
        await self.attach(batch.vector_store_id, files)

    def _batch(self, conn: Any, store_id: str, batch_id: str) -> FileBatch:
        rows = self._rows(conn, "SELECT body, cancelled FROM vector_store_batches WHERE id = ? AND store_id = ?",
                          (batch_id, store_id))  # fmt: skip
        if not rows:
            self._store(conn, store_id)
            raise batch_not_found(batch_id)
        batch = msgspec.json.decode(rows[0][0], type=FileBatch)
        counts, _ = self._counts(conn, "store_id = ? AND batch_id = ?", (store_id, batch_id))
        status = "cancelled" if rows[0][1] else "in_progress" if counts.in_progress else "completed"
        return msgspec.structs.replace(batch, file_counts=counts, status=status)

    async def get_batch(self, store_id: str, batch_id: str) -> FileBatch:
        return await self._read(lambda conn: self._batch(conn, store_id, batch_id))

    async def cancel_batch(self, store_id: str, batch_id: str) -> FileBatch:
        """The batch's files not processed yet are cancelled (one being processed is dropped when it ends)."""

        def cancel(conn: Any) -> FileBatch:
            self._batch(conn, store_id, batch_id)
            self._exec(conn, "UPDATE vector_store_batches SET cancelled = 1 WHERE id = ?", (batch_id,))
            rows = self._rows(conn, "SELECT body FROM vector_store_files WHERE store_id = ? AND batch_id = ? AND "
                                    "status = 'in_progress'", (store_id, batch_id))  # fmt: skip
            for (body,) in rows:
                file = msgspec.json.decode(body, type=VectorStoreFile)
                self._write_file(conn, msgspec.structs.replace(file, status="cancelled"))
            return self._batch(conn, store_id, batch_id)

        return await self._run(cancel)

    def close(self) -> None:
        self._d.close()


def _json(record: msgspec.Struct) -> str:
    return msgspec.json.encode(record).decode()
