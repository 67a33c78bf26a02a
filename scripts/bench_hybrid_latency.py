"""Hybrid against dense latency on one index of a running vsearch: single queries from one client, the two modes
interleaved (each query text is sent dense, then hybrid), so that load changes hit both alike.

    python scripts/bench_hybrid_latency.py http://127.0.0.1:8000 scifact ../shared/datasets/scifact/queries.jsonl

Prints the p50 of each mode and their ratio, over a timed pass that follows an untimed warm-up pass. Queries go
through one keep-alive connection of the standard library's http.client, as in bench_scale.py: a client library's
own cost per request (httpx: about 0.85 ms here) would be added to both modes and shrink the ratio.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit


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
    url = urlsplit(args.url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=60)
    headers = {"Content-Type": "application/json"}
    for timed in (False, True):
        for text in texts:
            for mode in timings:
                start = time.perf_counter()
                body = json.dumps({"query": text, "top_k": 10, "mode": mode})
                connection.request("POST", f"/v1/indexes/{args.index}/query", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    raise SystemExit(f"{mode} query failed: {response.status} {answer[:300]!r}")
                if timed:
                    timings[mode].append(time.perf_counter() - start)
    connection.close()
    dense, hybrid = (statistics.median(timings[mode]) * 1000 for mode in ("dense", "hybrid"))
    print(f"dense p50 {dense:.2f} ms, hybrid p50 {hybrid:.2f} ms, hybrid / dense {hybrid / dense:.2f}")


if __name__ == "__main__":
    main()
