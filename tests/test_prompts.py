"""Query and document prompts: a model folder's declared prompts (config_sentence_transformers.json, as e5's), the
`input_type` extension of /v1/embeddings, and an index's query_prompt / document_prompt. A prompt changes a vector
exactly as putting its text before the input would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from service.embeddings import model_files
from tests.helpers import LiveServer, start_server

PROMPTED = "e5-like"  # the bundled weights in a folder whose config declares e5's prompts
PROMPTS = {"query": "query: ", "passage": "passage: "}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("prompts")
    bundled = model_files.bundled_model_files().folder
    folder = root / PROMPTED
    (folder / "1_Pooling").mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "sentence_bert_config.json"):
        (folder / name).symlink_to(bundled / name)
    (folder / "1_Pooling" / "config.json").symlink_to(bundled / "1_Pooling" / "config.json")
    (folder / model_files.PROMPTS_FILE).write_text(json.dumps({"prompts": PROMPTS, "default_prompt_name": None}))
    server = start_server(root / "data", model_dirs=[folder], int8_models=False)
    yield server
    server.stop()


@pytest.fixture()
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=120) as client:
        yield client


def embed(http: httpx.Client, model: str, text: str, **extra: object) -> tuple[np.ndarray, int]:
    response = http.post("/v1/embeddings", json={"model": model, "input": [text], **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    return np.array(body["data"][0]["embedding"], dtype=np.float32), body["usage"]["prompt_tokens"]


def test_input_type_puts_the_declared_prompt_before_each_input(http: httpx.Client, live: LiveServer):
    text = "How do proteins fold?"
    for input_type, prompt in (("query", "query: "), ("document", "passage: ")):
        prompted, tokens = embed(http, PROMPTED, text, input_type=input_type)
        by_hand, hand_tokens = embed(http, PROMPTED, prompt + text)
        assert np.array_equal(prompted, by_hand) and tokens == hand_tokens  # the prompt counts toward usage
        assert tokens > embed(http, PROMPTED, text)[1]
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
    through_sdk = client.embeddings.create(model=PROMPTED, input=text, extra_body={"input_type": "query"})
    assert np.allclose(through_sdk.data[0].embedding, embed(http, PROMPTED, "query: " + text)[0], atol=1e-7)


def test_input_type_on_a_model_without_prompts_is_a_400_that_says_so(http: httpx.Client):
    response = http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "a", "input_type": "query"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "input_type" and error["code"] == "prompts_not_declared"
    assert "declares no prompts" in error["message"]
    tokens = http.post("/v1/embeddings", json={"model": PROMPTED, "input": [101, 102], "input_type": "query"})
    assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "input_type"
    unknown = http.post("/v1/embeddings", json={"model": PROMPTED, "input": "a", "input_type": "passage"})
    assert unknown.status_code == 400


def create(http: httpx.Client, model: str, **settings: object) -> dict:
    name = f"prompts-{uuid.uuid4().hex[:8]}"
    response = http.post("/v1/indexes", json={"name": name, "model": model, **settings})
    assert response.status_code == 200, response.text
    return response.json()


def stored_vector(http: httpx.Client, name: str, text: str) -> tuple[np.ndarray, float]:
    """Ingest one document, then search it by `text`: (its stored vector, the query's score against it)."""
    assert http.post(f"/v1/indexes/{name}/documents", json={"documents": [{"id": "d", "text": text}]}).is_success
    hit = http.post(f"/v1/indexes/{name}/query", json={"query": "protein folding", "include": ["vector"]}).json()
    return np.array(hit["data"][0]["vector"], dtype=np.float32), hit["data"][0]["score"]


def test_an_index_embeds_with_the_models_prompts(http: httpx.Client):
    index = create(http, PROMPTED)
    assert (index["query_prompt"], index["document_prompt"]) == ("query: ", "passage: ")
    text = "Chaperones help proteins fold into their native shape."
    vector, score = stored_vector(http, index["name"], text)
    document = embed(http, PROMPTED, "passage: " + text)[0]
    query = embed(http, PROMPTED, "query: protein folding")[0]
    assert np.allclose(vector, document, atol=1e-6)
    assert abs(score - float(query @ document)) < 1e-5


def test_an_index_may_set_its_own_prompts_or_none(http: httpx.Client):
    text = "Chaperones help proteins fold into their native shape."
    custom = create(http, "all-MiniLM-L6-v2", document_prompt="search_document: ", query_prompt="search_query: ")
    vector, score = stored_vector(http, custom["name"], text)
    document = embed(http, "all-MiniLM-L6-v2", "search_document: " + text)[0]
    assert np.allclose(vector, document, atol=1e-6)
    assert abs(score - float(embed(http, "all-MiniLM-L6-v2", "search_query: protein folding")[0] @ document)) < 1e-5
    plain = create(http, PROMPTED, query_prompt="", document_prompt="")
    assert (plain["query_prompt"], plain["document_prompt"]) == (None, None)
    vector, _ = stored_vector(http, plain["name"], text)
    assert np.allclose(vector, embed(http, PROMPTED, text)[0], atol=1e-6)


def test_the_bundled_model_declares_no_prompts(tmp_path: Path):
    assert model_files.bundled_model_files().prompts == {}
