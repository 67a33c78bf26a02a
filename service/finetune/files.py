"""FileStore: OpenAI-style files, content on disk under the data dir, records in SQLite."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec
import sqlite_utils

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
