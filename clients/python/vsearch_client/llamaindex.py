"""LlamaIndex integration: `VsearchVectorStore` (a BasePydanticVectorStore over one vsearch index) and
`VsearchEmbedding` (a BaseEmbedding over `/v1/embeddings`). Install with `vsearch-client[llamaindex]`.

    from llama_index.core import StorageContext, VectorStoreIndex
    from vsearch_client.llamaindex import VsearchEmbedding, VsearchVectorStore
    store = VsearchVectorStore(index="docs", url="http://127.0.0.1:8000")
    index = VectorStoreIndex.from_documents(documents, embed_model=VsearchEmbedding(),
                                            storage_context=StorageContext.from_defaults(vector_store=store))

Nodes are stored with their embeddings (computed by LlamaIndex's embed model), their text and their metadata;
`MetadataFilters` become vsearch filters. Hybrid and text-search modes send the query text too: the server embeds
it with the index's model, so use them with `VsearchEmbedding` of that model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from vsearch_client._client import AsyncClient, Client
from vsearch_client.errors import NotFound
from vsearch_client.types import Hit

DEFAULT_MODEL = "all-MiniLM-L6-v2"
OPERATORS = {FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt", FilterOperator.GTE: "$gte",
             FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte", FilterOperator.IN: "$in",
             FilterOperator.NIN: "$nin"}  # fmt: skip
MODES = {VectorStoreQueryMode.DEFAULT: "dense", VectorStoreQueryMode.MMR: "dense",
         VectorStoreQueryMode.HYBRID: "hybrid", VectorStoreQueryMode.TEXT_SEARCH: "lexical",
         VectorStoreQueryMode.SPARSE: "lexical"}  # fmt: skip


class VsearchEmbedding(BaseEmbedding):
    """Texts embedded by vsearch's `/v1/embeddings`, by the server's model."""

    url: str | None = None
    api_key: str | None = None
    dimensions: int | None = None
    _client: Client = PrivateAttr()
    _async_client: AsyncClient = PrivateAttr()

    def __init__(self, model_name: str = DEFAULT_MODEL, **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self._client = Client(self.url, self.api_key)
        self._async_client = AsyncClient(self.url, self.api_key)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._client.embed([query], self.model_name, dimensions=self.dimensions)[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._client.embed([text], self.model_name, dimensions=self.dimensions)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._client.embed(texts, self.model_name, dimensions=self.dimensions)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._async_client.embed([query], self.model_name, dimensions=self.dimensions))[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._async_client.embed([text], self.model_name, dimensions=self.dimensions))[0]


def vsearch_filter(filters: MetadataFilters | None) -> dict | None:
    """LlamaIndex's MetadataFilters as a vsearch filter."""
    if filters is None or not filters.filters:
        return None
    parts = [vsearch_filter(f) if isinstance(f, MetadataFilters) else _condition(f) for f in filters.filters]
    if filters.condition == FilterCondition.NOT:
        return {"$not": {"$and": parts}}
    return {"$or" if filters.condition == FilterCondition.OR else "$and": parts}


def _condition(one: MetadataFilter) -> dict:
    if one.operator not in OPERATORS:
        raise ValueError(f"vsearch filters do not support the operator {one.operator.value!r}")
    return {one.key: {OPERATORS[one.operator]: one.value}}


class VsearchVectorStore(BasePydanticVectorStore):
    """One vsearch index (created on first add, with the nodes' embedding width)."""

    stores_text: bool = True
    flat_metadata: bool = False
    index: str
    url: str | None = None
    api_key: str | None = None
    model: str = DEFAULT_MODEL  # the index's model: embeds query texts in hybrid and text-search modes
    _client: Client = PrivateAttr()
    _async_client: AsyncClient = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client = Client(self.url, self.api_key)
        self._async_client = AsyncClient(self.url, self.api_key)

    @property
    def client(self) -> Client:
        return self._client

    def _records(self, nodes: Sequence[BaseNode]) -> list[dict]:
        return [
            {"id": node.node_id, "text": node.get_content(), "vector": node.get_embedding(),
             "metadata": node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)}
            for node in nodes
        ]  # fmt: skip

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        if not nodes:
            return []
        self._client.create_index(self.index, self.model, dimensions=len(nodes[0].get_embedding()))
        self._client.add_documents(self.index, self._records(nodes))
        return [node.node_id for node in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        if not nodes:
            return []
        await self._async_client.create_index(self.index, self.model, dimensions=len(nodes[0].get_embedding()))
        await self._async_client.add_documents(self.index, self._records(nodes))
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Every node of the source document `ref_doc_id`."""
        with contextlib.suppress(NotFound):  # nothing was ever added
            self._client.delete_documents(self.index, filter={"ref_doc_id": ref_doc_id})

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        with contextlib.suppress(NotFound):
            await self._async_client.delete_documents(self.index, filter={"ref_doc_id": ref_doc_id})

    def _request(self, query: VectorStoreQuery) -> dict:
        mode = MODES.get(query.mode)
        if mode is None:
            raise ValueError(f"vsearch does not support the query mode {query.mode.value!r}")
        request: dict[str, Any] = {
            "top_k": query.similarity_top_k,
            "mode": mode,
            "filter": vsearch_filter(query.filters),
            "include": ["text", "metadata"],
        }
        if mode == "dense":
            request["vector"] = query.query_embedding
        else:
            request["query"] = query.query_str
        if query.mode == VectorStoreQueryMode.MMR:
            request["diversity"] = query.mmr_threshold if query.mmr_threshold is not None else 0.5
        if mode == "hybrid" and query.alpha is not None:
            request["alpha"] = query.alpha
        return request

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        request = self._request(query)
        try:
            hits = self._client.query(self.index, request.pop("query", None), **request)
        except NotFound:
            hits = []  # nothing was ever added
        return _result(hits)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        request = self._request(query)
        try:
            hits = await self._async_client.query(self.index, request.pop("query", None), **request)
        except NotFound:
            hits = []
        return _result(hits)


def _result(hits: list[Hit]) -> VectorStoreQueryResult:
    nodes = []
    for hit in hits:
        node = metadata_dict_to_node(hit.metadata or {}, text=hit.text)
        nodes.append(node)
    return VectorStoreQueryResult(nodes=nodes, similarities=[h.score for h in hits], ids=[n.node_id for n in nodes])
