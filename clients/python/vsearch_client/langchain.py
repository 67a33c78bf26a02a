"""LangChain integration: `VsearchVectorStore` (a LangChain VectorStore over one vsearch index) and
`VsearchEmbeddings` (LangChain Embeddings over `/v1/embeddings`). Install with `vsearch-client[langchain]`.

    from vsearch_client.langchain import VsearchVectorStore
    store = VsearchVectorStore("docs", url="http://127.0.0.1:8000")
    store.add_texts(["The cat sat on the mat"]); store.similarity_search("kitten", k=4)

By default the server embeds texts with the index's model; give `embedding=` to embed on the client instead (the
index is then created with that embedding's width). Results are grouped by document: `k` counts documents, and a
long document split into chunks comes back once, as its best chunk.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from vsearch_client._client import AsyncClient, Client
from vsearch_client.errors import NotFound
from vsearch_client.types import Hit

DEFAULT_MODEL = "all-MiniLM-L6-v2"
EMBED_BATCH = 256


class VsearchEmbeddings(Embeddings):
    """Texts embedded by vsearch's `/v1/embeddings` (sent as text: never as token ids, see the README)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        url: str | None = None,
        api_key: str | None = None,
        dimensions: int | None = None,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
    ) -> None:
        self.model, self.dimensions = model, dimensions
        self._client = client or Client(url, api_key)
        self._async_client = async_client or AsyncClient(url, api_key)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            vectors += self._client.embed(texts[start : start + EMBED_BATCH], self.model, dimensions=self.dimensions)
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._client.embed([text], self.model, dimensions=self.dimensions)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start : start + EMBED_BATCH]
            vectors += await self._async_client.embed(batch, self.model, dimensions=self.dimensions)
        return vectors

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._async_client.embed([text], self.model, dimensions=self.dimensions))[0]


def _document(hit: Hit) -> Document:
    return Document(id=hit.document_id, page_content=hit.text or "", metadata=hit.metadata or {})


class VsearchVectorStore(VectorStore):
    """One vsearch index as a LangChain VectorStore (created on first use if it does not exist).

    `mode`: dense (default), lexical or hybrid, for every search; `filter=` in searches takes vsearch's filters
    (`{"year": {"$gte": 2020}}`)."""

    def __init__(
        self,
        index: str,
        *,
        url: str | None = None,
        api_key: str | None = None,
        embedding: Embeddings | None = None,
        model: str = DEFAULT_MODEL,
        mode: str = "dense",
        client: Client | None = None,
        async_client: AsyncClient | None = None,
        **index_config: Any,
    ) -> None:
        self.index, self.mode = index, mode
        self._client = client or Client(url, api_key)
        self._async_client = async_client or AsyncClient(url, api_key)
        self._client_side = embedding  # None: the server embeds with the index's model
        self._embedding = embedding or VsearchEmbeddings(model, client=self._client, async_client=self._async_client)
        if embedding is not None and "dimensions" not in index_config:
            index_config["dimensions"] = len(embedding.embed_query("the width of this embedding"))
        self._client.create_index(index, model, **index_config)

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: score  # cosine similarity: already higher-is-better, 1 for the same direction

    # --- writing ------------------------------------------------------------------------------------------------

    def _records(self, texts: list[str], metadatas: list[dict] | None, ids: list[str] | None) -> list[dict]:
        ids = [i or str(uuid.uuid4()) for i in ids] if ids else [str(uuid.uuid4()) for _ in texts]
        metadatas = metadatas or [{} for _ in texts]
        return [{"id": i, "text": t, "metadata": m} for i, t, m in zip(ids, texts, metadatas, strict=True)]

    def add_texts(
        self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: list[str] | None = None, **kwargs: Any
    ) -> list[str]:
        records = self._records(list(texts), metadatas, ids)
        if self._client_side is not None:
            vectors = self._client_side.embed_documents([r["text"] for r in records])
            records = [{**r, "vector": v} for r, v in zip(records, vectors, strict=True)]
        self._client.add_documents(self.index, records)
        return [r["id"] for r in records]

    async def aadd_texts(
        self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: list[str] | None = None, **kwargs: Any
    ) -> list[str]:
        records = self._records(list(texts), metadatas, ids)
        if self._client_side is not None:
            vectors = await self._client_side.aembed_documents([r["text"] for r in records])
            records = [{**r, "vector": v} for r, v in zip(records, vectors, strict=True)]
        await self._async_client.add_documents(self.index, records)
        return [r["id"] for r in records]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by ids, or by `filter=` (a vsearch filter)."""
        if ids is None and kwargs.get("filter") is None:
            raise ValueError("give ids or filter=")
        self._client.delete_documents(self.index, ids, filter=kwargs.get("filter") if ids is None else None)
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        if ids is None and kwargs.get("filter") is None:
            raise ValueError("give ids or filter=")
        await self._async_client.delete_documents(self.index, ids, filter=kwargs.get("filter") if ids is None else None)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        found = []
        for doc_id in ids:
            try:
                stored = self._client.get_document(self.index, doc_id)
            except NotFound:
                continue
            found.append(Document(id=stored.id, page_content=stored.text, metadata=stored.metadata))
        return found

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        found = []
        for doc_id in ids:
            try:
                stored = await self._async_client.get_document(self.index, doc_id)
            except NotFound:
                continue
            found.append(Document(id=stored.id, page_content=stored.text, metadata=stored.metadata))
        return found

    # --- searching ----------------------------------------------------------------------------------------------

    def _search(self, query: str | None, vector: list[float] | None, k: int, **kwargs: Any) -> list[Hit]:
        if query is not None and self._client_side is not None and self.mode == "dense":
            query, vector = None, self._client_side.embed_query(query)
        options = {"group_by": "document", "filter": kwargs.pop("filter", None), **kwargs}
        mode = "dense" if vector is not None else self.mode
        return self._client.query(self.index, query, vector=vector, top_k=k, mode=mode, **options)

    async def _asearch(self, query: str | None, vector: list[float] | None, k: int, **kwargs: Any) -> list[Hit]:
        if query is not None and self._client_side is not None and self.mode == "dense":
            query, vector = None, await self._client_side.aembed_query(query)
        options = {"group_by": "document", "filter": kwargs.pop("filter", None), **kwargs}
        mode = "dense" if vector is not None else self.mode
        return await self._async_client.query(self.index, query, vector=vector, top_k=k, mode=mode, **options)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [_document(hit) for hit in self._search(query, None, k, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        return [(_document(hit), hit.score) for hit in self._search(query, None, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        return [_document(hit) for hit in self._search(None, embedding, k, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [_document(hit) for hit in await self._asearch(query, None, k, **kwargs)]

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return [(_document(hit), hit.score) for hit in await self._asearch(query, None, k, **kwargs)]

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        return [_document(hit) for hit in await self._asearch(None, embedding, k, **kwargs)]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """MMR on the server (`diversity`), over its 4 x k best candidates (`fetch_k` is not used)."""
        return [_document(hit) for hit in self._search(query, None, k, diversity=lambda_mult, **kwargs)]

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        return [_document(hit) for hit in self._search(None, embedding, k, diversity=lambda_mult, **kwargs)]

    async def amax_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        return [_document(hit) for hit in await self._asearch(query, None, k, diversity=lambda_mult, **kwargs)]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        index: str = "langchain",
        **kwargs: Any,
    ) -> VsearchVectorStore:
        """A store over `index` (created if needed) holding `texts`. `embedding=None`: the server embeds them."""
        store = cls(index, embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
