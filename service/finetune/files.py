"""FileStore: OpenAI-style files, content on disk under the data dir, records in SQLite; PgFileStore: both in
PostgreSQL."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec
import sqlite_utils

from indexes.postgres.database import PgDatabase
from indexes.sqlite import Database
from service.errors import InvalidRequest, NotFound, TooLarge

UPLOAD_PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}
RESULT_PURPOSE = "fine-tune-results"  # written by fine-tuning jobs, never uploaded


class FileRecord(msgspec.Struct, frozen=True):
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int


class FileTooLarge(TooLarge):
    code = "file_too_large"


class FileStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._db = Database(root / "files.sqlite")
        sqlite_utils.Database(self._db.conn)["files"].create(
            {"id": str, "filename": str, "purpose": str, "bytes": int, "created_at": int}, pk="id", if_not_exists=True
        )

    def path(self, file_id: str) -> Path:
        if not file_id.startswith("file-") or not file_id[5:].isalnum():
            raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return self.root / file_id

    @staticmethod
    def check_purpose(purpose: str) -> None:
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(f"'purpose' must be one of {sorted(UPLOAD_PURPOSES)}.", param="purpose")

    def new_id(self) -> str:
        return f"file-{secrets.token_hex(12)}"

    def writer(self, file_id: str) -> BinaryIO:
        """An open file to stream an upload into; `commit` makes it visible, `discard` drops it."""
        return self.path(file_id).with_suffix(".partial").open("wb")

    def commit(self, file_id: str, filename: str, purpose: str) -> FileRecord:
        partial = self.path(file_id).with_suffix(".partial")
        partial.replace(self.path(file_id))
        record = FileRecord(file_id, filename, purpose, self.path(file_id).stat().st_size, int(time.time()))
        self._db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", msgspec.structs.astuple(record))
        return record

    def discard(self, file_id: str) -> None:
        self.path(file_id).with_suffix(".partial").unlink(missing_ok=True)

    def save_bytes(self, filename: str, purpose: str, content: bytes) -> FileRecord:
        file_id = self.new_id()
        with self.writer(file_id) as f:
            f.write(content)
        return self.commit(file_id, filename, purpose)

    def get(self, file_id: str) -> FileRecord:
        self.path(file_id)
        row = self._db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return FileRecord(*row)

    def list(self, purpose: str | None, limit: int, order: str, after: str | None) -> tuple[list[FileRecord], bool]:
        """Files in upload order (`order` asc or desc), after the cursor file `after`."""
        where, params = [], []
        if purpose:
            where.append("purpose = ?")
            params.append(purpose)
        if after:
            self.get(after)
            where.append(f"rowid {'<' if order == 'desc' else '>'} (SELECT rowid FROM files WHERE id = ?)")
            params.append(after)
        sql = "SELECT id, filename, purpose, bytes, created_at FROM files"
        sql += (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY rowid {order.upper()} LIMIT ?"
        rows = self._db.execute(sql, [*params, limit + 1]).fetchall()
        return [FileRecord(*row) for row in rows[:limit]], len(rows) > limit

    def chunks(self, file_id: str, size: int = 1 << 16) -> Iterator[bytes]:
        self.get(file_id)
        with self.path(file_id).open("rb") as f:
            while chunk := f.read(size):
                yield chunk

    def lines(self, file_id: str) -> Iterator[bytes]:
        self.get(file_id)
        with self.path(file_id).open("rb") as f:
            yield from f

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self.path(file_id).unlink(missing_ok=True)

    def close(self) -> None:
        self._db.close()


PART_BYTES = 1 << 20  # a file's bytes are stored in PostgreSQL in parts of this size
PG_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS vsearch_files (seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE, "
    "id text PRIMARY KEY, filename text NOT NULL, purpose text NOT NULL, bytes bigint NOT NULL, "
    "created_at bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS vsearch_file_parts (file_id text REFERENCES vsearch_files ON DELETE CASCADE, "
    "part integer NOT NULL, content bytea NOT NULL, PRIMARY KEY (file_id, part))",
]


class PgFileStore(FileStore):
    """Files in PostgreSQL, records and bytes, so every replica serves every file. An upload streams into a spool
    file under the data dir first (its size is unknown until it ends), then goes into the database with its record
    in one transaction."""

    def __init__(self, db: PgDatabase, spool: Path, max_bytes: int) -> None:
        self.root = spool
        self.max_bytes = max_bytes
        spool.mkdir(parents=True, exist_ok=True)
        self._pg = db
        db.migrate(PG_SCHEMA)

    def commit(self, file_id: str, filename: str, purpose: str) -> FileRecord:
        partial = self.path(file_id).with_suffix(".partial")
        try:
            record = FileRecord(file_id, filename, purpose, partial.stat().st_size, int(time.time()))
            with self._pg.transaction() as conn, partial.open("rb") as f:
                conn.execute("INSERT INTO vsearch_files (id, filename, purpose, bytes, created_at) "
                             "VALUES (%s, %s, %s, %s, %s)", msgspec.structs.astuple(record))  # fmt: skip
                part = 0
                while content := f.read(PART_BYTES):
                    conn.execute("INSERT INTO vsearch_file_parts VALUES (%s, %s, %s)", (file_id, part, content))
                    part += 1
        finally:
            partial.unlink(missing_ok=True)
        return record

    def get(self, file_id: str) -> FileRecord:
        self.path(file_id)
        rows = self._pg.execute(
            "SELECT id, filename, purpose, bytes, created_at FROM vsearch_files WHERE id = %s", (file_id,)
        )
        if not rows:
            raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return FileRecord(*rows[0])

    def list(self, purpose: str | None, limit: int, order: str, after: str | None) -> tuple[list[FileRecord], bool]:
        where, params = [], []
        if purpose:
            where.append("purpose = %s")
            params.append(purpose)
        if after:
            self.get(after)
            where.append(f"seq {'<' if order == 'desc' else '>'} (SELECT seq FROM vsearch_files WHERE id = %s)")
            params.append(after)
        sql = "SELECT id, filename, purpose, bytes, created_at FROM vsearch_files"
        sql += (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY seq {order.upper()} LIMIT %s"
        rows = self._pg.execute(sql, [*params, limit + 1])
        return [FileRecord(*row) for row in rows[:limit]], len(rows) > limit

    def chunks(self, file_id: str, size: int = 1 << 16) -> Iterator[bytes]:
        self.get(file_id)
        part = 0
        while rows := self._pg.execute(
            "SELECT content FROM vsearch_file_parts WHERE file_id = %s AND part = %s", (file_id, part)
        ):
            yield bytes(rows[0][0])
            part += 1

    def lines(self, file_id: str) -> Iterator[bytes]:
        rest = b""
        for chunk in self.chunks(file_id):
            *complete, rest = (rest + chunk).split(b"\n")
            yield from (line + b"\n" for line in complete)
        if rest:
            yield rest

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        self._pg.execute("DELETE FROM vsearch_files WHERE id = %s", (file_id,))

    def close(self) -> None:
        pass  # the database belongs to whoever made it
