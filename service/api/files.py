"""/v1/files: upload (multipart, streamed to the data dir), list, retrieve, download, delete."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from litestar import Request, Response, Router, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream
from multipart import MultipartError, MultipartSegment, ParserLimitReached, PushMultipartParser

from service.api.errors import error_responses
from service.errors import InvalidRequest
from service.finetune.files import FileRecord, FileStore, FileTooLarge, check_purpose
from service.limits import MAX_FILES_PAGE_SIZE, MAX_FORM_FIELD_BYTES, MAX_UPLOAD_PARTS
from service.schemas import DeletedObject, FileList, FileObject

Files = NamedDependency[FileStore]


def file_object(record: FileRecord) -> FileObject:
    return FileObject(
        id=record.id, bytes=record.bytes, created_at=record.created_at, filename=record.filename, purpose=record.purpose
    )


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback (no quote, backslash or control character can end the parameter early) and the
    exact name, UTF-8 and percent-encoded, as filename* (RFC 5987), which clients prefer."""
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "_" for c in filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _boundary(request: Request) -> str:
    content_type, params = request.content_type
    if content_type != "multipart/form-data" or "boundary" not in params:
        raise InvalidRequest("Upload the file as multipart/form-data with fields 'file' and 'purpose'.", param="file")
    return params["boundary"]


@post("/", responses=error_responses(400, 413), status_code=200, summary="Upload a file",
      request_max_body_size=None)  # fmt: skip
async def upload_file(request: Request, files: Files) -> FileObject:
    """multipart/form-data with `file` and `purpose`. The file part is written to disk as it arrives."""
    file_id = files.spool.new_id()
    fields: dict[str, bytearray] = {}  # the other parts, each at most MAX_FORM_FIELD_BYTES
    filename: str | None = None
    written = 0
    out = None
    segment: MultipartSegment | None = None
    try:
        with PushMultipartParser(_boundary(request), max_segment_count=MAX_UPLOAD_PARTS) as parser:
            async for chunk in request.stream():
                for part in parser.parse(chunk):
                    if isinstance(part, MultipartSegment):
                        segment = part
                        if part.name == "file":
                            if filename is not None:
                                raise InvalidRequest("Only one 'file' per upload.", param="file")
                            filename = part.filename or "upload"
                            out = files.spool.writer(file_id)
                    elif part and segment is not None:
                        if segment.name == "file" and out is not None:
                            written += len(part)
                            if written > files.spool.max_bytes:
                                raise FileTooLarge(
                                    f"File is larger than the limit of {files.spool.max_bytes} bytes.", param="file"
                                )
                            out.write(part)
                        else:
                            field = fields.setdefault(segment.name, bytearray())
                            field += part
                            if len(field) > MAX_FORM_FIELD_BYTES:
                                raise InvalidRequest(
                                    f"A form field other than 'file' is longer than {MAX_FORM_FIELD_BYTES} bytes.",
                                    param="purpose" if segment.name == "purpose" else None,
                                )
                    elif part is None:
                        segment = None
            if not parser.closed:
                raise InvalidRequest("The multipart body ended early.", param="file")
        if out is None or filename is None:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        out.close()
        purpose = fields.get("purpose", bytearray()).decode("utf-8", "replace")
        if not purpose:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
        check_purpose(purpose)
        return file_object(await files.commit(file_id, filename, purpose))
    except ParserLimitReached:
        raise InvalidRequest(f"Too many parts or headers in the upload: at most {MAX_UPLOAD_PARTS} parts.",
                             param="file") from None  # fmt: skip
    except MultipartError as exc:  # the parser's own words describe the framing, never the content
        raise InvalidRequest(f"Invalid multipart/form-data: {exc}", param="file") from None
    finally:
        if out is not None and not out.closed:
            out.close()
        files.spool.discard(file_id)


@get("/", responses=error_responses(400, 404), summary="List files")
async def list_files(
    files: Files,
    purpose: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_FILES_PAGE_SIZE)] = MAX_FILES_PAGE_SIZE,
    order: FromQuery[Literal["asc", "desc"]] = "desc",
    after: FromQuery[str | None] = None,
) -> FileList:
    records, has_more = await files.list(purpose, limit, order, after)
    data = [file_object(r) for r in records]
    return FileList(
        data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None, has_more=has_more
    )


@get("/{file_id:str}", responses=error_responses(404), summary="Retrieve a file's object")
async def retrieve_file(file_id: FromPath[str], files: Files) -> FileObject:
    return file_object(await files.get(file_id))


@get(
    "/{file_id:str}/content",
    responses=error_responses(404),
    summary="Download a file's content",
    media_type="application/octet-stream",
)
async def file_content(file_id: FromPath[str], files: Files) -> Response:
    record = await files.get(file_id)
    return Stream(
        files.chunks(record.id),
        media_type="application/octet-stream",
        headers={"content-disposition": content_disposition(record.filename)},
    )


@delete("/{file_id:str}", responses=error_responses(404), status_code=200, summary="Delete a file")
async def delete_file(file_id: FromPath[str], files: Files) -> DeletedObject:
    await files.delete(file_id)
    return DeletedObject(id=file_id, object="file")


files_router = Router(
    path="/v1/files", route_handlers=[upload_file, list_files, retrieve_file, file_content, delete_file], tags=["files"]
)
