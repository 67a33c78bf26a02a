"""/v1/vector_stores: stores, their files (with the parsed content), file batches, and search; OpenAI's shapes.
A file or batch still being processed is answered with `openai-poll-after-ms`, the hint the `openai` client's
*_and_poll helpers wait by."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Response, Router, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from service.api.errors import error_responses
from service.schemas import (
    DeletedObject,
    FileContentPage,
    VectorStoreFileList,
    VectorStoreList,
)
from service.vector_stores.records import (
    FileBatch,
    FileStatus,
    NewFileBatch,
    NewStoreFile,
    NewVectorStore,
    SearchPage,
    StoreFileChange,
    StoreSearch,
    VectorStore,
    VectorStoreChange,
    VectorStoreFile,
)
from service.vector_stores.service import VectorStoreService

VectorStores = NamedDependency[VectorStoreService]
Limit = Annotated[int, QueryParameter(ge=1, le=100)]
Order = FromQuery[Literal["asc", "desc"]]
POLL_AFTER_MS = "200"
NAMED = error_responses(400, 404)


def polled(record: VectorStoreFile | FileBatch) -> Response:
    headers = {"openai-poll-after-ms": POLL_AFTER_MS} if record.status == "in_progress" else {}
    return Response(record, headers=headers)


def file_list(files: list[VectorStoreFile], has_more: bool) -> VectorStoreFileList:
    return VectorStoreFileList(data=files, first_id=files[0].id if files else None,
                               last_id=files[-1].id if files else None, has_more=has_more)  # fmt: skip


# --- stores -------------------------------------------------------------------------------------------------------


@post("/", responses=NAMED, status_code=200, summary="Create a vector store")
async def create_store(data: JSONBody[NewVectorStore], vector_stores: VectorStores) -> VectorStore:
    return await vector_stores.create(data)


@get("/", responses=NAMED, summary="List vector stores")
async def list_stores(
    vector_stores: VectorStores,
    limit: Limit = 20,
    order: Order = "desc",
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> VectorStoreList:
    stores, has_more = await vector_stores.list(limit, order, after, before)
    return VectorStoreList(data=stores, first_id=stores[0].id if stores else None,
                           last_id=stores[-1].id if stores else None, has_more=has_more)  # fmt: skip


@get("/{store_id:str}", responses=error_responses(404), summary="Retrieve a vector store")
async def retrieve_store(store_id: FromPath[str], vector_stores: VectorStores) -> VectorStore:
    return await vector_stores.get(store_id)


@post("/{store_id:str}", responses=NAMED, status_code=200, summary="Modify a vector store")
async def update_store(
    store_id: FromPath[str], data: JSONBody[VectorStoreChange], vector_stores: VectorStores
) -> VectorStore:
    return await vector_stores.update(store_id, data)


@delete("/{store_id:str}", responses=error_responses(404), status_code=200, summary="Delete a vector store")
async def delete_store(store_id: FromPath[str], vector_stores: VectorStores) -> DeletedObject:
    await vector_stores.delete(store_id)
    return DeletedObject(id=store_id, object="vector_store.deleted")


@post("/{store_id:str}/search", responses=NAMED, status_code=200, summary="Search a vector store")
async def search_store(store_id: FromPath[str], data: JSONBody[StoreSearch], vector_stores: VectorStores) -> SearchPage:
    return await vector_stores.search_store(store_id, data)


# --- files --------------------------------------------------------------------------------------------------------


@post("/{store_id:str}/files", responses=NAMED, status_code=200, summary="Attach a file to a vector store")
async def attach_file(
    store_id: FromPath[str], data: JSONBody[NewStoreFile], vector_stores: VectorStores
) -> Response[VectorStoreFile]:
    return polled(await vector_stores.attach(store_id, data))


@get("/{store_id:str}/files", responses=NAMED, summary="List a vector store's files")
async def list_files(
    store_id: FromPath[str],
    vector_stores: VectorStores,
    limit: Limit = 20,
    order: Order = "desc",
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    filter: FromQuery[FileStatus | None] = None,
) -> VectorStoreFileList:
    return file_list(*await vector_stores.list_files(store_id, filter, limit, order, after, before))


@get("/{store_id:str}/files/{file_id:str}", responses=error_responses(404), summary="Retrieve a vector store file")
async def retrieve_file(
    store_id: FromPath[str], file_id: FromPath[str], vector_stores: VectorStores
) -> Response[VectorStoreFile]:
    return polled(await vector_stores.get_file(store_id, file_id))


@post("/{store_id:str}/files/{file_id:str}", responses=NAMED, status_code=200,
      summary="Update a vector store file's attributes (the file is processed again with them)")  # fmt: skip
async def update_file(
    store_id: FromPath[str], file_id: FromPath[str], data: JSONBody[StoreFileChange], vector_stores: VectorStores
) -> Response[VectorStoreFile]:
    return polled(await vector_stores.update_file(store_id, file_id, data))


@delete("/{store_id:str}/files/{file_id:str}", responses=error_responses(404), status_code=200,
        summary="Remove a file (and its chunks) from a vector store; the File stays in /v1/files")  # fmt: skip
async def detach_file(store_id: FromPath[str], file_id: FromPath[str], vector_stores: VectorStores) -> DeletedObject:
    await vector_stores.detach(store_id, file_id)
    return DeletedObject(id=file_id, object="vector_store.file.deleted")


@get("/{store_id:str}/files/{file_id:str}/content", responses=error_responses(404),
     summary="A vector store file's parsed text")  # fmt: skip
async def file_content(store_id: FromPath[str], file_id: FromPath[str], vector_stores: VectorStores) -> FileContentPage:
    return FileContentPage(data=await vector_stores.content(store_id, file_id))


# --- file batches -------------------------------------------------------------------------------------------------


@post("/{store_id:str}/file_batches", responses=NAMED, status_code=200, summary="Attach a batch of files")
async def create_batch(
    store_id: FromPath[str], data: JSONBody[NewFileBatch], vector_stores: VectorStores
) -> Response[FileBatch]:
    return polled(await vector_stores.create_batch(store_id, data))


@get("/{store_id:str}/file_batches/{batch_id:str}", responses=error_responses(404), summary="Retrieve a file batch")
async def retrieve_batch(
    store_id: FromPath[str], batch_id: FromPath[str], vector_stores: VectorStores
) -> Response[FileBatch]:
    return polled(await vector_stores.get_batch(store_id, batch_id))


@post("/{store_id:str}/file_batches/{batch_id:str}/cancel", responses=NAMED, status_code=200,
      summary="Cancel a file batch (its files not processed yet)")  # fmt: skip
async def cancel_batch(store_id: FromPath[str], batch_id: FromPath[str], vector_stores: VectorStores) -> FileBatch:
    return await vector_stores.cancel_batch(store_id, batch_id)


@get("/{store_id:str}/file_batches/{batch_id:str}/files", responses=NAMED, summary="List a file batch's files")
async def list_batch_files(
    store_id: FromPath[str],
    batch_id: FromPath[str],
    vector_stores: VectorStores,
    limit: Limit = 20,
    order: Order = "desc",
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    filter: FromQuery[FileStatus | None] = None,
) -> VectorStoreFileList:
    return file_list(*await vector_stores.list_files(store_id, filter, limit, order, after, before, batch_id))


vector_stores_router = Router(
    path="/v1/vector_stores",
    route_handlers=[
        create_store,
        list_stores,
        retrieve_store,
        update_store,
        delete_store,
        search_store,
        attach_file,
        list_files,
        retrieve_file,
        update_file,
        detach_file,
        file_content,
        create_batch,
        retrieve_batch,
        cancel_batch,
        list_batch_files,
    ],  # fmt: skip
    tags=["vector stores"],
)
