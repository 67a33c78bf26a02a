"""The PostgreSQL store directly: filtered HNSW search is exact for selective filters and never short for broad
ones, and two writers of the same documents take turns."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from indexes.config import HnswConfig, IndexConfig
from indexes.databases.postgres import PgDatabase
from indexes.errors import StorageUnavailable
from indexes.filters import parse_filter
from indexes.postgres import store as pg_store
from indexes.postgres.catalog import PgCatalog
from indexes.values import ChunkRecord, DocumentRecord, SearchRequest
from service.errors import ErrorKind, from_store_error
from tests.helpers import new_database

N = 3000


@pytest.fixture()
def catalog(postgres: str) -> Iterator[PgCatalog]:
    database = PgDatabase(new_database(postgres), pool_size=4)
    yield PgCatalog(database)
    database.close()


@pytest.fixture()
def vectors() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(N, 16)).astype(np.float32)


def filled(catalog: PgCatalog, vectors: np.ndarray, **config) -> pg_store.PgIndexStore:
    # A deliberately poor graph (m 4, ef 10): a walk through it misses neighbours, an exact answer does not.
    catalog.create(IndexConfig(name="h", model="m", dimensions=16, kind="hnsw",
                               hnsw=HnswConfig(m=4, ef_construction=8, ef_search=10), **config))  # fmt: skip
    store = catalog.acquire("h")
    docs = [DocumentRecord(f"d{i}", "x", {"cat": i % 100, "half": i % 2}, "h", [ChunkRecord(0, 1, v)])
            for i, v in enumerate(vectors)]  # fmt: skip
    for first in range(0, N, 1000):
        store.upsert(docs[first : first + 1000])
    return store


def exact(vectors: np.ndarray, query: np.ndarray, keep: np.ndarray, k: int) -> list[str]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = np.where(keep, unit @ (query / np.linalg.norm(query)), -np.inf)
    return [f"d{i}" for i in np.argsort(-scores, kind="stable")[:k] if keep[i]]


@pytest.mark.parametrize("quantization", ["none", "sq8", "binary"])
def test_a_selective_filter_on_hnsw_gives_the_exact_top_k(catalog, vectors, quantization: str):
    store = filled(catalog, vectors, quantization=quantization)
    ids = np.arange(N)
    for q in range(5):
        query = vectors[q * 100 + 50] + 0.1
        request = SearchRequest(top_k=10, filter=parse_filter({"cat": 3}))
        found = [hit.id for hit in store.search(request, query[None, :], None)]
        assert found == exact(vectors, query, ids % 100 == 3, 10)


def test_a_broad_filter_through_the_graph_returns_only_matches_and_never_too_few(catalog, vectors, monkeypatch):
    monkeypatch.setattr(pg_store, "EXACT_LIMIT", 0)  # every filter walks the graph
    store = filled(catalog, vectors)
    half = store.search(SearchRequest(top_k=10, filter=parse_filter({"half": 1})), vectors[:1], None)
    assert len(half) == 10 and all(hit.metadata["half"] == 1 for hit in half)
    # Five matches, in a graph walk whose budget ends long before it meets them all: the exact redo finds them.
    rare = parse_filter({"$and": [{"cat": 3}, {"half": 1}, {"cat": {"$in": [3]}}]})
    monkeypatch.setattr(pg_store, "MAX_EF_SEARCH", 10)
    few = store.search(SearchRequest(top_k=50, filter=rare), vectors[:1], None)
    assert sorted(hit.id for hit in few) == sorted(f"d{i}" for i in range(N) if i % 100 == 3 and i % 2 == 1)


def test_two_writers_of_the_same_documents_take_turns(catalog):
    catalog.create(IndexConfig(name="w", model="m", dimensions=4))
    store = catalog.acquire("w")
    rng = np.random.default_rng(0)

    def write(chunks: int) -> None:
        for _ in range(20):
            docs = [DocumentRecord(f"d{i}", "abcdefgh", {}, "h",
                                   [ChunkRecord(c, c + 1, rng.normal(size=4).astype("f4")) for c in range(chunks)])
                    for i in reversed(range(30))]  # fmt: skip
            store.upsert(docs)

    writers = [threading.Thread(target=write, args=(chunks,)) for chunks in (1, 3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    with catalog.db.connection() as conn:
        rows = conn.execute(
            f"SELECT d.doc_id, d.chunk_count, count(c.id) FROM {store._documents} d "
            f"JOIN {store._chunks} c USING (doc_id) GROUP BY 1, 2"
        ).fetchall()
    assert len(rows) == 30 and all(count == chunk_count for _, chunk_count, count in rows)


def test_a_statement_past_the_timeout_is_storage_unavailable(postgres: str):
    database = PgDatabase(new_database(postgres), pool_size=1, statement_timeout_ms=100)
    try:
        with pytest.raises(StorageUnavailable, match="statement timeout"):
            database.execute("SELECT pg_sleep(2)")
        assert database.execute("SELECT 1") == [(1,)]  # the connection is still good
    finally:
        database.close()


def test_storage_unavailable_is_a_503_in_openai_shape():
    error = from_store_error(StorageUnavailable("PostgreSQL is unreachable: refused"))
    assert error.kind == ErrorKind.UNAVAILABLE and error.code == "storage_unavailable"
