"""API keys, limits, hostile input, health and metrics, graceful SIGTERM, crash safety, and a schemathesis run."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import struct
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from indexes.databases.sqlite import sqlite3
from tests.helpers import free_port, start_server, wait_until
from tests.test_embeddings_api import assert_error

MODEL = "all-MiniLM-L6-v2"
ROOT = Path(__file__).parent.parent


def load_script(name: str):
    """A module of scripts/ (which import their sibling helpers, as when run as scripts)."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    live = start_server(
        tmp_path_factory.mktemp("guarded"),
        api_keys=["sk-first-key-123456", "sk-second-key-654321"],
        max_request_bytes=20_000,
        max_inputs_per_request=5,
        max_documents_per_request=3,
        max_top_k=7,
        max_requests_in_flight=2,
    )
    yield live
    live.stop()


def test_api_keys(guarded):
    url = guarded.url
    missing = httpx.get(f"{url}/v1/models")
    assert_error_401 = missing.json()["error"]
    assert missing.status_code == 401 and "didn't provide an API key" in assert_error_401["message"]
    wrong = httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer sk-wrong-key-000000"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key" not in wrong.json()["error"]["message"]  # the key is not echoed back in full
    not_bearer = httpx.get(f"{url}/v1/models", headers={"authorization": "Basic c2stZmlyc3Q="})
    assert not_bearer.status_code == 401
    for key in ("sk-first-key-123456", "sk-second-key-654321"):
        assert httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
    assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/ready").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 401
    # The console's page and files and the API reference are public (no data in them); what they call is not.
    for public in ("/", "/console/app/console.js", "/docs", "/docs/openapi.json"):
        assert httpx.get(f"{url}{public}").status_code == 200, public
    assert httpx.get(f"{url}/v1/no-such-route").status_code == 401  # no key: not even which routes exist
    with_key = httpx.get(f"{url}/v1/no-such-route", headers={"authorization": "Bearer sk-first-key-123456"})
    assert with_key.status_code == 404
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-first-key-123456")
    assert len(client.embeddings.create(model=MODEL, input="hello").data[0].embedding) == 384
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()


def test_limits(guarded):
    http = httpx.Client(base_url=guarded.url, headers={"authorization": "Bearer sk-first-key-123456"}, timeout=60)
    too_big = http.post("/v1/embeddings", json={"model": MODEL, "input": "x" * 30_000})
    assert too_big.status_code == 413 and set(too_big.json()["error"]) == {"message", "type", "param", "code"}
    error = assert_error(http.post("/v1/embeddings", json={"model": MODEL, "input": ["a"] * 6}), 400, "input")
    assert "at most 5" in error["message"]
    assert http.post("/v1/indexes", json={"name": "limited", "model": MODEL}).status_code == 200
    docs = [{"text": f"d{i}"} for i in range(4)]
    assert_error(http.post("/v1/indexes/limited/documents", json={"documents": docs}), 400, "documents")
    assert_error(http.post("/v1/indexes/limited/query", json={"query": "x", "top_k": 8}), 400, "top_k")
    assert http.post("/v1/indexes/limited/query", json={"query": "x", "top_k": 7}).status_code == 200


def test_requests_beyond_the_in_flight_limit_get_429(guarded):
    headers = {"authorization": "Bearer sk-first-key-123456"}
    long_inputs = [" ".join(["word"] * 240)] * 5

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=guarded.url, headers=headers, timeout=120) as client:
            body = {"model": MODEL, "input": long_inputs}
            return await asyncio.gather(*(client.post("/v1/embeddings", json=body) for _ in range(10)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1 and set(statuses) <= {200, 429}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1" and refused.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"[" * 9_000_000 + b"]" * 9_000_000, 413),  # over the 16 MiB default: refused before parsing
        (b'{"model": "m", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),  # deeply nested
        (b'{"model": "all-MiniLM-L6-v2", "input": "\xff\xfe bad utf-8"}', 400),
    ],
)
def test_hostile_bodies(http, content, status):
    response = http.post("/v1/embeddings", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "path",
    ["/v1/indexes/..%2F..%2Fetc", "/v1/indexes/%2e%2e", "/v1/indexes/a%00b", "/v1/files/..%2Ffiles.sqlite",
     "/v1/files/file-..", "/v1/fine_tuning/jobs/..%2F..%2Fjobs"],
)  # fmt: skip
def test_hostile_paths_stay_inside_the_data_dir(http, path):
    response = http.get(path)
    assert response.status_code in (400, 404), response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_health_ready_metrics_and_request_ids(server, http):
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready").json()
    assert ready["status"] == "ready" and MODEL in ready["models"]
    response = http.post(
        "/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]}, headers={"x-request-id": "req-42"}
    )
    assert response.headers["x-request-id"] == "req-42"
    assert len(http.get("/v1/models").headers["x-request-id"]) == 32
    http.post("/v1/indexes", json={"name": "metered", "model": MODEL})
    http.post("/v1/indexes/metered/documents", json={"documents": [{"id": "a", "text": "hello"}]})
    text = http.get("/metrics").text
    assert 'vsearch_http_requests_total{method="POST",route="/v1/embeddings",status="200"}' in text
    assert 'vsearch_http_request_seconds_bucket{le="0.005",method="POST",route="/v1/embeddings"}' in text
    assert 'vsearch_embedded_inputs_total{model="all-MiniLM-L6-v2"}' in text
    assert 'vsearch_index_documents{index="metered"} 1.0' in text
    assert "vsearch_embedding_cache_hits" in text and "vsearch_fine_tuning_jobs" in text


@pytest.mark.slow
def test_non_loopback_without_keys_refuses_to_start(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "without API keys" in result.stderr and "--insecure" in result.stderr


def serve(data_dir: Path, **environ: str) -> tuple[subprocess.Popen, str]:
    """`vsearch serve` as a process (settings from VSEARCH_* variables), once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "service", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    env = {**os.environ, **{f"VSEARCH_{key.upper()}": value for key, value in environ.items()}}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(url), "the server to start")
    return process, url


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def in_flight(url: str) -> float:
    """The server's own count of requests being served (from /metrics, which it does not count)."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("vsearch_http_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no in-flight gauge")


def long_embedding_request(url: str, inputs: int, result: dict) -> threading.Thread:
    body = {"model": MODEL, "input": [" ".join(["word"] * 240)] * inputs}
    thread = threading.Thread(target=lambda: result.update(response=httpx.post(f"{url}/v1/embeddings", json=body,
                                                                              timeout=600)))  # fmt: skip
    thread.start()
    wait_until(lambda: in_flight(url) >= 1, "the request to be in flight")
    return thread


@pytest.mark.slow
def test_sigterm_drains_requests_and_checkpoints(tmp_path: Path):
    process, url = serve(tmp_path, shutdown_grace_s="600")  # as long as a loaded machine may need
    try:
        httpx.post(f"{url}/v1/indexes", json={"name": "term", "model": MODEL}).raise_for_status()
        docs = [{"id": f"t{i}", "text": f"text {i}"} for i in range(50)]
        httpx.post(f"{url}/v1/indexes/term/documents", json={"documents": docs}, timeout=60).raise_for_status()
        slow: dict = {}
        thread = long_embedding_request(url, 200, slow)
        process.send_signal(signal.SIGTERM)
        thread.join(timeout=600)
        # uvicorn finishes the requests in flight, runs the shutdown hooks, then re-raises SIGTERM.
        assert process.wait(timeout=600) in (0, -signal.SIGTERM)
    finally:
        process.kill()
    assert slow["response"].status_code == 200 and len(slow["response"].json()["data"]) == 200
    faiss_file = tmp_path / "indexes" / "term" / "vectors.faiss"
    _, seq, _ = struct.unpack_from("<8sqI", faiss_file.read_bytes())
    with sqlite3.connect(tmp_path / "indexes" / "term" / "index.sqlite") as db:
        assert seq == int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])


@pytest.mark.slow
def test_a_request_cut_off_by_the_shutdown_grace_gets_a_503(tmp_path: Path):
    process, url = serve(tmp_path, shutdown_grace_s="0.2")
    try:
        cut: dict = {}
        thread = long_embedding_request(url, 2000, cut)  # minutes of work: still running when the grace ends
        process.send_signal(signal.SIGTERM)
        thread.join(timeout=600)
        assert process.wait(timeout=600) in (0, -signal.SIGTERM)
    finally:
        process.kill()
    response = cut["response"]
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "shutting_down" and error["type"] == "server_error" and set(error) >= {"message", "param"}


@pytest.mark.slow
def test_crash_safety_under_sigkill():
    results = load_script("crash_test").crash_rounds(rounds=3, seed=7, log=lambda line: None)
    assert len(results) == 3
    for result in results:
        assert result["missing"] == 0 and result["not_found_by_vector"] == 0 and result["integrity"] == "ok"
        assert result["sqlite_vectors"] == result["faiss_vectors"] >= result["acknowledged"]


@pytest.mark.slow
def test_index_create_and_delete_survive_sigkill():
    results = load_script("crash_test").lifecycle_rounds(rounds=3, seed=7, log=lambda line: None)
    assert len(results) == 3
    for result in results:
        assert result["broken"] == result["missing"] == result["resurrected"] == result["empty"] == []
        assert result["unqueryable"] == []


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors(server, tmp_path: Path):
    """A bounded fuzzing run over every operation of the live OpenAPI schema: no 5xx, responses match it."""
    httpx.post(f"{server.url}/v1/indexes", json={"name": "fuzz", "model": MODEL})
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/docs/openapi.json",
         "--checks", "not_a_server_error,response_schema_conformance", "--max-examples", "8",
         "--phases", "examples,fuzzing", "--seed", "1", "--request-timeout", "60",
         # A generation-efficiency check, not a server one: with the bearer scheme, the Authorization values it
         # generates and then drops (NULL bytes cannot go in headers) plus the {doc_id:path} parameter trip it.
         "--suppress-health-check", "filter_too_much"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert "generated" in result.stdout


def search_paths(url: str) -> dict[tuple[str, str], float]:
    """The planner's counter from /metrics: (engine, path) -> searches."""
    counts = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("vsearch_searches_total{"):
            labels = dict(part.split("=") for part in line[line.index("{") + 1 : line.index("}")].split(","))
            counts[(labels["engine"].strip('"'), labels["path"].strip('"'))] = float(line.split()[-1])
    return counts


@pytest.mark.parametrize("engine", ["embedded", "postgres"])
def test_metrics_count_searches_by_the_path_the_planner_took(engine: str, request: pytest.FixtureRequest):
    """An operator sees a filter going slow: each search is counted by engine and by how its dense list was found."""
    live = request.getfixturevalue(f"{engine}_server")
    http = httpx.Client(base_url=live.url, timeout=60)
    name = f"paths-{uuid.uuid4().hex[:8]}"
    assert http.post("/v1/indexes", json={"name": name, "model": MODEL, "dimensions": 8}).status_code == 200
    vectors = np.random.default_rng(5).normal(size=(40, 8)).astype("f4")
    documents = [{"id": f"d{i}", "vector": v.tolist(), "metadata": {"cat": i % 4}} for i, v in enumerate(vectors)]
    assert http.post(f"/v1/indexes/{name}/documents", json={"documents": documents}).status_code == 200
    before = search_paths(live.url)
    for body in ({}, {}, {"filter": {"cat": 1}}, {"mode": "lexical", "query": "anything"}):
        query = body if "query" in body else {"vector": vectors[0].tolist(), **body}
        assert http.post(f"/v1/indexes/{name}/query", json={"top_k": 3, **query}).status_code == 200
    after = search_paths(live.url)
    grown = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    # 40 chunks: a filter over so few is scored exactly on both engines.
    assert grown == {(engine, "unfiltered"): 2, (engine, "exact"): 1, (engine, "lexical"): 1}


def test_storage_refuses_to_run_on_the_event_loop_thread(tmp_path: Path, postgres: str):
    """The async boundary cannot be forgotten: a store touched on a thread that runs an event loop raises, whatever
    the store (so any request handler that did would fail its test with a 500), and run() is the way in."""
    from indexes.config import IndexConfig
    from indexes.databases.postgres import PgDatabase
    from indexes.databases.sqlite import Database
    from indexes.embedded.store import IndexStore
    from indexes.errors import BlockingCallOnLoop
    from tests.helpers import new_database

    sqlite = Database(tmp_path / "a.sqlite")
    pg = PgDatabase(new_database(postgres), pool_size=1)
    store = IndexStore(tmp_path / "i", IndexConfig(name="i", model=MODEL, dimensions=4))

    async def on_the_loop() -> None:
        for blocking in (lambda: sqlite.execute("SELECT 1"), lambda: pg.execute("SELECT 1"), lambda: store.stats()):
            with pytest.raises(BlockingCallOnLoop):
                blocking()
        assert (await sqlite.run(sqlite.execute, "SELECT 1")).fetchone() == (1,)
        assert await pg.run(pg.execute, "SELECT 1") == [(1,)]
        assert (await sqlite.run(store.stats)).document_count == 0

    try:
        asyncio.run(on_the_loop())
    finally:
        store.close()
        sqlite.close()
        pg.close()


def test_a_query_with_no_hits_matches_exactly_one_response_schema(server, http):
    """The query route answers QueryResult or BatchQueryResult (oneOf): a single query with no hits, `"data": []`,
    must match only the first (schemathesis found it matching both)."""
    import jsonschema

    spec = http.get("/docs/openapi.json").json()
    responses = spec["paths"]["/v1/indexes/{name}/query"]["post"]["responses"]
    schema = {**responses["200"]["content"]["application/json"]["schema"], "components": spec["components"]}
    http.post("/v1/indexes", json={"name": "no-hits", "model": MODEL})
    answer = http.post("/v1/indexes/no-hits/query", json={"query": "anything", "top_k": 3}).json()
    assert answer["data"] == []
    jsonschema.validate(answer, schema)  # oneOf: exactly one matches
