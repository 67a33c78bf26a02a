"""Remote OpenAI-compatible providers: a second real vsearch as the upstream, and a fault-injecting upstream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from service.config import ProviderConfig, RemoteModelConfig, load_settings
from tests.helpers import ServerThread, start_server
from tests.test_indexes_api import MODEL, add, query

DIMS = 8


def fake_vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).normal(size=DIMS).astype("<f4")
    return vector / np.linalg.norm(vector)


class FaultyUpstream:
    """A minimal OpenAI-compatible /v1/embeddings (a raw ASGI app) that fails as it is told to.

    `faults` is consumed one per request: ok, 429, 500, 401, hang, short, wide. Inputs containing "poison"
    always get a 500."""

    def __init__(self) -> None:
        self.faults: list[str] = []
        self.calls = 0
        self.batch_sizes: list[int] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls += 1
        request = json.loads(body)
        inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
        self.batch_sizes.append(len(inputs))
        fault = self.faults.pop(0) if self.faults else "ok"
        if any("poison" in str(i) for i in inputs):
            fault = "500"
        if fault == "hang":
            await asyncio.sleep(30)
        if fault in ("429", "500", "401"):
            headers = [(b"content-type", b"application/json")] + ([(b"retry-after", b"0.3")] if fault == "429" else [])
            error = {"error": {"message": f"injected {fault}", "type": "test", "param": None, "code": None}}
            await send({"type": "http.response.start", "status": int(fault), "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps(error).encode()})
            return
        vectors = [fake_vector(str(i)) for i in inputs]
        if fault == "short":
            vectors = vectors[:-1]
        if fault == "wide":
            vectors = [np.append(v, 0).astype("<f4") for v in vectors]
        data = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(v.tobytes()).decode()}
            for i, v in enumerate(vectors)
        ]
        answer = {
            "object": "list",
            "data": data,
            "model": request["model"],
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


@pytest.fixture(scope="module")
def faulty():
    upstream = FaultyUpstream()
    thread = ServerThread(upstream)
    yield upstream, thread.url
    thread.stop()


@pytest.fixture(scope="module")
def flaky_gateway(faulty, tmp_path_factory):
    _, url = faulty
    provider = ProviderConfig(
        name="flaky", base_url=f"{url}/v1", models=[RemoteModelConfig(id="flaky-model", upstream_id="fake")],
        max_batch_inputs=3, timeout_s=1, max_retries=3, deadline_s=6, cache=False,
    )  # fmt: skip
    live = start_server(tmp_path_factory.mktemp("gw"), bundled_model=False, providers=[provider])
    yield live
    live.stop()


def embed(url: str, model: str, inputs: list[str]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/embeddings", json={"model": model, "input": inputs, "encoding_format": "float"}, timeout=60
    )


# --- a real vsearch as the upstream -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    provider = ProviderConfig(
        name="upstream", base_url=f"{server.url}/v1", models=[RemoteModelConfig(id="remote-minilm", upstream_id=MODEL)]
    )
    live = start_server(tmp_path_factory.mktemp("gateway"), bundled_model=False, providers=[provider])
    yield live
    live.stop()


def test_gateway_gives_the_upstreams_vectors(server, gateway):
    texts = ["The quick brown fox", "Une phrase en français", "SELECT 1;"]
    direct = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x").embeddings.create(model=MODEL, input=texts)
    through = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x").embeddings.create(
        model="remote-minilm", input=texts
    )
    for a, b in zip(direct.data, through.data, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)
    assert through.model == "remote-minilm"
    models = httpx.get(f"{gateway.url}/v1/models").json()["data"]
    assert [(m["id"], m["owned_by"]) for m in models] == [("remote-minilm", "upstream")]
    refused = httpx.post(f"{gateway.url}/v1/embeddings", json={"model": "remote-minilm", "input": "a", "dimensions": 8})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "This model does not support specifying dimensions."


def test_index_ingest_through_the_gateway(server, gateway):
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        assert http.post("/v1/indexes", json={"name": "via-gateway", "model": "remote-minilm"}).status_code == 200
        assert http.get("/v1/indexes/via-gateway").json()["dimensions"] == 384  # learned from the upstream
        add(http, "via-gateway", [{"id": "a", "text": "sea turtles nest on beaches"}, {"id": "b", "text": "tax law"}])
        hit = query(http, "via-gateway", query="turtle eggs in the sand", top_k=1, include=["vector"])[0]
    upstream = embed(server.url, MODEL, ["sea turtles nest on beaches"]).json()["data"][0]["embedding"]
    assert hit["id"] == "a"
    np.testing.assert_allclose(hit["vector"], upstream, atol=1e-6)


def test_second_ingest_of_the_same_corpus_never_reaches_the_upstream(gateway):
    provider = gateway.services.providers[0]
    corpus = [{"id": f"c{i}", "text": f"cached paragraph number {i} about rivers"} for i in range(30)]
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        for name in ("cache-one", "cache-two"):
            assert http.post("/v1/indexes", json={"name": name, "model": "remote-minilm"}).status_code == 200
        add(http, "cache-one", corpus)
        calls = provider.calls
        assert calls > 0
        add(http, "cache-two", corpus)  # another index: only the cache can spare the upstream
        assert provider.calls == calls
        stats = http.get("/v1/cache").json()
    assert stats["hits"] >= 30 and stats["entries"] >= 30 and stats["misses"] >= 30


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_cache_evicts_least_recently_used(tmp_path: Path, store: str, request: pytest.FixtureRequest):
    from indexes.databases.postgres import PgDatabase
    from indexes.databases.sqlite import Database
    from service.embeddings.cache import EmbeddingCache, PgEmbeddingCache, SqliteEmbeddingCache, cache_key
    from tests.helpers import new_database

    database = PgDatabase(new_database(request.getfixturevalue("postgres"))) if store == "postgres" else None
    if database is not None:
        cache: EmbeddingCache = PgEmbeddingCache(database, 3)
    else:
        cache = SqliteEmbeddingCache(Database(tmp_path / "c.sqlite", synchronous="NORMAL"), max_entries=3)
    keys = [cache_key("m", None, str(i), False) for i in range(5)]
    try:
        for key in keys[:3]:
            asyncio.run(cache.put_many({key: np.ones(2, "f4")}))
            time.sleep(0.01)
        asyncio.run(cache.get_many([keys[0]]))  # used again: now the newest
        asyncio.run(cache.put_many({keys[3]: np.ones(2, "f4"), keys[4]: np.ones(2, "f4")}))
        assert set(asyncio.run(cache.get_many(keys))) == {keys[0], keys[3], keys[4]}
        assert cache.stats().entries == 3
    finally:
        cache.close()
        if database is not None:
            database.close()  # the cache leaves its database to whoever made it


# --- faults -------------------------------------------------------------------------------------------------------


def test_dimensions_learned_and_batches_split_and_reassembled(faulty, flaky_gateway):
    upstream, _ = faulty
    upstream.batch_sizes.clear()
    texts = [f"text {i}" for i in range(10)]
    response = embed(flaky_gateway.url, "flaky-model", texts)
    assert response.status_code == 200, response.text
    for item, text in zip(response.json()["data"], texts, strict=True):
        np.testing.assert_allclose(item["embedding"], fake_vector(text), atol=1e-6)
    assert sorted(upstream.batch_sizes) == [1, 3, 3, 3]


@pytest.mark.parametrize(
    ("faults", "extra_calls"), [(["429"], 1), (["500", "500"], 2), (["hang"], 1), (["500", "429", "500"], 3)]
)
@pytest.mark.slow
def test_transient_faults_are_retried(faulty, flaky_gateway, faults, extra_calls):
    upstream, _ = faulty
    upstream.faults = list(faults)
    before, started = upstream.calls, time.monotonic()
    response = embed(flaky_gateway.url, "flaky-model", ["one", "two"])
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["data"][1]["embedding"], fake_vector("two"), atol=1e-6)
    assert upstream.calls - before == 1 + extra_calls
    if "429" in faults:
        assert time.monotonic() - started >= 0.3  # Retry-After was honoured


@pytest.mark.parametrize(
    ("faults", "status", "words"),
    [
        (["401"], 401, "answered 401: injected 401"),
        (["short"], 502, "returned 1 embeddings for 2 inputs"),
        (["wide"], 502, "returned vectors of [9] dimensions; expected 8"),
        (["500"] * 10, 502, "gave up after 4 attempts"),
        (["hang"] * 10, 504, "timed out"),
    ],
)
@pytest.mark.slow
def test_unrecoverable_faults_are_clear_errors(faulty, flaky_gateway, faults, status, words):
    upstream, _ = faulty
    upstream.faults = list(faults)
    before = upstream.calls
    response = embed(flaky_gateway.url, "flaky-model", ["one", "two"])
    upstream.faults = []
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and set(error) == {"message", "type", "param", "code"}
    if status == 401:
        assert upstream.calls - before == 1  # no retry on a 4xx other than 429


@pytest.mark.slow
def test_flaky_upstream_loses_no_acknowledged_document(faulty, flaky_gateway):
    with httpx.Client(base_url=flaky_gateway.url, timeout=60) as http:
        assert http.post("/v1/indexes", json={"name": "flaky", "model": "flaky-model"}).status_code == 200
        acknowledged, failed = [], []
        for batch in range(6):
            docs = [{"id": f"b{batch}-{i}", "text": f"document {batch}-{i}"} for i in range(5)]
            if batch == 3:
                docs[2]["text"] = "poison pill"  # this upstream always fails it
            response = http.post("/v1/indexes/flaky/documents", json={"documents": docs})
            (acknowledged if response.status_code == 200 else failed).append([d["id"] for d in docs])
            if response.status_code != 200:
                assert response.status_code == 502 and "gave up" in response.json()["error"]["message"]
        assert len(failed) == 1 and len(acknowledged) == 5
        stored = {d["id"] for d in http.get("/v1/indexes/flaky/documents", params={"limit": 100}).json()["data"]}
    assert stored == {doc_id for ids in acknowledged for doc_id in ids}


@pytest.mark.slow
def test_toml_config_file(tmp_path: Path):
    config = tmp_path / "vsearch.toml"
    config.write_text(
        """
data_dir = "%s"
max_documents_per_request = 50

[[providers]]
name = "upstream"
base_url = "http://127.0.0.1:8001/v1"
api_key_env = "UPSTREAM_API_KEY"
[[providers.models]]
id = "remote-minilm"
upstream_id = "all-MiniLM-L6-v2"
"""
        % (tmp_path / "data")
    )
    settings = load_settings(config, environ={"VSEARCH_PORT": "9123"})
    assert settings.data_dir == tmp_path / "data" and settings.port == 9123
    assert settings.limits.max_documents_per_request == 50
    (provider,) = settings.providers
    assert provider.models[0].upstream_id == "all-MiniLM-L6-v2" and provider.api_key_env == "UPSTREAM_API_KEY"
    config.write_text('[[providers]]\nname = "x"\nbase_url = "http://h"\nmodels = []\nretries = 3\n')
    with pytest.raises(Exception, match="retries"):
        load_settings(config, environ={})
