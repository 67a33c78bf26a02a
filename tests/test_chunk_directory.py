"""The chunk directory (indexes/directory.py): hits named from memory are the hits named from SQLite, through any
sequence of writes, folds and reopens, and a write while it loads; over HTTP, `include: []` answers alike."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import indexes.embedded.directory
from indexes.config import HnswConfig, IndexConfig
from indexes.embedded.directory import ChunkDirectory
from indexes.embedded.store import IndexStore
from indexes.values import ChunkRecord, DocumentRecord, SearchRequest
from tests.conftest import STORES, each_store
from tests.helpers import LiveServer, wait_until
from tests.test_indexes_api import MODEL, add, new_index, query

DIMENSIONS = 4


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest) -> LiveServer:
    return each_store(request)


def document(doc_id: str, chunks: int, seed: int) -> DocumentRecord:
    rng = np.random.default_rng(seed)
    text = "x" * (10 * chunks)
    spans = [ChunkRecord(10 * i, 10 * i + 10, rng.normal(size=DIMENSIONS).astype("f4")) for i in range(chunks)]
    return DocumentRecord(doc_id, text, {"n": seed}, f"h{seed}", spans)


def wait_for_directory(store: IndexStore) -> None:
    wait_until(lambda: store._index.directory is not None, "the chunk directory to load", timeout=120, every=0.01)


def named(store: IndexStore, request: SearchRequest, vector: np.ndarray) -> list[tuple]:
    hits = store.search(request, vector[None, :], None)
    return [(h.id, h.score, h.parent_id, h.ranks, [(c.id, c.score) for c in h.chunks]) for h in hits]


def same_hits_both_ways(store: IndexStore, vector: np.ndarray) -> None:
    """Every hit named from memory (with_documents=False) is named as SQLite names it, chunk and document groups."""
    for group_by in ("chunk", "document"):
        from_sqlite = named(store, SearchRequest(top_k=50, group_by=group_by), vector)
        from_memory = named(store, SearchRequest(top_k=50, group_by=group_by, with_documents=False), vector)
        assert from_memory == from_sqlite


DOCUMENTS = st.lists(st.tuples(st.integers(0, 12), st.integers(1, 3)), min_size=1, max_size=4)  # (id, chunks)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("upsert"), st.lists(st.tuples(st.integers(0, 12), st.integers(1, 3)), min_size=1, max_size=4)
        ),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 12), min_size=1, max_size=3)),
        st.tuples(st.just("reopen"), st.just([])),
    ),
    min_size=1,
    max_size=12,
)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_hits_named_from_memory_are_the_hits_named_from_sqlite(tmp_path_factory, monkeypatch, operations):
    monkeypatch.setattr(
        indexes.embedded.directory, "FOLD_AT", 3
    )  # fold often: the arrays, the dict and the set all serve
    folder = tmp_path_factory.mktemp("directory") / "i"
    config = IndexConfig(name="i", model=MODEL, dimensions=DIMENSIONS, kind="hnsw", hnsw=HnswConfig())
    store = IndexStore(folder, config)
    probe = np.random.default_rng(0).normal(size=DIMENSIONS).astype("f4")
    try:
        for step, (operation, arguments) in enumerate(operations):
            if operation == "upsert":
                latest = {doc: chunks for doc, chunks in arguments}  # one record per id in a batch
                store.upsert([document(f"d{doc}", chunks, step * 100 + doc) for doc, chunks in latest.items()])
            elif operation == "delete":
                store.delete([f"d{doc}" for doc in arguments])
            else:
                store.close()
                store = IndexStore(folder)
            wait_for_directory(store)
            same_hits_both_ways(store, probe)
            assert len(store._index.directory) == store.stats().vector_count
    finally:
        store.close()


def test_a_write_while_it_loads_waits_and_is_named(tmp_path: Path, monkeypatch):
    """A write that arrives while the directory is read waits for it (the read lock), then is added to it."""
    store = IndexStore(tmp_path / "i", IndexConfig(name="i", model=MODEL, dimensions=DIMENSIONS))
    store.upsert([document(f"d{i}", 1 + i % 2, i) for i in range(20)])
    store.close()

    scan, reads, writers = ChunkDirectory.scan, [], []
    reopened = threading.Event()  # the load runs in the open's background thread: the new store is bound only after

    def overtaken(pages):
        directory = scan(pages)
        reads.append(len(directory))
        assert reopened.wait(60)
        writer = threading.Thread(target=lambda: store.upsert([document("late", 3, 99)]))
        writer.start()  # it must wait for this load to finish
        writers.append(writer)
        return directory

    monkeypatch.setattr(ChunkDirectory, "scan", staticmethod(overtaken))
    store = IndexStore(tmp_path / "i")
    reopened.set()
    try:
        wait_for_directory(store)
        writers[0].join(timeout=60)
        assert reads == [30]  # 10 documents of 1 chunk and 10 of 2, read once
        assert len(store._index.directory) == 33  # then "late"'s 3 chunks, added by the write
        nearest_late = document("late", 1, 99).chunks[0].vector
        same_hits_both_ways(store, nearest_late)
        late = store.search(SearchRequest(top_k=1, with_documents=False), nearest_late[None, :], None)
        assert (late[0].id, late[0].parent_id) == ("late#0", "late")
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_include_nothing_names_hits_as_include_text_does(http, kind):
    """Over HTTP on either store: hits asked for with nothing included have the ids, scores and parents of hits
    with their text (split documents included)."""
    name = new_index(http, kind=kind)
    long = " ".join(f"word{i} about tides and the moon" for i in range(30))
    add(http, name, [{"id": "long", "text": long}], chunking={"max_tokens": 16, "overlap_tokens": 0})
    add(http, name, [{"id": f"s{i}", "text": f"short note {i} on tides"} for i in range(8)])
    for group_by in ("chunk", "document"):
        full = query(http, name, query="tides and the moon", top_k=12, group_by=group_by, include=["text"])
        bare = query(http, name, query="tides and the moon", top_k=12, group_by=group_by, include=[])
        assert any(hit.get("parent_id") == "long" for hit in full)
        assert [(h["id"], h["score"], h.get("parent_id")) for h in bare] == [
            (h["id"], h["score"], h.get("parent_id")) for h in full
        ]
        assert all("text" not in hit and "metadata" not in hit for hit in bare)
