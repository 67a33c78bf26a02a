"""Fine-tune a query adapter on a BEIR dataset's train split through the API, and measure what it buys on test.

    python scripts/finetune_beir.py ../shared/datasets/scifact [--hard-negatives 4] [--url URL]

Ingests the corpus into a flat index (truncate), prints test nDCG@10 on all test queries and on those none of
whose relevant documents appear in train, turns the train qrels into a chat-format training file, fine-tunes with
the openai client, sets the index's query_model, and prints the same figures again. Only train qrels are trained
on. Starts its own server on a temporary data dir unless --url is given.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import httpx
import openai
from eval_beir import MODEL, check, evaluate, ingest, load_beir, search
from serving import local_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--url", help="a running vsearch (default: start one on a temporary data dir)")
    parser.add_argument(
        "--hard-negatives",
        type=int,
        nargs="+",
        default=[0, 4],
        help="one job per value: mine this many hard negatives per query from the index (0: none)",
    )
    parser.add_argument("--epochs", default="auto")
    args = parser.parse_args()

    corpus, test_queries, test_qrels = load_beir(args.dataset, "test")
    _, train_queries, train_qrels = load_beir(args.dataset, "train")
    train_docs = {doc for relevant in train_qrels.values() for doc in relevant}
    unseen = {q: t for q, t in test_queries.items() if not set(test_qrels[q]) & train_docs}
    print(f"{len(train_queries)} train queries, {len(test_queries)} test queries ({len(unseen)} with unseen documents)")

    server = contextlib.nullcontext((args.url, None)) if args.url else local_server()
    with server as (url, _), httpx.Client(base_url=url, timeout=600) as http:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        name = f"ft-{args.dataset.name.lower()}-{int(time.time())}"
        check(http.post("/v1/indexes", json={"name": name, "model": MODEL}))
        seconds = ingest(http, name, corpus, "truncate", 128)
        print(f"ingested {len(corpus)} documents in {seconds:.0f} s")

        def report(label: str) -> None:
            everything = evaluate(test_qrels, search(http, name, test_queries, 100, {}))
            fresh = evaluate({q: test_qrels[q] for q in unseen}, search(http, name, unseen, 100, {}))
            all_ndcg, unseen_ndcg = everything["ndcg@10"], fresh["ndcg@10"]
            print(f"{label:<8} nDCG@10 all test {all_ndcg:.4f}   unseen-documents subset {unseen_ndcg:.4f}")

        report("base")
        lines = [
            {"messages": [{"role": "user", "content": train_queries[q]}, {"role": "assistant", "content": corpus[d]}]}
            for q, relevant in train_qrels.items()
            for d in relevant
        ]
        payload = "".join(json.dumps(line) + "\n" for line in lines).encode()
        upload = client.files.create(file=("train.jsonl", io.BytesIO(payload)), purpose="fine-tune")
        epochs = args.epochs if args.epochs == "auto" else int(args.epochs)
        for negatives in args.hard_negatives:
            extra = {"hard_negatives": {"index": name, "count": negatives}} if negatives else {}
            job = client.fine_tuning.jobs.create(
                model=MODEL, training_file=upload.id, suffix=f"beir-hn{negatives}",
                hyperparameters={"n_epochs": epochs}, extra_body=extra,
            )  # fmt: skip
            started = time.monotonic()
            while job.status not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.2)
                job = client.fine_tuning.jobs.retrieve(job.id)
            if job.status != "succeeded":
                raise SystemExit(f"job {job.id} {job.status}: {job.error}")
            seconds = time.monotonic() - started
            print(
                f"job, {negatives} hard negatives/query: {len(lines)} pairs, {seconds:.1f} s from create to succeeded"
            )
            check(http.patch(f"/v1/indexes/{name}", json={"query_model": job.fine_tuned_model}))
            report(f"hn={negatives}")
        check(http.patch(f"/v1/indexes/{name}", json={"query_model": None}))


if __name__ == "__main__":
    main()
