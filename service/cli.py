"""The `vsearch` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from service.config import ConfigError, load_settings
from service.errors import ModelNotInstalled


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    try:
        settings = load_settings(
            args.config, data_dir=args.data_dir, host=args.host, port=args.port, model_dirs=args.model_dir or None
        )
        app = create_app(settings)
    except (ModelNotInstalled, ConfigError) as exc:
        print(f"vsearch: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level)
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
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s"
    )
    return args.run(args)
