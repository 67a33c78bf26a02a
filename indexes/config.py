"""An index's configuration, fixed at creation except where noted."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from indexes.errors import InvalidConfig
from indexes.filters import json_path

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

Metric = Literal["cosine", "ip", "l2"]
Kind = Literal["flat", "hnsw"]
# How FAISS holds vectors in memory (SQLite always keeps float32): none (float32, 4 bytes a dimension), sq8 (1 byte
# a dimension) or binary (1 bit a dimension: its sign); quantized results are rescored exactly from SQLite. No
# product quantization: FAISS's IndexPQ takes no ID selector, which deletions and filters need.
Quantization = Literal["none", "sq8", "binary"]
LexicalTokenizer = Literal["porter", "unicode61", "trigram"]
# What a declared metadata field holds. Recorded for readers; the index serves comparisons of any JSON scalar, and
# filters mean the same with or without it.
FieldType = Literal["integer", "real", "keyword", "boolean"]


HnswInt = Annotated[int, msgspec.Meta(ge=2, le=4096)]


class HnswConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    m: HnswInt = 32
    ef_construction: HnswInt = 200
    ef_search: HnswInt = 128  # changeable after creation


class IndexConfig(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    model: str  # embeds documents, and queries unless query_model is set
    dimensions: Annotated[int, msgspec.Meta(ge=1)]  # width of the stored vectors
    requested_dimensions: int | None = None  # what the caller asked the model for, passed on to it
    metric: Metric = "cosine"
    kind: Kind = "flat"
    hnsw: HnswConfig | None = None
    quantization: Quantization = "none"
    query_model: str | None = None  # changeable after creation: a fine-tuned query encoder over `model`
    # Text put before each query and each document chunk when they are embedded (asymmetric models: e5, bge, ...)
    query_prompt: str | None = None
    document_prompt: str | None = None
    lexical_tokenizer: LexicalTokenizer = "porter"  # FTS5 tokenizer for lexical (BM25) search
    # Metadata fields (dotted paths) with a column and a B-tree index of their own, for filters on them; more can
    # be added later (filled from the stored documents).
    metadata_indexes: dict[str, FieldType] = msgspec.field(default_factory=dict)
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
    """The config with its defaults filled in, or InvalidConfig. Bounds are declared once, on the fields above."""
    check_name(config.name)
    try:  # msgspec checks constraints when converting, not when constructing
        config = msgspec.convert(msgspec.to_builtins(config), IndexConfig)
    except msgspec.ValidationError as exc:
        at = re.search(r"at `\$\.([^`]+)`", str(exc))
        raise InvalidConfig(f"Invalid index config: {exc}", at.group(1) if at else None) from None
    for field in config.metadata_indexes:
        json_path(field, f"metadata_indexes.{field}")
    if config.quantization == "binary" and (config.dimensions % 8 or config.metric != "cosine"):
        raise InvalidConfig("'binary' quantization needs the cosine metric and dimensions that are a multiple of 8.",
                            "quantization")  # fmt: skip
    if config.kind == "hnsw":
        return msgspec.structs.replace(config, hnsw=config.hnsw or HnswConfig())
    if config.hnsw is not None:
        raise InvalidConfig("'hnsw' settings are only valid with kind 'hnsw'.", "hnsw")
    return config
