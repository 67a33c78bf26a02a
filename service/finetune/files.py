"""OpenAI-style files: the FileStore Protocol, and its two implementations side by side, LocalFileStore (content on
disk under the data dir, records in SQLite) and PgFileStore (records and content in PostgreSQL, so every replica
serves every file). Both stage an upload in a Spool (its size is unknown until it ends), the part they share.

Records are read and written through coroutines (the database's run()); `chunks` and `lines` are blocking
iterators, read in a worker thread (a streamed download, a job's file validation).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, runtime_checkable

import msgspec
import sqlite_utils

from indexes.databases.loop import run
from indexes.databases.postgres import PgDatabase
from indexes.databases.sqlite import Database, sqlite3
from service.errors import InvalidRequest, NotFound, TooLarge

UPLOAD_PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}
Order = Literal["asc", "desc"]


class FileRecord(msgspec.Struct, frozen=True):
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int


class FileTooLarge(TooLarge):
    code = "file_too_large"


def check_purpose(purpose: str) -> None:
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(f"'purpose' must be one of {sorted(UPLOAD_PURPOSES)}.", param="purpose")


def file_not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")


class Spool:
    """A folder where uploads are written before they are committed: `{id}.partial` while it streams in."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def new_id() -> str:
        return f"file-{secrets.token_hex(12)}"

    def path(self, file_id: str) -> Path:
        """The file's path under the root, for a well-formed id (anything else is NotFound, never a path)."""
        if not file_id.startswith("file-") or not file_id[5:].isalnum():
            raise file_not_found(file_id)
        return self.root / file_id

    def writer(self, file_id: str) -> BinaryIO:
        """An open file to stream an upload into; the store's commit() takes it, discard() drops it."""
        return self.partial(file_id).open("wb")

    def partial(self, file_id: str) -> Path:
        return self.path(file_id).with_suffix(".partial")

    def discard(self, file_id: str) -> None:
        self.partial(file_id).unlink(missing_ok=True)


@runtime_checkable  # Litestar checks a dependency's type with isinstance()
class FileStore(Protocol):
    spool: Spool

    async def commit(self, file_id: str, filename: str, purpose: str) -> FileRecord:
        """Make the spooled upload `file_id` a file."""
        ...

    async def get(self, file_id: str) -> FileRecord: ...

    async def list(
        self, purpose: str | None, limit: int, order: Order, after: str | None
    ) -> tuple[list[FileRecord], bool]:
        """Files in upload order (`order` asc or desc), after the cursor file `after`; and whether more follow."""
        ...

    def chunks(self, file_id: str) -> Iterator[bytes]:
        """The content (blocking: iterate in a worker thread)."""
        ...

    def lines(self, file_id: str) -> Iterator[bytes]: ...

    async def delete(self, file_id: str) -> None: ...

    def close(self) -> None: ...


def page_query(
    table: str, position: str, mark: str, purpose: str | None, limit: int, order: Order, after: str | None
) -> tuple[str, list]:
    """A page of files in upload order (`position`: the column that keeps it), after the file `after`: the SQL, in
    the dialect whose placeholder is `mark`, and its parameters (limit + 1 rows: one more tells more follow)."""
    where, params = [], []
    if purpose:
        where.append(f"purpose = {mark}")
        params.append(purpose)
    if after:
        where.append(f"{position} {'<' if order == 'desc' else '>'} (SELECT {position} FROM {table} WHERE id = {mark})")
        params.append(after)
    sql = f"SELECT id, filename, purpose, bytes, created_at FROM {table}"
    sql += (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {position} {order.upper()} LIMIT {mark}"
    return sql, [*params, limit + 1]


async def save_bytes(files: FileStore, filename: str, purpose: str, content: bytes) -> FileRecord:
    """A file made from bytes in memory (a job's result), as an upload would be: spooled, then committed."""
    file_id = files.spool.new_id()
    await run(files.spool.partial(file_id).write_bytes, content)
    return await files.commit(file_id, filename, purpose)


def split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        *complete, rest = (rest + chunk).split(b"\n")
        yield from (line + b"\n" for line in complete)
    if rest:
        yield rest


# --- on disk, records in SQLite ---------------------------------------------------------------------------------


def _files_table(db: sqlite3.Connection) -> None:
    """Version 1 (IF NOT EXISTS: a file from before schema versions has it)."""
    sqlite_utils.Database(db)["files"].create(
        {"id": str, "filename": str, "purpose": str, "bytes": int, "created_at": int}, pk="id", if_not_exists=True
    )


SQLITE_MIGRATIONS = [_files_table]


class LocalFileStore:
    def __init__(self, spool: Spool, db: Database) -> None:
        """`spool`: the folder the files live in (an upload is renamed into place); `db`: their records."""
        self.spool = spool
        self._db = db
        db.migrate(SQLITE_MIGRATIONS)

    async def commit(self, file_id: str, filename: str, purpose: str) -> FileRecord:
        def commit() -> FileRecord:
            path = self.spool.path(file_id)
            self.spool.partial(file_id).replace(path)
            record = FileRecord(file_id, filename, purpose, path.stat().st_size, int(time.time()))
            self._db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", msgspec.structs.astuple(record))
            return record

        return await self._db.run(commit)

    def _get(self, file_id: str) -> FileRecord:
        self.spool.path(file_id)
        row = self._db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            raise file_not_found(file_id)
        return FileRecord(*row)

    async def get(self, file_id: str) -> FileRecord:
        return await self._db.run(self._get, file_id)

    async def list(
        self, purpose: str | None, limit: int, order: Order, after: str | None
    ) -> tuple[list[FileRecord], bool]:
        def files() -> tuple[list[FileRecord], bool]:
            if after:
                self._get(after)
            sql, params = page_query("files", "rowid", "?", purpose, limit, order, after)
            rows = self._db.execute(sql, params).fetchall()
            return [FileRecord(*row) for row in rows[:limit]], len(rows) > limit

        return await self._db.run(files)

    def chunks(self, file_id: str, size: int = 1 << 16) -> Iterator[bytes]:
        self._get(file_id)
        with self.spool.path(file_id).open("rb") as f:
            while chunk := f.read(size):
                yield chunk

    def lines(self, file_id: str) -> Iterator[bytes]:
        self._get(file_id)
        with self.spool.path(file_id).open("rb") as f:
            yield from f

    async def delete(self, file_id: str) -> None:
        def delete() -> None:
            self._get(file_id)
            self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))
            self.spool.path(file_id).unlink(missing_ok=True)

        await self._db.run(delete)

    def close(self) -> None:
        self._db.close()


# --- PostgreSQL -------------------------------------------------------------------------------------------------

PART_BYTES = 1 << 20  # a file's bytes are stored in PostgreSQL in parts of this size
PG_MIGRATIONS = [[
    "CREATE TABLE IF NOT EXISTS vsearch_files (seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE, "
    "id text PRIMARY KEY, filename text NOT NULL, purpose text NOT NULL, bytes bigint NOT NULL, "
    "created_at bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS vsearch_file_parts (file_id text REFERENCES vsearch_files ON DELETE CASCADE, "
    "part integer NOT NULL, content bytea NOT NULL, PRIMARY KEY (file_id, part))",
]]  # fmt: skip


class PgFileStore:
    """An upload goes from the spool into the database with its record, in one transaction."""

    def __init__(self, spool: Spool, db: PgDatabase) -> None:
        self.spool = spool
        self._db = db
        db.migrate("files", PG_MIGRATIONS)

    async def commit(self, file_id: str, filename: str, purpose: str) -> FileRecord:
        def commit() -> FileRecord:
            partial = self.spool.partial(file_id)
            try:
                record = FileRecord(file_id, filename, purpose, partial.stat().st_size, int(time.time()))
                with self._db.transaction() as conn, partial.open("rb") as f:
                    conn.execute("INSERT INTO vsearch_files (id, filename, purpose, bytes, created_at) "
                                 "VALUES (%s, %s, %s, %s, %s)", msgspec.structs.astuple(record))  # fmt: skip
                    part = 0
                    while content := f.read(PART_BYTES):
                        conn.execute("INSERT INTO vsearch_file_parts VALUES (%s, %s, %s)", (file_id, part, content))
                        part += 1
            finally:
                partial.unlink(missing_ok=True)
            return record

        return await self._db.run(commit)

    def _get(self, file_id: str) -> FileRecord:
        self.spool.path(file_id)
        rows = self._db.execute(
            "SELECT id, filename, purpose, bytes, created_at FROM vsearch_files WHERE id = %s", (file_id,)
        )
        if not rows:
            raise file_not_found(file_id)
        return FileRecord(*rows[0])

    async def get(self, file_id: str) -> FileRecord:
        return await self._db.run(self._get, file_id)

    async def list(
        self, purpose: str | None, limit: int, order: Order, after: str | None
    ) -> tuple[list[FileRecord], bool]:
        def files() -> tuple[list[FileRecord], bool]:
            if after:
                self._get(after)
            sql, params = page_query("vsearch_files", "seq", "%s", purpose, limit, order, after)
            rows = self._db.execute(sql, params)
            return [FileRecord(*row) for row in rows[:limit]], len(rows) > limit

        return await self._db.run(files)

    def chunks(self, file_id: str) -> Iterator[bytes]:
        self._get(file_id)
        part = 0
        while rows := self._db.execute(
            "SELECT content FROM vsearch_file_parts WHERE file_id = %s AND part = %s", (file_id, part)
        ):
            yield bytes(rows[0][0])
            part += 1

    def lines(self, file_id: str) -> Iterator[bytes]:
        return split_lines(self.chunks(file_id))

    async def delete(self, file_id: str) -> None:
        def delete() -> None:
            self._get(file_id)
            self._db.execute("DELETE FROM vsearch_files WHERE id = %s", (file_id,))

        await self._db.run(delete)

    def close(self) -> None:
        pass  # the database belongs to whoever made it
