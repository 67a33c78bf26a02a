"""Client and AsyncClient: the same methods, over httpx.Client and httpx.AsyncClient.

Each method is described once, as a `_Call` (method, path, body, result type) built by `_Calls`; the two clients
only send it, retrying 429 and 503 (Retry-After honoured), and decode the result. Operations of several requests
(batched adds, paging, streaming ingest) are short loops written for each.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from vsearch_client.errors import NotFound, VsearchError, error_for
from vsearch_client.types import (
    AddResult,
    BatchQueryResult,
    DeleteResult,
    Document,
    DocumentPage,
    EmbeddingResult,
    Hit,
    Index,
    IndexList,
    ModelList,
    QueryResult,
)

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
BATCH_SIZE = 256  # documents per request: under the server's 1,000, and small enough to embed within a timeout
# vsearch answers "try again" with these alone: 429 (the in-flight bound) and 503 (storage unreachable, not ready,
# shutting down). Not 500 and the like, unlike service/retries.py (RETRYABLE, for upstream providers, and the ingest
# client's status >= 500): those retry idempotent calls (embeddings; upserts by id), while this client also makes
# calls that are not (create an index, a file, a job), and from vsearch a 500 is a bug, not a passing state.
RETRIED = {429, 503}
Documents = Iterable[dict[str, Any]]  # {"id"?, "text"?, "metadata"?, "vector"?}
Progress = Callable[[AddResult], None]


class _Call(msgspec.Struct, frozen=True):
    method: str
    path: str
    result: Any  # the type to decode the body into (None: ignore it)
    body: Any = None
    params: dict[str, Any] | None = None


def _document_path(index: str, doc_id: str) -> str:
    return f"/v1/indexes/{index}/documents/{quote(doc_id, safe='')}"  # any id reaches exactly that document


def _query_body(top_k: int, mode: str, filter: dict | None, include: list[str] | None, options: dict) -> dict:
    body: dict[str, Any] = {"top_k": top_k, "mode": mode, **{k: v for k, v in options.items() if v is not None}}
    if filter is not None:
        body["filter"] = filter
    if include is not None:
        body["include"] = include
    return body


class _Calls:
    """Every single-request operation, described."""

    @staticmethod
    def create_index(name: str, model: str, config: dict) -> _Call:
        return _Call("POST", "/v1/indexes", Index, {"name": name, "model": model, **config})

    @staticmethod
    def get_index(name: str) -> _Call:
        return _Call("GET", f"/v1/indexes/{name}", Index)

    @staticmethod
    def list_indexes() -> _Call:
        return _Call("GET", "/v1/indexes", IndexList)

    @staticmethod
    def update_index(name: str, changes: dict) -> _Call:
        return _Call("PATCH", f"/v1/indexes/{name}", Index, changes)

    @staticmethod
    def delete_index(name: str) -> _Call:
        return _Call("DELETE", f"/v1/indexes/{name}", None)

    @staticmethod
    def add_documents(index: str, documents: list[dict], chunking: dict | None) -> _Call:
        body: dict[str, Any] = {"documents": documents}
        if chunking is not None:
            body["chunking"] = chunking
        return _Call("POST", f"/v1/indexes/{index}/documents", AddResult, body)

    @staticmethod
    def get_document(index: str, doc_id: str) -> _Call:
        return _Call("GET", _document_path(index, doc_id), Document)

    @staticmethod
    def list_documents(index: str, limit: int, after: str | None) -> _Call:
        params: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
        return _Call("GET", f"/v1/indexes/{index}/documents", DocumentPage, params=params)

    @staticmethod
    def delete_documents(index: str, ids: list[str] | None, filter: dict | None) -> _Call:
        if (ids is None) == (filter is None):
            raise ValueError("give exactly one of ids or filter")
        body = {"ids": ids} if ids is not None else {"filter": filter}
        return _Call("POST", f"/v1/indexes/{index}/documents/delete", DeleteResult, body)

    @staticmethod
    def query(index: str, text: str | None, vector: list[float] | None, body: dict) -> _Call:
        if (text is None) == (vector is None):
            raise ValueError("give exactly one of a query text or vector=")
        given = {"query": text} if text is not None else {"vector": list(vector or [])}
        return _Call("POST", f"/v1/indexes/{index}/query", QueryResult, {**given, **body})

    @staticmethod
    def query_batch(index: str, texts: list[str], body: dict) -> _Call:
        return _Call("POST", f"/v1/indexes/{index}/query", BatchQueryResult, {"queries": texts, **body})

    @staticmethod
    def embed(texts: list[str], model: str, dimensions: int | None) -> _Call:
        body: dict[str, Any] = {"input": texts, "model": model, "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        return _Call("POST", "/v1/embeddings", EmbeddingResult, body)

    @staticmethod
    def list_models() -> _Call:
        return _Call("GET", "/v1/models", ModelList)


def _batches(documents: Documents, size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for document in documents:
        batch.append(document)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _total(done: AddResult, more: AddResult) -> AddResult:
    return AddResult(ids=done.ids + more.ids, created=done.created + more.created, updated=done.updated + more.updated,
                     unchanged=done.unchanged + more.unchanged)  # fmt: skip


class BaseClient:
    """What Client and AsyncClient share, as httpx's BaseClient is for its two clients: the settings, how a call
    becomes a request, when an answer is retried, and how it is decoded. Only sending differs between them."""

    def __init__(self, base_url: str | None, api_key: str | None, max_retries: int, batch_size: int) -> None:
        self.base_url = (base_url or os.environ.get("VSEARCH_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("VSEARCH_API_KEY")
        self.max_retries = max_retries
        self.batch_size = batch_size

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying `response`, or None when it is final."""
        if response.status_code not in RETRIED or attempt >= self.max_retries:
            return None
        retry_after = response.headers.get("retry-after", "")
        if retry_after.replace(".", "", 1).isdigit():
            return min(float(retry_after), 60.0)
        return random.uniform(0, min(8.0, 0.25 * 2**attempt))  # full jitter

    @staticmethod
    def _decode(call: _Call, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body = msgspec.json.decode(response.content)
            except msgspec.DecodeError:
                body = {}
            raise error_for(response.status_code, body)
        return msgspec.json.decode(response.content, type=call.result) if call.result is not None else None

    def _request(self, client: httpx.Client | httpx.AsyncClient, call: _Call) -> httpx.Request:
        content = msgspec.json.encode(call.body, enc_hook=_plain) if call.body is not None else None
        headers = {"content-type": "application/json"} if content is not None else {}
        return client.build_request(call.method, call.path, content=content, params=call.params, headers=headers)


class Client(BaseClient):
    """vsearch over HTTP. `base_url` defaults to $VSEARCH_URL or http://127.0.0.1:8000, `api_key` to
    $VSEARCH_API_KEY. 429 and 503 are retried `max_retries` times, honouring Retry-After."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 3,
        batch_size: int = BATCH_SIZE,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries, batch_size)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                  transport=transport)  # fmt: skip

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call) -> Any:
        attempt = 0
        while True:
            response = self._http.send(self._request(self._http, call))
            delay = self._delay(response, attempt)
            if delay is None:
                return self._decode(call, response)
            time.sleep(delay)
            attempt += 1

    # --- indexes ------------------------------------------------------------------------------------------------

    def create_index(
        self, name: str, model: str = "all-MiniLM-L6-v2", *, exist_ok: bool = True, **config: Any
    ) -> Index:
        """Create an index (`config`: dimensions, metric, kind, hnsw, quantization, metadata_indexes, ...). With
        `exist_ok`, an index of that name and model is returned as it is."""
        try:
            return self._run(_Calls.create_index(name, model, config))
        except VsearchError as exc:
            if exc.status != 409 or not exist_ok:
                raise
            return _same_model(self.get_index(name), model, exc)

    def get_index(self, name: str) -> Index:
        return self._run(_Calls.get_index(name))

    def list_indexes(self) -> list[Index]:
        return self._run(_Calls.list_indexes()).data

    def update_index(self, name: str, **changes: Any) -> Index:
        """`ef_search`, `query_model` (None: back to the index's model), `metadata_indexes`."""
        return self._run(_Calls.update_index(name, changes))

    def delete_index(self, name: str, *, missing_ok: bool = False) -> None:
        try:
            self._run(_Calls.delete_index(name))
        except NotFound:
            if not missing_ok:
                raise

    # --- documents ----------------------------------------------------------------------------------------------

    def add_documents(
        self, index: str, documents: Documents, *, chunking: dict | None = None, progress: Progress | None = None
    ) -> AddResult:
        """Add or replace documents (by id), any number, sent in batches as they are read from `documents` (a
        list, or any iterable: a file read line by line). `progress` gets the running totals after each batch."""
        done = AddResult()
        for batch in _batches(documents, self.batch_size):
            done = _total(done, self._run(_Calls.add_documents(index, batch, chunking)))
            if progress is not None:
                progress(done)
        return done

    def get_document(self, index: str, doc_id: str) -> Document:
        return self._run(_Calls.get_document(index, doc_id))

    def list_documents(self, index: str, *, limit: int = 100, after: str | None = None) -> DocumentPage:
        return self._run(_Calls.list_documents(index, limit, after))

    def iter_documents(self, index: str, *, page_size: int = 1000) -> Iterator[Document]:
        """Every document, in id order, page after page."""
        after = None
        while True:
            page = self.list_documents(index, limit=page_size, after=after)
            yield from page.data
            if not page.has_more:
                return
            after = page.last_id

    def delete_documents(self, index: str, ids: list[str] | None = None, *, filter: dict | None = None) -> DeleteResult:
        return self._run(_Calls.delete_documents(index, ids, filter))

    # --- search -------------------------------------------------------------------------------------------------

    def query(
        self,
        index: str,
        query: str | None = None,
        *,
        vector: list[float] | None = None,
        top_k: int = 10,
        mode: str = "dense",
        filter: dict | None = None,
        include: list[str] | None = None,
        **options: Any,
    ) -> list[Hit]:
        """The best `top_k` hits for a text or a `vector`. `options`: min_score, fusion, alpha, group_by, diversity,
        ... as the API takes them."""
        body = _query_body(top_k, mode, filter, include, options)
        return self._run(_Calls.query(index, query, vector, body)).data

    def query_batch(
        self,
        index: str,
        queries: list[str],
        *,
        top_k: int = 10,
        mode: str = "dense",
        filter: dict | None = None,
        include: list[str] | None = None,
        **options: Any,
    ) -> list[list[Hit]]:
        body = _query_body(top_k, mode, filter, include, options)
        return [result.data for result in self._run(_Calls.query_batch(index, queries, body)).data]

    # --- embeddings ---------------------------------------------------------------------------------------------

    def embed(
        self, texts: str | list[str], model: str = "all-MiniLM-L6-v2", *, dimensions: int | None = None
    ) -> list[list[float]]:  # noqa: E501
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._run(_Calls.embed(texts, model, dimensions)).vectors

    def list_models(self) -> list[str]:
        return [model.id for model in self._run(_Calls.list_models()).data]


class AsyncClient(BaseClient):
    """Client's methods, awaitable, over httpx.AsyncClient."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 3,
        batch_size: int = BATCH_SIZE,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries, batch_size)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                       timeout=timeout, transport=transport)  # fmt: skip

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call) -> Any:
        attempt = 0
        while True:
            response = await self._http.send(self._request(self._http, call))
            delay = self._delay(response, attempt)
            if delay is None:
                return self._decode(call, response)
            await asyncio.sleep(delay)
            attempt += 1

    async def create_index(
        self, name: str, model: str = "all-MiniLM-L6-v2", *, exist_ok: bool = True, **config: Any
    ) -> Index:  # noqa: E501
        try:
            return await self._run(_Calls.create_index(name, model, config))
        except VsearchError as exc:
            if exc.status != 409 or not exist_ok:
                raise
            return _same_model(await self.get_index(name), model, exc)

    async def get_index(self, name: str) -> Index:
        return await self._run(_Calls.get_index(name))

    async def list_indexes(self) -> list[Index]:
        return (await self._run(_Calls.list_indexes())).data

    async def update_index(self, name: str, **changes: Any) -> Index:
        return await self._run(_Calls.update_index(name, changes))

    async def delete_index(self, name: str, *, missing_ok: bool = False) -> None:
        try:
            await self._run(_Calls.delete_index(name))
        except NotFound:
            if not missing_ok:
                raise

    async def add_documents(
        self, index: str, documents: Documents, *, chunking: dict | None = None, progress: Progress | None = None
    ) -> AddResult:
        done = AddResult()
        for batch in _batches(documents, self.batch_size):
            done = _total(done, await self._run(_Calls.add_documents(index, batch, chunking)))
            if progress is not None:
                progress(done)
        return done

    async def get_document(self, index: str, doc_id: str) -> Document:
        return await self._run(_Calls.get_document(index, doc_id))

    async def list_documents(self, index: str, *, limit: int = 100, after: str | None = None) -> DocumentPage:
        return await self._run(_Calls.list_documents(index, limit, after))

    async def iter_documents(self, index: str, *, page_size: int = 1000) -> AsyncIterator[Document]:
        after = None
        while True:
            page = await self.list_documents(index, limit=page_size, after=after)
            for document in page.data:
                yield document
            if not page.has_more:
                return
            after = page.last_id

    async def delete_documents(
        self, index: str, ids: list[str] | None = None, *, filter: dict | None = None
    ) -> DeleteResult:
        return await self._run(_Calls.delete_documents(index, ids, filter))

    async def query(
        self,
        index: str,
        query: str | None = None,
        *,
        vector: list[float] | None = None,
        top_k: int = 10,
        mode: str = "dense",
        filter: dict | None = None,
        include: list[str] | None = None,
        **options: Any,
    ) -> list[Hit]:
        body = _query_body(top_k, mode, filter, include, options)
        return (await self._run(_Calls.query(index, query, vector, body))).data

    async def query_batch(
        self,
        index: str,
        queries: list[str],
        *,
        top_k: int = 10,
        mode: str = "dense",
        filter: dict | None = None,
        include: list[str] | None = None,
        **options: Any,
    ) -> list[list[Hit]]:
        body = _query_body(top_k, mode, filter, include, options)
        return [result.data for result in (await self._run(_Calls.query_batch(index, queries, body))).data]

    async def embed(
        self, texts: str | list[str], model: str = "all-MiniLM-L6-v2", *, dimensions: int | None = None
    ) -> list[list[float]]:  # noqa: E501
        texts = [texts] if isinstance(texts, str) else list(texts)
        return (await self._run(_Calls.embed(texts, model, dimensions))).vectors

    async def list_models(self) -> list[str]:
        return [model.id for model in (await self._run(_Calls.list_models())).data]


def _plain(value: Any) -> Any:
    """Numbers from numpy (vectors, scores) as plain Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise NotImplementedError(f"cannot send a {type(value).__name__}")


def _same_model(existing: Index, model: str, conflict: VsearchError) -> Index:
    if existing.model != model:
        raise conflict  # a different index of that name: not ours to reuse
    return existing
