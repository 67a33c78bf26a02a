"""Throughput of vsearch's local embedder, fp32 and int8, against the reference (transformers on torch), side by
side, and the p50 latency of one short query through HTTP.

    pip install -e '.[bench]'
    python scripts/bench_embeddings.py [--sentences 1024] [--passages 256] [--requests 300]

Both systems embed the same texts (lengths spread around the mean, in random order), given 32 at a time: the
reference runs each 32 as one padded batch, as a plain transformers loop does; vsearch gets each 32 as one
embed call and batches them as it serves a request (sorted by length, at most 32 sequences and 1,024 padded
tokens per forward pass). A second vsearch column gives it all texts in one call, as one large /v1/embeddings
request would. The int8 model (all-MiniLM-L6-v2-int8) runs the same calls; its vectors are compared with fp32's
(cosine, min and mean). Same cores, one process, alternating rounds, best of each; ratios are printed because the
machines are shared and noisy. Needs the `bench` extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from serving import local_server

from service.embeddings.local import LocalEmbedder, available_cores
from service.embeddings.model_files import bundled_model_files

WORDS = (
    "the model search vector index query document patient protein cell market city river energy system data network "
    "memory latency customer engineer growth science booking mountain signal policy bank treaty light water garden "
    "tomato music guitar stage train platform moon apollo mitochondria revenue cloud software"
).split(" ")
BATCH = 32


def make_texts(count: int, words: int, seed: int) -> list[str]:
    """`count` texts of `words` words on average, lengths spread ±40% as in real corpora, in random order."""
    rng = random.Random(seed)
    lengths = [rng.randint(round(words * 0.6), round(words * 1.4)) for _ in range(count)]
    return [" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "." for n in lengths]


def time_ours(embedder: LocalEmbedder, texts: list[str], per_call: int) -> tuple[float, np.ndarray]:
    """`per_call` texts per embed call, as requests of that size would send them."""

    async def run() -> list[np.ndarray]:
        calls = range(0, len(texts), per_call)
        return [(await embedder.embed(texts[i : i + per_call], truncate=True)).vectors for i in calls]

    start = time.perf_counter()
    vectors = np.concatenate(asyncio.run(run()))
    return time.perf_counter() - start, vectors


class Reference:
    """all-MiniLM-L6-v2 as the model card runs it: transformers on torch, mean pooling, L2 normalisation."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(available_cores())
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()

    def time(self, texts: list[str]) -> tuple[float, np.ndarray]:
        torch, out = self.torch, []
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(texts), BATCH):
                batch = self.tokenizer(
                    texts[i : i + BATCH], padding=True, truncation=True, max_length=256, return_tensors="pt"
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return time.perf_counter() - start, np.concatenate(out)


def http_latency(requests: int, rounds: int) -> list[list[float]]:
    """One short query at a time through a real `vsearch serve` process on loopback, in `rounds` rounds."""
    with local_server() as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        body = {"model": "all-MiniLM-L6-v2", "input": "how do I reset my password?"}
        for _ in range(20):  # warm-up
            client.post("/v1/embeddings", json=body)
        results = []
        for _ in range(rounds):
            latencies = []
            for _ in range(requests):
                start = time.perf_counter()
                response = client.post("/v1/embeddings", json=body)
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()
            results.append(latencies)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=1024, help="number of ~10-word sentences")
    parser.add_argument("--passages", type=int, default=256, help="number of ~200-word passages")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per workload")
    parser.add_argument("--requests", type=int, default=300, help="sequential HTTP requests for the latency")
    args = parser.parse_args()

    files = bundled_model_files()
    reference = Reference(files.folder)
    with tempfile.TemporaryDirectory() as cache:
        fp32 = LocalEmbedder(files, Path(cache))
        int8 = LocalEmbedder(files, Path(cache), precision="int8")
        print(f"cores: {available_cores()}, {BATCH} texts per call, best of {args.rounds} alternating rounds")
        print(
            f"{'workload':<22}{'fp32/s':>9}{'reference/s':>13}{'ratio':>7}{'one call/s':>12}{'ratio':>7}"
            f"{'min cos':>10}{'int8/s':>9}{'÷fp32':>7}{'int8 cos min/mean':>20}"
        )
        for name, texts in [
            ("sentences (~10 words)", make_texts(args.sentences, 10, 1)),
            ("passages (~200 words)", make_texts(args.passages, 200, 2)),
        ]:
            for embedder in (fp32, int8):  # warm-up (and int8's graph is made here)
                time_ours(embedder, texts[:BATCH], BATCH)
            reference.time(texts[:BATCH])
            fp32_s, whole_s, int8_s, reference_s = [], [], [], []
            for _ in range(args.rounds):  # alternate, so drifts in machine load hit all alike
                seconds, fp32_vectors = time_ours(fp32, texts, BATCH)
                fp32_s.append(seconds)
                whole_s.append(time_ours(fp32, texts, len(texts))[0])
                seconds, int8_vectors = time_ours(int8, texts, BATCH)
                int8_s.append(seconds)
                seconds, reference_vectors = reference.time(texts)
                reference_s.append(seconds)
            agreement = float(np.min(np.sum(reference_vectors * fp32_vectors, axis=1)))
            int8_cosines = np.sum(int8_vectors * fp32_vectors, axis=1)
            rate = {key: len(texts) / min(times) for key, times in
                    (("fp32", fp32_s), ("whole", whole_s), ("int8", int8_s), ("reference", reference_s))}  # fmt: skip
            print(
                f"{name:<22}{rate['fp32']:>9.1f}{rate['reference']:>13.1f}{rate['fp32'] / rate['reference']:>6.2f}x"
                f"{rate['whole']:>12.1f}{rate['whole'] / rate['reference']:>6.2f}x{agreement:>10.6f}"
                f"{rate['int8']:>9.1f}{rate['int8'] / rate['fp32']:>6.2f}x"
                f"{float(int8_cosines.min()):>11.4f} / {float(int8_cosines.mean()):.4f}"
            )
        fp32.close()
        int8.close()
    rounds = http_latency(args.requests, args.rounds)
    p50s = [statistics.median(latencies) * 1000 for latencies in rounds]
    everything = [x for latencies in rounds for x in latencies]
    print(
        f"HTTP, one short query: p50 {statistics.median(everything) * 1000:.2f} ms over {len(everything)} requests "
        f"(per round: {', '.join(f'{p:.2f}' for p in p50s)} ms), p99 {np.percentile(everything, 99) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
