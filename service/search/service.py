"""SearchService: the one door to indexes. Ties each index to its embedders: ingest (validate, hash, chunk,
embed, upsert) and query (validate, embed with the query model, search). Storage work runs in worker threads, so
every method can be awaited from the event loop. No HTTP here."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence

import msgspec
import numpy as np

from indexes.catalog import IndexCatalog
from indexes.config import IndexConfig
from indexes.store import IndexStore
from indexes.values import ChunkRecord, DocumentRecord, SearchRequest
from service.chunking import token_windows
from service.embeddings.registry import EmbedderRegistry
from service.errors import InvalidRequest, translates_store_errors
from service.limits import Limits
from service.search.values import (
    Chunking,
    DocumentPage,
    Hit,
    IndexChange,
    IndexInfo,
    IndexSpec,
    IngestResult,
    MetadataFilter,
    NewDocument,
    QueryOutcome,
    SearchQuery,
    StoredDocument,
)


def _info(store: IndexStore) -> IndexInfo:
    return IndexInfo(store.config, store.stats())


class SearchService:
    def __init__(self, catalog: IndexCatalog, registry: EmbedderRegistry, limits: Limits) -> None:
        self._catalog = catalog
        self._registry = registry
        self._limits = limits

    # --- indexes --------------------------------------------------------------------------------------------------

    @translates_store_errors
    async def create_index(self, spec: IndexSpec) -> IndexInfo:
        config = IndexConfig(
            name=spec.name,
            model=spec.model,
            dimensions=self._registry.output_dimensions(spec.model, spec.dimensions),
            requested_dimensions=spec.dimensions,
            metric=spec.metric,
            kind=spec.kind,
            hnsw=spec.hnsw,
            lexical_tokenizer=spec.lexical_tokenizer,
        )
        if spec.query_model is not None:
            self._check_query_model(config, spec.query_model)
            config = msgspec.structs.replace(config, query_model=spec.query_model)
        return _info(await asyncio.to_thread(self._catalog.create, config))

    @translates_store_errors
    async def list_indexes(self) -> list[IndexInfo]:
        return await asyncio.to_thread(lambda: [_info(self._catalog.get(name)) for name in self._catalog.names()])

    @translates_store_errors
    async def describe_index(self, name: str) -> IndexInfo:
        return await asyncio.to_thread(lambda: _info(self._catalog.get(name)))

    @translates_store_errors
    async def update_index(self, name: str, change: IndexChange) -> IndexInfo:
        def update() -> IndexInfo:
            store = self._catalog.get(name)
            config = store.config
            if change.ef_search is not None:
                if config.hnsw is None:
                    raise InvalidRequest("ef_search applies to hnsw indexes only.", param="ef_search")
                hnsw = msgspec.structs.replace(config.hnsw, ef_search=change.ef_search)
                config = msgspec.structs.replace(config, hnsw=hnsw)
            if change.query_model is not msgspec.UNSET:
                if change.query_model is not None:
                    self._check_query_model(config, change.query_model)
                config = msgspec.structs.replace(config, query_model=change.query_model)
            store.set_config(config)
            return _info(store)

        return await asyncio.to_thread(update)

    @translates_store_errors
    async def delete_index(self, name: str) -> None:
        await asyncio.to_thread(self._catalog.delete, name)

    def _check_query_model(self, config: IndexConfig, query_model: str) -> None:
        embedder = self._registry.get(query_model, param="query_model")
        base = embedder.base_model or embedder.model_id
        if base != config.model:
            raise InvalidRequest(
                f"query_model '{query_model}' is based on '{base}', but the index's documents are embedded with "
                f"'{config.model}': a query model must share the index's base model.",
                param="query_model",
            )

    # --- documents ------------------------------------------------------------------------------------------------

    @translates_store_errors
    async def ingest(self, name: str, documents: Sequence[NewDocument], chunking: Chunking) -> IngestResult:
        if not documents:
            raise InvalidRequest("'documents' must not be empty.", param="documents")
        if len(documents) > self._limits.max_documents_per_request:
            raise InvalidRequest(
                f"{len(documents)} documents in one request; at most {self._limits.max_documents_per_request} "
                "are allowed.",
                param="documents",
            )
        store = await asyncio.to_thread(self._catalog.get, name)
        config = store.config
        prepared = self._prepare(documents, config, chunking)
        ids = [doc.doc_id for doc in prepared]
        stored = await asyncio.to_thread(store.content_hashes, ids)
        changed = [doc for doc in prepared if stored.get(doc.doc_id) != doc.content_hash]
        prompt_tokens = await self._embed_chunks(config, changed, chunking)
        result = await asyncio.to_thread(store.upsert, changed) if changed else None
        return IngestResult(
            ids=ids,
            created=len(result.created) if result else 0,
            updated=len(result.updated) if result else 0,
            unchanged=len(prepared) - len(changed),
            prompt_tokens=prompt_tokens,
        )

    def _prepare(
        self, documents: Sequence[NewDocument], config: IndexConfig, chunking: Chunking
    ) -> list[DocumentRecord]:
        """Validate, give ids, hash contents (vectors come later)."""
        by_id: dict[str, DocumentRecord] = {}  # a repeated id in one request: the last one wins
        for i, doc in enumerate(documents):
            where = f"documents[{i}]"
            if doc.vector is None and not (doc.text and doc.text.strip()):
                raise InvalidRequest(f"{where} has no text to embed (and no vector).", param=f"{where}.text")
            if doc.vector is not None and len(doc.vector) != config.dimensions:
                raise InvalidRequest(
                    f"{where}.vector has {len(doc.vector)} dimensions; index '{config.name}' has {config.dimensions}.",
                    param=f"{where}.vector",
                )
            text = doc.text or ""
            metadata = doc.metadata or {}
            content = msgspec.json.encode([text, metadata, doc.vector, config.model, chunking.strategy,
                                           chunking.max_tokens, chunking.overlap_tokens])  # fmt: skip
            doc_id = doc.id if doc.id is not None else f"doc-{uuid.uuid4().hex}"
            record = DocumentRecord(doc_id, text, metadata, hashlib.sha256(content).hexdigest(), [])
            if doc.vector is not None:
                record.chunks = [ChunkRecord(0, len(text), np.asarray(doc.vector, dtype=np.float32))]
            by_id[doc_id] = record
        return list(by_id.values())

    def _spans(self, text: str, model: str, chunking: Chunking) -> list[tuple[int, int]]:
        embedder = self._registry.get(model)
        window = embedder.max_input_tokens - embedder.special_tokens
        if chunking.strategy == "truncate":
            return [(0, len(text))]
        max_tokens = chunking.max_tokens or window
        if max_tokens > window:
            raise InvalidRequest(
                f"chunking.max_tokens {max_tokens} exceeds the model's window of {window} tokens.",
                param="chunking.max_tokens",
            )
        if chunking.overlap_tokens >= max_tokens:
            raise InvalidRequest(
                "chunking.overlap_tokens must be less than max_tokens.", param="chunking.overlap_tokens"
            )
        offsets = embedder.token_offsets(text)
        if len(offsets) <= max_tokens:
            return [(0, len(text))]
        return token_windows(offsets, max_tokens, chunking.overlap_tokens)

    async def _embed_chunks(self, config: IndexConfig, documents: list[DocumentRecord], chunking: Chunking) -> int:
        to_embed = [doc for doc in documents if not doc.chunks]
        if not to_embed:
            return 0
        spans = await asyncio.to_thread(lambda: [self._spans(doc.text, config.model, chunking) for doc in to_embed])
        texts = [
            doc.text[start:end] for doc, doc_spans in zip(to_embed, spans, strict=True) for start, end in doc_spans
        ]
        # Chunks are cut to fit the window; truncation only guards against a re-tokenised edge token or two.
        result = await self._registry.embed(config.model, texts, config.requested_dimensions, truncate=True)
        row = 0
        for doc, doc_spans in zip(to_embed, spans, strict=True):
            doc.chunks = [ChunkRecord(start, end, result.vectors[row + k]) for k, (start, end) in enumerate(doc_spans)]
            row += len(doc_spans)
        return result.prompt_tokens

    @translates_store_errors
    async def list_documents(self, name: str, limit: int, after: str | None) -> DocumentPage:
        documents, has_more = await asyncio.to_thread(lambda: self._catalog.get(name).list(limit, after))
        return DocumentPage(documents, has_more)

    @translates_store_errors
    async def get_document(self, name: str, doc_id: str) -> StoredDocument:
        return await asyncio.to_thread(lambda: self._catalog.get(name).get(doc_id))

    @translates_store_errors
    async def delete_document(self, name: str, doc_id: str) -> None:
        """Deletes one document; NotFound if it does not exist."""

        def remove() -> None:
            store = self._catalog.get(name)
            store.get(doc_id)
            store.delete([doc_id])

        await asyncio.to_thread(remove)

    @translates_store_errors
    async def delete_documents(self, name: str, ids: list[str]) -> list[str]:
        """Deletes the documents of `ids` that exist; returns those."""
        return await asyncio.to_thread(lambda: self._catalog.get(name).delete(ids))

    @translates_store_errors
    async def delete_matching(self, name: str, where: MetadataFilter) -> list[str]:
        return await asyncio.to_thread(lambda: self._catalog.get(name).delete_matching(where))

    # --- queries --------------------------------------------------------------------------------------------------

    @translates_store_errors
    async def query(self, name: str, query: SearchQuery) -> QueryOutcome:
        """Everything that can be refused is checked before anything is embedded (an embedding may be paid for)."""
        if query.top_k > self._limits.max_top_k:
            raise InvalidRequest(f"top_k is {query.top_k}; at most {self._limits.max_top_k} is allowed.",
                                 param="top_k")  # fmt: skip
        store = await asyncio.to_thread(self._catalog.get, name)
        config = store.config
        model = config.query_model or config.model
        request = SearchRequest(mode=query.mode, top_k=query.top_k, filter=query.filter, min_score=query.min_score,
                                fusion=query.fusion)  # fmt: skip
        if query.vector is not None:
            if query.mode != "dense":
                raise InvalidRequest(f"mode '{query.mode}' needs a text query, not a vector.", param="mode")
            if len(query.vector) != config.dimensions:
                raise InvalidRequest(
                    f"vector has {len(query.vector)} dimensions; index '{name}' has {config.dimensions}.",
                    param="vector",
                )
            searches = [(np.asarray(query.vector, dtype=np.float32), None)]
            tokens = 0
        else:
            texts = query.texts or []
            for i, text in enumerate(texts):
                if not text.strip():
                    raise InvalidRequest(f"query {i} is empty.", param="query")
            if query.mode == "lexical":  # BM25 alone needs no embedding
                searches, tokens = [(None, text) for text in texts], 0
            else:
                result = await self._registry.embed(model, texts, config.requested_dimensions)
                searches = list(zip(result.vectors, texts, strict=True))
                tokens = result.prompt_tokens

        def run() -> list[list[Hit]]:
            return [store.search(request, None if v is None else v[None, :], text) for v, text in searches]

        return QueryOutcome(await asyncio.to_thread(run), model, tokens)

    @translates_store_errors
    async def nearest(self, name: str, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        """The `top_k` nearest chunks of each of `vectors` (dense, unfiltered): for mining hard negatives."""
        store = await asyncio.to_thread(self._catalog.get, name)
        request = SearchRequest(top_k=top_k)
        return await asyncio.to_thread(lambda: [store.search(request, v[None, :], None) for v in vectors])

    # --- operations -----------------------------------------------------------------------------------------------

    def index_names(self) -> list[str]:
        return self._catalog.names()

    def index_stats(self) -> list[IndexInfo]:
        """For metrics scrapes (a worker thread)."""
        return [_info(self._catalog.get(name)) for name in self._catalog.names()]

    def close(self) -> None:
        self._catalog.close()  # checkpoints every open index
