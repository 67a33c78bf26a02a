"""End-to-end ingest of a BEIR corpus through `vsearch ingest` and the service, next to the raw throughput of the
local model on the same texts, in one run.

    python scripts/bench_ingest.py ../shared/datasets/scifact [--limit 2000] [--batch-size 128]

Raw: the texts (title + " " + text, truncated to the window) embedded in-process by the local model, all at once.
End to end: a `vsearch serve` process and a `vsearch ingest --chunking truncate` process, HTTP, SQLite, FTS5 and
FAISS included. The two run one after the other on the same cores; the ratio is raw time / end-to-end time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving import local_server

from service.embeddings.local import LocalEmbedder
from service.embeddings.model_files import bundled_model_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a BEIR dataset folder")
    parser.add_argument("--limit", type=int, default=0, help="only the first N documents (0: all)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "beir"
        corpus.mkdir()
        lines = (args.dataset / "corpus.jsonl").read_text().splitlines()
        lines = lines[: args.limit] if args.limit else lines
        (corpus / "corpus.jsonl").write_text("\n".join(lines) + "\n")
        texts = [f"{d.get('title', '')} {d['text']}".strip() for d in map(json.loads, lines)]

        embedder = LocalEmbedder(bundled_model_files(), Path(work) / "models")
        asyncio.run(embedder.embed(texts[:64], truncate=True))  # warm-up
        start = time.perf_counter()
        asyncio.run(embedder.embed(texts, truncate=True))
        raw = time.perf_counter() - start
        embedder.close()
        del embedder

        with local_server() as (url, _):
            command = [
                *(sys.executable, "-m", "service", "ingest", str(corpus), "--index", "bench", "--url", url),
                *("--chunking", "truncate", "--batch-size", str(args.batch_size)),
                *("--concurrency", str(args.concurrency), "--checkpoint", str(Path(work) / "ckpt.json")),
            ]
            start = time.perf_counter()
            subprocess.run(command, check=True, cwd=work, stderr=subprocess.DEVNULL)
            end_to_end = time.perf_counter() - start

    count = len(texts)
    print(f"{count} documents, batch {args.batch_size}, concurrency {args.concurrency}")
    print(f"raw local model      {raw:7.1f} s  {count / raw:6.1f} docs/s")
    print(f"vsearch ingest e2e   {end_to_end:7.1f} s  {count / end_to_end:6.1f} docs/s")
    print(f"ratio (e2e rate / raw rate): {raw / end_to_end:.3f}")


if __name__ == "__main__":
    main()
