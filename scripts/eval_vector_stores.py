"""Vector stores against /v1/indexes on a BEIR dataset: the same corpus, model and chunking through both doors, and
what each costs.

    python scripts/eval_vector_stores.py ../shared/datasets/scifact [--split test] [--pdf a.pdf] [--url URL]

1. Quality. The corpus is uploaded through the `openai` client as one file per document (`{title} {text}` as
   .txt, the title as an attribute), attached in file batches, and searched with `vector_stores.search` (ranker
   auto, 50 results: chunks, folded into files by their best score). The same texts go to an index through
   /v1/indexes with the chunking a vector store's `auto` means here (the model's window, half of it overlapping)
   and are searched in hybrid mode. Prints nDCG@10 of each, and their difference.
2. Throughput. Files/s from attaching the batches until every file is `completed` (parse + chunk + embed + store;
   the uploads are timed apart), beside `vsearch ingest` of the same texts as a folder of .txt files and
   /v1/indexes' documents/s. With --pdf: pages/s of that PDF through a vector store, and through `vsearch ingest`.

Starts its own `vsearch serve` on a temporary data dir unless --url is given. Needs the `bench` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
from eval_beir import check, evaluate, load_beir
from serving import local_server

BATCH = 2000  # OpenAI's most files in one batch


def titled_corpus(folder: Path) -> dict[str, tuple[str, str]]:
    with (folder / "corpus.jsonl").open() as f:
        return {d["_id"]: (d.get("title", ""), d["text"]) for d in map(json.loads, f)}


def wait_for_store(client: openai.OpenAI, store_id: str) -> None:
    while (store := client.vector_stores.retrieve(store_id)).file_counts.in_progress:
        time.sleep(0.5)
    if store.file_counts.failed:
        raise SystemExit(f"{store.file_counts.failed} files failed")


def in_order(doc_ids: list[str]) -> dict[str, float]:
    """The first 10 documents in the order their chunks came (a document counts once, at its best chunk), scored
    by rank for pytrec_eval."""
    first = list(dict.fromkeys(doc_ids))[:10]
    return {doc_id: float(len(first) - rank) for rank, doc_id in enumerate(first)}


def store_run(client: openai.OpenAI, store_id: str, queries: dict[str, str], names: dict[str, str]) -> dict:
    """Each query's files in the ranker's order (a result's score is its cosine similarity, not its rank)."""

    def one(query: str) -> dict[str, float]:
        results = client.vector_stores.search(store_id, query=query, max_num_results=50)
        return in_order([names[result.file_id] for result in results])

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(queries, pool.map(one, queries.values()), strict=True))


def index_run(http: httpx.Client, name: str, queries: dict[str, str]) -> dict:
    run = {}
    for query_id, text in queries.items():
        body = {"query": text, "top_k": 50, "mode": "hybrid", "include": []}
        hits = check(http.post(f"/v1/indexes/{name}/query", json=body))["data"]
        run[query_id] = in_order([hit.get("parent_id") or hit["id"] for hit in hits])
    return run


def vsearch_ingest(url: str, folder: Path, index: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "service", "ingest", str(folder), "--index", index, "--url", url,
                    "--checkpoint", str(folder.parent / f"{index}.checkpoint")], check=True)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pdf", type=Path, help="a real PDF to time pages/s on")
    parser.add_argument("--url", help="a running vsearch (default: start one on a temporary data dir)")
    args = parser.parse_args()

    corpus = titled_corpus(args.dataset)
    texts, queries, qrels = load_beir(args.dataset, args.split)
    print(f"{args.dataset.name}: {len(corpus)} documents, {len(queries)} queries ({args.split})", flush=True)
    server = contextlib.nullcontext((args.url, None)) if args.url else local_server()
    with server as (url, _), httpx.Client(base_url=url, timeout=600) as http, tempfile.TemporaryDirectory() as tmp:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=2, timeout=600)
        start = time.perf_counter()

        def upload(item: tuple[str, tuple[str, str]]) -> tuple[str, str]:
            doc_id, (title, text) = item
            data = f"{title} {text}".strip().encode()
            return client.files.create(file=(f"{doc_id}.txt", data), purpose="assistants").id, doc_id

        with ThreadPoolExecutor(4) as pool:
            names = dict(pool.map(upload, corpus.items()))
        uploaded = time.perf_counter() - start
        store = client.vector_stores.create(name=f"eval-{args.dataset.name}")
        start = time.perf_counter()
        by_id = {doc_id: file_id for file_id, doc_id in names.items()}
        items = [{"file_id": by_id[d], "attributes": {"title": t[:512]}} for d, (t, _) in corpus.items()]
        for i in range(0, len(items), BATCH):
            client.vector_stores.file_batches.create(store.id, files=items[i : i + BATCH])
        wait_for_store(client, store.id)
        processed = time.perf_counter() - start
        chunking = client.vector_stores.files.list(store.id, limit=1).data[0].chunking_strategy.static

        name = f"eval-index-{int(time.time())}"
        check(http.post("/v1/indexes", json={"name": name, "model": client.vector_stores.retrieve(store.id).model}))
        start = time.perf_counter()
        split = {"max_tokens": chunking.max_chunk_size_tokens, "overlap_tokens": chunking.chunk_overlap_tokens}
        ids = list(texts)
        for i in range(0, len(ids), 128):
            documents = [{"id": doc_id, "text": texts[doc_id]} for doc_id in ids[i : i + 128]]
            check(http.post(f"/v1/indexes/{name}/documents", json={"documents": documents, "chunking": split}))
        indexed = time.perf_counter() - start

        folder = Path(tmp) / "corpus"
        folder.mkdir()
        for doc_id, text in texts.items():
            (folder / f"{doc_id}.txt").write_text(text)
        ingested = vsearch_ingest(url, folder, f"eval-ingest-{int(time.time())}")

        stores_ndcg = evaluate(qrels, store_run(client, store.id, queries, names))["ndcg@10"]
        index_ndcg = evaluate(qrels, index_run(http, name, queries))["ndcg@10"]
        print(f"chunking: {chunking.max_chunk_size_tokens} tokens, {chunking.chunk_overlap_tokens} overlapping")
        print(f"nDCG@10  vector store (auto) {stores_ndcg:.4f}   /v1/indexes (hybrid) {index_ndcg:.4f}   "
              f"difference {stores_ndcg - index_ndcg:+.4f}")  # fmt: skip
        n = len(corpus)
        print(f"files/s  vector store {n / processed:.1f} (uploads apart: {n / uploaded:.1f} uploads/s)   "
              f"vsearch ingest (folder of .txt) {n / ingested:.1f}   "
              f"/v1/indexes documents/s {n / indexed:.1f}")  # fmt: skip

        if args.pdf:
            import pypdfium2

            pages = len(pypdfium2.PdfDocument(str(args.pdf)))
            start = time.perf_counter()
            pdf = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=args.pdf,
                                                             poll_interval_ms=100)  # fmt: skip
            pdf_s = time.perf_counter() - start
            assert pdf.status == "completed", pdf.last_error
            pdf_folder = Path(tmp) / "pdf"
            pdf_folder.mkdir()
            (pdf_folder / args.pdf.name).write_bytes(args.pdf.read_bytes())
            ingest_s = vsearch_ingest(url, pdf_folder, f"eval-pdf-{int(time.time())}")
            print(f"pages/s  {args.pdf.name} ({pages} pages): vector store {pages / pdf_s:.1f} (upload included)   "
                  f"vsearch ingest {pages / ingest_s:.1f} (process start included)")  # fmt: skip


if __name__ == "__main__":
    main()
