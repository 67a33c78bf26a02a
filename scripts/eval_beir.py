"""Retrieval quality of vsearch on a BEIR dataset, end to end through the REST API.

    python scripts/eval_beir.py ../shared/datasets/scifact [--kind flat hnsw] [--chunking truncate split]
                                [--mode dense lexical hybrid]

For each (kind, chunking) pair: creates an index, ingests the corpus (`title + " " + text`), runs the split's
queries in each search mode, and prints nDCG@10 and Recall@100 computed with pytrec_eval (the `bench` extra).
Starts its own `vsearch serve` on a free loopback port and a temporary data dir unless --url is given.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import time
from pathlib import Path

import httpx
from serving import local_server

MODEL = "all-MiniLM-L6-v2"


def load_beir(folder: Path, split: str) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    corpus = {}
    with (folder / "corpus.jsonl").open() as f:
        for line in f:
            doc = json.loads(line)
            corpus[doc["_id"]] = f"{doc.get('title', '')} {doc['text']}".strip()
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / f"{split}.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries = {}
    with (folder / "queries.jsonl").open() as f:
        for line in f:
            query = json.loads(line)
            if query["_id"] in qrels:
                queries[query["_id"]] = query["text"]
    return corpus, queries, qrels


def check(response: httpx.Response) -> dict:
    if response.status_code >= 400:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response.json()


def ingest(client: httpx.Client, name: str, corpus: dict[str, str], chunking: str, batch: int) -> float:
    start = time.perf_counter()
    items = list(corpus.items())
    for i in range(0, len(items), batch):
        documents = [{"id": doc_id, "text": text} for doc_id, text in items[i : i + batch]]
        check(
            client.post(
                f"/v1/indexes/{name}/documents", json={"documents": documents, "chunking": {"strategy": chunking}}
            )
        )
    return time.perf_counter() - start


def search(
    client: httpx.Client, name: str, queries: dict[str, str], top_k: int, extra: dict
) -> dict[str, dict[str, float]]:
    """Runs every query; chunks of one document count once, with their best score."""
    run: dict[str, dict[str, float]] = {}
    ids = list(queries)
    for i in range(0, len(ids), 50):
        part = ids[i : i + 50]
        body = {"queries": [queries[q] for q in part], "top_k": top_k * 2, "include": [], **extra}
        for query_id, result in zip(
            part, check(client.post(f"/v1/indexes/{name}/query", json=body))["data"], strict=True
        ):
            scores: dict[str, float] = {}
            for hit in result["data"]:
                doc_id = hit.get("parent_id") or hit["id"]
                scores[doc_id] = max(scores.get(doc_id, float("-inf")), hit["score"])
            best = sorted(scores.items(), key=lambda item: -item[1])[:top_k]
            run[query_id] = dict(best)
    return run


def evaluate(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    import pytrec_eval

    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    count = len(qrels)  # a query with no results counts as 0
    return {
        "ndcg@10": sum(m["ndcg_cut_10"] for m in per_query.values()) / count,
        "recall@100": sum(m["recall_100"] for m in per_query.values()) / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--kind", nargs="+", default=["flat", "hnsw"], choices=["flat", "hnsw"])
    parser.add_argument("--chunking", nargs="+", default=["truncate", "split"], choices=["truncate", "split"])
    parser.add_argument("--mode", nargs="+", default=["dense"], choices=["dense", "lexical", "hybrid"])
    parser.add_argument("--url", help="a running vsearch (default: start one on a temporary data dir)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--model", nargs="+", default=[MODEL], help="each model gets its own index (e.g. the -int8 one)"
    )
    args = parser.parse_args()

    corpus, queries, qrels = load_beir(args.dataset, args.split)
    print(f"{args.dataset.name}: {len(corpus)} documents, {len(queries)} {args.split} queries")
    server = contextlib.nullcontext((args.url, None)) if args.url else local_server()
    with server as (url, _), httpx.Client(base_url=url, timeout=600) as client:
        print(f"{'model':<24}{'kind':<6}{'chunking':<10}{'mode':<9}{'nDCG@10':>9}{'R@100':>8}{'ingest s':>10}"
              f"{'docs/s':>8}")  # fmt: skip
        for model in args.model:
            for kind in args.kind:
                for chunking in args.chunking:
                    name = f"eval-{args.dataset.name.lower()}-{kind}-{chunking}-{int(time.time())}"
                    check(client.post("/v1/indexes", json={"name": name, "model": model, "kind": kind}))
                    seconds = ingest(client, name, corpus, chunking, args.batch_size)
                    for mode in args.mode:
                        scores = evaluate(qrels, search(client, name, queries, 100, {"mode": mode}))
                        print(
                            f"{model:<24}{kind:<6}{chunking:<10}{mode:<9}{scores['ndcg@10']:>9.4f}"
                            f"{scores['recall@100']:>8.4f}{seconds:>10.1f}{len(corpus) / seconds:>8.1f}",
                            flush=True,
                        )
                    check(client.delete(f"/v1/indexes/{name}"))


if __name__ == "__main__":
    main()
