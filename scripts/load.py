"""Load test: N concurrent clients mixing queries, embeddings and small ingests against a live server on loopback.

    python scripts/load.py [--clients 64] [--seconds 60] [--max-requests 200000] [--url URL]

Bounded in time and in requests; loopback only. Starts its own `vsearch serve` (temporary data dir) unless --url
is given, seeds an index, then prints requests/s, p50/p99 per kind, errors, and the server's RSS at the start and
at the end (when it started the server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import time
from pathlib import Path

import httpx
from serving import local_server

MODEL = "all-MiniLM-L6-v2"
WORDS = "river market protein vaccine orbit garden engine harbor violin glacier ledger canyon pixel".split()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def client(
    http: httpx.AsyncClient, rng: random.Random, until: float, budget: list[int], results: dict, weights: list[float]
) -> None:
    while time.monotonic() < until and budget[0] > 0:
        budget[0] -= 1
        kind = rng.choices(["query", "embed", "ingest"], weights=weights)[0]
        if kind == "query":
            request = http.post("/v1/indexes/load/query", json={"query": sentence(rng, 6), "top_k": 10})
        elif kind == "embed":
            request = http.post("/v1/embeddings", json={"model": MODEL, "input": [sentence(rng, 12) for _ in range(4)]})
        else:
            docs = [{"id": f"w{rng.randrange(10_000)}", "text": sentence(rng, 30)} for _ in range(5)]
            request = http.post("/v1/indexes/load/documents", json={"documents": docs})
        started = time.perf_counter()
        try:
            response = await request
            ok = response.status_code == 200
            if not ok and len(results["failures"]) < 5:
                results["failures"].append(f"{kind}: {response.status_code} {response.text[:200]}")
        except httpx.HTTPError as exc:
            ok = False
            if len(results["failures"]) < 5:
                results["failures"].append(f"{kind}: {exc.__class__.__name__} {exc}")
        results[kind]["latency"].append(time.perf_counter() - started)
        results[kind]["errors"] += not ok


async def run(url: str, clients: int, seconds: float, max_requests: int, pid: int | None, weights: list[float]) -> dict:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await http.post("/v1/indexes", json={"name": "load", "model": MODEL})
        rng = random.Random(0)
        for start in range(0, 2000, 200):
            docs = [{"id": f"s{i}", "text": sentence(rng, 30)} for i in range(start, start + 200)]
            (await http.post("/v1/indexes/load/documents", json={"documents": docs})).raise_for_status()
        results: dict = {kind: {"latency": [], "errors": 0} for kind in ("query", "embed", "ingest")}
        results["failures"] = []
        results["rss_start"] = rss_mib(pid) if pid else float("nan")  # after seeding, when the load begins
        until, budget = time.monotonic() + seconds, [max_requests]
        started = time.monotonic()
        await asyncio.gather(*(client(http, random.Random(i), until, budget, results, weights) for i in range(clients)))
        results["elapsed"] = time.monotonic() - started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--url", help="a running vsearch on loopback (default: start one)")
    parser.add_argument(
        "--mix", default="6,3,1", help="relative weights of queries, embeddings and ingests (default 6,3,1)"
    )
    args = parser.parse_args()
    weights = [float(w) for w in args.mix.split(",")]

    server = contextlib.nullcontext((args.url, None)) if args.url else local_server()
    with server as (url, process):
        pid = process.pid if process else None
        results = asyncio.run(run(url, args.clients, args.seconds, args.max_requests, pid, weights))
        rss_end = rss_mib(pid) if pid else float("nan")

    elapsed, rss_start, failures = results.pop("elapsed"), results.pop("rss_start"), results.pop("failures")
    total = sum(len(r["latency"]) for r in results.values())
    errors = sum(r["errors"] for r in results.values())
    print(
        f"{args.clients} clients, {elapsed:.1f} s: {total} requests, {total / elapsed:.1f} requests/s, {errors} errors"
    )
    for kind, r in results.items():
        if r["latency"]:
            lat = sorted(r["latency"])
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(
                f"  {kind:<7}{len(lat):>7} requests  p50 {statistics.median(lat) * 1000:8.1f} ms"
                f"  p99 {p99 * 1000:8.1f} ms  errors {r['errors']}"
            )
    print(f"server RSS: {rss_start:.0f} MiB when the load began, {rss_end:.0f} MiB at the end")
    for failure in failures:
        print(f"  failure: {failure}")


if __name__ == "__main__":
    main()
