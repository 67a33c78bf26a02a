"""Lexical (BM25 over FTS5) and hybrid (reciprocal-rank fusion) search through the live server."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from indexes.config import IndexConfig
from indexes.databases.sqlite import sqlite3
from indexes.embedded.store import IndexStore
from indexes.values import ChunkRecord, DocumentRecord, SearchRequest
from tests.conftest import STORES, each_store, on_postgres
from tests.helpers import LiveServer
from tests.test_embeddings_api import assert_error
from tests.test_indexes_api import MODEL, add, new_index, query


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest) -> LiveServer:
    """Every test here runs against the embedded store and against PostgreSQL."""
    return each_store(request)


TARGET = "QZK-7731"


@pytest.fixture(scope="module")
def orders(server):
    import httpx

    rng = random.Random(3)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    codes = [f"{''.join(rng.choices(letters, k=3))}-{rng.randint(1000, 9999)}" for _ in range(40)]
    texts = [f"Order {code} was shipped by courier to the regional warehouse on time." for code in codes]
    texts[17] = f"Weather bulletin: light rain is expected on Tuesday afternoon. Reference {TARGET}."
    with httpx.Client(base_url=server.url, timeout=60) as http:
        name = new_index(http)
        add(
            http,
            name,
            [
                {"id": f"o{i}", "text": t, "metadata": {"region": "north" if i % 2 else "south"}}
                for i, t in enumerate(texts)
            ],
        )
    return name


def test_exact_rare_token_found_by_lexical_and_hybrid(http, orders):
    dense = query(http, orders, query=TARGET, top_k=40, mode="dense", include=[])
    lexical = query(http, orders, query=TARGET, top_k=5, mode="lexical", include=[])
    hybrid = query(http, orders, query=TARGET, top_k=5, mode="hybrid", fusion="rrf", include=[])
    convex = query(http, orders, query=TARGET, top_k=5, mode="hybrid", include=[])  # the default fusion
    dense_rank = [h["id"] for h in dense].index("o17") + 1
    assert lexical[0]["id"] == "o17" and lexical[0]["ranks"] == {"lexical": 1}
    assert hybrid[0]["id"] == "o17" and hybrid[0]["ranks"]["lexical"] == 1
    assert hybrid[0]["ranks"].get("dense") == dense_rank
    assert dense_rank > 1  # the dense model alone does not put it first
    assert hybrid[0]["score"] == pytest.approx(1 / 61 + 1 / (60 + dense_rank))
    assert convex[0]["id"] == "o17"


def test_filters_hold_in_every_mode(http, orders):
    for mode in ("dense", "lexical", "hybrid"):
        hits = query(http, orders, query="order shipped courier", mode=mode, top_k=40, filter={"region": "north"})
        assert all(h["metadata"]["region"] == "north" for h in hits), mode
        # 20 documents are in the north; one of them (o17) has none of the words, so BM25 cannot find it.
        assert len(hits) == (19 if mode == "lexical" else 20), mode


@pytest.mark.parametrize(
    "text",
    ['"unbalanced', "ware*", "NEAR(order courier)", "-shipped", "region:north", "AND OR NOT", ")))", "!!!", "^x"],
)
def test_fts_syntax_characters_are_plain_text(http, orders, text):
    for mode in ("lexical", "hybrid"):
        response = http.post(f"/v1/indexes/{orders}/query", json={"query": text, "mode": mode})
        assert response.status_code == 200, response.text
    assert query(http, orders, query="NEAR(order courier)", mode="lexical", top_k=3)  # still finds words


def test_weights_and_errors(http, orders):
    only_lexical = query(http, orders, query=TARGET, mode="hybrid", weights={"dense": 0, "lexical": 1}, top_k=3)
    assert only_lexical[0]["id"] == "o17"
    assert_error(http.post(f"/v1/indexes/{orders}/query", json={"vector": [0.0] * 384, "mode": "lexical"}), 400, "mode")
    assert_error(http.post(f"/v1/indexes/{orders}/query", json={"query": "x", "mode": "bm25"}), 400, "mode")
    assert_error(http.post(f"/v1/indexes/{orders}/query", json={"query": "x", "rrf_k": 0}), 400, "rrf_k")


def test_trigram_tokenizer_matches_substrings(http, server):
    if on_postgres(server):  # PostgreSQL's text search has no trigram tokenizer: said so, not half-done
        body = {"name": "tri", "model": MODEL, "lexical_tokenizer": "trigram"}
        assert_error(http.post("/v1/indexes", json=body), 400, "lexical_tokenizer")
        return
    name = new_index(http, lexical_tokenizer="trigram")
    assert http.get(f"/v1/indexes/{name}").json()["lexical_tokenizer"] == "trigram"
    add(http, name, [{"id": "a", "text": "part number XK-558812 in stock"}, {"id": "b", "text": "nothing here"}])
    assert [h["id"] for h in query(http, name, query="55881", mode="lexical")] == ["a"]


def test_lexical_rows_follow_documents(http):
    name = new_index(http)
    add(http, name, [{"id": "a", "text": "zebras graze on the savanna"}])
    add(http, name, [{"id": "a", "text": "penguins slide on the ice"}])
    assert query(http, name, query="zebras", mode="lexical") == []
    assert [h["id"] for h in query(http, name, query="penguins", mode="lexical")] == ["a"]
    http.delete(f"/v1/indexes/{name}/documents/a")
    assert query(http, name, query="penguins", mode="lexical") == []


def test_index_without_fts_table_gets_one_on_open(tmp_path: Path):
    """An index at schema version 1 (before lexical search) is brought to the current one on open."""
    store = IndexStore(tmp_path / "old", IndexConfig(name="old", model=MODEL, dimensions=4))
    vector = np.ones(4, "f4")
    store.upsert([DocumentRecord("d", "alpha beta gamma", {}, "h", [ChunkRecord(0, 16, vector)])])
    store.close()
    with sqlite3.connect(tmp_path / "old" / "index.sqlite") as db:
        db.execute("DROP TABLE chunks_fts")
        db.execute("PRAGMA user_version = 1")
    reopened = IndexStore(tmp_path / "old")
    assert [h.id for h in reopened.search(SearchRequest(mode="lexical", top_k=5), None, "gamma")] == ["d"]


def test_a_prefetched_lexical_list_is_used_only_if_nothing_was_written_since(tmp_path: Path):
    """Hybrid search computes its lexical list while the query is embedded; a write in between must not leave the
    search on the older list (results stay one snapshot)."""
    store = IndexStore(tmp_path / "p", IndexConfig(name="p", model=MODEL, dimensions=4))
    store.upsert([DocumentRecord("a", "red apples", {}, "h", [ChunkRecord(0, 10, np.ones(4, "f4"))])])
    request = SearchRequest(mode="hybrid", top_k=5)
    ahead = store.prefetch_lexical(request, "green pears")
    assert ahead is not None and len(ahead.ranked[1]) == 0  # nothing matches yet
    hits = store.search(request, np.ones((1, 4), "f4"), "green pears", ahead)
    assert [h.ranks for h in hits] == [{"dense": 1}]  # unchanged index: the prefetched (empty) list is used
    store.upsert([DocumentRecord("b", "green pears", {}, "h", [ChunkRecord(0, 11, -np.ones(4, "f4"))])])
    hits = store.search(request, np.ones((1, 4), "f4"), "green pears", ahead)
    assert {h.id: h.ranks.get("lexical") for h in hits}["b"] == 1  # written since: the list was computed again
    store.close()
