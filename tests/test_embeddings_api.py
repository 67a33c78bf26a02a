"""/v1/embeddings and /v1/models through the live server, with the official openai client and httpx."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

MODEL = "all-MiniLM-L6-v2"
REFERENCE = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "minilm.jsonl").open()]


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_openai_client_base64_default_matches_float(openai_client):
    texts = ["The quick brown fox jumps over the lazy dog.", "A man is playing a guitar on stage."]
    default = openai_client.embeddings.create(model=MODEL, input=texts)  # the client asks for base64
    floats = openai_client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1]
    assert default.model == MODEL and default.object == "list"
    for a, b in zip(default.data, floats.data, strict=True):
        assert len(a.embedding) == 384
        np.testing.assert_allclose(a.embedding, b.embedding, rtol=0, atol=1e-6)
        assert abs(np.linalg.norm(a.embedding) - 1) < 1e-5
    assert default.usage.prompt_tokens == 12 + 11 == default.usage.total_tokens


def test_openai_client_single_string(openai_client):
    result = openai_client.embeddings.create(model=MODEL, input="Hello world.", encoding_format="float")
    assert len(result.data) == 1
    assert cosine(result.data[0].embedding, REFERENCE[0]["embedding"]) >= 0.9999
    assert result.usage.prompt_tokens == REFERENCE[0]["n_tokens"]


def test_token_input_gives_the_same_vectors_as_text(openai_client):
    rows = REFERENCE[:3]
    by_text = openai_client.embeddings.create(model=MODEL, input=[r["text"] for r in rows])
    by_ids = openai_client.embeddings.create(model=MODEL, input=[r["input_ids"] for r in rows])
    one = openai_client.embeddings.create(model=MODEL, input=rows[0]["input_ids"])  # a single token array
    for a, b in zip(by_text.data, by_ids.data, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)
    np.testing.assert_allclose(one.data[0].embedding, by_text.data[0].embedding, atol=1e-6)
    assert by_ids.usage.prompt_tokens == sum(r["n_tokens"] for r in rows)


def test_foreign_token_ids_get_an_error_that_names_the_langchain_fix(http, tmp_path: Path):
    """tiktoken ids (what LangChain's OpenAIEmbeddings sends by default) beyond MiniLM's vocabulary: a 400 naming
    check_embedding_ctx_length=False. With accept_token_ids off, any token-id input is refused."""
    response = http.post("/v1/embeddings", json={"model": MODEL, "input": [[74, 99121]]})
    assert_error(response, 400, "input", None)
    assert "check_embedding_ctx_length=False" in response.json()["error"]["message"]
    from tests.helpers import start_server

    strict = start_server(tmp_path, accept_token_ids=False)
    try:
        refused = httpx.post(f"{strict.url}/v1/embeddings", json={"model": MODEL, "input": [101, 102]})
        assert_error(refused, 400, "input", "token_ids_not_accepted")
        assert "check_embedding_ctx_length=False" in refused.json()["error"]["message"]
        text = httpx.post(f"{strict.url}/v1/embeddings", json={"model": MODEL, "input": ["kitten"]})
        assert text.status_code == 200
    finally:
        strict.stop()


def test_dimensions_shortens_and_renormalises(openai_client):
    full = openai_client.embeddings.create(model=MODEL, input="Hello world.", encoding_format="float")
    short = openai_client.embeddings.create(model=MODEL, input="Hello world.", dimensions=64)
    vector = np.asarray(short.data[0].embedding)
    assert vector.shape == (64,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    head = np.asarray(full.data[0].embedding[:64])
    np.testing.assert_allclose(vector, head / np.linalg.norm(head), atol=1e-6)
    same = openai_client.embeddings.create(model=MODEL, input="Hello world.", dimensions=384)
    np.testing.assert_allclose(same.data[0].embedding, full.data[0].embedding, atol=1e-6)


def test_user_field_accepted(openai_client):
    result = openai_client.embeddings.create(model=MODEL, input="hi", user="user-1234")
    assert len(result.data[0].embedding) == 384


@pytest.mark.parametrize("row", [r for r in REFERENCE if not r["truncated"]], ids=lambda r: r["text"][:30])
def test_reference_vectors(http, row):
    response = http.post("/v1/embeddings", json={"model": MODEL, "input": row["text"], "encoding_format": "float"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert cosine(body["data"][0]["embedding"], row["embedding"]) >= 0.9999
    assert body["usage"]["prompt_tokens"] == row["n_tokens"]


def test_reference_vectors_in_one_padded_batch(http):
    rows = [r for r in REFERENCE if not r["truncated"]]
    body = {"model": MODEL, "input": [r["text"] for r in rows], "encoding_format": "base64"}
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 200

    for item, row in zip(response.json()["data"], rows, strict=True):
        vector = np.frombuffer(base64.b64decode(item["embedding"]), "<f4")
        assert cosine(vector, row["embedding"]) >= 0.9999


def test_truncated_reference_rows_when_truncation_is_asked_for(server):
    """The API refuses over-long input; indexes ask the registry to truncate, and then match the reference."""
    rows = [r for r in REFERENCE if r["truncated"]]
    assert rows
    registry = server.services.registry

    async def embed():
        return await registry.embed(MODEL, [r["text"] for r in rows], truncate=True)

    result = asyncio.run(embed())
    for vector, row in zip(result.vectors, rows, strict=True):
        assert cosine(vector, row["embedding"]) >= 0.9999


def test_concurrent_requests_are_batched_and_correct(server):
    rows = [r for r in REFERENCE if not r["truncated"]]

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            responses = await asyncio.gather(
                *[
                    client.post("/v1/embeddings", json={"model": MODEL, "input": r["text"], "encoding_format": "float"})
                    for r in rows
                ]
            )
        return [r.json()["data"][0]["embedding"] for r in responses]

    for vector, row in zip(asyncio.run(run()), rows, strict=True):
        assert cosine(vector, row["embedding"]) >= 0.9999


def test_list_and_retrieve_models(openai_client, http):
    models = openai_client.models.list()
    assert MODEL in [m.id for m in models.data]
    model = openai_client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model" and isinstance(model.created, int) and model.owned_by
    missing = http.get("/v1/models/no-such-model")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def assert_error(response: httpx.Response, status: int, param: str | None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param, error
    assert error["code"] == code, error
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "input": "x", "colour": "blue"}, "colour"),
        ({"model": MODEL, "input": ""}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": ["ok", ""]}, "input"),
        ({"model": MODEL, "input": [[]]}, "input"),
        ({"model": MODEL, "input": ["x"] * 2049}, "input"),
        ({"model": MODEL, "input": [1, 2, 30522]}, "input"),
        ({"model": MODEL, "input": [-1]}, "input"),
        ({"model": MODEL, "input": 5}, "input"),
        ({"model": MODEL, "input": ["a", 1]}, "input"),
        ({"model": MODEL, "input": {"text": "a"}}, "input"),
        ({"model": 3, "input": "a"}, "model"),
        ({"input": "a"}, "model"),
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": MODEL, "input": "a", "dimensions": "sixty-four"}, "dimensions"),
        ({"model": MODEL, "input": "a", "dimensions": 385}, "dimensions"),
        ({"model": MODEL, "input": "a", "user": 7}, "user"),
    ],
)
def test_invalid_requests(http, body, param):
    assert_error(http.post("/v1/embeddings", json=body), 400, param)


def test_input_over_the_window(http):
    long_text = REFERENCE[-2]["text"]  # 522 tokens
    error = assert_error(http.post("/v1/embeddings", json={"model": MODEL, "input": long_text}), 400, "input")
    assert "maximum context length is 256 tokens, however you requested 522 tokens" in error["message"]
    error = assert_error(http.post("/v1/embeddings", json={"model": MODEL, "input": [7592] * 255}), 400, "input")
    assert "requested 257 tokens" in error["message"]
    ok = http.post("/v1/embeddings", json={"model": MODEL, "input": [7592] * 254})
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 256


def test_malformed_json(http):
    response = http.post(
        "/v1/embeddings", content=b'{"model": "x", "input": ', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, None)
    response = http.post("/v1/embeddings", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert_error(response, 400, None)


def test_unknown_model_is_404(http):
    error = assert_error(
        http.post("/v1/embeddings", json={"model": "gpt-9", "input": "a"}), 404, "model", "model_not_found"
    )
    assert "gpt-9" in error["message"]


def test_unknown_route_and_wrong_method(http):
    assert_error(http.get("/v1/nothing-here"), 404, None, "unknown_url")
    assert_error(http.get("/v1/embeddings"), 405, None, "method_not_allowed")


def test_openapi_schema_and_docs_page(http):
    schema = http.get("/docs/openapi.json")
    assert schema.status_code == 200
    assert "/v1/embeddings" in schema.json()["paths"]
    page = http.get("/docs/")
    assert page.status_code == 200 and "swagger" in page.text.lower()


@pytest.mark.slow
def test_the_int8_model_is_close_to_fp32_and_usable_everywhere(openai_client, http, server):
    rows = [r for r in REFERENCE if not r["truncated"]]
    int8 = f"{MODEL}-int8"
    assert int8 in [m.id for m in openai_client.models.list().data]
    result = openai_client.embeddings.create(model=int8, input=[r["text"] for r in rows], encoding_format="float")
    cosines = [cosine(item.embedding, row["embedding"]) for item, row in zip(result.data, rows, strict=True)]
    # Measured: min 0.962 (a line of emoji and other scripts), mean about 0.99.
    assert min(cosines) >= 0.95 and sum(cosines) / len(cosines) >= 0.985, sorted(cosines)[:3]
    assert list((server.settings.data_dir / "models").glob("*-int8.onnx"))  # built once into the data dir
    # As an index's model: its own vectors, never mixed with fp32 ones.
    name = f"int8-{len(cosines)}"
    created = http.post("/v1/indexes", json={"name": name, "model": int8})
    assert created.status_code == 200 and created.json()["model"] == int8
    docs = [{"id": "cat", "text": "A cat sleeps on the sofa"}, {"id": "tax", "text": "Filing your tax return"}]
    assert http.post(f"/v1/indexes/{name}/documents", json={"documents": docs}).status_code == 200
    hits = http.post(f"/v1/indexes/{name}/query", json={"query": "a kitten napping", "top_k": 1}).json()
    assert hits["model"] == int8 and hits["data"][0]["id"] == "cat"
    # And the fp32 model's fine-tuned query models cannot serve it (another base).
    refused = http.patch(f"/v1/indexes/{name}", json={"query_model": MODEL})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "query_model"
    # As a fine-tuning base.
    from tests.test_fine_tuning import jsonl, training_lines, wait_for

    upload = openai_client.files.create(file=("t.jsonl", jsonl(training_lines())), purpose="fine-tune")
    job = openai_client.fine_tuning.jobs.create(model=int8, training_file=upload.id, hyperparameters={"n_epochs": 2})
    done = wait_for(openai_client, job.id, {"succeeded", "failed"})
    assert done.status == "succeeded" and done.fine_tuned_model.startswith(f"ft:{int8}:"), done.error
    tuned = http.patch(f"/v1/indexes/{name}", json={"query_model": done.fine_tuned_model})
    assert tuned.status_code == 200


@pytest.mark.slow
def test_an_interactive_request_does_not_wait_behind_bulk_work(server, monkeypatch):
    """Asserted by order: once the query is queued, the next forward pass to start is the query's own (the bulk
    batch already running finishes first; no other bulk batch may start before it)."""
    import threading

    embedder = server.services.registry.get(MODEL)
    batcher = embedder._batcher
    log: list[tuple[str, int]] = []  # ("start", batch size) from the worker; ("queued", sequences) from the loop
    forwards = list(batcher._forwards)

    def recording(forward):
        def run(sequences):
            log.append(("start", len(sequences)))
            return forward(sequences)

        return run

    monkeypatch.setattr(batcher, "_forwards", [recording(f) for f in forwards])
    original_run = batcher.run

    async def queued(sequences, bulk=False):
        if len(sequences) == 1:
            log.append(("queued", 1))
        return await original_run(sequences, bulk)

    monkeypatch.setattr(batcher, "run", queued)
    bulk: dict = {}
    body = {"model": MODEL, "input": [" ".join(["word"] * 240)] * 120}  # 120 x 242 tokens: 60 batches of 2
    thread = threading.Thread(target=lambda: bulk.update(r=httpx.post(f"{server.url}/v1/embeddings", json=body,
                                                                       timeout=600)))  # fmt: skip
    thread.start()
    deadline = time.monotonic() + 120
    while sum(1 for kind, _ in log if kind == "start") < 3:  # the bulk request is being computed
        assert time.monotonic() < deadline
        time.sleep(0.01)
    query = httpx.post(f"{server.url}/v1/embeddings", json={"model": MODEL, "input": "is it raining?"}, timeout=60)
    assert query.status_code == 200 and "r" not in bulk  # done while the bulk request still runs
    thread.join(600)
    assert bulk["r"].status_code == 200 and len(bulk["r"].json()["data"]) == 120
    at = log.index(("queued", 1))
    next_start = next(entry for entry in log[at + 1 :] if entry[0] == "start")
    assert next_start == ("start", 1), log[at : at + 5]


def test_a_vector_store_file_is_embedded_in_the_bulk_lane(server, openai_client, monkeypatch):
    """A small file would fit one interactive batch; as background work it queues behind queries all the same."""
    batcher = server.services.registry.get(MODEL)._batcher
    lanes: list[tuple[int, bool]] = []
    original_run = batcher.run

    async def recorded(sequences, bulk=False):
        lanes.append((len(sequences), bulk))
        return await original_run(sequences, bulk)

    monkeypatch.setattr(batcher, "run", recorded)
    store = openai_client.vector_stores.create(name="lanes")
    file = openai_client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("a.txt", b"Small."))
    openai_client.vector_stores.search(store.id, query="small")
    assert file.status == "completed"
    assert lanes == [(1, True), (1, False)]  # the file's one chunk in bulk, then the query interactive
    openai_client.vector_stores.delete(store.id)
