"""Fuzz every operation of the live OpenAPI schema with schemathesis: no 5xx, every response valid against it.

    python scripts/fuzz_api.py [--max-examples 100] [--url URL]

Starts its own `vsearch serve` on a temporary data dir (with one index, so index routes get past 404s) unless
--url is given. The test suite runs the same check with a few examples per operation.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys

import httpx
from serving import local_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="a running vsearch on loopback (default: start one)")
    args = parser.parse_args()
    server = contextlib.nullcontext((args.url, None)) if args.url else local_server()
    with server as (url, _):
        httpx.post(f"{url}/v1/indexes", json={"name": "fuzz", "model": "all-MiniLM-L6-v2"}, timeout=60)
        command = [
            *(sys.executable, "-m", "schemathesis.cli", "run", f"{url}/docs/openapi.json"),
            *("--checks", "not_a_server_error,response_schema_conformance", "--phases", "examples,fuzzing"),
            *("--max-examples", str(args.max_examples), "--seed", str(args.seed), "--request-timeout", "120"),
        ]
        sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    main()
