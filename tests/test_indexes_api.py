"""/v1/indexes through the live server: lifecycle, ingest, query, upsert, delete, pagination, chunking."""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.conftest import STORES, each_store
from tests.helpers import LiveServer
from tests.test_embeddings_api import assert_error


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest) -> LiveServer:
    """Every test here runs against the embedded store and against PostgreSQL."""
    return each_store(request)


MODEL = "all-MiniLM-L6-v2"
_names = itertools.count()

DOCS = [
    {"id": "cat", "text": "The cat sat on the mat and purred.", "metadata": {"animal": "cat", "legs": 4}},
    {"id": "dog", "text": "Dogs bark loudly at the postman.", "metadata": {"animal": "dog", "legs": 4}},
    {"id": "bird", "text": "A sparrow sings at dawn in the garden.", "metadata": {"animal": "bird", "legs": 2}},
    {"id": "fish", "text": "Goldfish swim in circles in their bowl.", "metadata": {"animal": "fish", "legs": 0}},
]


def new_index(http: httpx.Client, **config) -> str:
    name = f"t{next(_names)}-{config.get('kind', 'flat')}"
    response = http.post("/v1/indexes", json={"name": name, "model": MODEL, **config})
    assert response.status_code == 200, response.text
    return name


def add(http: httpx.Client, name: str, documents: list[dict], **extra) -> dict:
    response = http.post(f"/v1/indexes/{name}/documents", json={"documents": documents, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def query(http: httpx.Client, name: str, **body) -> list[dict]:
    response = http.post(f"/v1/indexes/{name}/query", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_create_ingest_query(http, kind):
    name = new_index(http, kind=kind)
    result = add(http, name, DOCS)
    assert result["ids"] == ["cat", "dog", "bird", "fish"]
    assert (result["created"], result["updated"], result["unchanged"]) == (4, 0, 0)
    assert result["usage"]["prompt_tokens"] > 0

    hits = query(http, name, query="a kitten resting on a rug", top_k=2)
    assert [h["id"] for h in hits][0] == "cat"
    assert hits[0]["metadata"] == {"animal": "cat", "legs": 4} and hits[0]["text"] == DOCS[0]["text"]
    assert hits[0]["score"] >= hits[1]["score"]

    filtered = query(http, name, query="a kitten resting on a rug", filter={"legs": {"$lt": 4}}, top_k=10)
    assert {h["id"] for h in filtered} == {"bird", "fish"}

    index = http.get(f"/v1/indexes/{name}").json()
    assert index["object"] == "index" and index["kind"] == kind
    assert (index["document_count"], index["vector_count"], index["dimensions"]) == (4, 4, 384)
    assert index["bytes"] > 0
    assert name in [i["name"] for i in http.get("/v1/indexes").json()["data"]]


def test_query_options(http):
    name = new_index(http)
    add(http, name, DOCS)
    bare = query(http, name, query="birdsong", top_k=1, include=[])
    assert set(bare[0]) == {"id", "score", "ranks"} and bare[0]["ranks"] == {"dense": 1}
    with_vector = query(http, name, query="birdsong", top_k=1, include=["vector"])
    assert len(with_vector[0]["vector"]) == 384 and "text" not in with_vector[0]
    by_vector = query(http, name, vector=with_vector[0]["vector"], top_k=1)
    assert by_vector[0]["id"] == with_vector[0]["id"] and by_vector[0]["score"] == pytest.approx(1, abs=1e-5)
    assert all(h["score"] >= 0.3 for h in query(http, name, query="birdsong", min_score=0.3))
    batch = http.post(f"/v1/indexes/{name}/query", json={"queries": ["kitten", "goldfish bowl"], "top_k": 1}).json()
    assert [r["data"][0]["id"] for r in batch["data"]] == ["cat", "fish"]
    assert batch["model"] == MODEL


def test_upsert_replaces_and_skips_unchanged(http):
    name = new_index(http)
    add(http, name, DOCS)
    again = add(http, name, DOCS)
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 4)
    changed = add(http, name, [{"id": "cat", "text": "Lions hunt on the savanna.", "metadata": {"animal": "lion"}}])
    assert (changed["created"], changed["updated"]) == (0, 1)
    doc = http.get(f"/v1/indexes/{name}/documents/cat").json()
    assert doc["text"] == "Lions hunt on the savanna." and doc["metadata"] == {"animal": "lion"}
    assert query(http, name, query="big cats hunting prey", top_k=1)[0]["id"] == "cat"
    assert http.get(f"/v1/indexes/{name}").json()["vector_count"] == 4
    generated = add(http, name, [{"text": "no id given"}])
    assert generated["ids"][0].startswith("doc-") and generated["created"] == 1


def test_delete_documents(http):
    name = new_index(http)
    add(http, name, DOCS)
    deleted = http.delete(f"/v1/indexes/{name}/documents/dog")
    assert deleted.json() == {"id": "dog", "object": "document", "deleted": True}
    assert_error(http.get(f"/v1/indexes/{name}/documents/dog"), 404, "id", "document_not_found")
    assert_error(http.delete(f"/v1/indexes/{name}/documents/dog"), 404, "id", "document_not_found")
    by_filter = http.post(f"/v1/indexes/{name}/documents/delete", json={"filter": {"legs": {"$lte": 2}}}).json()
    assert sorted(by_filter["ids"]) == ["bird", "fish"] and by_filter["deleted"] == 2
    by_ids = http.post(f"/v1/indexes/{name}/documents/delete", json={"ids": ["cat", "nope"]}).json()
    assert by_ids["ids"] == ["cat"]
    assert query(http, name, query="anything") == []
    assert http.get(f"/v1/indexes/{name}").json()["vector_count"] == 0


def test_pagination_is_stable(http):
    name = new_index(http)
    ids = [f"doc-{i:03d}" for i in range(25)]
    add(http, name, [{"id": i, "text": f"document number {i}"} for i in ids])
    seen, after = [], None
    while True:
        params = {"limit": 10, **({"after": after} if after else {})}
        page = http.get(f"/v1/indexes/{name}/documents", params=params).json()
        seen += [d["id"] for d in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids
    assert_error(http.get(f"/v1/indexes/{name}/documents", params={"limit": 0}), 400, "limit")


def test_long_text_is_split_into_chunks(http):
    name = new_index(http)
    paragraphs = [
        "Volcanoes erupt molten lava and ash when pressure builds under the crust. " * 12,
        "Chess openings like the Sicilian defence shape the middle game strategy. " * 12,
        "Sourdough bread rises slowly thanks to wild yeast and lactic bacteria. " * 12,
    ]
    text = " ".join(paragraphs)
    result = add(http, name, [{"id": "long", "text": text, "metadata": {"kind": "essay"}}])
    assert result["created"] == 1
    doc = http.get(f"/v1/indexes/{name}/documents/long").json()
    assert doc["chunks"] > 1 and doc["text"] == text
    hits = query(http, name, query="baking bread with yeast", top_k=1)
    assert hits[0]["parent_id"] == "long" and hits[0]["id"].startswith("long#")
    assert "Sourdough" in hits[0]["text"] and hits[0]["metadata"] == {"kind": "essay"}
    chunk_count = http.get(f"/v1/indexes/{name}").json()["vector_count"]
    assert chunk_count == doc["chunks"]

    add(http, name, [{"id": "long", "text": text}], chunking={"strategy": "truncate"})
    assert http.get(f"/v1/indexes/{name}").json()["vector_count"] == 1
    add(http, name, [{"id": "long", "text": text}], chunking={"max_tokens": 64, "overlap_tokens": 8})
    assert http.get(f"/v1/indexes/{name}").json()["vector_count"] > chunk_count
    http.delete(f"/v1/indexes/{name}/documents/long")
    assert http.get(f"/v1/indexes/{name}").json()["vector_count"] == 0


def test_supplied_vectors_and_dimensions(http):
    name = new_index(http, dimensions=8, metric="l2")
    index = http.get(f"/v1/indexes/{name}").json()
    assert index["dimensions"] == 8 and index["metric"] == "l2"
    add(http, name, [{"id": "v", "vector": [1, 0, 0, 0, 0, 0, 0, 0]}, {"id": "t", "text": "embedded at 8 dimensions"}])
    hits = query(http, name, vector=[1, 0, 0, 0, 0, 0, 0, 0], top_k=2, include=["vector"])
    assert hits[0]["id"] == "v" and hits[0]["score"] == pytest.approx(0) and len(hits[1]["vector"]) == 8
    assert hits[1]["score"] < 0  # l2: minus the Euclidean distance
    error = assert_error(
        http.post(f"/v1/indexes/{name}/documents", json={"documents": [{"vector": [1, 2]}]}), 400, "documents[0].vector"
    )
    assert "2 dimensions" in error["message"]
    assert_error(http.post(f"/v1/indexes/{name}/query", json={"vector": [1.0]}), 400, "vector")


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"name": "Bad Name", "model": MODEL}, 400, "name", None),
        ({"name": "../escape", "model": MODEL}, 400, "name", None),
        ({"name": "ok", "model": "nope"}, 404, "model", "model_not_found"),
        ({"name": "ok", "model": MODEL, "dimensions": 999}, 400, "dimensions", None),
        ({"name": "ok", "model": MODEL, "metric": "manhattan"}, 400, "metric", None),
        ({"name": "ok", "model": MODEL, "kind": "flat", "hnsw": {"m": 16}}, 400, "hnsw", None),
        ({"name": "ok", "model": MODEL, "kind": "hnsw", "hnsw": {"m": 1}}, 400, "hnsw.m", None),
        ({"name": "ok", "model": MODEL, "shards": 3}, 400, "shards", None),
    ],
)
def test_create_index_errors(http, body, status, param, code):
    assert_error(http.post("/v1/indexes", json=body), status, param, code)


def test_index_lifecycle_errors(http):
    name = new_index(http, kind="hnsw", hnsw={"m": 16, "ef_search": 32})
    assert_error(http.post("/v1/indexes", json={"name": name, "model": MODEL}), 409, "name", "index_exists")
    patched = http.patch(f"/v1/indexes/{name}", json={"ef_search": 200}).json()
    assert patched["hnsw"] == {"m": 16, "ef_construction": 200, "ef_search": 200}
    assert_error(http.patch(f"/v1/indexes/{name}", json={"m": 8}), 400, "m")
    assert_error(http.get("/v1/indexes/missing"), 404, "name", "index_not_found")
    assert_error(http.post("/v1/indexes/missing/query", json={"query": "x"}), 404, "name", "index_not_found")
    assert_error(http.post(f"/v1/indexes/{name}/documents", json={"documents": []}), 400, "documents")
    assert_error(
        http.post(f"/v1/indexes/{name}/documents", json={"documents": [{"text": " "}]}), 400, "documents[0].text"
    )
    assert_error(http.post(f"/v1/indexes/{name}/documents", json={"documents": [{"txt": "a"}]}), 400, "txt")
    assert_error(http.post(f"/v1/indexes/{name}/query", json={}), 400, "query")
    assert_error(http.post(f"/v1/indexes/{name}/query", json={"query": "a", "vector": [1]}), 400, "query")
    assert_error(http.post(f"/v1/indexes/{name}/query", json={"query": "a", "top_k": 0}), 400, "top_k")
    assert_error(http.post(f"/v1/indexes/{name}/query", json={"query": "a", "top_k": 1001}), 400, "top_k")
    assert_error(http.post(f"/v1/indexes/{name}/query", json={"query": "a", "include": ["score"]}), 400, "include[0]")
    bad_filter = assert_error(
        http.post(f"/v1/indexes/{name}/query", json={"query": "a", "filter": {"$or": []}}), 400, "filter"
    )
    assert "$or" in bad_filter["message"]
    assert http.delete(f"/v1/indexes/{name}").json() == {"id": name, "object": "index", "deleted": True}
    assert_error(http.get(f"/v1/indexes/{name}"), 404, "name", "index_not_found")


def test_documents_per_request_limit(http):
    name = new_index(http, dimensions=2)
    documents = [{"vector": [1.0, 0.0]} for _ in range(1001)]
    error = assert_error(http.post(f"/v1/indexes/{name}/documents", json={"documents": documents}), 400, "documents")
    assert "at most 1000" in error["message"]


def test_a_refused_patch_changes_nothing(http):
    name = new_index(http, kind="hnsw", metadata_indexes={"year": "integer"})
    before = http.get(f"/v1/indexes/{name}").json()
    refused = http.patch(f"/v1/indexes/{name}", json={"ef_search": 77, "metadata_indexes": {"year": "keyword"}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "metadata_indexes.year"
    after = http.get(f"/v1/indexes/{name}").json()
    assert after["hnsw"] == before["hnsw"] and after["metadata_indexes"] == {"year": "integer"}
    added = http.patch(f"/v1/indexes/{name}", json={"ef_search": 77, "metadata_indexes": {"tag": "keyword"}})
    assert added.json()["hnsw"]["ef_search"] == 77
    assert added.json()["metadata_indexes"] == {"year": "integer", "tag": "keyword"}
