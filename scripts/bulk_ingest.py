"""Bulk ingest: a thin wrapper of `vsearch ingest` (see `python scripts/bulk_ingest.py --help`).

python scripts/bulk_ingest.py corpus.jsonl --index docs [--url http://127.0.0.1:8000] [--batch-size 64]
"""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
