"""/v1/indexes/{name}/snapshots: make, list, download and delete an index's snapshots, and restore an index from
one (by id, or from a snapshot file sent as the body)."""

from __future__ import annotations

import msgspec
from litestar import Request, Router, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import File

from service.api.errors import error_responses
from service.api.indexes import index_object
from service.errors import InvalidRequest
from service.limits import MAX_RESTORE_BODY_BYTES
from service.schemas import DeletedObject, IndexObject, SnapshotList
from service.snapshots.records import Snapshot, SnapshotSource
from service.snapshots.service import SnapshotService

Snapshots = NamedDependency[SnapshotService]
NAMED = error_responses(400, 404)
SNAPSHOT_MEDIA_TYPE = "application/octet-stream"  # a restore's body when it is the snapshot file itself


@post("/", responses=error_responses(400, 404, 507), status_code=201, summary="Make a snapshot of the index")
async def create_snapshot(name: FromPath[str], snapshots: Snapshots) -> Snapshot:
    """A consistent snapshot while reads and writes go on: the index as of one instant."""
    return await snapshots.create(name)


@get("/", responses=NAMED, summary="List the index's snapshots, newest first")
async def list_snapshots(name: FromPath[str], snapshots: Snapshots) -> SnapshotList:
    data = await snapshots.list(name)
    return SnapshotList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None)


@get("/{snapshot_id:str}", responses=NAMED, summary="Retrieve a snapshot's record")
async def retrieve_snapshot(name: FromPath[str], snapshot_id: FromPath[str], snapshots: Snapshots) -> Snapshot:
    return await snapshots.get(name, snapshot_id)


@get("/{snapshot_id:str}/content", responses=NAMED, summary="Download a snapshot file",
     response_description="The snapshot file (indexes/archive.py's format), streamed")  # fmt: skip
async def snapshot_content(name: FromPath[str], snapshot_id: FromPath[str], snapshots: Snapshots) -> File:
    path = await snapshots.file(name, snapshot_id)
    return File(path=path, filename=f"{name}-{snapshot_id}.vsnap", media_type=SNAPSHOT_MEDIA_TYPE)


@delete("/{snapshot_id:str}", responses=NAMED, status_code=200, summary="Delete a snapshot")
async def delete_snapshot(name: FromPath[str], snapshot_id: FromPath[str], snapshots: Snapshots) -> DeletedObject:
    await snapshots.delete(name, snapshot_id)
    return DeletedObject(id=snapshot_id, object="index.snapshot.deleted")


@post("/restore", responses=error_responses(400, 404, 409, 413, 507), status_code=200, request_max_body_size=None,
      summary="Replace the index (or make it) from a snapshot")  # fmt: skip
async def restore_snapshot(request: Request, name: FromPath[str], snapshots: Snapshots) -> IndexObject:
    """JSON `{"snapshot_id": ..., "index": ...}` restores a snapshot of this server (`index`: whose snapshot it is,
    by default this one's); a body of type application/octet-stream is a snapshot file (one downloaded from any
    vsearch, either engine). Readers see the old index until the new one is complete, then the new one. Nothing is
    embedded. A damaged, truncated or foreign file is a 400, and nothing changes."""
    if request.content_type[0] == SNAPSHOT_MEDIA_TYPE:
        upload = snapshots.upload()
        try:
            async for chunk in request.stream():
                upload.write(chunk)
            return index_object(await snapshots.restore_file(name, upload.finish()))
        finally:
            upload.close()
    body = bytearray()
    async for chunk in request.stream():  # this route takes files, so the app's body limit is off: bound it here
        body += chunk
        if len(body) > MAX_RESTORE_BODY_BYTES:
            raise InvalidRequest("The request body is too large for a restore by id.", param="snapshot_id")
    try:
        source = msgspec.json.decode(body, type=SnapshotSource)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Invalid request body: {exc}", param="snapshot_id") from None
    if source.snapshot_id is None:
        raise InvalidRequest("Give 'snapshot_id', or send a snapshot file as application/octet-stream.",
                             param="snapshot_id")  # fmt: skip
    return index_object(await snapshots.restore(name, source.snapshot_id, source.index))


snapshots_router = Router(
    path="/v1/indexes/{name:str}/snapshots",
    route_handlers=[
        create_snapshot,
        list_snapshots,
        retrieve_snapshot,
        snapshot_content,
        delete_snapshot,
        restore_snapshot,
    ],  # fmt: skip
    tags=["snapshots"],
)
