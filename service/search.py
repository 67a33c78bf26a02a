"""Ties indexes to their embedders: ingest (chunk, embed, upsert) and query (embed, search). No HTTP here."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from indexes.catalog import IndexCatalog
from indexes.config import HnswConfig, IndexConfig
from indexes.store import ChunkRecord, DocumentRecord, Hit, IndexStore
from service.chunking import DEFAULT_OVERLAP_TOKENS, token_windows
from service.embeddings.registry import EmbedderRegistry
from service.errors import InvalidRequest


@dataclass
class NewDocument:
    doc_id: str | None
    text: str | None
    metadata: dict[str, Any] | None
    vector: list[float] | None


@dataclass
class ChunkingOptions:
    strategy: str = "split"  # or "truncate"
    max_tokens: int | None = None  # default: the model's window less its special tokens
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS


@dataclass
class IngestResult:
    ids: list[str]
    created: int
    updated: int
    unchanged: int
    prompt_tokens: int


@dataclass
class QueryOutcome:
    hits: list[list[Hit]]
    model: str
    prompt_tokens: int


class SearchService:
    def __init__(
        self, catalog: IndexCatalog, registry: EmbedderRegistry, max_documents: int = 1000, max_top_k: int = 1000
    ) -> None:
        self.catalog = catalog
        self.registry = registry
        self.max_documents = max_documents
        self.max_top_k = max_top_k

    # --- indexes --------------------------------------------------------------------------------------------------

    def create_index(
        self,
        name: str,
        model: str,
        dimensions: int | None,
        metric: str,
        kind: str,
        hnsw: HnswConfig | None,
        query_model: str | None,
        lexical_tokenizer: str = "porter",
    ) -> IndexStore:
        width = self.registry.output_dimensions(model, dimensions)
        config = IndexConfig(
            name=name,
            model=model,
            dimensions=width,
            requested_dimensions=dimensions,
            metric=metric,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            hnsw=hnsw,
            lexical_tokenizer=lexical_tokenizer,  # type: ignore[arg-type]
        )
        if query_model is not None:
            self.check_query_model(config, query_model)
            config = msgspec.structs.replace(config, query_model=query_model)
        return self.catalog.create(config)

    def check_query_model(self, config: IndexConfig, query_model: str) -> None:
        embedder = self.registry.get(query_model, param="query_model")
        base = getattr(embedder, "base_model", embedder.model_id)
        if base != config.model:
            raise InvalidRequest(
                f"query_model '{query_model}' is based on '{base}', but the index's documents are embedded with "
                f"'{config.model}': a query model must share the index's base model.",
                param="query_model",
            )

    def update_index(self, name: str, ef_search: int | None, query_model: str | None | msgspec.UnsetType) -> IndexStore:
        store = self.catalog.get(name)
        config = store.config
        if ef_search is not None:
            if config.kind != "hnsw" or config.hnsw is None:
                raise InvalidRequest("ef_search applies to hnsw indexes only.", param="ef_search")
            config = msgspec.structs.replace(config, hnsw=msgspec.structs.replace(config.hnsw, ef_search=ef_search))
        if query_model is not msgspec.UNSET:
            if query_model is not None:
                self.check_query_model(config, query_model)
            config = msgspec.structs.replace(config, query_model=query_model)
        store.set_config(config)
        return store

    # --- ingest ---------------------------------------------------------------------------------------------------

    async def ingest(self, name: str, documents: Sequence[NewDocument], chunking: ChunkingOptions) -> IngestResult:
        store = self.catalog.get(name)
        config = store.config
        if not documents:
            raise InvalidRequest("'documents' must not be empty.", param="documents")
        if len(documents) > self.max_documents:
            raise InvalidRequest(
                f"{len(documents)} documents in one request; at most {self.max_documents} are allowed.",
                param="documents",
            )
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
        self, documents: Sequence[NewDocument], config: IndexConfig, chunking: ChunkingOptions
    ) -> list[DocumentRecord]:
        """Validate, give ids, hash contents, and split texts into chunk spans (vectors come later)."""
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
            content = msgspec.json.encode(
                [
                    text,
                    metadata,
                    doc.vector,
                    config.model,
                    chunking.strategy,
                    chunking.max_tokens,
                    chunking.overlap_tokens,
                ]
            )
            doc_id = doc.doc_id if doc.doc_id is not None else f"doc-{uuid.uuid4().hex}"
            record = DocumentRecord(doc_id, text, metadata, hashlib.sha256(content).hexdigest(), [])
            if doc.vector is not None:
                record.chunks = [ChunkRecord(0, len(text), np.asarray(doc.vector, dtype=np.float32))]
            by_id[doc_id] = record
        return list(by_id.values())

    def _spans(self, text: str, model: str, chunking: ChunkingOptions) -> list[tuple[int, int]]:
        embedder = self.registry.get(model)
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

    async def _embed_chunks(
        self, config: IndexConfig, documents: list[DocumentRecord], chunking: ChunkingOptions
    ) -> int:
        to_embed = [doc for doc in documents if not doc.chunks]
        if not to_embed:
            return 0
        spans = await asyncio.to_thread(lambda: [self._spans(doc.text, config.model, chunking) for doc in to_embed])
        texts = [
            doc.text[start:end] for doc, doc_spans in zip(to_embed, spans, strict=True) for start, end in doc_spans
        ]
        # Chunks are cut to fit the window; truncation only guards against a re-tokenised edge token or two.
        result = await self.registry.embed(config.model, texts, config.requested_dimensions, truncate=True)
        row = 0
        for doc, doc_spans in zip(to_embed, spans, strict=True):
            doc.chunks = [ChunkRecord(start, end, result.vectors[row + k]) for k, (start, end) in enumerate(doc_spans)]
            row += len(doc_spans)
        return result.prompt_tokens

    # --- queries --------------------------------------------------------------------------------------------------

    async def query(
        self,
        name: str,
        texts: list[str] | None,
        vector: list[float] | None,
        top_k: int,
        filter_spec: dict[str, Any] | None,
        min_score: float | None,
        mode: str = "dense",
        rrf_k: int = 60,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> QueryOutcome:
        if top_k > self.max_top_k:
            raise InvalidRequest(f"top_k is {top_k}; at most {self.max_top_k} is allowed.", param="top_k")
        store = self.catalog.get(name)
        config = store.config
        model = config.query_model or config.model
        if vector is not None:
            if mode != "dense":
                raise InvalidRequest(f"mode '{mode}' needs a text query, not a vector.", param="mode")
            if len(vector) != config.dimensions:
                raise InvalidRequest(
                    f"vector has {len(vector)} dimensions; index '{name}' has {config.dimensions}.", param="vector"
                )
            vectors: list[np.ndarray | None] = [np.asarray(vector, dtype=np.float32)]
            texts, tokens = [None], 0  # type: ignore[list-item]
        else:
            assert texts is not None
            for i, text in enumerate(texts):
                if not text.strip():
                    raise InvalidRequest(f"query {i} is empty.", param="query")
            if mode == "lexical":  # BM25 alone needs no embedding
                vectors, tokens = [None] * len(texts), 0
            else:
                result = await self.registry.embed(model, texts, config.requested_dimensions)
                vectors, tokens = list(result.vectors), result.prompt_tokens

        def run() -> list[list[Hit]]:
            return [
                store.search(
                    None if v is None else v[None, :], top_k, filter_spec, min_score, text, mode, rrf_k, weights
                )
                for v, text in zip(vectors, texts, strict=True)
            ]

        return QueryOutcome(await asyncio.to_thread(run), model, tokens)
