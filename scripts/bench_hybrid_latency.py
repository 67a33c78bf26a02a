"""Hybrid against dense latency on one index of a running vsearch: single queries from one client, the two modes
interleaved (each query text is sent dense, then hybrid), so that load changes hit both alike.

    python scripts/bench_hybrid_latency.py http://127.0.0.1:8000 scifact ../shared/datasets/scifact/queries.jsonl

Prints the p50 of each mode and their ratio, over a timed pass that follows an untimed warm-up pass.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="a running vsearch")
    parser.add_argument("index", help="an index holding the corpus the queries are for")
    parser.add_argument("queries", type=Path, help="a BEIR queries.jsonl (its 'text' fields)")
    parser.add_argument("--count", type=int, default=300, help="query texts used")
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in args.queries.open()][: args.count]
    timings: dict[str, list[float]] = {"dense": [], "hybrid": []}
    print(f"load: {os.getloadavg()[0]:.2f}")
    with httpx.Client(base_url=args.url, timeout=60) as client:
        for timed in (False, True):
            for text in texts:
                for mode in timings:
                    start = time.perf_counter()
                    body = {"query": text, "top_k": 10, "mode": mode}
                    client.post(f"/v1/indexes/{args.index}/query", json=body).raise_for_status()
                    if timed:
                        timings[mode].append(time.perf_counter() - start)
    dense, hybrid = (statistics.median(timings[mode]) * 1000 for mode in ("dense", "hybrid"))
    print(f"dense p50 {dense:.2f} ms, hybrid p50 {hybrid:.2f} ms, hybrid / dense {hybrid / dense:.2f}")


if __name__ == "__main__":
    main()
