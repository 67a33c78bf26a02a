"""Retrieval quality of vsearch on a BEIR dataset, end to end through the REST API.

    python scripts/eval_beir.py ../shared/datasets/scifact [--kind flat hnsw] [--chunking truncate split]
        [--dimensions 384 128 64] [--fit-projection 128 [--train-projection train]]
        [--mode dense lexical hybrid] [--fusion rrf convex] [--alpha 0.3 0.5] [--normalization minmax zscore]
        [--task beir known-item] [--group-by chunk document] [--split train]

For each (kind, chunking) pair: creates an index, ingests the corpus, runs the queries in each search mode (hybrid:
once per fusion x alpha x normalization), and prints nDCG@10, MRR@10, R@1 and Recall@100 (pytrec_eval, the
`bench` extra). Tasks:
- beir: the split's queries and qrels over `title + " " + text`;
- known-item: query = a document's title, corpus = the texts without titles, relevant = that document (documents
  without a title are skipped): a lexical-leaning task beside BEIR's semantic one.
`--group-by chunk` (default) folds chunks into documents here, keeping each document's best score; `document`
asks the server to (top_k then counts documents). Starts its own `vsearch serve` on a free loopback port and a
temporary data dir unless --url is given.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import statistics
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


def load_known_item(folder: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Titles as queries for their own bodies."""
    corpus, queries, qrels = {}, {}, {}
    with (folder / "corpus.jsonl").open() as f:
        for line in f:
            doc = json.loads(line)
            title, text = doc.get("title", "").strip(), doc["text"].strip()
            if title and text:
                corpus[doc["_id"]], queries[doc["_id"]], qrels[doc["_id"]] = text, title, {doc["_id"]: 1}
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
    depth = top_k if extra.get("group_by") == "document" else top_k * 2
    for i in range(0, len(ids), 50):
        part = ids[i : i + 50]
        body = {"queries": [queries[q] for q in part], "top_k": depth, "include": [], **extra}
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


def latency_p50(client: httpx.Client, name: str, queries: dict[str, str], count: int, extra: dict) -> float:
    """p50 in ms of single queries (one per request, one client, top_k 10), after a warm-up pass."""
    texts = list(queries.values())[:count]
    timings = []
    for round_ in range(2):
        for text in texts:
            start = time.perf_counter()
            check(client.post(f"/v1/indexes/{name}/query", json={"query": text, "top_k": 10, **extra}))
            if round_:
                timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000 if timings else float("nan")


def evaluate(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    import pytrec_eval

    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    count = len(qrels)  # a query with no results counts as 0
    reciprocal, first = 0.0, 0
    for query_id, relevant in qrels.items():
        ranked = sorted(run.get(query_id, {}).items(), key=lambda item: -item[1])[:10]
        rank = next((r for r, (doc, _) in enumerate(ranked, 1) if relevant.get(doc, 0) > 0), None)
        reciprocal += 1 / rank if rank else 0.0
        first += rank == 1
    return {
        "ndcg@10": sum(m["ndcg_cut_10"] for m in per_query.values()) / count,
        "mrr@10": reciprocal / count,
        "r@1": first / count,
        "recall@100": sum(m["recall_100"] for m in per_query.values()) / count,
    }


def variants(args: argparse.Namespace) -> list[dict]:
    """The query settings to compare: each mode; hybrid once per fusion setting."""
    found: list[dict] = []
    for mode in args.mode:
        if mode != "hybrid":
            found.append({"mode": mode})
            continue
        for fusion in args.fusion:
            if fusion == "rrf":
                found.append({"mode": mode, "fusion": "rrf"})
                continue
            for alpha in args.alpha:
                for normalization in args.normalization:
                    found.append({"mode": mode, "fusion": fusion, "alpha": alpha, "normalization": normalization})
    return [{**v, "group_by": args.group_by} for v in found]


def label(variant: dict) -> str:
    if variant.get("fusion") == "convex":
        return f"hybrid convex a={variant['alpha']} {variant['normalization']}"
    return f"hybrid {variant['fusion']}" if variant["mode"] == "hybrid" else variant["mode"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--kind", nargs="+", default=["flat", "hnsw"], choices=["flat", "hnsw"])
    parser.add_argument("--chunking", nargs="+", default=["truncate", "split"], choices=["truncate", "split"])
    parser.add_argument("--mode", nargs="+", default=["dense"], choices=["dense", "lexical", "hybrid"])
    parser.add_argument("--task", default="beir", choices=["beir", "known-item"])
    parser.add_argument("--fusion", nargs="+", default=["rrf", "convex"], choices=["rrf", "convex"])
    parser.add_argument("--alpha", nargs="+", type=float, default=[0.5], help="convex: the dense list's weight")
    parser.add_argument("--normalization", nargs="+", default=["minmax"], choices=["minmax", "zscore"])
    parser.add_argument("--group-by", default="chunk", choices=["chunk", "document"])
    parser.add_argument("--latency", type=int, default=0, help="also time N single queries per variant (p50)")
    parser.add_argument("--url", help="a running vsearch (default: start one on a temporary data dir)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--model", nargs="+", default=[MODEL], help="each model gets its own index (e.g. the -int8 one)"
    )
    parser.add_argument("--dimensions", nargs="+", type=int, default=[0],
                        help="each width gets its own index (0: the model's own); by truncation for a base model, "
                             "by prefix for a projection")  # fmt: skip
    parser.add_argument("--fit-projection", type=int, metavar="K",
                        help="also fit a K-d projection on the first model's full-width index of the corpus "
                             "(unsupervised), and evaluate it at each --dimensions up to K")  # fmt: skip
    parser.add_argument(
        "--train-projection",
        metavar="SPLIT",
        help="with --fit-projection: also train one on this split's (query, passage) pairs",
    )
    args = parser.parse_args()

    if args.task == "known-item":
        corpus, queries, qrels = load_known_item(args.dataset)
    else:
        corpus, queries, qrels = load_beir(args.dataset, args.split)
    print(f"{args.dataset.name} {args.task}: {len(corpus)} documents, {len(queries)} queries ({args.split})")
    server = contextlib.nullcontext((args.url, None)) if args.url else local_server()
    with server as (url, _), httpx.Client(base_url=url, timeout=600) as client:
        print(f"{'model':<30} {'dims':>4} {'kind':<6}{'chunking':<10}{'mode':<36}{'nDCG@10':>8}{'MRR@10':>8}{'R@1':>7}"
              f"{'R@100':>7}{'ingest s':>9}" + (f"{'p50 ms':>9}" if args.latency else ""))  # fmt: skip
        models = [(model, width) for model in args.model for width in args.dimensions]
        if args.fit_projection:
            models = [(m, w) for m, w in models if not (m == args.model[0] and w == 0)]  # fitted on, evaluated below
        for model, width in models:
            for kind in args.kind:
                for chunking in args.chunking:
                    name = run_one(client, args, corpus, queries, qrels, model, width, kind, chunking)
                    check(client.delete(f"/v1/indexes/{name}"))
        if args.fit_projection:
            fitted_on = run_one(client, args, corpus, queries, qrels, args.model[0], 0, args.kind[0], args.chunking[0])
            projections = [fit_projection(client, args.model[0], args.fit_projection, fitted_on)]
            if args.train_projection:
                pairs = load_beir(args.dataset, args.train_projection)
                projections.append(train_projection(client, args.model[0], args.fit_projection, pairs))
            for projection in projections:
                for width in sorted({w for w in args.dimensions if w <= args.fit_projection}, reverse=True):
                    name = run_one(client, args, corpus, queries, qrels, projection, width, args.kind[0],
                                   args.chunking[0])  # fmt: skip
                    check(client.delete(f"/v1/indexes/{name}"))


def run_one(client: httpx.Client, args: argparse.Namespace, corpus: dict[str, str], queries: dict[str, str],
            qrels: dict[str, dict[str, int]], model: str, width: int, kind: str, chunking: str) -> str:  # fmt: skip
    """An index of `model` at `width` (0: its own), the corpus ingested, each variant evaluated; its name."""
    name = f"eval-{args.dataset.name.lower()}-{kind}-{chunking}-{time.time_ns()}"
    check(client.post("/v1/indexes", json={"name": name, "model": model, "kind": kind,
                                           **({"dimensions": width} if width else {})}))  # fmt: skip
    seconds = ingest(client, name, corpus, chunking, args.batch_size)
    shown = model if len(model) <= 30 else f"{model[:14]}..{model[-14:]}"
    dims = check(client.get(f"/v1/indexes/{name}"))["dimensions"]
    for variant in variants(args):
        scores = evaluate(qrels, search(client, name, queries, 100, variant))
        p50 = latency_p50(client, name, queries, args.latency, variant) if args.latency else 0
        print(
            f"{shown:<30} {dims:>4} {kind:<6}{chunking:<10}{label(variant):<36}{scores['ndcg@10']:>8.4f}"
            f"{scores['mrr@10']:>8.4f}{scores['r@1']:>7.4f}{scores['recall@100']:>7.4f}"
            f"{seconds:>9.1f}" + (f"{p50:>9.1f}" if args.latency else ""),
            flush=True,
        )
    return name


def wait_for_job(client: httpx.Client, body: dict) -> str:
    job = check(client.post("/v1/fine_tuning/jobs", json=body))
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
        job = check(client.get(f"/v1/fine_tuning/jobs/{job['id']}"))
    if job["status"] != "succeeded":
        raise SystemExit(f"projection job {job['id']} {job['status']}: {job.get('error')}")
    return job["fine_tuned_model"]


def fit_projection(client: httpx.Client, model: str, width: int, index: str) -> str:
    """A projection fitted on the index's stored vectors: its model id."""
    method = {"type": "projection", "projection": {"hyperparameters": {"dimensions": width}, "index": index}}
    return wait_for_job(client, {"model": model, "method": method, "suffix": "fitted"})


def train_projection(client: httpx.Client, model: str, width: int, split: tuple) -> str:
    """A projection trained on a split's (query, relevant passage) pairs: its model id."""
    corpus, queries, qrels = split
    lines = [{"query": queries[q], "positive": corpus[d]}
             for q, docs in qrels.items() for d, grade in docs.items() if grade > 0 and d in corpus]  # fmt: skip
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = check(client.post("/v1/files", files={"file": ("pairs.jsonl", body)}, data={"purpose": "fine-tune"}))
    method = {"type": "projection", "projection": {"hyperparameters": {"dimensions": width}}}
    return wait_for_job(client, {"model": model, "training_file": upload["id"], "method": method, "suffix": "trained"})


if __name__ == "__main__":
    main()
