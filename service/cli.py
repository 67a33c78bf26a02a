"""The `vsearch` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
from pathlib import Path

from indexes.databases.sqlite import sqlite3
from indexes.embedded.memory import map_large_allocations
from indexes.errors import IndexStoreError, SchemaTooNew, StorageUnavailable
from service.config import ConfigError, Settings, load_settings
from service.errors import ModelNotInstalled
from service.lock import DataDirInUse, DataDirLock
from service.logs import configure_logging


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.edge import is_loopback
    from service.app import create_app

    try:
        settings = load_settings(args.config, data_dir=args.data_dir, host=args.host, port=args.port,
                                 model_dirs=args.model_dir or None, database_url=args.database_url)  # fmt: skip
    except ConfigError as exc:
        print(f"vsearch: {exc}", file=sys.stderr)
        return 2
    if not settings.api_keys and not is_loopback(settings.host) and not args.insecure:
        print(
            f"vsearch: refusing to listen on {settings.host} without API keys: anyone who can reach it could use it. "
            "Set VSEARCH_API_KEYS (or api_keys in the config file), or pass --insecure if something in front of "
            "vsearch authenticates.",
            file=sys.stderr,
        )
        return 2
    _raise_open_files_limit()  # before anything is opened
    map_large_allocations()  # before anything large is allocated
    try:  # the embedded engine's data dir is this process's alone (with PostgreSQL it only caches ONNX graphs)
        lock = DataDirLock(settings.data_dir) if settings.database_url is None else None  # noqa: F841 (held)
    except DataDirInUse as exc:
        print(f"vsearch: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"vsearch: cannot use the data dir {settings.data_dir}: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(settings)
    except ModelNotInstalled as exc:
        print(f"vsearch: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(f"vsearch: cannot use the data dir {settings.data_dir}: {exc}", file=sys.stderr)
        return 2
    except (StorageUnavailable, SchemaTooNew) as exc:
        print(f"vsearch: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    # On SIGTERM uvicorn stops accepting, lets requests in flight finish, then the app checkpoints its indexes.
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"vsearch: console at http://{shown}:{settings.port}/ and API reference at "
          f"http://{shown}:{settings.port}/docs", file=sys.stderr, flush=True)  # fmt: skip
    # access_log off: the Edge logs each request once, with its id (uvicorn's own line would repeat it).
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=settings.shutdown_grace_s)  # fmt: skip
    return 0


def _migrate(args: argparse.Namespace) -> int:
    """Bring every schema up to date, then exit: the data dir's SQLite files and each index, or, with a database
    URL, PostgreSQL's tables. A server does the same at start (and each index as it opens)."""
    import asyncio

    from service.services import build_services, schema_versions

    try:
        settings = load_settings(args.config, database_url=args.database_url, data_dir=args.data_dir)
    except ConfigError as exc:
        print(f"vsearch: {exc}", file=sys.stderr)
        return 2
    try:
        services = build_services(settings)  # each store migrates its schema as it opens
        try:
            indexes = asyncio.run(services.search.index_stats())  # and each index as it opens
            versions = schema_versions(services)
        finally:
            services.close()
    except (StorageUnavailable, SchemaTooNew) as exc:
        print(f"vsearch: {exc.message}", file=sys.stderr)
        return 2
    where = "PostgreSQL" if settings.database_url else str(settings.data_dir)
    shown = ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
    print(f"vsearch: the schema in {where} is up to date ({shown}; {len(indexes)} indexes)", file=sys.stderr)
    return 0


def _storage_settings(args: argparse.Namespace) -> Settings | None:
    """The settings that say where data lives; None once the error is printed."""
    try:
        return load_settings(args.config, database_url=args.database_url, data_dir=args.data_dir)
    except ConfigError as exc:
        print(f"vsearch: {exc}", file=sys.stderr)
        return None


def _snapshot_command(args: argparse.Namespace) -> int:
    """backup, restore, export, import: each on the configured storage directly (service/snapshots/backup.py)."""
    from service.errors import VsearchError
    from service.lock import DataDirInUse
    from service.snapshots import backup as backups

    settings = _storage_settings(args)
    if settings is None:
        return 2
    try:
        if args.command == "backup":
            manifest = backups.backup(settings, args.destination)
            print(f"vsearch: backed up {len(manifest.indexes)} indexes, {manifest.files} files and "
                  f"{manifest.adapters} adapters to {args.destination}", file=sys.stderr)  # fmt: skip
        elif args.command == "restore":
            manifest = backups.restore(settings, args.source, args.indexes_only)
            records = "" if args.indexes_only else " and the records"
            print(f"vsearch: restored {len(manifest.indexes)} indexes{records} from {args.source}", file=sys.stderr)
        elif args.command == "export":
            out = args.out or Path(f"{args.index}.vsnap")
            with out.open("wb") as file:
                documents, vectors = backups.export_index(settings, args.index, file)
            print(f"vsearch: exported {args.index} ({documents} documents, {vectors} vectors) to {out}",
                  file=sys.stderr)  # fmt: skip
        else:
            info = backups.import_index(settings, args.file, args.name)
            print(f"vsearch: imported {info.config.name} ({info.stats.document_count} documents, "
                  f"{info.stats.vector_count} vectors)", file=sys.stderr)  # fmt: skip
    except (backups.BackupError, DataDirInUse, OSError) as exc:
        print(f"vsearch: {exc}", file=sys.stderr)
        return 2
    except (VsearchError, StorageUnavailable, SchemaTooNew, IndexStoreError) as exc:
        print(f"vsearch: {exc.message}", file=sys.stderr)
        return 2
    return 0


def _raise_open_files_limit() -> None:
    """Each open index holds a few file descriptors: take the hard limit the system allows, not the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _ingest(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console

    from service.ingest.runner import FieldMapping, Ingest, IngestError
    from service.ingest.sources import open_source
    from service.search.values import IndexSpec

    console = Console(stderr=True)
    try:
        source = open_source(args.source, args.format)
    except OSError as exc:
        console.print(f"[red]vsearch ingest: {exc}")
        return 2
    id_field = None if args.id_field == "" else (args.id_field or source.default_id_field)
    metadata = None if args.metadata_fields is None else [f for f in args.metadata_fields.split(",") if f]
    run = Ingest(
        args.url,
        IndexSpec(name=args.index, model=args.model, dimensions=args.dimensions, metric=args.metric, kind=args.kind),
        source,
        FieldMapping(id_field, args.text_field or source.default_text, metadata),
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        api_key=args.api_key or os.environ.get("VSEARCH_API_KEY"),
        rejects=args.rejects,
        checkpoint=args.checkpoint,
        console=console,
        chunking=args.chunking,
    )
    try:
        summary = asyncio.run(run.run(restart=args.restart))
    except IngestError as exc:
        console.print(f"[red]vsearch ingest: {exc}")
        console.print("Run the same command again to resume.")
        return 2
    console.print(
        f"sent {summary.sent}, created {summary.created}, updated {summary.updated}, skipped {summary.skipped}, "
        f"rejected {summary.rejected} in {summary.elapsed:.1f} s ({summary.rate:.1f} docs/s)"
    )
    if summary.rejected:
        console.print(f"[yellow]rejected documents and reasons: {run.rejects_path}")
    return 1 if summary.rejected else 0


def _query(args: argparse.Namespace) -> int:
    import json

    import httpx
    from rich.console import Console
    from rich.table import Table

    console = Console()
    body: dict = {"query": args.text, "top_k": args.top_k, "mode": args.mode}
    if args.filter:
        try:
            body["filter"] = json.loads(args.filter)
        except json.JSONDecodeError as exc:
            console.print(f"[red]--filter is not valid JSON: {exc}")
            return 2
    api_key = args.api_key or os.environ.get("VSEARCH_API_KEY")
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(
            f"{args.url.rstrip('/')}/v1/indexes/{args.index}/query", json=body, headers=headers, timeout=60
        )
    except httpx.TransportError as exc:
        console.print(f"[red]could not reach {args.url}: {exc}")
        return 2
    if response.status_code != 200:
        console.print(f"[red]{response.status_code}: {response.json().get('error', {}).get('message', response.text)}")
        return 1
    table = Table("#", "score", "id", "text", "metadata", title=f"{args.index}: {args.text}")
    for rank, hit in enumerate(response.json()["data"], start=1):
        text = (hit.get("text") or "").replace("\n", " ")
        table.add_row(
            str(rank), f"{hit['score']:.4f}", hit["id"], text[:120], json.dumps(hit.get("metadata") or {})[:60]
        )
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsearch", description="Self-hosted semantic search service.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (default ./data, or VSEARCH_DATA_DIR)"
    )
    serve.add_argument(
        "--model-dir", type=Path, action="append", help="a sentence-transformers folder to serve too (repeatable)"
    )
    serve.add_argument(
        "--config", type=Path, default=None, help="TOML settings file (default ./vsearch.toml if present)"
    )
    serve.add_argument(
        "--database-url", default=None, help="postgresql:// URL: keep everything there (default: the data dir)"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback address without API keys")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring every schema up to date (data dir or PostgreSQL) and exit")
    migrate.add_argument("--data-dir", type=Path, default=None, help="default VSEARCH_DATA_DIR or ./data")
    migrate.add_argument("--database-url", default=None, help="postgresql:// URL (default VSEARCH_DATABASE_URL)")
    migrate.add_argument("--config", type=Path, default=None, help="TOML settings file")
    migrate.set_defaults(run=_migrate, log_level="warning")

    ingest = commands.add_parser("ingest", help="stream documents into an index (resumable)")
    ingest.add_argument(
        "source",
        type=Path,
        help="a JSONL or CSV file, a BEIR corpus folder, or a folder of documents (.pdf .docx .html .md .txt .json)",
    )
    ingest.add_argument("--index", required=True)
    ingest.add_argument("--url", default="http://127.0.0.1:8000")
    ingest.add_argument("--format", choices=["jsonl", "csv", "beir", "tree"], help="default: from the path")
    ingest.add_argument("--model", default="all-MiniLM-L6-v2", help="for a new index")
    ingest.add_argument("--dimensions", type=int, help="for a new index")
    ingest.add_argument("--metric", default="cosine", choices=["cosine", "ip", "l2"], help="for a new index")
    ingest.add_argument("--kind", default="flat", choices=["flat", "hnsw"], help="for a new index")
    ingest.add_argument(
        "--id-field",
        help="field with the document id (default id; _id for BEIR; path for folders); '' for server ids",
    )
    ingest.add_argument("--text-field", help="field with the text, or a template such as '{title} {text}'")
    ingest.add_argument("--metadata-fields", help="comma-separated fields to keep as metadata (default: all others)")
    ingest.add_argument(
        "--chunking", choices=["split", "truncate"], help="for texts over the model's window (default split)"
    )
    ingest.add_argument("--batch-size", type=int, default=64)
    ingest.add_argument("--concurrency", type=int, default=2)
    ingest.add_argument("--api-key", help="default: VSEARCH_API_KEY")
    ingest.add_argument("--rejects", type=Path, help="where rejected documents go (default INDEX.rejects.jsonl)")
    ingest.add_argument("--checkpoint", type=Path, help="resume file (default .vsearch-ingest/INDEX-HASH.json)")
    ingest.add_argument("--restart", action="store_true", help="ignore the checkpoint and start from the first record")
    ingest.set_defaults(run=_ingest, log_level="warning")

    storage_help = {
        "backup": "copy every index, file, job, adapter and the embedding cache to a new folder (server may run)",
        "restore": "put a backup's indexes and records back (embedded engine: stop the server first)",
        "export": "write one index to a snapshot file, vectors included (server may run)",
        "import": "make or replace an index from a snapshot file, on either engine, without embedding",
    }
    for name, help_text in storage_help.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        if name == "backup":
            command.add_argument("destination", type=Path, help="a folder that does not exist yet")
        elif name == "restore":
            command.add_argument("source", type=Path, help="a folder made by `vsearch backup`")
            command.add_argument("--indexes-only", action="store_true",
                                 help="restore the indexes alone (into either engine), not the records")  # fmt: skip
        elif name == "export":
            command.add_argument("index")
            command.add_argument("--out", type=Path, help="the snapshot file (default INDEX.vsnap)")
        else:
            command.add_argument("file", type=Path, help="a snapshot file (vsearch export, or a downloaded snapshot)")
            command.add_argument("--name", help="the index to make or replace (default: the snapshot's own name)")
        command.add_argument("--data-dir", type=Path, default=None, help="default VSEARCH_DATA_DIR or ./data")
        command.add_argument("--database-url", default=None, help="postgresql:// URL (default VSEARCH_DATABASE_URL)")
        command.add_argument("--config", type=Path, default=None, help="TOML settings file")
        command.set_defaults(run=_snapshot_command, log_level="warning")

    query = commands.add_parser("query", help="search an index and print the results as a table")
    query.add_argument("index")
    query.add_argument("text")
    query.add_argument("--url", default="http://127.0.0.1:8000")
    query.add_argument("--top-k", type=int, default=10)
    query.add_argument("--filter", help="a metadata filter as JSON")
    query.add_argument("--mode", default="dense", choices=["dense", "lexical", "hybrid"])
    query.add_argument("--api-key", help="default: VSEARCH_API_KEY")
    query.set_defaults(run=_query, log_level="warning")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
