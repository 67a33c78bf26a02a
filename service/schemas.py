"""msgspec Structs for every request and response body, in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

PositiveInt = Annotated[int, Meta(ge=1)]


# --- embeddings ---------------------------------------------------------------------------------------------------


class EmbeddingRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    # A string, an array of strings, an array of token ids, or an array of token-id arrays. msgspec cannot
    # express a union of array types, so the element types are checked after decoding.
    input: str | list[str | int | list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None
    user: str | None = None


class Embedding(Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # a base64 string of little-endian float32 when encoding_format is base64


class EmbeddingUsage(Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# --- models -------------------------------------------------------------------------------------------------------


class Model(Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]
