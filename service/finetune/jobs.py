"""JobStore: fine-tuning jobs, their events and checkpoints, in SQLite (they survive restarts)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import sqlite_utils

from indexes.sqlite import Database
from service.errors import NotFound
from service.finetune.records import CheckpointMetrics, EventLevel, EventType, FineTuningJob, JobCheckpoint, JobEvent

UNFINISHED = ("validating_files", "queued", "running")
T = TypeVar("T")


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Database(path)
        database = sqlite_utils.Database(self._db.conn)
        database["jobs"].create({"id": str, "created_at": int, "body": str}, pk="id", if_not_exists=True)
        database["events"].create({"seq": int, "id": str, "job_id": str, "body": str}, pk="seq", if_not_exists=True)
        database["checkpoints"].create({"seq": int, "id": str, "job_id": str, "body": str}, pk="seq",
                                       if_not_exists=True)  # fmt: skip
        database["events"].create_index(["job_id"], if_not_exists=True)
        database["checkpoints"].create_index(["job_id"], if_not_exists=True)

    @staticmethod
    def new_id() -> str:
        return f"ftjob-{secrets.token_hex(12)}"

    def save(self, job: FineTuningJob) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?)",
                (job.id, job.created_at, msgspec.json.encode(job).decode()),
            )

    def get(self, job_id: str) -> FineTuningJob:
        row = self._db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"Could not find fine-tune job: {job_id}", param="fine_tuning_job_id", code="job_not_found")
        return msgspec.json.decode(row[0], type=FineTuningJob)

    def update(self, job_id: str, **changes: Any) -> FineTuningJob:
        """Read, change and write the job in one transaction (no change between can be lost)."""
        with self._db.transaction() as db:
            job = msgspec.structs.replace(self.get(job_id), **changes)
            db.execute("UPDATE jobs SET body = ? WHERE id = ?", (msgspec.json.encode(job).decode(), job_id))
        return job

    def list(self, limit: int, after: str | None) -> tuple[list[FineTuningJob], bool]:
        """Newest first; `after` is the id of the last job of the previous page."""
        sql, params = "SELECT body FROM jobs", []
        if after:
            self.get(after)
            sql += " WHERE rowid < (SELECT rowid FROM jobs WHERE id = ?)"
            params = [after]
        rows = self._db.execute(sql + " ORDER BY rowid DESC LIMIT ?", [*params, limit + 1]).fetchall()
        jobs = [msgspec.json.decode(row[0], type=FineTuningJob) for row in rows]
        return jobs[:limit], len(jobs) > limit

    def count_by_status(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT json_extract(body, '$.status'), count(*) FROM jobs GROUP BY 1"))

    def unfinished(self) -> list[FineTuningJob]:
        marks = ",".join("?" * len(UNFINISHED))
        rows = self._db.execute(
            f"SELECT body FROM jobs WHERE json_extract(body, '$.status') IN ({marks}) ORDER BY rowid", UNFINISHED
        )
        return [msgspec.json.decode(row[0], type=FineTuningJob) for row in rows]

    def add_event(
        self,
        job_id: str,
        message: str,
        level: EventLevel = "info",
        data: dict | None = None,
        type_: EventType = "message",
    ) -> None:
        event = JobEvent(
            id=f"ftevent-{secrets.token_hex(12)}",
            created_at=int(time.time()),
            level=level,
            message=message,
            data=data,
            type=type_,
        )
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO events (id, job_id, body) VALUES (?, ?, ?)",
                (event.id, job_id, msgspec.json.encode(event).decode()),
            )

    def _page(self, table: str, kind: type[T], job_id: str, limit: int, after: str | None) -> tuple[list[T], bool]:
        """A job's events or checkpoints, newest first, as OpenAI lists them; `after` is an item id."""
        self.get(job_id)
        sql, params = f"SELECT body FROM {table} WHERE job_id = ?", [job_id]
        if after:
            sql += f" AND seq < (SELECT seq FROM {table} WHERE id = ?)"
            params.append(after)
        rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit + 1]).fetchall()
        items = [msgspec.json.decode(row[0], type=kind) for row in rows]
        return items[:limit], len(items) > limit

    def events(self, job_id: str, limit: int, after: str | None) -> tuple[list[JobEvent], bool]:
        return self._page("events", JobEvent, job_id, limit, after)

    def add_checkpoint(self, job_id: str, model_id: str, step: int, metrics: CheckpointMetrics) -> None:
        checkpoint = JobCheckpoint(
            id=f"ftckpt-{secrets.token_hex(12)}",
            created_at=int(time.time()),
            fine_tuned_model_checkpoint=model_id,
            fine_tuning_job_id=job_id,
            metrics=metrics,
            step_number=step,
        )
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO checkpoints (id, job_id, body) VALUES (?, ?, ?)",
                (checkpoint.id, job_id, msgspec.json.encode(checkpoint).decode()),
            )

    def checkpoints(self, job_id: str, limit: int, after: str | None) -> tuple[list[JobCheckpoint], bool]:
        return self._page("checkpoints", JobCheckpoint, job_id, limit, after)

    def clear_progress(self, job_id: str) -> None:
        """Forget checkpoints of an interrupted run before it starts again."""
        self._db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))

    def close(self) -> None:
        self._db.close()
