"""Quality of service: do queries stay fast while `vsearch ingest` loads data at full speed?

    python scripts/bench_qos.py ../shared/datasets/scifact [--limit 2000] [--qps 10] [--model all-MiniLM-L6-v2]

Starts `vsearch serve` on a temporary data dir and, in one run:
1. ingests the corpus into index `alone` with `vsearch ingest` (batch 128, concurrency 2): docs/s alone;
2. sends single queries to `alone` at `--qps` for 20 s with nothing else running: idle p50/p99;
3. ingests the corpus again into index `busy` while the same query client runs: query p50/p99 during the
   ingest, and the ingest's docs/s beside the queries;
4. creates a fine-tuning job on the dataset's train pairs with nothing else running, then ingests the corpus a
   third time and 5 s in creates the same job: how long each took from creation to its first training step
   (almost all of it the job's own embedding pass, which shares the workers with the ingest's batches).
Prints the goals of issue 13 beside the numbers. Loopback only; bounded by the corpus size and --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from serving import local_server


def corpus_file(dataset: Path, limit: int, folder: Path) -> Path:
    out = folder / "corpus.jsonl"
    with (dataset / "corpus.jsonl").open() as source, out.open("w") as target:
        for i, line in enumerate(source):
            if limit and i >= limit:
                break
            target.write(line)
    return out


def ingest(url: str, corpus: Path, index: str, model: str, workdir: Path) -> float:
    """`vsearch ingest` as a user runs it; returns documents per second."""
    documents = sum(1 for _ in corpus.open())
    command = [sys.executable, "-m", "service", "ingest", str(corpus), "--index", index, "--url", url,
               "--model", model, "--id-field", "_id", "--text-field", "{title} {text}", "--metadata-fields", "",
               "--batch-size", "128", "--concurrency", "2", "--chunking", "truncate",
               "--checkpoint", str(workdir / f"{index}.json"),
               "--rejects", str(workdir / f"{index}.rejects")]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return documents / (time.perf_counter() - started)


class QueryClient(threading.Thread):
    """Single queries at a fixed rate (open loop: a slow answer does not delay the next send)."""

    def __init__(self, url: str, index: str, queries: list[str], qps: float) -> None:
        super().__init__(daemon=True)
        self.url, self.index, self.queries, self.qps = url, index, queries, qps
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:
            pending: set[asyncio.Task] = set()
            start, sent = time.perf_counter(), 0
            while not self.stop.is_set():
                delay = start + sent / self.qps - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.add(asyncio.create_task(self._one(client, self.queries[sent % len(self.queries)])))
                sent += 1
            await asyncio.gather(*pending)

    async def _one(self, client: httpx.AsyncClient, text: str) -> None:
        begun = time.perf_counter()
        response = await client.post(f"/v1/indexes/{self.index}/query", json={"query": text, "top_k": 10})
        if response.status_code == 200:
            self.latencies.append(time.perf_counter() - begun)
        else:
            self.errors += 1


def percentiles(latencies: list[float]) -> tuple[float, float]:
    return statistics.median(latencies) * 1000, float(np.percentile(latencies, 99)) * 1000


def training_pairs(dataset: Path, limit: int) -> bytes:
    queries = {q["_id"]: q["text"] for q in map(json.loads, (dataset / "queries.jsonl").open())}
    corpus = {
        d["_id"]: f"{d.get('title', '')} {d['text']}".strip()
        for d in map(json.loads, (dataset / "corpus.jsonl").open())
    }
    lines = []
    for row in list((dataset / "qrels" / "train.tsv").open())[1:]:
        query_id, doc_id, score = row.split("\t")[:3]
        if int(score) > 0 and query_id in queries and doc_id in corpus:
            lines.append(json.dumps({"query": queries[query_id], "positive": corpus[doc_id]}))
    return ("\n".join(lines[:limit]) + "\n").encode()


def start_fine_tuning(url: str, dataset: Path, model: str) -> dict:
    """Creates a job and returns, once it trains, how long that took and how long its embedding pass ran."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    upload = client.files.create(file=("train.jsonl", io.BytesIO(training_pairs(dataset, 400))), purpose="fine-tune")
    created = time.perf_counter()
    job = client.fine_tuning.jobs.create(model=model, training_file=upload.id, hyperparameters={"n_epochs": 1})
    running_at = trained_at = None
    while trained_at is None and time.perf_counter() - created < 900:
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        if running_at is None and any(e.message == "Fine-tuning job started" for e in events):
            running_at = time.perf_counter()
        if any(e.type == "metrics" for e in events) or client.fine_tuning.jobs.retrieve(job.id).status == "succeeded":
            trained_at = time.perf_counter()
        time.sleep(0.2)
    return {"to_training_s": (trained_at or time.perf_counter()) - created,
            "embedding_pass_s": (trained_at or time.perf_counter()) - (running_at or created)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--limit", type=int, default=2000, help="first N corpus documents (0: all)")
    parser.add_argument("--qps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the idle query phase")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    args = parser.parse_args()
    queries = [q["text"] for q in map(json.loads, (args.dataset / "queries.jsonl").open())]
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as work, local_server() as (url, _):
        workdir = Path(work)
        corpus = corpus_file(args.dataset, args.limit, workdir)
        alone = ingest(url, corpus, "alone", args.model, workdir)

        idle = QueryClient(url, "alone", queries, args.qps)
        idle.start()
        time.sleep(args.seconds)
        idle.stop.set()
        idle.join()

        busy = QueryClient(url, "alone", queries, args.qps)
        busy.start()
        beside = ingest(url, corpus, "busy", args.model, workdir)
        busy.stop.set()
        busy.join()

        job_alone = start_fine_tuning(url, args.dataset, args.model)
        job: dict = {}

        def job_during_ingest() -> None:
            time.sleep(5)  # the ingest is under way
            job.update(start_fine_tuning(url, args.dataset, args.model))

        tuner = threading.Thread(target=job_during_ingest, daemon=True)
        tuner.start()
        ingest(url, corpus, "tuned", args.model, workdir)
        tuner.join(timeout=900)
        documents = sum(1 for _ in corpus.open())

    idle_p50, idle_p99 = percentiles(idle.latencies)
    busy_p50, busy_p99 = percentiles(busy.latencies)
    print(f"corpus: {documents} documents, queries at "
          f"{args.qps:g}/s, model {args.model}")  # fmt: skip
    print(f"query p50/p99 idle          {idle_p50:7.1f} / {idle_p99:7.1f} ms   ({len(idle.latencies)} queries, "
          f"{idle.errors} errors)")  # fmt: skip
    print(f"query p50/p99 during ingest {busy_p50:7.1f} / {busy_p99:7.1f} ms   ({len(busy.latencies)} queries, "
          f"{busy.errors} errors)  goal: p99 <= 250 ms, p50 <= 4x idle ({busy_p50 / idle_p50:.1f}x)")  # fmt: skip
    print(f"ingest alone {alone:6.1f} docs/s, beside the queries {beside:6.1f} docs/s "
          f"({beside / alone:.0%} of alone; goal >= 85%)")  # fmt: skip
    print(f"fine-tuning job alone: first training step {job_alone['to_training_s']:.1f} s after creation")
    if job:
        print(f"fine-tuning job created during an ingest: first training step {job['to_training_s']:.1f} s after "
              f"creation, {job['embedding_pass_s']:.1f} s after it started running (its embedding pass)")  # fmt: skip
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
