"""Whole-service backup and restore, and one index moved between engines: what `vsearch backup | restore | export |
import` do.

A backup is a folder:

    backup.json            format, version, engine, when; each index's counts and checksum; what else is in it
    indexes/NAME.vsnap     each index in the portable snapshot format (indexes/archive.py): vectors included
    databases/NAME.sqlite  embedded engine: the files', jobs', vector stores' and embedding cache's databases
    files/FILE-ID          embedded engine: the bytes of each uploaded file those records name
    adapters/NAME.npy      embedded engine: the fine-tuned query adapters
    tables/NAME.copy       PostgreSQL: the same records, each table in COPY's binary format

Made while a server runs: each index is read in one transaction of its own (SQLite read-only beside the server,
or a PostgreSQL snapshot), each SQLite file through SQLite's online backup, the PostgreSQL tables in one
REPEATABLE READ transaction. It is written as `DEST.partial` and renamed to DEST when complete.

A restore needs the embedded engine's server stopped (it holds the data dir's lock); on PostgreSQL servers may run
on: each index is swapped in one transaction, and the records are replaced in one. Indexes that are not in the
backup are left as they are; records (files, jobs, adapters, cache, vector stores) are replaced by the backup's.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Literal

import msgspec

from indexes.archive import SnapshotReader, write_snapshot
from indexes.config import check_name
from indexes.databases.postgres import PgDatabase
from indexes.databases.sqlite import Database
from indexes.embedded.catalog import exported, folder_state
from indexes.postgres.catalog import PgCatalog
from indexes.values import IndexExport
from service.config import Settings
from service.lock import DataDirLock
from service.search.values import IndexInfo
from service.services import build_services, sqlite_files
from service.snapshots.service import HashingWriter, write_durably

FORMAT, FORMAT_VERSION = "vsearch-backup", 1
# The service's own tables in PostgreSQL, parents before the tables that reference them (a restore fills them in
# this order). tests/test_snapshots.py checks that it names every table a fresh database has besides the indexes'.
PG_TABLES = (
    "vsearch_files",
    "vsearch_file_parts",
    "vsearch_jobs",
    "vsearch_job_events",
    "vsearch_job_checkpoints",
    "vsearch_adapters",
    "vsearch_embedding_cache",
    "vector_stores",
    "vector_store_files",
    "vector_store_batches",
)
PG_OWN = ("vsearch_indexes", "vsearch_schema")  # the catalog (restored index by index) and the schema versions


class IndexEntry(msgspec.Struct, frozen=True):
    documents: int
    vectors: int
    bytes: int
    sha256: str


class BackupManifest(msgspec.Struct, frozen=True, kw_only=True):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    created_at: float
    engine: Literal["embedded", "postgres"]
    indexes: dict[str, IndexEntry]
    databases: list[str] = []
    tables: list[str] = []
    files: int = 0
    adapters: int = 0


class BackupError(Exception):
    pass


# --- one index --------------------------------------------------------------------------------------------------


@contextmanager
def index_content(settings: Settings, name: str) -> Iterator[IndexExport]:
    """Index `name` of the configured storage as of one instant, without a server's help and beside a running one
    (the embedded engine's file read-only; PostgreSQL in a snapshot transaction)."""
    if settings.database_url is None:
        with exported(settings.data_dir / "indexes" / check_name(name)) as content:
            yield content
        return
    with (
        _unhurried(settings.database_url) as database,
        PgCatalog(database).use(name) as store,
        store.export() as content,
    ):
        yield content


def export_index(settings: Settings, name: str, out: BinaryIO) -> tuple[int, int]:
    """Write index `name` to `out` as a snapshot; (documents, vectors)."""
    with index_content(settings, name) as content:
        return write_snapshot(content, out)


def import_index(settings: Settings, path: Path, name: str | None) -> IndexInfo:
    """Make (or replace) an index of the configured storage from the snapshot file `path`, by its own name or
    `name`. Nothing is embedded; the model must be one this configuration serves."""
    with _owning(settings):
        services = build_services(settings)
        try:
            with path.open("rb") as source:
                reader = SnapshotReader(source)
                return asyncio.run(services.search.restore_index(name or reader.config.name, reader))
        finally:
            services.close()


@contextmanager
def _owning(settings: Settings) -> Iterator[None]:
    """The embedded engine's data dir held for this process (no server may run on it meanwhile); PostgreSQL needs
    nothing: its restores are transactions."""
    if settings.database_url is not None:
        yield
        return
    lock = DataDirLock(settings.data_dir)
    try:
        yield
    finally:
        lock.close()


# --- the whole service ------------------------------------------------------------------------------------------


def backup(settings: Settings, destination: Path) -> BackupManifest:
    if destination.exists():
        raise BackupError(f"{destination} already exists: give a new folder")
    partial = destination.with_name(f"{destination.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "indexes").mkdir(parents=True)
    try:
        manifest = _backup_into(settings, partial)
        write_durably(
            partial / "backup.json", lambda out: out.write(msgspec.json.format(msgspec.json.encode(manifest)))
        )
        partial.rename(destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _backup_into(settings: Settings, folder: Path) -> BackupManifest:
    indexes = {name: _backup_index(settings, name, folder / "indexes" / f"{name}.vsnap") for name in _names(settings)}
    if settings.database_url is not None:
        return BackupManifest(created_at=time.time(), engine="postgres", indexes=indexes,
                              tables=_copy_tables_out(settings.database_url, folder / "tables"))  # fmt: skip
    data = settings.data_dir
    (folder / "databases").mkdir()
    databases = []
    for name, path in sqlite_files(data).items():
        if path.exists():
            Database(path).copy_to(folder / "databases" / f"{name}.sqlite")
            databases.append(name)
    files = _copy_files(data / "files", folder / "files", folder / "databases" / "files.sqlite")
    adapters = _copy_folder(data / "finetune" / "adapters", folder / "adapters", "*.npy")
    return BackupManifest(created_at=time.time(), engine="embedded", indexes=indexes, databases=databases,
                          files=files, adapters=adapters)  # fmt: skip


def _names(settings: Settings) -> list[str]:
    if settings.database_url is None:
        root = settings.data_dir / "indexes"
        if not root.is_dir():
            return []
        return [f.name for f in sorted(root.iterdir()) if not f.name.startswith(".") and folder_state(f) == "complete"]
    database = PgDatabase(settings.database_url, pool_size=1)
    try:
        return PgCatalog(database).names()
    finally:
        database.close()


def _backup_index(settings: Settings, name: str, path: Path) -> IndexEntry:
    counts: list[tuple[int, int]] = []
    hashing: list[HashingWriter] = []

    def fill(out: BinaryIO) -> None:
        hashing.append(HashingWriter(out))
        counts.append(export_index(settings, name, hashing[0]))  # type: ignore[arg-type]

    write_durably(path, fill)
    return IndexEntry(counts[0][0], counts[0][1], hashing[0].bytes, hashing[0].sha256.hexdigest())


def _copy_files(source: Path, destination: Path, records: Path) -> int:
    """The bytes of each file the backed-up records name; a file deleted meanwhile is dropped from the records."""
    destination.mkdir()
    if not records.exists():
        return 0
    db = Database(records)
    try:
        copied = 0
        for (file_id,) in db.execute("SELECT id FROM files").fetchall():
            try:
                shutil.copy2(source / file_id, destination / file_id)
                copied += 1
            except FileNotFoundError:
                db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        return copied
    finally:
        db.close()


def _copy_folder(source: Path, destination: Path, pattern: str) -> int:
    destination.mkdir()
    paths = sorted(source.glob(pattern)) if source.is_dir() else []
    for path in paths:
        shutil.copy2(path, destination / path.name)
    return len(paths)


def _copy_tables_out(url: str, folder: Path) -> list[str]:
    folder.mkdir()
    with _unhurried(url) as database, database.transaction(snapshot=True) as conn:
        listed = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
        tables = [table for table in PG_TABLES if (table,) in listed]
        for table in tables:
            with (
                (folder / f"{table}.copy").open("wb") as out,
                conn.cursor() as cursor,
                cursor.copy(
                    f"COPY {table} TO STDOUT (FORMAT BINARY)"  # type: ignore[arg-type]
                ) as copy,
            ):
                for data in copy:
                    out.write(data)
    return tables


@contextmanager
def _unhurried(url: str) -> Iterator[PgDatabase]:
    """A connection without the statement timeout: a table's COPY may take long."""
    database = PgDatabase(url, pool_size=1, statement_timeout_ms=0)
    try:
        yield database
    finally:
        database.close()


def read_manifest(source: Path) -> BackupManifest:
    try:
        manifest = msgspec.json.decode((source / "backup.json").read_bytes(), type=BackupManifest)
    except (OSError, msgspec.DecodeError) as exc:
        raise BackupError(f"{source} is not a vsearch backup: {exc}") from None
    if manifest.format != FORMAT or manifest.format_version != FORMAT_VERSION:
        raise BackupError(f"{source} is a backup of format {manifest.format} {manifest.format_version}; this vsearch "
                          f"reads {FORMAT} {FORMAT_VERSION}")  # fmt: skip
    return manifest


def restore(settings: Settings, source: Path, indexes_only: bool = False) -> BackupManifest:
    """The records replaced by the backup's, then every index of the backup swapped in. The indexes are portable
    between engines; the records go back only to the engine they came from (`indexes_only` skips them)."""
    manifest = read_manifest(source)
    engine = "postgres" if settings.database_url is not None else "embedded"
    if indexes_only:
        manifest = msgspec.structs.replace(manifest, databases=[], tables=[], files=0, adapters=0)
    elif manifest.engine != engine:
        raise BackupError(f"{source} holds the records of the {manifest.engine} engine; this configuration uses the "
                          f"{engine} one. Restore its indexes alone with --indexes-only.")  # fmt: skip
    with _owning(settings):
        if engine == "embedded" and not indexes_only:
            _restore_records(settings.data_dir, source, manifest)  # before the stores open them
        services = build_services(settings)  # every store's schema made or brought up to date
        try:
            if engine == "postgres" and manifest.tables:
                _copy_tables_in(settings.database_url, source / "tables", manifest.tables)  # type: ignore[arg-type]
            for name in manifest.indexes:
                with (source / "indexes" / f"{name}.vsnap").open("rb") as file:
                    asyncio.run(services.search.restore_index(name, SnapshotReader(file)))
        finally:
            services.close()
    return manifest


def _restore_records(data: Path, source: Path, manifest: BackupManifest) -> None:
    paths = sqlite_files(data)
    for name in manifest.databases:
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        Database(source / "databases" / f"{name}.sqlite").copy_to(paths[name])
    (data / "files").mkdir(parents=True, exist_ok=True)
    for path in sorted((source / "files").glob("file-*")):
        shutil.copy2(path, data / "files" / path.name)
    adapters = data / "finetune" / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    for path in sorted((source / "adapters").glob("*.npy")):
        shutil.copy2(path, adapters / path.name)


def _copy_tables_in(url: str, folder: Path, tables: list[str]) -> None:
    """The tables' rows replaced by the backup's, in one transaction (the schema is the one the server made)."""
    with _unhurried(url) as database, database.transaction() as conn:
        conn.execute(f"TRUNCATE {', '.join(tables)}")  # type: ignore[arg-type]
        for table in tables:
            with (
                (folder / f"{table}.copy").open("rb") as data,
                conn.cursor() as cursor,
                cursor.copy(
                    f"COPY {table} FROM STDIN (FORMAT BINARY)"  # type: ignore[arg-type]
                ) as copy,
            ):
                while chunk := data.read(1 << 20):
                    copy.write(chunk)
        identities = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND is_identity = 'YES' AND table_name = ANY(%s)",
            (tables,),
        ).fetchall()
        for table, column in identities:  # the next rows numbered after the restored ones
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                         f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)")  # type: ignore[arg-type]  # fmt: skip
