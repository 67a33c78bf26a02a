"""vsearch_client.Client and AsyncClient against a live server: every method, errors, keys and retries."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from vsearch_client import (
    AddResult,
    AsyncClient,
    AuthenticationError,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    RateLimited,
)

from tests.helpers import ServerThread, start_server

MODEL = "all-MiniLM-L6-v2"
_names = itertools.count()
ANIMALS = [
    {"id": "cat", "text": "The cat sat on the mat", "metadata": {"kind": "pet", "legs": 4}},
    {"id": "dog", "text": "Dogs bark at the postman", "metadata": {"kind": "pet", "legs": 4}},
    {"id": "eagle", "text": "An eagle soars above the mountains", "metadata": {"kind": "wild", "legs": 2}},
    {"id": "a/b c", "text": "A shark swims in the deep ocean", "metadata": {"kind": "wild", "legs": 0}},
]


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture()
def client(server):
    with Client(server.url) as c:
        yield c


def test_indexes(client):
    name = unique("c-idx")
    created = client.create_index(name, MODEL, metadata_indexes={"kind": "keyword"})
    assert created.name == name and created.dimensions == 384 and created.metadata_indexes == {"kind": "keyword"}
    assert client.create_index(name, MODEL).name == name  # idempotent
    with pytest.raises(Conflict):
        client.create_index(name, MODEL, exist_ok=False)
    assert name in [index.name for index in client.list_indexes()]
    assert client.update_index(name, metadata_indexes={"legs": "integer"}).metadata_indexes == {
        "kind": "keyword", "legs": "integer"}  # fmt: skip
    client.delete_index(name)
    client.delete_index(name, missing_ok=True)
    with pytest.raises(NotFound) as missing:
        client.get_index(name)
    assert missing.value.status == 404 and missing.value.type


def test_documents_in_batches_with_progress_and_pages(server):
    seen: list[AddResult] = []
    with Client(server.url, batch_size=7) as client:
        name = unique("c-docs")
        client.create_index(name, MODEL)
        many = ({"id": f"n{i:03d}", "text": f"note number {i}", "metadata": {"i": i}} for i in range(30))  # a generator
        result = client.add_documents(name, many, progress=seen.append)
        assert result.created == 30 and len(result.ids) == 30
        assert [p.created for p in seen] == [7, 14, 21, 28, 30]  # one call per batch, running totals
        assert [d.id for d in client.iter_documents(name, page_size=4)] == [f"n{i:03d}" for i in range(30)]
        page = client.list_documents(name, limit=5)
        assert page.has_more and page.last_id == "n004"
        again = [{"id": "n000", "text": "note number 0", "metadata": {"i": 0}}]
        assert client.add_documents(name, again).unchanged == 1
        deleted = client.delete_documents(name, filter={"i": {"$gte": 20}})
        assert deleted.deleted == 10
        assert client.delete_documents(name, ["n000", "nope"]).ids == ["n000"]
        assert client.get_index(name).document_count == 19


def test_queries(client):
    name = unique("c-query")
    client.create_index(name, MODEL)
    client.add_documents(name, ANIMALS)
    assert client.get_document(name, "a/b c").text.startswith("A shark")  # any id, percent-encoded
    hits = client.query(name, "a kitten on a rug", top_k=2)
    assert hits[0].id == "cat" and hits[0].metadata == {"kind": "pet", "legs": 4} and hits[0].text
    wild = client.query(name, "animals", filter={"kind": "wild"}, include=["metadata"], top_k=10)
    assert {h.id for h in wild} == {"eagle", "a/b c"} and all(h.text is None for h in wild)
    assert client.query(name, "mountain bird", mode="hybrid", top_k=1)[0].id == "eagle"
    assert client.query(name, "postman", mode="lexical", top_k=1)[0].id == "dog"
    vector = client.embed("a kitten on a rug")[0]
    assert client.query(name, vector=vector, top_k=1)[0].id == "cat"
    batch = client.query_batch(name, ["ocean fish", "barking"], top_k=1)
    assert [hits[0].id for hits in batch] == ["a/b c", "dog"]
    assert client.query(name, "cat", min_score=2.0) == []
    assert MODEL in client.list_models()


def test_errors_carry_the_servers_type_code_and_param(client):
    with pytest.raises(BadRequest) as bad:
        client.create_index("Not A Name", MODEL)
    assert bad.value.status == 400 and bad.value.param == "name" and bad.value.type == "invalid_request_error"
    name = unique("c-err")
    client.create_index(name, MODEL)
    with pytest.raises(BadRequest) as bad_filter:
        client.query(name, "x", filter={"$nope": 1})
    assert bad_filter.value.param.startswith("filter")
    with pytest.raises(NotFound) as model:
        client.embed("x", model="no-such-model")
    assert model.value.code == "model_not_found"
    with pytest.raises(ValueError):
        client.query(name)  # neither text nor vector: refused before any request


def test_api_key_from_the_environment(tmp_path: Path, monkeypatch):
    secured = start_server(tmp_path, api_keys=["s3cret"])
    try:
        with Client(secured.url, api_key="") as anonymous, pytest.raises(AuthenticationError):
            anonymous.list_indexes()
        monkeypatch.setenv("VSEARCH_API_KEY", "s3cret")
        with Client(secured.url) as keyed:
            assert keyed.list_indexes() == []
    finally:
        secured.stop()


class BusyThenReady:
    """An ASGI server that answers 429 (Retry-After: 0) to the first `busy` requests, then a model list."""

    def __init__(self, busy: int) -> None:
        self.busy, self.requests = busy, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        if self.requests <= self.busy:
            error = {"message": "busy", "type": "rate_limit_error", "code": "busy", "param": None}
            status, body = 429, {"error": error}
            headers = [(b"retry-after", b"0")]
        else:
            status, body, headers = 200, {"object": "list", "data": [{"id": "m", "object": "model"}]}, []
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})  # fmt: skip
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@pytest.mark.parametrize("asynchronous", [False, True])
def test_429_is_retried_honouring_retry_after(asynchronous: bool):
    ready_after_two = BusyThenReady(busy=2)
    always_busy = BusyThenReady(busy=10**6)
    servers = [ServerThread(ready_after_two), ServerThread(always_busy)]
    try:
        if asynchronous:

            async def run() -> list[str]:
                async with AsyncClient(servers[0].url) as ok, AsyncClient(servers[1].url, max_retries=2) as busy:
                    with pytest.raises(RateLimited):
                        await busy.list_models()
                    return await ok.list_models()

            models = asyncio.run(run())
        else:
            with Client(servers[0].url) as ok, Client(servers[1].url, max_retries=2) as busy:
                with pytest.raises(RateLimited) as limited:
                    busy.list_models()
                assert limited.value.code == "busy"
                models = ok.list_models()
        assert models == ["m"] and ready_after_two.requests == 3  # two refusals, then the answer
        assert always_busy.requests == 3  # the first try and two retries
    finally:
        for server in servers:
            server.stop()


def test_async_client_end_to_end(server):
    async def run() -> None:
        async with AsyncClient(server.url, batch_size=3) as client:
            name = unique("c-async")
            await client.create_index(name, MODEL)
            assert (await client.create_index(name, MODEL)).name == name
            assert (await client.add_documents(name, ANIMALS)).created == 4
            assert (await client.get_index(name)).document_count == 4
            assert [d.id async for d in client.iter_documents(name, page_size=3)] == sorted(d["id"] for d in ANIMALS)
            assert (await client.get_document(name, "a/b c")).metadata["legs"] == 0
            hits = await client.query(name, "a kitten on a rug", top_k=1)
            assert hits[0].id == "cat"
            vector = (await client.embed(["a kitten on a rug"]))[0]
            assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-3)
            assert (await client.query(name, vector=vector, top_k=1))[0].id == "cat"
            batch = await client.query_batch(name, ["ocean fish", "barking"], top_k=1, mode="hybrid")
            assert [hits[0].id for hits in batch] == ["a/b c", "dog"]
            assert (await client.update_index(name, ef_search=None)).name == name
            assert (await client.delete_documents(name, filter={"kind": "pet"})).deleted == 2
            assert name in [i.name for i in await client.list_indexes()]
            await client.delete_index(name)
            with pytest.raises(NotFound):
                await client.get_index(name)
            assert MODEL in await client.list_models()

    asyncio.run(run())
