"""An index's configuration, fixed at creation except where noted."""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from indexes.errors import InvalidConfig

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

Metric = Literal["cosine", "ip", "l2"]
Kind = Literal["flat", "hnsw"]
LexicalTokenizer = Literal["porter", "unicode61", "trigram"]


class HnswConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128  # changeable after creation


class IndexConfig(msgspec.Struct, kw_only=True):
    name: str
    model: str  # embeds documents, and queries unless query_model is set
    dimensions: int  # width of the stored vectors
    requested_dimensions: int | None = None  # what the caller asked the model for, passed on to it
    metric: Metric = "cosine"
    kind: Kind = "flat"
    hnsw: HnswConfig | None = None
    query_model: str | None = None  # changeable after creation: a fine-tuned query encoder over `model`
    lexical_tokenizer: LexicalTokenizer = "porter"  # FTS5 tokenizer for lexical (BM25) search
    created_at: int = 0


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidConfig(
            f"Invalid index name '{name}': use 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter "
            "or digit.",
            "name",
        )
    return name


def check_config(config: IndexConfig) -> IndexConfig:
    check_name(config.name)
    if config.dimensions < 1:
        raise InvalidConfig("dimensions must be at least 1.", "dimensions")
    if config.kind == "hnsw":
        hnsw = config.hnsw or HnswConfig()
        for field in ("m", "ef_construction", "ef_search"):
            value = getattr(hnsw, field)
            if not 2 <= value <= 4096:
                raise InvalidConfig(f"hnsw.{field} must be between 2 and 4096, not {value}.", f"hnsw.{field}")
        config = msgspec.structs.replace(config, hnsw=hnsw)
    elif config.hnsw is not None:
        raise InvalidConfig("'hnsw' settings are only valid with kind 'hnsw'.", "hnsw")
    return config
