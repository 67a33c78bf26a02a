"""/v1/indexes: create, inspect, change and drop indexes; add, read and delete documents; query."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote

from litestar import Request, Router, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from service.api.errors import error_responses
from service.errors import InvalidRequest
from service.limits import MAX_PAGE_SIZE
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
    IndexList,
    IndexObject,
    QueryHit,
    QueryRequest,
    QueryResult,
    QueryResultList,
    ReprojectIndexRequest,
    UpdateIndexRequest,
)
from service.search.service import SearchService
from service.search.values import (
    Chunking,
    Fusion,
    Hit,
    IndexInfo,
    SearchQuery,
    SearchRequest,
    StoredDocument,
    metadata_filter,
)

Search = NamedDependency[SearchService]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE)]
BY_NAME = error_responses(400, 404)  # an index or document by name (a malformed name is a 400)
EMBEDS = error_responses(400, 404, 502, 503, 504)  # may call the index's model, which may be remote


def index_object(info: IndexInfo) -> IndexObject:
    config, stats = info.config, info.stats
    return IndexObject(
        id=config.name,
        name=config.name,
        model=config.model,
        query_model=config.query_model,
        query_prompt=config.query_prompt,
        document_prompt=config.document_prompt,
        dimensions=config.dimensions,
        metric=config.metric,
        kind=config.kind,
        hnsw=config.hnsw,
        quantization=config.quantization,
        lexical_tokenizer=config.lexical_tokenizer,
        metadata_indexes=config.metadata_indexes,
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
        vector=hit.vector.tolist() if hit.vector is not None and "vector" in include else None,
        parent_id=hit.parent_id,
        chunks=hit.chunks if "chunks" in include else None,
    )


@post("/", responses=error_responses(400, 404, 409, 503), status_code=200, summary="Create an index")
async def create_index(data: JSONBody[CreateIndexRequest], search: Search) -> IndexObject:
    return index_object(await search.create_index(data))


@get("/", responses=error_responses(), summary="List indexes")
async def list_indexes(search: Search) -> IndexList:
    return IndexList(data=[index_object(info) for info in await search.list_indexes()])


@get("/{name:str}", responses=BY_NAME, summary="Retrieve an index with its statistics")
async def retrieve_index(name: FromPath[str], search: Search) -> IndexObject:
    return index_object(await search.describe_index(name))


@patch("/{name:str}", responses=BY_NAME, summary="Change an index's ef_search, query_model or metadata_indexes")
async def update_index(name: FromPath[str], data: JSONBody[UpdateIndexRequest], search: Search) -> IndexObject:
    return index_object(await search.update_index(name, data))


@post("/{name:str}/reproject", responses=error_responses(400, 404, 409, 507), status_code=200,
      summary="Copy the index into a new one through a fitted projection (no embedding)")  # fmt: skip
async def reproject_index(name: FromPath[str], data: JSONBody[ReprojectIndexRequest], search: Search) -> IndexObject:
    """The stored full-width vectors, projected by `model` (a projection over the index's model) into the new index
    `name` of the body: FAISS (and the quantization asked for) built anew, nothing embedded. The source stays."""
    return index_object(await search.reproject_index(name, data))


@delete("/{name:str}", responses=BY_NAME, status_code=200, summary="Delete an index and all its documents")
async def delete_index(name: FromPath[str], search: Search) -> DeletedObject:
    await search.delete_index(name)
    return DeletedObject(id=name, object="index")


@post("/{name:str}/documents", responses=EMBEDS, status_code=200, summary="Add or replace documents")
async def add_documents(
    name: FromPath[str], data: JSONBody[AddDocumentsRequest], search: Search
) -> AddDocumentsResponse:
    result = await search.ingest(name, data.documents, data.chunking or Chunking())
    return AddDocumentsResponse(
        ids=result.ids,
        created=result.created,
        updated=result.updated,
        unchanged=result.unchanged,
        usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )


@get("/{name:str}/documents", responses=BY_NAME, summary="List documents, in id order")
async def list_documents(
    name: FromPath[str], search: Search, limit: Limit = 20, after: FromQuery[str | None] = None
) -> DocumentList:
    page = await search.list_documents(name, limit, after)
    data = [document_object(doc) for doc in page.documents]
    return DocumentList(
        data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None, has_more=page.has_more
    )


def document_id(request: Request) -> str:
    """The id exactly as sent: the rest of the raw path after /v1/indexes/{name}/documents/, percent-decoded.
    (The decoded path the router sees has already turned %2F into '/', and lost a trailing one.)"""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    return unquote(raw.decode("ascii", "replace").split("/", 5)[5])


@get("/{name:str}/documents/{doc_id:path}", responses=BY_NAME, summary="Retrieve a document")
async def retrieve_document(request: Request, name: FromPath[str], search: Search) -> DocumentObject:
    return document_object(await search.get_document(name, document_id(request)))


@delete("/{name:str}/documents/{doc_id:path}", responses=BY_NAME, status_code=200,
        summary="Delete a document and its chunks")  # fmt: skip
async def delete_document(request: Request, name: FromPath[str], search: Search) -> DeletedObject:
    doc_id = document_id(request)
    await search.delete_document(name, doc_id)
    return DeletedObject(id=doc_id, object="document")


# The same, for ids "delete" and "delete/...": the router prefers the fixed segment of POST .../documents/delete to
# the parameter above, so those need routes of their own (left out of the schema: they are the routes above).
SHADOWED_IDS = ["/{name:str}/documents/delete", "/{name:str}/documents/delete/{rest:path}"]
retrieve_shadowed_document = get(SHADOWED_IDS, include_in_schema=False, name="retrieve_shadowed")(retrieve_document.fn)
delete_shadowed_document = delete(SHADOWED_IDS, include_in_schema=False, status_code=200, name="delete_shadowed")(
    delete_document.fn
)


@post("/{name:str}/documents/delete", responses=BY_NAME, status_code=200,
      summary="Delete documents by ids or by filter")  # fmt: skip
async def delete_documents(
    name: FromPath[str], data: JSONBody[DeleteDocumentsRequest], search: Search
) -> DeleteDocumentsResponse:
    if data.ids is not None and data.filter is None:
        deleted = await search.delete_documents(name, data.ids)
    elif data.filter is not None and data.ids is None:
        deleted = await search.delete_matching(name, metadata_filter(data.filter))
    else:
        raise InvalidRequest("Give exactly one of 'ids' or 'filter'.", param="ids")
    return DeleteDocumentsResponse(ids=deleted, deleted=len(deleted))


@post("/{name:str}/query", responses=EMBEDS, status_code=200,
      summary="Find the documents nearest to a text or a vector")  # fmt: skip
async def query_index(
    name: FromPath[str], data: JSONBody[QueryRequest], search: Search
) -> QueryResult | BatchQueryResult:
    given = [field for field in ("query", "vector", "queries") if getattr(data, field) is not None]
    if len(given) != 1:
        raise InvalidRequest("Give exactly one of 'query', 'vector' or 'queries'.", param="query")
    weights = data.weights
    request = SearchRequest(
        top_k=data.top_k,
        mode=data.mode,
        filter=metadata_filter(data.filter),
        min_score=data.min_score,
        with_vectors="vector" in data.include,
        with_documents=bool({"text", "metadata", "chunks"} & set(data.include)),
        fusion=Fusion(
            method=data.fusion,
            k=data.rrf_k,
            alpha=data.alpha,
            normalization=data.normalization,
            **({"dense_weight": weights.dense, "lexical_weight": weights.lexical} if weights else {}),
        ),
        group_by=data.group_by,
        diversity=data.diversity,
    )
    query = SearchQuery(texts=[data.query] if data.query is not None else data.queries, vector=data.vector,
                        request=request)  # fmt: skip
    outcome = await search.query(name, query)
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
        reproject_index,
        add_documents,
        list_documents,
        retrieve_document,
        delete_document,
        retrieve_shadowed_document,
        delete_shadowed_document,
        delete_documents,
        query_index,
    ],
    tags=["indexes"],
)
