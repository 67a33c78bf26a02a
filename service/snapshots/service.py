"""SnapshotService: snapshots of indexes as files, made while reads and writes go on, and restores from them.

A snapshot is one file in the portable format (indexes/archive.py), `ROOT/{index}/{id}.vsnap`, and a record of it
beside it, `{id}.json`. The file is written under a temporary name, flushed to disk and renamed; the record is
written (the same way) only after it, and a snapshot is listed only once its record exists. So a process killed
part-way leaves no half snapshot listed; the leftovers are removed at the next start (in a folder replicas share,
once untouched for an hour). Snapshots of the PostgreSQL
engine live here too, in the data dir (or `snapshot_dir`: shared storage, for replicas to see one another's).

Restore reads a snapshot, or an upload spooled to `ROOT/.uploads/`, and hands it to the search service: the
index is replaced in one step, and a file that turns out damaged, truncated or foreign changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO

import msgspec

from indexes.archive import FORMAT_VERSION, SnapshotReader, write_snapshot
from indexes.config import check_name
from indexes.databases.loop import run
from indexes.values import IndexExport
from service.errors import InvalidRequest, NotFound, TooLarge, translates_store_errors
from service.search.service import SearchService
from service.search.values import IndexInfo
from service.snapshots.records import Snapshot

log = logging.getLogger("vsearch")
SUFFIX, RECORD, TEMPORARY = ".vsnap", ".json", ".tmp-"
UPLOADS = ".uploads"
LEFTOVER_IDLE_S = 3600.0  # in a shared folder, a file this long untouched is no replica's work in progress


class HashingWriter:
    """Writes through to `out`, counting and hashing what passes (the listing's size and checksum)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        written = self.out.write(data)
        self.sha256.update(memoryview(data)[:written])
        self.bytes += written
        return written

    def flush(self) -> None:
        self.out.flush()


def write_durably(path: Path, fill: Callable[[BinaryIO], None]) -> None:
    """`fill` a temporary file beside `path`, flush it to disk, and rename it into place (a crash leaves the old
    content, or none: never part of the new). The temporary file is removed on any error (a full disk)."""
    temporary = path.with_name(f"{TEMPORARY}{path.name}")
    try:
        # Readable by the server's user alone: a snapshot is an index's data, guarded by the API's keys.
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        temporary.rename(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class SnapshotService:
    def __init__(self, root: Path, search: SearchService, max_upload_bytes: int, shared: bool = False) -> None:
        """`shared`: other replicas may be writing in `root` too (PostgreSQL with a shared snapshot_dir)."""
        self.root = root
        self.search = search
        self.max_upload_bytes = max_upload_bytes
        self._clean(idle_s=LEFTOVER_IDLE_S if shared else 0.0)  # the folder itself is made by the first snapshot

    def _clean(self, idle_s: float) -> None:
        """Remove what a killed process left: temporary files, snapshot files without their record, uploads; in a
        shared folder only those untouched for `idle_s` (another replica may be writing the others)."""
        now = time.time()
        leftovers = [*self.root.glob(f"{UPLOADS}/*"), *self.root.glob(f"*/{TEMPORARY}*")]
        leftovers += [p for p in self.root.glob(f"*/*{SUFFIX}") if not p.with_suffix(RECORD).exists()]
        for path in leftovers:
            try:
                if now - path.stat().st_mtime >= idle_s:
                    log.warning("removing %s, left by an interrupted snapshot or restore", path)
                    path.unlink()
            except FileNotFoundError:  # finished or removed meanwhile
                continue

    def _folder(self, index: str) -> Path:
        return self.root / check_name(index)  # the name pattern keeps every path inside the root

    def _paths(self, index: str, snapshot_id: str) -> tuple[Path, Path]:
        """(the file, its record); NotFound for an id that is not one of ours (never a path)."""
        if not (snapshot_id.startswith("snap_") and snapshot_id[5:].isalnum()):
            raise NotFound(f"No snapshot '{snapshot_id}' of index '{index}'.", param="snapshot_id",
                           code="snapshot_not_found")  # fmt: skip
        file = self._folder(index) / f"{snapshot_id}{SUFFIX}"
        return file, file.with_suffix(RECORD)

    # --- make, list, read, delete ---------------------------------------------------------------------------------

    @translates_store_errors
    async def create(self, index: str, scheduled: bool = False) -> Snapshot:
        """A snapshot of `index` as of one instant; reads and writes go on meanwhile."""
        folder = self._folder(index)
        snapshot_id = f"snap_{time.time_ns() // 1000:x}{secrets.token_hex(4)}"  # ids sort as they were made
        file, record = folder / f"{snapshot_id}{SUFFIX}", folder / f"{snapshot_id}{RECORD}"

        def write(content: IndexExport) -> Snapshot:
            folder.mkdir(parents=True, exist_ok=True)
            written: list[HashingWriter] = []

            def fill(out: BinaryIO) -> None:
                hashing = HashingWriter(out)
                written.append(hashing)
                write_snapshot(content, hashing)  # type: ignore[arg-type]

            write_durably(file, fill)
            snapshot = Snapshot(id=snapshot_id, index=index, created_at=int(time.time()), bytes=written[0].bytes,
                                document_count=content.documents, vector_count=content.vectors,
                                checksum=f"sha256:{written[0].sha256.hexdigest()}", format_version=FORMAT_VERSION,
                                scheduled=scheduled)  # fmt: skip
            try:
                write_durably(record, lambda out: out.write(msgspec.json.encode(snapshot)))
            except BaseException:
                file.unlink(missing_ok=True)
                raise
            return snapshot

        return await self.search.export_index(index, write)

    @translates_store_errors
    async def list(self, index: str) -> list[Snapshot]:
        """The index's snapshots, newest first (those of a deleted index stay until deleted themselves)."""
        folder = self._folder(index)

        def read() -> list[Snapshot]:
            snapshots = []
            for path in folder.glob(f"snap_*{RECORD}"):
                try:
                    snapshots.append(msgspec.json.decode(path.read_bytes(), type=Snapshot))
                except (OSError, msgspec.DecodeError):  # removed meanwhile
                    continue
            return sorted(snapshots, key=lambda s: (s.created_at, s.id), reverse=True)

        return await run(read)

    @translates_store_errors
    async def get(self, index: str, snapshot_id: str) -> Snapshot:
        _, record = self._paths(index, snapshot_id)
        try:
            return msgspec.json.decode(await run(record.read_bytes), type=Snapshot)
        except FileNotFoundError:
            raise NotFound(f"No snapshot '{snapshot_id}' of index '{index}'.", param="snapshot_id",
                           code="snapshot_not_found") from None  # fmt: skip

    async def file(self, index: str, snapshot_id: str) -> Path:
        """The snapshot's file, to send as it is."""
        await self.get(index, snapshot_id)
        return self._paths(index, snapshot_id)[0]

    async def delete(self, index: str, snapshot_id: str) -> None:
        await self.get(index, snapshot_id)
        file, record = self._paths(index, snapshot_id)

        def remove() -> None:
            record.unlink(missing_ok=True)  # unlisted first: never a record without its file
            file.unlink(missing_ok=True)

        await run(remove)

    # --- restore ----------------------------------------------------------------------------------------------------

    async def restore(self, index: str, snapshot_id: str, source_index: str | None = None) -> IndexInfo:
        """Index `index` replaced by the snapshot `snapshot_id` of `source_index` (default: of `index` itself)."""
        await self.get(source_index or index, snapshot_id)
        return await self.restore_file(index, self._paths(source_index or index, snapshot_id)[0])

    @translates_store_errors
    async def restore_file(self, index: str, path: Path) -> IndexInfo:
        check_name(index)
        with await run(path.open, "rb") as source:
            reader = await run(SnapshotReader, source)
            return await self.search.restore_index(index, reader)

    def upload(self) -> Upload:
        """A place to stream an uploaded snapshot into, removed when it closes."""
        return Upload(self.root / UPLOADS, self.max_upload_bytes)


class Upload:
    """An uploaded snapshot spooled to disk (bounded by max_snapshot_upload_bytes), then restored from."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{secrets.token_hex(8)}{SUFFIX}"
        self.max_bytes = max_bytes
        self.bytes = 0
        self._out = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        if self.bytes > self.max_bytes:
            raise TooLarge(f"The snapshot is larger than the upload limit of {self.max_bytes} bytes "
                           "(max_snapshot_upload_bytes).", param="file")  # fmt: skip
        self._out.write(data)

    def finish(self) -> Path:
        self._out.close()
        if not self.bytes:
            raise InvalidRequest("The request body is empty: send the snapshot file.", param="file")
        return self.path

    def close(self) -> None:
        self._out.close()
        self.path.unlink(missing_ok=True)
