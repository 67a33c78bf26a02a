"""`vsearch ingest`: streams a source into an index through the REST API, with resume and a rejects file.

Batches go out concurrently; a checkpoint file records how many source records, counted from the start, are
done (acknowledged by the server, or rejected), so a run killed at any moment starts again after them. What the
server already holds unchanged is reported as skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from service.ingest.sources import Record, Source, read_records
from service.retries import RetriesExhausted, RetryPolicy, send_with_retries
from service.search.values import IndexSpec

INGEST_RETRIES = RetryPolicy(max_retries=8)
DOCUMENT_PARAM = re.compile(r"^documents\[(\d+)\]")


@dataclass
class FieldMapping:
    id_field: str | None  # None: the server generates ids
    text: str  # a field name, or a template such as "{title} {text}"
    metadata_fields: list[str] | None  # None: every other field

    def document(self, record: Record) -> tuple[dict[str, Any] | None, str | None]:
        """The document for a record, or why there is none."""
        fields = record.fields
        if "{" in self.text:
            try:
                text = self.text.format_map({k: "" if v is None else v for k, v in fields.items()}).strip()
            except (KeyError, IndexError, ValueError) as exc:
                return None, f"text template: missing field {exc}"
            used = set(re.findall(r"{(\w+)", self.text))
        else:
            text, used = fields.get(self.text), {self.text}
        if not isinstance(text, str) or not text.strip():
            return None, "empty text"
        document: dict[str, Any] = {"text": text}
        if self.id_field is not None:
            doc_id = fields.get(self.id_field)
            if doc_id is None or str(doc_id) == "":
                return None, f"no '{self.id_field}' field"
            document["id"] = str(doc_id)
            used.add(self.id_field)
        names = self.metadata_fields if self.metadata_fields is not None else [k for k in fields if k not in used]
        metadata = {name: fields[name] for name in names if name in fields}
        if metadata:
            document["metadata"] = metadata
        return document, None


@dataclass
class Summary:
    sent: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0  # unchanged on the server, or sent by an earlier run
    rejected: int = 0  # by this run or, for the records a resumed run skips, by the earlier one
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return (self.created + self.updated) / self.elapsed if self.elapsed else 0.0


@dataclass
class _Batch:
    number: int
    last_record: int  # number of the last source record in it
    size: int  # source bytes
    documents: list[dict[str, Any]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)


class IngestError(Exception):
    pass


class Ingest:
    def __init__(
        self,
        url: str,
        index: IndexSpec,
        source: Source,
        mapping: FieldMapping,
        batch_size: int = 64,
        concurrency: int = 2,
        api_key: str | None = None,
        rejects: Path | None = None,
        checkpoint: Path | None = None,
        retries: RetryPolicy = INGEST_RETRIES,
        console: Console | None = None,
        chunking: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.index = index
        self.source = source
        self.mapping = mapping
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.rejects_path = rejects or Path(f"{index.name}.rejects.jsonl")
        key = hashlib.sha256(f"{self.url}|{index.name}|{source.path.resolve()}".encode()).hexdigest()[:16]
        self.checkpoint_path = checkpoint or Path(".vsearch-ingest") / f"{index.name}-{key}.json"
        self.retries = retries
        self.console = console or Console(stderr=True)
        self.summary = Summary()
        self._rejected_before = 0  # rejected by earlier runs, among the records the checkpoint covers
        self._rejected_records: list[int] = []  # record numbers rejected by this run
        self.chunking = {"chunking": {"strategy": chunking}} if chunking else {}

    # --- checkpoint -----------------------------------------------------------------------------------------------

    def _checkpoint(self) -> tuple[int, int]:
        """(records done, how many of them were rejected), as the last run left them."""
        try:
            saved = json.loads(self.checkpoint_path.read_text())
            return int(saved["records_done"]), int(saved.get("rejected", 0))
        except (OSError, ValueError, KeyError):
            return 0, 0

    def _save_checkpoint(self, records_done: int) -> None:
        rejected = self._rejected_before + sum(1 for number in self._rejected_records if number < records_done)
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.checkpoint_path.with_suffix(".partial")
        partial.write_text(json.dumps({"records_done": records_done, "rejected": rejected,
                                       "source": str(self.source.path)}))  # fmt: skip
        partial.replace(self.checkpoint_path)  # atomic: a kill never leaves half a checkpoint

    def _keep_rejects_before(self, records_done: int) -> None:
        """On a resume: the rejects file keeps the records the checkpoint covers; those after it are read and sent
        again, and would otherwise be listed twice."""
        if not self.rejects_path.exists():
            return
        lines = self.rejects_path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line).get("record", records_done) < records_done]
        if len(kept) != len(lines):
            self.rejects_path.write_text("".join(kept))

    # --- HTTP -----------------------------------------------------------------------------------------------------

    async def _request(self, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Retries 429, 5xx and connection errors with backoff; other answers are returned."""
        try:
            return await send_with_retries(
                lambda _: client.request(method, path, **kwargs),
                self.retries,
                retryable=lambda status: status == 429 or status >= 500,
                name=f"{method} {path}",
            )
        except RetriesExhausted as exc:
            raise IngestError(str(exc)) from None

    async def _ensure_index(self, client: httpx.AsyncClient) -> None:
        response = await self._request(client, "GET", f"/v1/indexes/{self.index.name}")
        if response.status_code == 200:
            return
        if response.status_code != 404:
            raise IngestError(f"index '{self.index.name}': {response.status_code} {response.text}")
        response = await self._request(client, "POST", "/v1/indexes", json=msgspec.to_builtins(self.index))
        if response.status_code not in (200, 409):  # 409: another ingest created it meanwhile
            raise IngestError(f"could not create index '{self.index.name}': {response.text}")

    async def _send(self, client: httpx.AsyncClient, batch: _Batch) -> None:
        """Send a batch; documents the server refuses are rejected one by one and the rest sent again."""
        documents, records = list(batch.documents), list(batch.records)
        while documents:
            response = await self._request(
                client,
                "POST",
                f"/v1/indexes/{self.index.name}/documents",
                json={"documents": documents, **self.chunking},
            )
            if response.status_code == 200:
                body = response.json()
                self.summary.sent += len(documents)
                self.summary.created += body["created"]
                self.summary.updated += body["updated"]
                self.summary.skipped += body["unchanged"]
                return
            error = _error_of(response)
            match = DOCUMENT_PARAM.match(error.get("param") or "")
            if response.status_code == 400 and match and int(match.group(1)) < len(documents):
                bad = int(match.group(1))
                self._reject(records[bad], error.get("message", response.text), documents[bad])
                del documents[bad], records[bad]
                continue
            for record, document in zip(records, documents, strict=True):
                self._reject(record, f"{response.status_code}: {error.get('message', response.text)}", document)
            return

    def _reject(self, record: Record, reason: str, document: dict | None = None) -> None:
        self.summary.rejected += 1
        self._rejected_records.append(record.number)
        entry = {"record": record.number, "reason": reason, "document": document if document else record.raw}
        with self.rejects_path.open("a") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    # --- the run --------------------------------------------------------------------------------------------------

    def _batches(self, skip: int) -> Iterator[_Batch]:
        batch = _Batch(0, -1, 0)
        for record in read_records(self.source):
            if record.number < skip:
                continue
            batch.last_record, batch.size = record.number, batch.size + record.size
            if record.error is not None:
                self._reject(record, record.error)
            else:
                document, problem = self.mapping.document(record)
                if document is None:
                    self._reject(record, problem or "unreadable", None)
                else:
                    batch.documents.append(document)
                    batch.records.append(record)
            if len(batch.documents) >= self.batch_size:
                yield batch
                batch = _Batch(batch.number + 1, -1, 0)
        if batch.last_record >= 0:
            yield batch

    async def run(self, restart: bool = False) -> Summary:
        started = time.monotonic()
        skip, self._rejected_before = (0, 0) if restart else self._checkpoint()
        skip_done = skip - self._rejected_before  # records an earlier run sent, less those it rejected
        self.summary.skipped += skip_done
        self.summary.rejected += self._rejected_before  # the exit status tells of the whole source, not this run
        if restart and self.rejects_path.exists():
            self.rejects_path.unlink()
        elif skip:
            self._keep_rejects_before(skip)
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=600) as client:
            await self._ensure_index(client)
            finished: dict[int, int] = {}  # batch number -> last record number, until the prefix is contiguous
            next_to_checkpoint = 0
            progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[docs]} docs"),
                TextColumn("{task.fields[rate]:.0f} docs/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )  # fmt: skip
            with progress:
                task = progress.add_task(f"ingest → {self.index.name}", total=self.source.total_bytes, docs=0, rate=0.0)
                in_flight: set[asyncio.Task[None]] = set()

                async def send(batch: _Batch) -> None:
                    nonlocal next_to_checkpoint
                    await self._send(client, batch)
                    finished[batch.number] = batch.last_record
                    while next_to_checkpoint in finished:
                        self._save_checkpoint(finished.pop(next_to_checkpoint) + 1)
                        next_to_checkpoint += 1
                    done = self.summary.created + self.summary.updated + self.summary.skipped - skip_done
                    rate = (self.summary.created + self.summary.updated) / max(time.monotonic() - started, 1e-9)
                    progress.update(task, advance=batch.size, docs=done, rate=rate)

                for batch in self._batches(skip):
                    if len(in_flight) >= self.concurrency:
                        finished_tasks, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        for t in finished_tasks:
                            t.result()  # an IngestError stops the run; the checkpoint keeps what was done
                    in_flight.add(asyncio.create_task(send(batch)))
                for t in asyncio.as_completed(in_flight):
                    await t
        self.summary.elapsed = time.monotonic() - started
        return self.summary


def _error_of(response: httpx.Response) -> dict:
    try:
        error = response.json().get("error")
        return error if isinstance(error, dict) else {}
    except ValueError:
        return {}
