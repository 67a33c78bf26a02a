"""What the server returns, as msgspec Structs (decoded directly from the response bytes)."""

from __future__ import annotations

from typing import Any

import msgspec


class Index(msgspec.Struct, kw_only=True):
    name: str
    model: str
    dimensions: int
    metric: str
    kind: str
    document_count: int
    vector_count: int
    query_model: str | None = None
    quantization: str = "none"
    metadata_indexes: dict[str, str] = {}
    created_at: int = 0
    bytes: int = 0


class IndexList(msgspec.Struct):
    data: list[Index]


class Document(msgspec.Struct, kw_only=True):
    id: str
    text: str
    metadata: dict[str, Any]
    chunks: int
    created_at: int
    updated_at: int


class DocumentPage(msgspec.Struct, kw_only=True):
    data: list[Document]
    last_id: str | None
    has_more: bool


class AddResult(msgspec.Struct, kw_only=True):
    """What one or more add calls did (summed over the batches of a large add)."""

    ids: list[str] = []
    created: int = 0
    updated: int = 0
    unchanged: int = 0


class DeleteResult(msgspec.Struct, kw_only=True):
    ids: list[str]
    deleted: int


class ChunkMatch(msgspec.Struct, kw_only=True):
    id: str
    score: float
    start: int
    end: int


class Hit(msgspec.Struct, kw_only=True):
    """A document, or a chunk `"{document}#{n}"` of a split one (then `parent_id` is the document's id)."""

    id: str
    score: float
    ranks: dict[str, int] | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None
    vector: list[float] | None = None
    parent_id: str | None = None
    chunks: list[ChunkMatch] | None = None

    @property
    def document_id(self) -> str:
        return self.parent_id or self.id


class QueryResult(msgspec.Struct):
    data: list[Hit]


class BatchQueryResult(msgspec.Struct):
    data: list[QueryResult]  # one per query, in order


class Embedding(msgspec.Struct):
    embedding: list[float]
    index: int


class EmbeddingResult(msgspec.Struct, kw_only=True):
    data: list[Embedding]
    model: str

    @property
    def vectors(self) -> list[list[float]]:
        return [item.embedding for item in sorted(self.data, key=lambda item: item.index)]


class Model(msgspec.Struct, kw_only=True):
    id: str
    owned_by: str = ""


class ModelList(msgspec.Struct):
    data: list[Model]
