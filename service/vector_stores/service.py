"""VectorStoreService: the door to OpenAI's vector stores. A vector store is an index (named by the store's id,
embedded with the store's model) plus its files' records; a file is one document of that index, chunked by the
engine. Attaching a file records it `in_progress`; the FileProcessor (worker.py) parses, embeds and stores it in
the background. Search is the index's search, its filter OpenAI's over the files' attributes. No HTTP here."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgspec

from service.embeddings.registry import EmbedderRegistry
from service.errors import InvalidRequest, NotFound
from service.finetune.files import FileStore, Order
from service.finetune.jobs import Page
from service.limits import MAX_BATCH_QUERIES
from service.search.service import SearchService
from service.search.values import IndexSpec, SearchQuery, SearchRequest
from service.vector_stores.documents import (
    FILENAME,
    SECTIONS,
    check_attributes,
    check_metadata,
    chunk_location,
    chunk_sizes,
)
from service.vector_stores.filters import ATTRIBUTES, store_filter
from service.vector_stores.records import (
    FileBatch,
    FileStatus,
    NewFileBatch,
    NewStoreFile,
    NewVectorStore,
    SearchPage,
    SearchResult,
    StoreFileChange,
    StoreSearch,
    TextContent,
    VectorStore,
    VectorStoreChange,
    VectorStoreFile,
)
from service.vector_stores.tables import VectorStoreTables

MAX_BATCH_FILES = 2000  # OpenAI's
DAY_S = 86_400
TOUCH_S = 60  # last_active_at is kept to the minute (expiry counts in days)


class StoreExpired(InvalidRequest):
    code = "vector_store_expired"


class VectorStoreOptions(msgspec.Struct, frozen=True, kw_only=True):
    default_model: str  # a store's model unless its creation names one
    workers: int = 2  # files processed at once by this process
    lease_s: float = 30.0  # a file's holder renews its lease every third of it; a dead one's files are taken over
    poll_s: float = 1.0  # how often idle workers look for files attached through another replica
    sweep_s: float = 60.0  # how often expired stores are looked for


class VectorStoreService:
    def __init__(
        self,
        tables: VectorStoreTables,
        files: FileStore,
        search: SearchService,
        registry: EmbedderRegistry,
        options: VectorStoreOptions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tables = tables
        self.files = files
        self.search = search
        self.registry = registry
        self.options = options
        self.clock = clock  # expiry reads it (tests move it forward)
        self.on_attach: Callable[[], None] = lambda: None  # the worker's wake-up, set by whoever runs it

    def _now(self) -> int:
        return int(self.clock())

    # --- stores ---------------------------------------------------------------------------------------------------

    async def create(self, spec: NewVectorStore) -> VectorStore:
        if spec.metadata:
            check_metadata(spec.metadata, "metadata")
        model = spec.model or self.options.default_model
        embedder = await self.registry.known(model)
        if embedder.base_model is not None:
            raise InvalidRequest(f"'{model}' is a fine-tuned query model; a vector store needs a base model.",
                                 param="model")  # fmt: skip
        now = self._now()
        store = VectorStore(id=f"vs_{secrets.token_hex(12)}", created_at=now, name=spec.name,
                            description=spec.description, expires_after=spec.expires_after,
                            expires_at=now + spec.expires_after.days * DAY_S if spec.expires_after else None,
                            last_active_at=now, metadata=spec.metadata or {}, model=model)  # fmt: skip
        if len(spec.file_ids) > MAX_BATCH_FILES:
            raise InvalidRequest(f"{len(spec.file_ids)} files; at most {MAX_BATCH_FILES} at creation (add more in "
                                 "file batches).", param="file_ids")  # fmt: skip
        attached = [await self._new_file(store, NewStoreFile(file_id=file_id, chunking_strategy=spec.chunking_strategy),
                                         f"file_ids[{i}]") for i, file_id in enumerate(spec.file_ids)]  # fmt: skip
        await self.search.create_index(IndexSpec(name=store.id, model=model))
        try:
            await self.tables.create_store(store)
        except BaseException:
            await self.search.delete_index(store.id)
            raise
        if attached:
            await self.tables.attach(store.id, attached)
            self.on_attach()
        return await self.get(store.id)

    async def get(self, store_id: str) -> VectorStore:
        return self._as_of_now(await self.tables.get_store(store_id))

    def _as_of_now(self, store: VectorStore) -> VectorStore:
        """Expired once its time has come, even before the sweep removes its data."""
        if store.expires_at is not None and store.expires_at <= self._now():
            return msgspec.structs.replace(store, status="expired")
        return store

    async def _active(self, store_id: str) -> VectorStore:
        store = await self.get(store_id)
        if store.status == "expired":
            raise StoreExpired(f"Vector store {store_id} is expired; create a new one.", param="vector_store_id")
        return store

    async def list(self, limit: int, order: Order, after: str | None, before: str | None) -> Page[VectorStore]:
        stores, more = await self.tables.list_stores(limit, order, after, before)
        return [self._as_of_now(store) for store in stores], more

    async def update(self, store_id: str, change: VectorStoreChange) -> VectorStore:
        if change.metadata:
            check_metadata(change.metadata, "metadata")
        now = self._now()

        def changed(store: VectorStore) -> VectorStore:
            if self._as_of_now(store).status == "expired":
                raise StoreExpired(f"Vector store {store_id} is expired.", param="vector_store_id")
            updates: dict[str, Any] = {}
            if change.name is not None:
                updates["name"] = change.name
            if change.metadata is not None:
                updates["metadata"] = change.metadata
            if change.expires_after is not msgspec.UNSET:
                updates["expires_after"] = change.expires_after
            return _touched(msgspec.structs.replace(store, **updates), now)

        return await self.tables.update_store(store_id, changed)

    async def delete(self, store_id: str) -> None:
        await self.tables.delete_store(store_id)  # first: its files are no longer anybody's to process
        with contextlib.suppress(NotFound):  # removed by the expiry sweep already
            await self.search.delete_index(store_id)

    async def remove_expired(self) -> list[str]:
        """The expiry sweep: stores whose time has come are marked expired and their indexes deleted."""
        expired = await self.tables.expire(self._now())
        for store_id in expired:
            with contextlib.suppress(NotFound):
                await self.search.delete_index(store_id)
        return expired

    # --- files ----------------------------------------------------------------------------------------------------

    async def _new_file(self, store: VectorStore, spec: NewStoreFile, param: str, batch_id: str | None = None
                        ) -> VectorStoreFile:  # fmt: skip
        """A file record to attach, once its File exists and its attributes and chunking are valid."""
        record = await self.files.get(spec.file_id)
        prefix = f"{param}." if param else ""
        if spec.attributes:
            check_attributes(spec.attributes, f"{prefix}attributes")
        sizes = chunk_sizes(spec.chunking_strategy, await self._window(store.model), f"{prefix}chunking_strategy")
        return VectorStoreFile(id=record.id, created_at=self._now(), vector_store_id=store.id,
                               attributes=spec.attributes or {}, chunking_strategy=sizes, batch_id=batch_id,
                               filename=record.filename)  # fmt: skip

    async def _window(self, model: str) -> int:
        embedder = await self.registry.known(model)
        return embedder.max_input_tokens - embedder.special_tokens

    async def _touch(self, store: VectorStore) -> None:
        """Active now (its expiry counts from now); written at most once a minute, not on every search."""
        now = self._now()
        if store.last_active_at is None or now - store.last_active_at >= TOUCH_S:
            await self.tables.update_store(store.id, lambda current: _touched(current, now))

    async def attach(self, store_id: str, spec: NewStoreFile) -> VectorStoreFile:
        store = await self._active(store_id)
        file = await self._new_file(store, spec, "")
        await self.tables.attach(store_id, [file])
        await self._touch(store)
        self.on_attach()
        return file

    async def get_file(self, store_id: str, file_id: str) -> VectorStoreFile:
        return await self.tables.get_file(store_id, file_id)

    async def list_files(
        self, store_id: str, status: FileStatus | None, limit: int, order: Order, after: str | None,
        before: str | None, batch_id: str | None = None,
    ) -> Page[VectorStoreFile]:  # fmt: skip
        if batch_id is not None:
            await self.tables.get_batch(store_id, batch_id)
        return await self.tables.list_files(store_id, status, batch_id, limit, order, after, before)

    async def update_file(self, store_id: str, file_id: str, change: StoreFileChange) -> VectorStoreFile:
        """New attributes: the file is processed again with them (its chunks keep their text; a filter reads the
        new attributes once it is `completed` again)."""
        attributes = change.attributes or {}
        check_attributes(attributes, "attributes")
        await self._active(store_id)
        file = await self.tables.get_file(store_id, file_id)
        again = msgspec.structs.replace(file, attributes=attributes, status="in_progress", last_error=None)
        await self.tables.attach(store_id, [again])
        self.on_attach()
        return again

    async def detach(self, store_id: str, file_id: str) -> None:
        """The file leaves the store and its chunks the index (the File itself stays in /v1/files)."""
        await self.tables.detach(store_id, file_id)
        with contextlib.suppress(NotFound):  # never processed, or failed
            await self.search.delete_document(store_id, file_id)

    async def content(self, store_id: str, file_id: str) -> list[TextContent]:
        """The file's parsed text, a part per section (a PDF's pages, a document's headed parts)."""
        await self.tables.get_file(store_id, file_id)
        try:
            document = await self.search.get_document(store_id, file_id)
        except NotFound:
            return []  # not processed (yet), or failed
        starts = [start for start, _, _ in document.metadata.get(SECTIONS, [])] or [0]
        bounds = [*starts[1:], len(document.text)]
        parts = [document.text[start:end] for start, end in zip(starts, bounds, strict=True)]
        return [TextContent(text=part) for part in parts if part.strip()]

    # --- batches --------------------------------------------------------------------------------------------------

    async def create_batch(self, store_id: str, spec: NewFileBatch) -> FileBatch:
        if (spec.file_ids is None) == (spec.files is None):
            raise InvalidRequest("Give exactly one of 'file_ids' and 'files'.", param="file_ids")
        specs = spec.files if spec.files is not None else [
            NewStoreFile(file_id=file_id, attributes=spec.attributes, chunking_strategy=spec.chunking_strategy)
            for file_id in spec.file_ids or []
        ]  # fmt: skip
        param = "files" if spec.files is not None else "file_ids"
        if not specs:
            raise InvalidRequest(f"'{param}' must not be empty.", param=param)
        if len(specs) > MAX_BATCH_FILES:
            raise InvalidRequest(f"{len(specs)} files in one batch; at most {MAX_BATCH_FILES}.", param=param)
        store = await self._active(store_id)
        batch = FileBatch(id=f"vsfb_{secrets.token_hex(12)}", created_at=self._now(), vector_store_id=store_id)
        files = {}
        for i, file_spec in enumerate(specs):  # a file named twice: the last one counts
            files[file_spec.file_id] = await self._new_file(store, file_spec, f"{param}[{i}]", batch.id)
        await self.tables.create_batch(batch, list(files.values()))
        await self._touch(store)
        self.on_attach()
        return await self.tables.get_batch(store_id, batch.id)

    async def get_batch(self, store_id: str, batch_id: str) -> FileBatch:
        return await self.tables.get_batch(store_id, batch_id)

    async def cancel_batch(self, store_id: str, batch_id: str) -> FileBatch:
        return await self.tables.cancel_batch(store_id, batch_id)

    # --- search ---------------------------------------------------------------------------------------------------

    async def search_store(self, store_id: str, spec: StoreSearch) -> SearchPage:
        """Ranked by the ranker (auto: hybrid; none: dense); each result scored by its cosine similarity to the
        query, clipped to 0..1, an absolute relevance that score_threshold cuts by. Several queries are searched
        alike and merged by score (a chunk found by several keeps its best)."""
        queries = [spec.query] if isinstance(spec.query, str) else list(spec.query)
        if not queries or any(not q.strip() for q in queries):
            raise InvalidRequest("'query' must be a non-empty string or a list of them.", param="query")
        if len(queries) > MAX_BATCH_QUERIES:
            raise InvalidRequest(f"{len(queries)} queries; at most {MAX_BATCH_QUERIES} in one search.", param="query")
        where = store_filter(spec.filters) if spec.filters is not None else None
        store = await self._active(store_id)
        mode = "dense" if spec.ranking_options.ranker == "none" else "hybrid"
        request = SearchRequest(mode=mode, top_k=spec.max_num_results, filter=where, with_vectors=mode == "hybrid")
        outcome = await self.search.query(store_id, SearchQuery(texts=queries, request=request))
        assert outcome.vectors is not None  # hybrid and dense embed their queries
        ranked: dict[str, SearchResult] = {}
        for hits, query_vector in zip(outcome.hits, outcome.vectors, strict=True):
            for hit in hits:
                similarity = float(hit.vector @ query_vector) if hit.vector is not None else hit.score
                score = min(max(similarity, 0.0), 1.0)  # below 0: no likeness at all
                known = ranked.get(hit.id)
                if score < spec.ranking_options.score_threshold or (known is not None and score <= known.score):
                    continue
                ranked[hit.id] = SearchResult(
                    file_id=hit.parent_id or hit.id,
                    filename=hit.metadata.get(FILENAME, ""),
                    score=score,
                    attributes=hit.metadata.get(ATTRIBUTES, {}),
                    content=[TextContent(text=hit.text)],
                    metadata=chunk_location(hit),
                )
        results = list(ranked.values())  # one query: the ranker's order; several: by score
        if len(queries) > 1:
            results.sort(key=lambda r: r.score, reverse=True)
        await self._touch(store)
        return SearchPage(search_query=queries, data=results[: spec.max_num_results])


def _touched(store: VectorStore, now: int) -> VectorStore:
    """Active now: its expiry counts from now."""
    expires_at = now + store.expires_after.days * DAY_S if store.expires_after else None
    return msgspec.structs.replace(store, last_active_at=now, expires_at=expires_at)
