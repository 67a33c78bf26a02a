"""SearchService: the one door to indexes. Ties each index to its embedders: ingest (validate, hash, chunk,
embed, upsert) and query (validate, embed with the query model, search). Storage work runs in worker threads
through run() (indexes/databases/loop.py), so every method can be awaited from the event loop; a store used on the
loop's thread refuses (BlockingCallOnLoop). No HTTP here."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import msgspec
import numpy as np

from indexes.archive import SnapshotReader
from indexes.config import IndexConfig, check_config, check_name
from indexes.contract import CatalogContract, IndexStoreContract
from indexes.databases.loop import run
from indexes.errors import IndexNotFound, IndexReplaced, IndexUnavailable
from indexes.values import ChunkRecord, DocumentRecord, IndexExport, SearchRequest
from service.chunking import token_windows
from service.embeddings.base import InputType, declared_prompt
from service.embeddings.projection import ProjectionEmbedder
from service.embeddings.registry import EmbedderRegistry
from service.errors import Conflict, InvalidRequest, ModelNotFound, NotFound, translates_store_errors
from service.limits import Limits
from service.search.values import (
    Chunking,
    DocumentPage,
    Hit,
    IndexChange,
    IndexInfo,
    IndexProjection,
    IndexSpec,
    IngestResult,
    MetadataFilter,
    NewDocument,
    QueryOutcome,
    SearchQuery,
    StoredDocument,
)

T = TypeVar("T")
TRIES = 3  # a restore may replace an index between a store's acquire and its use: acquire the new one and retry
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def float32_vector(values: Sequence[float], param: str) -> np.ndarray:
    """`values` as float32, refusing what float32 cannot hold: 1e39 would be stored as inf and win every query."""
    with np.errstate(over="ignore"):
        vector = np.asarray(values, dtype=np.float32)
    if not np.isfinite(vector).all():
        raise InvalidRequest(f"{param} has a value that is not a finite float32 (at most about 3.4e38).", param=param)
    return vector


def check_document_id(doc_id: str, param: str) -> None:
    """Any text of 1 to 512 characters, except control characters and the two ids a URL cannot carry ('.' and
    '..', which clients resolve away as path segments). Everything else round-trips percent-encoded in a URL."""
    if doc_id in (".", "..") or CONTROL_CHARACTERS.search(doc_id):
        raise InvalidRequest(
            f"Invalid document id {doc_id!r}: an id may not be '.' or '..' nor contain control characters.",
            param=param,
        )


async def retried(attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()`, again if the index it used was replaced by a restore (a replaced store refuses before changing
    anything, so the retry is the whole operation, on the restored index)."""
    for tries in range(1, TRIES + 1):
        try:
            return await attempt()
        except IndexReplaced:
            if tries == TRIES:
                raise
    raise AssertionError("unreachable")


async def servable(registry: EmbedderRegistry, config: IndexConfig) -> None:
    """InvalidRequest (naming the snapshot's file) unless this server has the index's models, and the model gives
    vectors of the index's width."""
    for model, param in ((config.model, "model"), (config.query_model, "query_model")):
        if model is None:
            continue
        try:
            await registry.known(model)
        except ModelNotFound:
            raise InvalidRequest(
                f"The snapshot's index uses {param} '{model}', which this server does not serve: add the model (or "
                "restore a backup that has it) first.",
                param="file",
                code="model_not_found",
            ) from None
    expected = registry.output_dimensions(config.model, config.requested_dimensions)
    if expected != config.dimensions:
        raise InvalidRequest(
            f"The snapshot's vectors have {config.dimensions} dimensions, but model '{config.model}' gives {expected}.",
            param="file",
            code="dimensions_mismatch",
        )


def prepared_records(documents: Sequence[NewDocument], config: IndexConfig, chunking: Chunking) -> list[DocumentRecord]:
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
        if doc.id is not None:
            check_document_id(doc.id, f"{where}.id")
        text = doc.text or ""
        metadata = doc.metadata or {}
        content = msgspec.json.encode([text, metadata, doc.vector, config.model, chunking.strategy,
                                       chunking.max_tokens, chunking.overlap_tokens])  # fmt: skip
        doc_id = doc.id if doc.id is not None else f"doc-{uuid.uuid4().hex}"
        record = DocumentRecord(doc_id, text, metadata, hashlib.sha256(content).hexdigest(), [])
        if doc.vector is not None:
            record.chunks = [ChunkRecord(0, len(text), float32_vector(doc.vector, f"{where}.vector"))]
        by_id[doc_id] = record
    return list(by_id.values())


def check_query_model(registry: EmbedderRegistry, config: IndexConfig, query_model: str) -> None:
    embedder = registry.get(query_model, param="query_model")
    base = embedder.base_model or embedder.model_id
    if base != config.model:
        raise InvalidRequest(
            f"query_model '{query_model}' is based on '{base}', but the index's documents are embedded with "
            f"'{config.model}': a query model must share the index's base model.",
            param="query_model",
        )


def reprojected(
    source: IndexConfig, projection: ProjectionEmbedder, change: IndexProjection, registry: EmbedderRegistry
) -> IndexConfig:
    """The new index's config; InvalidRequest unless `projection` projects the source's full-width vectors."""
    if projection.base.model_id != source.model or source.dimensions != projection.base.dimensions:
        raise InvalidRequest(f"'{change.model}' projects vectors of {projection.base.model_id}; index '{source.name}' "
                             f"holds {source.dimensions}-d vectors of {source.model}.", param="model")  # fmt: skip
    kind = change.kind or source.kind
    config = msgspec.structs.replace(
        source, name=change.name, model=change.model, query_model=None, kind=kind,
        created_at=int(time.time()),
        dimensions=registry.output_dimensions(change.model, change.dimensions), requested_dimensions=change.dimensions,
        hnsw=change.hnsw or (source.hnsw if kind == "hnsw" else None),
        quantization=change.quantization or source.quantization,
    )  # fmt: skip
    return check_config(config)


def projected(
    batches: Iterable[list[DocumentRecord]], projection: ProjectionEmbedder, dimensions: int | None
) -> Iterator[list[DocumentRecord]]:
    """The documents with their chunks' vectors projected, a batch at a time (one product per batch)."""
    for batch in batches:
        chunks = [chunk for doc in batch for chunk in doc.chunks]
        vectors = iter(projection.project(np.stack([c.vector for c in chunks]), dimensions) if chunks else [])
        yield [msgspec.structs.replace(doc, chunks=[ChunkRecord(c.start, c.end, next(vectors)) for c in doc.chunks])
               for doc in batch]  # fmt: skip


def _info(store: IndexStoreContract) -> IndexInfo:
    return IndexInfo(store.config, store.stats())


class SearchService:
    def __init__(self, catalog: CatalogContract, registry: EmbedderRegistry, limits: Limits) -> None:
        self._catalog = catalog
        self._registry = registry
        self._limits = limits

    # --- indexes --------------------------------------------------------------------------------------------------

    @translates_store_errors
    async def create_index(self, spec: IndexSpec) -> IndexInfo:
        await self._registry.known(spec.model)
        if spec.query_model is not None:
            await self._registry.known(spec.query_model, param="query_model")
        config = IndexConfig(
            name=spec.name,
            model=spec.model,
            dimensions=self._registry.output_dimensions(spec.model, spec.dimensions),
            requested_dimensions=spec.dimensions,
            metric=spec.metric,
            kind=spec.kind,
            hnsw=spec.hnsw,
            quantization=spec.quantization,
            lexical_tokenizer=spec.lexical_tokenizer,
            metadata_indexes=spec.metadata_indexes,
            query_prompt=self._prompt(spec.model, spec.query_prompt, "query"),
            document_prompt=self._prompt(spec.model, spec.document_prompt, "document"),
        )
        if spec.query_model is not None:
            check_query_model(self._registry, config, spec.query_model)
            config = msgspec.structs.replace(config, query_model=spec.query_model)
        await run(self._catalog.create, config)
        return await self._on_index(spec.name, _info)

    async def _on_index(self, name: str, work: Callable[[IndexStoreContract], T]) -> T:
        """`work(store)` in a worker thread, with index `name` held open."""

        def use() -> T:
            with self._catalog.use(name) as store:
                return work(store)

        return await retried(lambda: run(use))

    @asynccontextmanager
    async def _holding(self, name: str) -> AsyncIterator[IndexStoreContract]:
        """Index `name` held open across awaits (embedding), for work that reads it, embeds, then writes."""
        store = await run(self._catalog.acquire, name)
        try:
            yield store
        finally:
            self._catalog.release(store)

    @translates_store_errors
    async def list_indexes(self) -> list[IndexInfo]:
        return await self.index_stats()

    @translates_store_errors
    async def describe_index(self, name: str) -> IndexInfo:
        return await self._on_index(name, _info)

    @translates_store_errors
    async def update_index(self, name: str, change: IndexChange) -> IndexInfo:
        if change.query_model is not msgspec.UNSET and change.query_model is not None:
            await self._registry.known(change.query_model, param="query_model")

        def update(store: IndexStoreContract) -> IndexInfo:
            config = store.config
            for field, kind in (change.metadata_indexes or {}).items():  # refused before anything is written
                declared = config.metadata_indexes.get(field)
                if declared not in (None, kind):
                    raise InvalidRequest(f"metadata_indexes.{field} is declared as {declared}, not {kind}.",
                                         param=f"metadata_indexes.{field}")  # fmt: skip
            if change.ef_search is not None:
                if config.hnsw is None:
                    raise InvalidRequest("ef_search applies to hnsw indexes only.", param="ef_search")
                hnsw = msgspec.structs.replace(config.hnsw, ef_search=change.ef_search)
                config = msgspec.structs.replace(config, hnsw=hnsw)
            if change.query_model is not msgspec.UNSET:
                if change.query_model is not None:
                    check_query_model(self._registry, config, change.query_model)
                config = msgspec.structs.replace(config, query_model=change.query_model)
            store.set_config(config)
            if change.metadata_indexes:
                store.add_metadata_indexes(change.metadata_indexes)
            return _info(store)

        return await self._on_index(name, update)

    @translates_store_errors
    async def delete_index(self, name: str) -> None:
        await run(self._catalog.delete, name)

    def _prompt(self, model: str, given: str | None, kind: InputType) -> str | None:
        """The index's prompt for `kind`: as given, else the model's declared one; None for none."""
        return (given if given is not None else declared_prompt(self._registry.get(model).prompts, kind)) or None

    # --- documents ------------------------------------------------------------------------------------------------

    @translates_store_errors
    async def ingest(
        self, name: str, documents: Sequence[NewDocument], chunking: Chunking, bulk: bool = False
    ) -> IngestResult:
        """`bulk`: embedded in the bulk lane (background work: a vector store's files)."""
        return await retried(lambda: self._ingest(name, documents, chunking, bulk))

    async def _ingest(
        self, name: str, documents: Sequence[NewDocument], chunking: Chunking, bulk: bool
    ) -> IngestResult:
        if not documents:
            raise InvalidRequest("'documents' must not be empty.", param="documents")
        if len(documents) > self._limits.max_documents_per_request:
            raise InvalidRequest(
                f"{len(documents)} documents in one request; at most {self._limits.max_documents_per_request} "
                "are allowed.",
                param="documents",
            )
        async with self._holding(name) as store:
            config = store.config
            prepared = prepared_records(documents, config, chunking)
            ids = [doc.doc_id for doc in prepared]
            stored = await run(store.content_hashes, ids)
            changed = [doc for doc in prepared if stored.get(doc.doc_id) != doc.content_hash]
            prompt_tokens = await self._embed_chunks(config, changed, chunking, bulk)
            # If the index was deleted meanwhile, this is IndexNotFound: never a write into a new one of the name.
            result = await run(store.upsert, changed) if changed else None
        return IngestResult(
            ids=ids,
            created=len(result.created) if result else 0,
            updated=len(result.updated) if result else 0,
            unchanged=len(prepared) - len(changed),
            prompt_tokens=prompt_tokens,
        )

    def _spans(self, text: str, model: str, chunking: Chunking, reserved: int = 0) -> list[tuple[int, int]]:
        """The chunks' character spans; `reserved`: tokens of the window a prompt takes."""
        embedder = self._registry.get(model)
        window = embedder.max_input_tokens - embedder.special_tokens - reserved
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
        self, config: IndexConfig, documents: list[DocumentRecord], chunking: Chunking, bulk: bool
    ) -> int:
        to_embed = [doc for doc in documents if not doc.chunks]
        if not to_embed:
            return 0
        prompt = config.document_prompt or ""

        def cut() -> list[list[tuple[int, int]]]:
            reserved = len(self._registry.get(config.model).token_offsets(prompt)) if prompt else 0
            return [self._spans(doc.text, config.model, chunking, reserved) for doc in to_embed]

        spans = await run(cut)
        texts = [prompt + doc.text[start:end]
                 for doc, doc_spans in zip(to_embed, spans, strict=True) for start, end in doc_spans]  # fmt: skip
        # Chunks are cut to fit the window; truncation only guards against a re-tokenised edge token or two.
        result = await self._registry.embed(config.model, texts, config.requested_dimensions, truncate=True, bulk=bulk)
        row = 0
        for doc, doc_spans in zip(to_embed, spans, strict=True):
            doc.chunks = [ChunkRecord(start, end, result.vectors[row + k]) for k, (start, end) in enumerate(doc_spans)]
            row += len(doc_spans)
        return result.prompt_tokens

    @translates_store_errors
    async def list_documents(self, name: str, limit: int, after: str | None) -> DocumentPage:
        return await self._on_index(name, lambda store: DocumentPage(*store.list(limit, after)))

    @translates_store_errors
    async def get_document(self, name: str, doc_id: str) -> StoredDocument:
        return await self._on_index(name, lambda store: store.get(doc_id))

    @translates_store_errors
    async def delete_document(self, name: str, doc_id: str) -> None:
        """Deletes one document; NotFound if it does not exist."""
        if not await self._on_index(name, lambda store: store.delete([doc_id])):
            raise NotFound(f"No document with id '{doc_id}'.", param="id", code="document_not_found")

    @translates_store_errors
    async def delete_documents(self, name: str, ids: list[str]) -> list[str]:
        """Deletes the documents of `ids` that exist; returns those."""
        return await self._on_index(name, lambda store: store.delete(ids))

    @translates_store_errors
    async def delete_matching(self, name: str, where: MetadataFilter) -> list[str]:
        return await self._on_index(name, lambda store: store.delete_matching(where))

    # --- queries --------------------------------------------------------------------------------------------------

    @translates_store_errors
    async def query(self, name: str, query: SearchQuery) -> QueryOutcome:
        """Everything that can be refused is checked before anything is embedded (an embedding may be paid for)."""
        request = query.request
        if request.min_score is not None:
            float32_vector([request.min_score], "min_score")
        if request.top_k > self._limits.max_top_k:
            raise InvalidRequest(f"top_k is {request.top_k}; at most {self._limits.max_top_k} is allowed.",
                                 param="top_k")  # fmt: skip
        if query.vector is not None:  # nothing to await in between: one trip to a worker thread
            return await self._on_index(name, lambda store: self._search_by_vector(store, query))

        async def search() -> QueryOutcome:
            async with self._holding(name) as store:
                return await self._search(store, query)

        return await retried(search)

    def _search_by_vector(self, store: IndexStoreContract, query: SearchQuery) -> QueryOutcome:
        config = store.config
        if query.request.mode != "dense":
            raise InvalidRequest(f"mode '{query.request.mode}' needs a text query, not a vector.", param="mode")
        if len(query.vector or ()) != config.dimensions:
            raise InvalidRequest(
                f"vector has {len(query.vector or ())} dimensions; index '{config.name}' has {config.dimensions}.",
                param="vector",
            )
        vector = float32_vector(query.vector or [], "vector")
        hits = store.search(query.request, vector[None, :], None)
        return QueryOutcome([hits], config.query_model or config.model, 0)

    async def _search(self, store: IndexStoreContract, query: SearchQuery) -> QueryOutcome:
        """A search by text: embedded (unless lexical), then searched in a worker thread."""
        config = store.config
        model = config.query_model or config.model
        await self._registry.known(model)  # a query model trained by another replica
        request = query.request
        texts = query.texts or []
        self._registry.check_lengths(model, texts, param="query")  # every mode: lexical reads it too
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidRequest(f"query {i} is empty.", param="query")
        searches: list[tuple[np.ndarray | None, str]]
        prefetched: list = [None] * len(texts)
        vectors = None
        if request.mode == "lexical":  # BM25 alone needs no embedding
            searches, tokens = [(None, text) for text in texts], 0
        else:
            # hybrid: the lexical lists are computed while the queries are embedded (two cores, two jobs)
            ahead = asyncio.create_task(run(lambda: [store.prefetch_lexical(request, t) for t in texts]))
            try:
                prompt = config.query_prompt or ""  # embedded with the prompt; lexical reads the query alone
                result = await self._registry.embed(model, [prompt + t for t in texts], config.requested_dimensions)
            finally:
                prefetched = await ahead
            searches = list(zip(result.vectors, texts, strict=True))
            tokens, vectors = result.prompt_tokens, result.vectors

        def search() -> list[list[Hit]]:
            return [store.search(request, None if v is None else v[None, :], text, ahead)
                    for (v, text), ahead in zip(searches, prefetched, strict=True)]  # fmt: skip

        return QueryOutcome(await run(search), model, tokens, vectors)

    @translates_store_errors
    async def nearest(self, name: str, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        """The `top_k` nearest chunks of each of `vectors` (dense, unfiltered): for mining hard negatives."""
        request = SearchRequest(top_k=top_k, with_vectors=True)
        return await self._on_index(name, lambda store: [store.search(request, v[None, :], None) for v in vectors])

    # --- snapshots ------------------------------------------------------------------------------------------------

    @translates_store_errors
    async def export_index(self, name: str, write: Callable[[IndexExport], T]) -> T:
        """`write(content)` in a worker thread, over index `name` as of one instant (reads and writes go on)."""

        def export(store: IndexStoreContract) -> T:
            with store.export() as content:
                return write(content)

        return await self._on_index(name, export)

    @translates_store_errors
    async def reproject_index(self, name: str, change: IndexProjection) -> IndexInfo:
        """Index `change.name` made from index `name`'s stored vectors, projected: no call to the model."""
        projection = await self._registry.known(change.model)
        if not isinstance(projection, ProjectionEmbedder):
            raise InvalidRequest(f"'{change.model}' is not a projection (fine-tuning method 'projection').",
                                 param="model")  # fmt: skip
        if change.name in await self.index_names():
            raise Conflict(f"An index named '{change.name}' already exists.", param="name", code="index_exists")

        def copy(content: IndexExport) -> None:
            config = reprojected(content.config, projection, change, self._registry)
            self._catalog.restore(config, projected(content.batches, projection, change.dimensions))

        await self.export_index(name, copy)
        return await self._on_index(change.name, _info)

    @translates_store_errors
    async def restore_index(self, name: str, snapshot: SnapshotReader) -> IndexInfo:
        """Index `name` replaced by (or made from) the snapshot, its vectors as stored: nothing is embedded. What
        this server cannot serve is refused before anything changes: a model it does not have, vectors of another
        width than the model's or than the index being replaced."""
        config = msgspec.structs.replace(snapshot.config, name=check_name(name))
        await servable(self._registry, config)
        try:
            current = await self._on_index(name, lambda store: store.config)
        except (IndexNotFound, IndexUnavailable):  # none yet (the restore makes it), or damaged (it mends it)
            current = None
        if current is not None and current.dimensions != config.dimensions:
            raise InvalidRequest(
                f"The snapshot's vectors have {config.dimensions} dimensions; index '{name}' has "
                f"{current.dimensions}. Restore it under another name, or delete the index first.",
                param="file",
                code="dimensions_mismatch",
            )
        await run(self._catalog.restore, config, snapshot.batches())
        return await self._on_index(name, _info)

    # --- operations -----------------------------------------------------------------------------------------------

    async def index_names(self) -> list[str]:
        return await run(self._catalog.names)

    async def index_stats(self) -> list[IndexInfo]:
        """Every index that can be opened (one that cannot is logged and left out: it never hides the others)."""
        return await run(self._index_stats)

    def _index_stats(self) -> list[IndexInfo]:
        infos = []
        for name in self._catalog.names():
            try:
                with self._catalog.use(name) as store:
                    infos.append(_info(store))
            except (IndexNotFound, IndexUnavailable):  # deleted meanwhile, or damaged (logged by the catalog)
                continue
        return infos

    def close(self) -> None:
        self._catalog.close()  # checkpoints every open index
