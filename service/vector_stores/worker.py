"""FileProcessor: the background work of vector stores, as its own unit. Workers claim attached files (one at a time
each, holding a lease: with replicas each file is processed once, and a dead replica's files are taken over), then
parse, chunk, embed (the bulk inference lane: queries go first) and store them, and record how it went. A sweep
removes expired stores.

Durable by construction: a file's chunks are written in one transaction as the document named by the file's id,
and only then is the file marked `completed`. A process killed in between leaves the file `in_progress` and
unheld once its lease runs out (at once on a single node, which holds every lease itself); processing it again
writes the same document, so nothing is lost or duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

import msgspec

from indexes.databases.loop import run
from indexes.errors import StorageUnavailable
from service.documents import DocumentError, parse_document
from service.errors import NotFound, Unavailable, VsearchError
from service.search.values import NewDocument
from service.vector_stores.documents import document_metadata, engine_chunking
from service.vector_stores.records import FileErrorCode, LastError, VectorStoreFile
from service.vector_stores.service import VectorStoreService
from service.vector_stores.tables import VectorStoreTables

log = logging.getLogger("vsearch")


def passing(exc: BaseException) -> bool:
    """An outage the file is not to blame for (its database unreachable): it is processed again later."""
    if isinstance(exc, Unavailable):
        return exc.code == "storage_unavailable"
    return isinstance(exc, StorageUnavailable)


class FileFailed(Exception):
    def __init__(self, error: LastError) -> None:
        super().__init__(error.message)
        self.error = error


class FileProcessor:
    def __init__(self, stores: VectorStoreService, shared: bool) -> None:
        """`shared`: the records are in PostgreSQL with other replicas; else this process alone holds leases."""
        self.stores = stores
        self.tables: VectorStoreTables = stores.tables
        self.shared = shared
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.processed = 0  # files this process has processed (a file taken over after a crash counts again)

    async def start(self) -> None:
        if not self.shared:
            await self.tables.release_all()  # the last process's leases died with it
        self.stores.on_attach = self._wakeup.set
        loop = asyncio.get_running_loop()
        options = self.stores.options
        self._tasks = [loop.create_task(self._work()) for _ in range(options.workers)]
        self._tasks.append(loop.create_task(self._sweep()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _work(self) -> None:
        options = self.stores.options
        while True:
            self._wakeup.clear()
            try:
                file = await self.tables.claim(self.owner, options.lease_s)
            except VsearchError as exc:  # the database is unreachable for now
                log.warning("vector store files: cannot claim: %s", exc)
                file = None
            if file is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), options.poll_s)
                continue
            self._wakeup.set()  # there may be more: let an idle worker look too
            lease = asyncio.get_running_loop().create_task(self._hold(file))
            try:
                await self.process(file)
            except Exception as exc:  # the file is taken again once its lease ends
                if passing(exc):
                    log.warning("vector store file %s: %s; it will be processed again", file.id, exc)
                else:
                    log.exception("vector store file %s: its outcome could not be recorded", file.id)
            finally:
                lease.cancel()

    async def _hold(self, file: VectorStoreFile) -> None:
        lease_s = self.stores.options.lease_s
        while True:
            await asyncio.sleep(lease_s / 3)
            with contextlib.suppress(VsearchError):
                if not await self.tables.renew(file, self.owner, lease_s):
                    return

    async def _sweep(self) -> None:
        while True:
            try:
                for store_id in await self.stores.remove_expired():
                    log.info("vector store %s expired: its data is removed", store_id)
            except VsearchError as exc:
                log.warning("vector store sweep: %s", exc)
            await asyncio.sleep(self.stores.options.sweep_s)

    # --- one file -----------------------------------------------------------------------------------------------

    async def process(self, file: VectorStoreFile) -> None:
        """Parse, chunk, embed and store `file`, then record the outcome (if the file is still this worker's)."""
        try:
            usage = await self._ingest(file)
            done = msgspec.structs.replace(file, status="completed", usage_bytes=usage, last_error=None)
        except FileFailed as failed:
            done = msgspec.structs.replace(file, status="failed", last_error=failed.error)
        except NotFound as exc:
            if exc.code == "index_not_found":
                return  # the store was deleted meanwhile
            done = _failed(file, "server_error", exc.message)
        except Exception as exc:
            if passing(exc):
                raise  # not the file's fault, so not its outcome
            log.exception("vector store file %s could not be processed", file.id)  # a bug: the file says so
            done = _failed(file, "server_error", "vsearch failed to process this file (see the server's log).")
        written = await self.tables.update_file(
            file.vector_store_id, file.id, lambda now: done if now.status == "in_progress" else None, owner=self.owner
        )
        self.processed += 1
        if written is None and done.status == "completed":
            await self._drop_if_gone(file)

    async def _ingest(self, file: VectorStoreFile) -> int:
        """The file's usage in bytes (its text and its vectors) once its chunks are stored."""
        stores = self.stores
        try:
            record = await stores.files.get(file.id)
            data = await run(lambda: b"".join(stores.files.chunks(file.id)))
        except NotFound:
            raise FileFailed(LastError(code="invalid_file", message=f"File {file.id} was deleted from /v1/files "
                                       "before it was processed; upload it again.")) from None  # fmt: skip
        try:
            parsed = await run(parse_document, record.filename, data)
        except DocumentError as exc:
            raise FileFailed(LastError(code=exc.code, message=exc.message)) from None  # type: ignore[arg-type]
        if not parsed.text.strip():
            raise FileFailed(LastError(code="invalid_file", message=f"{record.filename} has no text to search "
                                       "(a scanned document needs OCR first)."))  # fmt: skip
        document = NewDocument(id=file.id, text=parsed.text,
                               metadata=document_metadata(file.attributes, record.filename, parsed))  # fmt: skip
        try:
            await stores.search.ingest(file.vector_store_id, [document], engine_chunking(file.chunking_strategy),
                                       bulk=True)  # fmt: skip
        except VsearchError as exc:
            if isinstance(exc, NotFound) or passing(exc):
                raise
            log.warning("vector store file %s: %s", file.id, exc)
            raise FileFailed(LastError(code="server_error", message=exc.message)) from None
        stored = await stores.search.get_document(file.vector_store_id, file.id)
        index = await stores.search.describe_index(file.vector_store_id)
        return len(parsed.text.encode()) + stored.chunk_count * index.config.dimensions * 4

    async def _drop_if_gone(self, file: VectorStoreFile) -> None:
        """The file was detached or cancelled while it was processed: its chunks go too (one attached again is
        being processed anew, and keeps them)."""
        try:
            now = await self.tables.get_file(file.vector_store_id, file.id)
            if now.status != "cancelled":
                return
        except NotFound:
            pass
        with contextlib.suppress(NotFound):
            await self.stores.search.delete_document(file.vector_store_id, file.id)


def _failed(file: VectorStoreFile, code: FileErrorCode, message: str) -> VectorStoreFile:
    return msgspec.structs.replace(file, status="failed", last_error=LastError(code=code, message=message))
