"""/v1/indexes: create, inspect, change and drop indexes; add, read and delete documents; query."""

from __future__ import annotations

import asyncio
from typing import Annotated

from litestar import Router, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from indexes.config import HnswConfig
from indexes.store import Hit, IndexStore, StoredDocument
from service.errors import ERROR_RESPONSES, InvalidRequest
from service.schemas import (
    AddDocumentsRequest,
    AddDocumentsResponse,
    BatchQueryResult,
    CreateIndexRequest,
    DeletedObject,
    DeleteDocumentsRequest,
    DeleteDocumentsResponse,
    DocumentList,
    DocumentObject,
    EmbeddingUsage,
    HnswParams,
    IndexList,
    IndexObject,
    QueryHit,
    QueryRequest,
    QueryResult,
    QueryResultList,
    UpdateIndexRequest,
)
from service.search import ChunkingOptions, NewDocument, SearchService

Search = NamedDependency[SearchService]
Limit = Annotated[int, QueryParameter(ge=1, le=1000)]


def index_object(store: IndexStore) -> IndexObject:
    config, stats = store.config, store.stats()
    hnsw = config.hnsw
    return IndexObject(
        id=config.name,
        name=config.name,
        model=config.model,
        query_model=config.query_model,
        dimensions=config.dimensions,
        metric=config.metric,
        kind=config.kind,
        hnsw=HnswParams(m=hnsw.m, ef_construction=hnsw.ef_construction, ef_search=hnsw.ef_search) if hnsw else None,
        lexical_tokenizer=config.lexical_tokenizer,
        created_at=config.created_at,
        document_count=stats.document_count,
        vector_count=stats.vector_count,
        faiss_vectors=stats.faiss_vectors,
        bytes=stats.bytes,
    )


def document_object(doc: StoredDocument) -> DocumentObject:
    return DocumentObject(
        id=doc.doc_id,
        text=doc.text,
        metadata=doc.metadata,
        chunks=doc.chunk_count,
        created_at=int(doc.created_at),
        updated_at=int(doc.updated_at),
    )


def hit_object(hit: Hit, include: list[str]) -> QueryHit:
    return QueryHit(
        id=hit.id,
        score=hit.score,
        ranks=hit.ranks,
        text=hit.text if "text" in include else None,
        metadata=hit.metadata if "metadata" in include else None,
        vector=hit.vector.tolist() if "vector" in include else None,
        parent_id=hit.parent_id,
    )


@post("/", responses=ERROR_RESPONSES, status_code=200, summary="Create an index")
async def create_index(data: JSONBody[CreateIndexRequest], search: Search) -> IndexObject:
    hnsw = None
    if data.hnsw is not None or data.kind == "hnsw":
        params = data.hnsw or HnswParams()
        hnsw = HnswConfig(m=params.m, ef_construction=params.ef_construction, ef_search=params.ef_search)
        if data.kind != "hnsw":
            raise InvalidRequest("'hnsw' settings are only valid with kind 'hnsw'.", param="hnsw")
    store = await asyncio.to_thread(
        search.create_index,
        data.name,
        data.model,
        data.dimensions,
        data.metric,
        data.kind,
        hnsw,
        data.query_model,
        data.lexical_tokenizer,
    )
    return index_object(store)


@get("/", responses=ERROR_RESPONSES, summary="List indexes")
async def list_indexes(search: Search) -> IndexList:
    def load() -> list[IndexObject]:
        return [index_object(search.catalog.get(name)) for name in search.catalog.names()]

    return IndexList(data=await asyncio.to_thread(load))


@get("/{name:str}", responses=ERROR_RESPONSES, summary="Retrieve an index with its statistics")
async def retrieve_index(name: FromPath[str], search: Search) -> IndexObject:
    return await asyncio.to_thread(lambda: index_object(search.catalog.get(name)))


@patch("/{name:str}", responses=ERROR_RESPONSES, summary="Change an index's ef_search or query_model")
async def update_index(name: FromPath[str], data: JSONBody[UpdateIndexRequest], search: Search) -> IndexObject:
    store = await asyncio.to_thread(search.update_index, name, data.ef_search, data.query_model)
    return index_object(store)


@delete("/{name:str}", responses=ERROR_RESPONSES, status_code=200, summary="Delete an index and all its documents")
async def delete_index(name: FromPath[str], search: Search) -> DeletedObject:
    await asyncio.to_thread(search.catalog.delete, name)
    return DeletedObject(id=name, object="index")


@post("/{name:str}/documents", responses=ERROR_RESPONSES, status_code=200, summary="Add or replace documents")
async def add_documents(
    name: FromPath[str], data: JSONBody[AddDocumentsRequest], search: Search
) -> AddDocumentsResponse:
    chunking = data.chunking
    options = (
        ChunkingOptions(chunking.strategy, chunking.max_tokens, chunking.overlap_tokens)
        if chunking
        else ChunkingOptions()
    )
    documents = [NewDocument(d.id, d.text, d.metadata, d.vector) for d in data.documents]
    result = await search.ingest(name, documents, options)
    return AddDocumentsResponse(
        ids=result.ids,
        created=result.created,
        updated=result.updated,
        unchanged=result.unchanged,
        usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )


@get("/{name:str}/documents", responses=ERROR_RESPONSES, summary="List documents, in id order")
async def list_documents(
    name: FromPath[str],
    search: Search,
    limit: Limit = 20,
    after: FromQuery[str | None] = None,
) -> DocumentList:
    docs, has_more = await asyncio.to_thread(lambda: search.catalog.get(name).list(limit, after))
    data = [document_object(doc) for doc in docs]
    return DocumentList(
        data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None, has_more=has_more
    )


@get("/{name:str}/documents/{doc_id:path}", responses=ERROR_RESPONSES, summary="Retrieve a document")
async def retrieve_document(name: FromPath[str], doc_id: FromPath[str], search: Search) -> DocumentObject:
    doc = await asyncio.to_thread(lambda: search.catalog.get(name).get(doc_id.removeprefix("/")))
    return document_object(doc)


@delete(
    "/{name:str}/documents/{doc_id:path}",
    responses=ERROR_RESPONSES,
    status_code=200,
    summary="Delete a document and its chunks",
)
async def delete_document(name: FromPath[str], doc_id: FromPath[str], search: Search) -> DeletedObject:
    doc_id = doc_id.removeprefix("/")

    def remove() -> None:
        store = search.catalog.get(name)
        store.get(doc_id)  # 404 for an unknown id
        store.delete([doc_id])

    await asyncio.to_thread(remove)
    return DeletedObject(id=doc_id, object="document")


@post(
    "/{name:str}/documents/delete",
    responses=ERROR_RESPONSES,
    status_code=200,
    summary="Delete documents by ids or by filter",
)
async def delete_documents(
    name: FromPath[str], data: JSONBody[DeleteDocumentsRequest], search: Search
) -> DeleteDocumentsResponse:
    if (data.ids is None) == (data.filter is None):
        raise InvalidRequest("Give exactly one of 'ids' or 'filter'.", param="ids")

    def remove() -> list[str]:
        store = search.catalog.get(name)
        return store.delete(data.ids) if data.ids is not None else store.delete_matching(data.filter or {})

    deleted = await asyncio.to_thread(remove)
    return DeleteDocumentsResponse(ids=deleted, deleted=len(deleted))


@post(
    "/{name:str}/query",
    responses=ERROR_RESPONSES,
    status_code=200,
    summary="Find the documents nearest to a text or a vector",
)
async def query_index(
    name: FromPath[str], data: JSONBody[QueryRequest], search: Search
) -> QueryResult | BatchQueryResult:
    given = [field for field in ("query", "vector", "queries") if getattr(data, field) is not None]
    if len(given) != 1:
        raise InvalidRequest("Give exactly one of 'query', 'vector' or 'queries'.", param="query")
    texts = [data.query] if data.query is not None else data.queries
    weights = (data.weights.dense, data.weights.lexical) if data.weights else (1.0, 1.0)
    outcome = await search.query(
        name, texts, data.vector, data.top_k, data.filter, data.min_score, data.mode, data.rrf_k, weights
    )
    usage = EmbeddingUsage(prompt_tokens=outcome.prompt_tokens, total_tokens=outcome.prompt_tokens)
    lists = [[hit_object(hit, list(data.include)) for hit in hits] for hits in outcome.hits]
    if data.queries is not None:
        return BatchQueryResult(data=[QueryResultList(data=hits) for hits in lists], model=outcome.model, usage=usage)
    return QueryResult(data=lists[0], model=outcome.model, usage=usage)


indexes_router = Router(
    path="/v1/indexes",
    route_handlers=[
        create_index,
        list_indexes,
        retrieve_index,
        update_index,
        delete_index,
        add_documents,
        list_documents,
        retrieve_document,
        delete_document,
        delete_documents,
        query_index,
    ],
    tags=["indexes"],
)
