"""JobStore: fine-tuning jobs, their events and checkpoints, in SQLite (they survive restarts); PgJobStore: the
same in PostgreSQL, shared by replicas."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import sqlite_utils
from psycopg.types.json import Jsonb

from indexes.postgres.database import PgDatabase
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

    def succeeded(self) -> list[FineTuningJob]:
        rows = self._db.execute(
            "SELECT body FROM jobs WHERE json_extract(body, '$.status') = 'succeeded' ORDER BY rowid"
        )
        return [msgspec.json.decode(row[0], type=FineTuningJob) for row in rows]

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


PG_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS vsearch_jobs (seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE, "
    "id text PRIMARY KEY, created_at bigint NOT NULL, status text NOT NULL, body jsonb NOT NULL, "
    "owner text, lease_until timestamptz)",
    *(
        f"CREATE TABLE IF NOT EXISTS vsearch_job_{table} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "id text UNIQUE NOT NULL, job_id text NOT NULL REFERENCES vsearch_jobs ON DELETE CASCADE, "
        "body jsonb NOT NULL)"
        for table in ("events", "checkpoints")
    ),
    "CREATE INDEX IF NOT EXISTS vsearch_job_events_job ON vsearch_job_events (job_id, seq)",
    "CREATE INDEX IF NOT EXISTS vsearch_job_checkpoints_job ON vsearch_job_checkpoints (job_id, seq)",
    "CREATE INDEX IF NOT EXISTS vsearch_jobs_status ON vsearch_jobs (status)",
]


class ClaimedJob(msgspec.Struct, frozen=True):
    job: FineTuningJob
    taken_over: bool  # another replica had claimed it and stopped renewing its lease (it died)


class PgJobStore:
    """Jobs, events and checkpoints in PostgreSQL, shared by every replica. A replica runs a job only once it has
    claimed it (SELECT ... FOR UPDATE SKIP LOCKED, so two replicas never claim the same one) and keeps it by renewing
    a lease; a job whose lease ran out (its replica died) is claimed again by another and starts over."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        db.migrate(PG_SCHEMA)

    new_id = staticmethod(JobStore.new_id)

    def save(self, job: FineTuningJob) -> None:
        self._db.execute(
            "INSERT INTO vsearch_jobs (id, created_at, status, body) VALUES (%s, %s, %s, %s)",
            (job.id, job.created_at, job.status, Jsonb(msgspec.to_builtins(job))),
        )

    @staticmethod
    def _job(body: Any) -> FineTuningJob:
        return msgspec.convert(body, FineTuningJob)

    def get(self, job_id: str) -> FineTuningJob:
        rows = self._db.execute("SELECT body FROM vsearch_jobs WHERE id = %s", (job_id,))
        if not rows:
            raise NotFound(f"Could not find fine-tune job: {job_id}", param="fine_tuning_job_id", code="job_not_found")
        return self._job(rows[0][0])

    def update(self, job_id: str, **changes: Any) -> FineTuningJob:
        """Read, change and write the job in one transaction, its row locked (no change between can be lost)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT body FROM vsearch_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"Could not find fine-tune job: {job_id}", param="fine_tuning_job_id",
                               code="job_not_found")  # fmt: skip
            job = msgspec.structs.replace(self._job(row[0]), **changes)
            conn.execute("UPDATE vsearch_jobs SET body = %s, status = %s WHERE id = %s",
                         (Jsonb(msgspec.to_builtins(job)), job.status, job_id))  # fmt: skip
        return job

    def list(self, limit: int, after: str | None) -> tuple[list[FineTuningJob], bool]:
        sql, params = "SELECT body FROM vsearch_jobs", []
        if after:
            self.get(after)
            sql += " WHERE seq < (SELECT seq FROM vsearch_jobs WHERE id = %s)"
            params = [after]
        rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT %s", [*params, limit + 1])
        jobs = [self._job(row[0]) for row in rows]
        return jobs[:limit], len(jobs) > limit

    def succeeded(self) -> list[FineTuningJob]:
        rows = self._db.execute("SELECT body FROM vsearch_jobs WHERE status = 'succeeded' ORDER BY seq")
        return [self._job(row[0]) for row in rows]

    def count_by_status(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, count(*) FROM vsearch_jobs GROUP BY 1"))  # type: ignore[arg-type]

    def unfinished(self) -> list[FineTuningJob]:
        return []  # on start, nothing is reset: unfinished jobs belong to whichever replica holds their lease

    def claim(self, owner: str, lease_s: float) -> ClaimedJob | None:
        """The oldest unfinished job nobody holds (or whose holder's lease ran out), now held by `owner`."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT id, owner FROM vsearch_jobs WHERE status = ANY(%s) AND (lease_until IS NULL OR "
                "lease_until < now()) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                (list(UNFINISHED),),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE vsearch_jobs SET owner = %s, lease_until = now() + make_interval(secs => %s) WHERE id = %s",
                (owner, lease_s, row[0]),
            )
        return ClaimedJob(self.get(row[0]), taken_over=row[1] is not None)

    def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend `owner`'s lease; False if it no longer holds the job."""
        rows = self._db.execute(
            "UPDATE vsearch_jobs SET lease_until = now() + make_interval(secs => %s) WHERE id = %s AND owner = %s "
            "RETURNING id",
            (lease_s, job_id, owner),
        )
        return bool(rows)

    def add_event(
        self, job_id: str, message: str, level: EventLevel = "info", data: dict | None = None,
        type_: EventType = "message",
    ) -> None:  # fmt: skip
        event = JobEvent(id=f"ftevent-{secrets.token_hex(12)}", created_at=int(time.time()), level=level,
                         message=message, data=data, type=type_)  # fmt: skip
        self._db.execute("INSERT INTO vsearch_job_events (id, job_id, body) VALUES (%s, %s, %s)",
                         (event.id, job_id, Jsonb(msgspec.to_builtins(event))))  # fmt: skip

    def _page(self, table: str, kind: type[T], job_id: str, limit: int, after: str | None) -> tuple[list[T], bool]:
        self.get(job_id)
        sql, params = f"SELECT body FROM vsearch_job_{table} WHERE job_id = %s", [job_id]
        if after:
            sql += f" AND seq < (SELECT seq FROM vsearch_job_{table} WHERE id = %s)"
            params.append(after)
        rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT %s", [*params, limit + 1])
        items = [msgspec.convert(row[0], kind) for row in rows]
        return items[:limit], len(items) > limit

    def events(self, job_id: str, limit: int, after: str | None) -> tuple[list[JobEvent], bool]:
        return self._page("events", JobEvent, job_id, limit, after)

    def add_checkpoint(self, job_id: str, model_id: str, step: int, metrics: CheckpointMetrics) -> None:
        checkpoint = JobCheckpoint(id=f"ftckpt-{secrets.token_hex(12)}", created_at=int(time.time()),
                                   fine_tuned_model_checkpoint=model_id, fine_tuning_job_id=job_id, metrics=metrics,
                                   step_number=step)  # fmt: skip
        self._db.execute("INSERT INTO vsearch_job_checkpoints (id, job_id, body) VALUES (%s, %s, %s)",
                         (checkpoint.id, job_id, Jsonb(msgspec.to_builtins(checkpoint))))  # fmt: skip

    def checkpoints(self, job_id: str, limit: int, after: str | None) -> tuple[list[JobCheckpoint], bool]:
        return self._page("checkpoints", JobCheckpoint, job_id, limit, after)

    def clear_progress(self, job_id: str) -> None:
        self._db.execute("DELETE FROM vsearch_job_checkpoints WHERE job_id = %s", (job_id,))

    def close(self) -> None:
        pass  # the database belongs to whoever made it
