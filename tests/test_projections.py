"""Fitted projections: fine-tuning jobs of vsearch's `projection` method give a model of fewer dimensions for
documents and queries alike, fitted on an index's stored vectors or trained on pairs; it serves /v1/embeddings
(`dimensions` by prefix, up to its width) and indexes, and a query adapter can be trained over it."""

from __future__ import annotations

import io
import uuid

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import STORES, each_store
from tests.helpers import LiveServer, wait_until
from tests.test_fine_tuning import TOPICS, jsonl, training_lines

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest) -> LiveServer:
    return each_store(request)


@pytest.fixture()
def http(server: LiveServer):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def new_index(http: httpx.Client, model: str = MODEL, **settings: object) -> str:
    name = f"proj-{uuid.uuid4().hex[:8]}"
    response = http.post("/v1/indexes", json={"name": name, "model": model, **settings})
    assert response.status_code == 200, response.text
    return name


def texts() -> list[str]:
    return [text for pair in TOPICS for text in pair] + [f"note {i} on {w}" for i, w in enumerate("abcdefghij" * 3)]


def job(http: httpx.Client, body: dict) -> dict:
    response = http.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    return wait_until(
        lambda: (j := http.get(f"/v1/fine_tuning/jobs/{job_id}").json())["status"] in ("succeeded", "failed") and j,
        "the job to end",
    )


def projection(width: int, **extra: object) -> dict:
    return {"type": "projection", "projection": {"hyperparameters": {"dimensions": width}, **extra}}


def embed(http: httpx.Client, model: str, inputs: list[str], **extra: object) -> np.ndarray:
    response = http.post("/v1/embeddings", json={"model": model, "input": inputs, **extra})
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


@pytest.fixture(scope="module")
def fitted(server: LiveServer) -> str:
    """A 16-d projection fitted on an index's stored vectors."""
    with httpx.Client(base_url=server.url, timeout=120) as http:
        name = new_index(http)
        docs = [{"id": f"d{i}", "text": text} for i, text in enumerate(texts())]
        assert http.post(f"/v1/indexes/{name}/documents", json={"documents": docs}).is_success
        done = job(http, {"model": MODEL, "method": projection(16, index=name)})
        assert done["status"] == "succeeded", done
        assert done["training_file"] is None and done["method"]["projection"]["index"] == name
        return done["fine_tuned_model"]


def test_a_projection_fitted_on_an_index_serves_fewer_dimensions(http: httpx.Client, fitted: str):
    assert fitted in [m["id"] for m in http.get("/v1/models").json()["data"]]
    inputs = ["how do volcanoes erupt", "a note on coffee"]
    full = embed(http, fitted, inputs)
    assert full.shape == (2, 16) and np.allclose(np.linalg.norm(full, axis=1), 1, atol=1e-5)
    short = embed(http, fitted, inputs, dimensions=8)  # a prefix, re-normalised: the axes are nested
    prefix = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    assert np.allclose(short, prefix, atol=1e-5)
    wide = http.post("/v1/embeddings", json={"model": fitted, "input": "a", "dimensions": 32})
    assert wide.status_code == 400 and wide.json()["error"]["param"] == "dimensions"
    # Documents and queries alike: the same vectors through /v1/embeddings and through an index of the model.
    name = new_index(http, fitted)
    assert http.get(f"/v1/indexes/{name}").json()["dimensions"] == 16
    assert http.post(f"/v1/indexes/{name}/documents", json={"documents": [{"id": "a", "text": inputs[1]}]}).is_success
    hit = http.post(f"/v1/indexes/{name}/query", json={"query": inputs[0], "include": ["vector"]}).json()["data"][0]
    assert np.allclose(hit["vector"], full[1], atol=1e-6) and abs(hit["score"] - float(full[0] @ full[1])) < 1e-5


def test_a_projection_trained_on_pairs_takes_a_query_adapter_over_it(http: httpx.Client, server: LiveServer):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    upload = client.files.create(file=("pairs.jsonl", io.BytesIO(jsonl(training_lines()))), purpose="fine-tune")
    trained = job(http, {"model": MODEL, "training_file": upload.id, "method": projection(32),
                         "hyperparameters": {"n_epochs": 3}})  # fmt: skip
    assert trained["status"] == "succeeded", trained
    assert trained["method"]["projection"]["hyperparameters"]["dimensions"] == 32
    model = trained["fine_tuned_model"]
    assert embed(http, model, ["why is the sky blue"]).shape == (1, 32)
    # A query adapter trained over the projection, then used by an index of the projection as its query model.
    adapter = job(http, {"model": model, "training_file": upload.id, "hyperparameters": {"n_epochs": 2}})
    assert adapter["status"] == "succeeded", adapter
    name = new_index(http, model)
    docs = [{"id": str(i), "text": passage} for i, (_, passage) in enumerate(TOPICS)]
    assert http.post(f"/v1/indexes/{name}/documents", json={"documents": docs}).is_success
    patched = http.patch(f"/v1/indexes/{name}", json={"query_model": adapter["fine_tuned_model"]})
    assert patched.status_code == 200, patched.text
    found = http.post(f"/v1/indexes/{name}/query", json={"query": "why is the sky blue", "top_k": 3}).json()
    assert found["model"] == adapter["fine_tuned_model"] and len(found["data"]) == 3


@pytest.mark.parametrize(
    ("method", "param"),
    [
        ({"type": "projection", "projection": {"index": "x"}}, "method.projection.hyperparameters.dimensions"),
        (projection(384), "method.projection.hyperparameters.dimensions"),
        (projection(16), "training_file"),  # neither pairs nor an index to fit on
        (projection(16, index="no-such-index"), "name"),
    ],
)
def test_a_projection_job_that_cannot_run_is_refused(http: httpx.Client, method: dict, param: str):
    response = http.post("/v1/fine_tuning/jobs", json={"model": MODEL, "method": method})
    assert response.status_code in (400, 404) and response.json()["error"]["param"] == param, response.text


def test_a_projection_needs_an_index_of_its_base_model(http: httpx.Client):
    other = new_index(http, MODEL, dimensions=64)  # not full-width vectors of the model
    response = http.post("/v1/fine_tuning/jobs", json={"model": MODEL, "method": projection(16, index=other)})
    assert response.status_code == 400 and response.json()["error"]["param"] == "method.projection.index"


def test_reprojecting_an_index_embeds_nothing_and_equals_a_fresh_index(
    http: httpx.Client, server: LiveServer, fitted: str
):
    from tests.test_snapshots import embedded_inputs

    source = new_index(http)
    docs = [{"id": f"d{i}", "text": text, "metadata": {"i": i}} for i, text in enumerate(texts())]
    assert http.post(f"/v1/indexes/{source}/documents", json={"documents": docs}).is_success
    before = embedded_inputs(server.url)
    copy = f"{source}-16"
    response = http.post(f"/v1/indexes/{source}/reproject", json={"name": copy, "model": fitted, "kind": "hnsw",
                                                                  "quantization": "sq8"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert embedded_inputs(server.url) == before  # no call to the model
    made = response.json()
    assert (made["model"], made["dimensions"], made["kind"], made["quantization"]) == (fitted, 16, "hnsw", "sq8")
    assert (made["document_count"], made["vector_count"]) == (len(docs), len(docs))
    fresh = new_index(http, fitted, kind="hnsw", quantization="sq8")
    assert http.post(f"/v1/indexes/{fresh}/documents", json={"documents": docs}).is_success
    for text in ("how do volcanoes erupt", "coffee beans", "note 7"):
        hits = [http.post(f"/v1/indexes/{n}/query", json={"query": text, "top_k": 5}).json()["data"]
                for n in (copy, fresh)]  # fmt: skip
        assert [h["id"] for h in hits[0]] == [h["id"] for h in hits[1]]
        assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(*hits, strict=True))
    assert http.get(f"/v1/indexes/{source}").json()["dimensions"] == 384  # the source is left as it was
    narrow = http.post(f"/v1/indexes/{source}/reproject", json={"name": f"{source}-8", "model": fitted,
                                                                "dimensions": 8})  # fmt: skip
    assert narrow.status_code == 200 and narrow.json()["dimensions"] == 8
    taken = http.post(f"/v1/indexes/{source}/reproject", json={"name": copy, "model": fitted})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "index_exists"
    not_projection = http.post(f"/v1/indexes/{source}/reproject", json={"name": f"{source}-x", "model": MODEL})
    assert not_projection.status_code == 400 and not_projection.json()["error"]["param"] == "model"
    too_wide = http.post(f"/v1/indexes/{source}/reproject", json={"name": f"{source}-y", "model": fitted,
                                                                  "dimensions": 32})  # fmt: skip
    assert too_wide.status_code == 400 and too_wide.json()["error"]["param"] == "dimensions"
