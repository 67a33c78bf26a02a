"""Fine-tuning jobs, their events and checkpoints: the JobStore Protocol, and its two implementations side by side,
SqliteJobStore (one node, the data dir) and PgJobStore (PostgreSQL, shared by replicas, which claim jobs). What both
do alike (ids, events and checkpoints made, pages cut) is written once, as functions.

Every method is a coroutine: the work runs in a worker thread through the database's run(), so a caller on the
event loop awaits it and cannot block the loop by forgetting to.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec
import sqlite_utils
from psycopg.types.json import Jsonb

from indexes.databases.postgres import PgDatabase
from indexes.databases.sqlite import Database, sqlite3
from service.errors import NotFound
from service.finetune.records import CheckpointMetrics, EventLevel, EventType, FineTuningJob, JobCheckpoint, JobEvent

UNFINISHED = ("validating_files", "queued", "running")
T = TypeVar("T")
Page = tuple[list[T], bool]


@runtime_checkable  # Litestar checks a dependency's type with isinstance()
class JobStore(Protocol):
    async def save(self, job: FineTuningJob) -> None: ...

    async def get(self, job_id: str) -> FineTuningJob:
        """NotFound if there is no such job."""
        ...

    async def update(self, job_id: str, **changes: Any) -> FineTuningJob:
        """Read, change and write the job in one transaction (no change between can be lost)."""
        ...

    async def list(self, limit: int, after: str | None) -> Page[FineTuningJob]:
        """Newest first; `after` is the id of the last job of the previous page."""
        ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def succeeded(self) -> list[FineTuningJob]: ...

    async def add_event(
        self, job_id: str, message: str, level: EventLevel = "info", data: dict | None = None,
        type_: EventType = "message",
    ) -> None: ...  # fmt: skip

    async def events(self, job_id: str, limit: int, after: str | None) -> Page[JobEvent]:
        """Newest first, as OpenAI lists them; `after` is an event id."""
        ...

    async def add_checkpoint(self, job_id: str, model_id: str, step: int, metrics: CheckpointMetrics) -> None: ...

    async def checkpoints(self, job_id: str, limit: int, after: str | None) -> Page[JobCheckpoint]: ...

    async def clear_progress(self, job_id: str) -> None:
        """Forget the checkpoints of an interrupted run before it starts again."""
        ...

    def close(self) -> None: ...


def new_job_id() -> str:
    return f"ftjob-{secrets.token_hex(12)}"


def new_event(message: str, level: EventLevel, data: dict | None, type_: EventType) -> JobEvent:
    return JobEvent(id=f"ftevent-{secrets.token_hex(12)}", created_at=int(time.time()), level=level, message=message,
                    data=data, type=type_)  # fmt: skip


def new_checkpoint(job_id: str, model_id: str, step: int, metrics: CheckpointMetrics) -> JobCheckpoint:
    return JobCheckpoint(id=f"ftckpt-{secrets.token_hex(12)}", created_at=int(time.time()),
                         fine_tuned_model_checkpoint=model_id, fine_tuning_job_id=job_id, metrics=metrics,
                         step_number=step)  # fmt: skip


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"Could not find fine-tune job: {job_id}", param="fine_tuning_job_id", code="job_not_found")


def page(items: list[T], limit: int) -> Page[T]:
    """A page of at most `limit` from `limit` + 1 rows read, and whether more follow."""
    return items[:limit], len(items) > limit


# --- SQLite -----------------------------------------------------------------------------------------------------


def _jobs_tables(db: sqlite3.Connection) -> None:
    """Version 1: jobs, events, checkpoints (IF NOT EXISTS: a file from before schema versions has them)."""
    tables = sqlite_utils.Database(db)
    tables["jobs"].create({"id": str, "created_at": int, "body": str}, pk="id", if_not_exists=True)
    for table in ("events", "checkpoints"):
        tables[table].create({"seq": int, "id": str, "job_id": str, "body": str}, pk="seq", if_not_exists=True)
        tables[table].create_index(["job_id"], if_not_exists=True)


SQLITE_MIGRATIONS = [_jobs_tables]


class SqliteJobStore:
    """Jobs in DATA_DIR/finetune/jobs.sqlite: this process alone runs them."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate(SQLITE_MIGRATIONS)

    async def save(self, job: FineTuningJob) -> None:
        await self._db.run(self._db.execute, "INSERT INTO jobs VALUES (?, ?, ?)",
                           (job.id, job.created_at, msgspec.json.encode(job).decode()))  # fmt: skip

    def _get(self, job_id: str) -> FineTuningJob:
        row = self._db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise job_not_found(job_id)
        return msgspec.json.decode(row[0], type=FineTuningJob)

    async def get(self, job_id: str) -> FineTuningJob:
        return await self._db.run(self._get, job_id)

    async def update(self, job_id: str, **changes: Any) -> FineTuningJob:
        def update() -> FineTuningJob:
            with self._db.transaction() as db:
                job = msgspec.structs.replace(self._get(job_id), **changes)
                db.execute("UPDATE jobs SET body = ? WHERE id = ?", (msgspec.json.encode(job).decode(), job_id))
            return job

        return await self._db.run(update)

    async def list(self, limit: int, after: str | None) -> Page[FineTuningJob]:
        def jobs() -> Page[FineTuningJob]:
            sql, params = "SELECT body FROM jobs", []
            if after:
                self._get(after)
                sql += " WHERE rowid < (SELECT rowid FROM jobs WHERE id = ?)"
                params = [after]
            rows = self._db.execute(sql + " ORDER BY rowid DESC LIMIT ?", [*params, limit + 1]).fetchall()
            return page([msgspec.json.decode(row[0], type=FineTuningJob) for row in rows], limit)

        return await self._db.run(jobs)

    async def count_by_status(self) -> dict[str, int]:
        return await self._db.run(lambda: dict(self._db.execute(
            "SELECT json_extract(body, '$.status'), count(*) FROM jobs GROUP BY 1")))  # fmt: skip

    async def succeeded(self) -> list[FineTuningJob]:
        return await self._db.run(self._with_status, ("succeeded",))

    async def unfinished(self) -> list[FineTuningJob]:
        """Jobs a restart interrupted (on one node, they run again from the start)."""
        return await self._db.run(self._with_status, UNFINISHED)

    def _with_status(self, statuses: tuple[str, ...]) -> list[FineTuningJob]:
        marks = ",".join("?" * len(statuses))
        rows = self._db.execute(
            f"SELECT body FROM jobs WHERE json_extract(body, '$.status') IN ({marks}) ORDER BY rowid", statuses
        )
        return [msgspec.json.decode(row[0], type=FineTuningJob) for row in rows]

    async def add_event(
        self, job_id: str, message: str, level: EventLevel = "info", data: dict | None = None,
        type_: EventType = "message",
    ) -> None:  # fmt: skip
        event = new_event(message, level, data, type_)
        await self._db.run(self._db.execute, "INSERT INTO events (id, job_id, body) VALUES (?, ?, ?)",
                           (event.id, job_id, msgspec.json.encode(event).decode()))  # fmt: skip

    def _page(self, table: str, kind: type[T], job_id: str, limit: int, after: str | None) -> Page[T]:
        self._get(job_id)
        sql, params = f"SELECT body FROM {table} WHERE job_id = ?", [job_id]
        if after:
            sql += f" AND seq < (SELECT seq FROM {table} WHERE id = ?)"
            params.append(after)
        rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit + 1]).fetchall()
        return page([msgspec.json.decode(row[0], type=kind) for row in rows], limit)

    async def events(self, job_id: str, limit: int, after: str | None) -> Page[JobEvent]:
        return await self._db.run(self._page, "events", JobEvent, job_id, limit, after)

    async def add_checkpoint(self, job_id: str, model_id: str, step: int, metrics: CheckpointMetrics) -> None:
        checkpoint = new_checkpoint(job_id, model_id, step, metrics)
        await self._db.run(self._db.execute, "INSERT INTO checkpoints (id, job_id, body) VALUES (?, ?, ?)",
                           (checkpoint.id, job_id, msgspec.json.encode(checkpoint).decode()))  # fmt: skip

    async def checkpoints(self, job_id: str, limit: int, after: str | None) -> Page[JobCheckpoint]:
        return await self._db.run(self._page, "checkpoints", JobCheckpoint, job_id, limit, after)

    async def clear_progress(self, job_id: str) -> None:
        await self._db.run(self._db.execute, "DELETE FROM checkpoints WHERE job_id = ?", (job_id,))

    def close(self) -> None:
        self._db.close()


# --- PostgreSQL -------------------------------------------------------------------------------------------------

PG_MIGRATIONS = [[
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
]]  # fmt: skip


class ClaimedJob(msgspec.Struct, frozen=True):
    job: FineTuningJob
    taken_over: bool  # another replica had claimed it and stopped renewing its lease (it died)


class PgJobStore:
    """Jobs, events and checkpoints in PostgreSQL, shared by every replica. A replica runs a job only once it has
    claimed it (SELECT ... FOR UPDATE SKIP LOCKED, so two replicas never claim the same one) and keeps it by renewing
    a lease; a job whose lease ran out (its replica died) is claimed again by another and starts over. Nothing is
    reset at start: an unfinished job belongs to whichever replica holds its lease."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        db.migrate("jobs", PG_MIGRATIONS)

    async def save(self, job: FineTuningJob) -> None:
        await self._db.run(self._db.execute,
                           "INSERT INTO vsearch_jobs (id, created_at, status, body) VALUES (%s, %s, %s, %s)",
                           (job.id, job.created_at, job.status, Jsonb(msgspec.to_builtins(job))))  # fmt: skip

    def _get(self, job_id: str) -> FineTuningJob:
        rows = self._db.execute("SELECT body FROM vsearch_jobs WHERE id = %s", (job_id,))
        if not rows:
            raise job_not_found(job_id)
        return msgspec.convert(rows[0][0], FineTuningJob)

    async def get(self, job_id: str) -> FineTuningJob:
        return await self._db.run(self._get, job_id)

    async def update(self, job_id: str, **changes: Any) -> FineTuningJob:
        def update() -> FineTuningJob:  # the row locked: no change between can be lost
            with self._db.transaction() as conn:
                row = conn.execute("SELECT body FROM vsearch_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
                if row is None:
                    raise job_not_found(job_id)
                job = msgspec.structs.replace(msgspec.convert(row[0], FineTuningJob), **changes)
                conn.execute("UPDATE vsearch_jobs SET body = %s, status = %s WHERE id = %s",
                             (Jsonb(msgspec.to_builtins(job)), job.status, job_id))  # fmt: skip
            return job

        return await self._db.run(update)

    async def list(self, limit: int, after: str | None) -> Page[FineTuningJob]:
        def jobs() -> Page[FineTuningJob]:
            sql, params = "SELECT body FROM vsearch_jobs", []
            if after:
                self._get(after)
                sql += " WHERE seq < (SELECT seq FROM vsearch_jobs WHERE id = %s)"
                params = [after]
            rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT %s", [*params, limit + 1])
            return page([msgspec.convert(row[0], FineTuningJob) for row in rows], limit)

        return await self._db.run(jobs)

    async def succeeded(self) -> list[FineTuningJob]:
        rows = await self._db.run(self._db.execute,
                                  "SELECT body FROM vsearch_jobs WHERE status = 'succeeded' ORDER BY seq")  # fmt: skip
        return [msgspec.convert(row[0], FineTuningJob) for row in rows]

    async def count_by_status(self) -> dict[str, int]:
        return dict(await self._db.run(self._db.execute, "SELECT status, count(*) FROM vsearch_jobs GROUP BY 1"))

    async def claim(self, owner: str, lease_s: float) -> ClaimedJob | None:
        """The oldest unfinished job nobody holds (or whose holder's lease ran out), now held by `owner`."""

        def claim() -> ClaimedJob | None:
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
            return ClaimedJob(self._get(row[0]), taken_over=row[1] is not None)

        return await self._db.run(claim)

    async def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend `owner`'s lease; False if it no longer holds the job."""
        rows = await self._db.run(
            self._db.execute,
            "UPDATE vsearch_jobs SET lease_until = now() + make_interval(secs => %s) WHERE id = %s AND owner = %s "
            "RETURNING id",
            (lease_s, job_id, owner),
        )
        return bool(rows)

    async def add_event(
        self, job_id: str, message: str, level: EventLevel = "info", data: dict | None = None,
        type_: EventType = "message",
    ) -> None:  # fmt: skip
        event = new_event(message, level, data, type_)
        await self._db.run(self._db.execute, "INSERT INTO vsearch_job_events (id, job_id, body) VALUES (%s, %s, %s)",
                           (event.id, job_id, Jsonb(msgspec.to_builtins(event))))  # fmt: skip

    def _page(self, table: str, kind: type[T], job_id: str, limit: int, after: str | None) -> Page[T]:
        self._get(job_id)
        sql, params = f"SELECT body FROM vsearch_job_{table} WHERE job_id = %s", [job_id]
        if after:
            sql += f" AND seq < (SELECT seq FROM vsearch_job_{table} WHERE id = %s)"
            params.append(after)
        rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT %s", [*params, limit + 1])
        return page([msgspec.convert(row[0], kind) for row in rows], limit)

    async def events(self, job_id: str, limit: int, after: str | None) -> Page[JobEvent]:
        return await self._db.run(self._page, "events", JobEvent, job_id, limit, after)

    async def add_checkpoint(self, job_id: str, model_id: str, step: int, metrics: CheckpointMetrics) -> None:
        checkpoint = new_checkpoint(job_id, model_id, step, metrics)
        await self._db.run(self._db.execute,
                           "INSERT INTO vsearch_job_checkpoints (id, job_id, body) VALUES (%s, %s, %s)",
                           (checkpoint.id, job_id, Jsonb(msgspec.to_builtins(checkpoint))))  # fmt: skip

    async def checkpoints(self, job_id: str, limit: int, after: str | None) -> Page[JobCheckpoint]:
        return await self._db.run(self._page, "checkpoints", JobCheckpoint, job_id, limit, after)

    async def clear_progress(self, job_id: str) -> None:
        await self._db.run(self._db.execute, "DELETE FROM vsearch_job_checkpoints WHERE job_id = %s", (job_id,))

    def close(self) -> None:
        pass  # the database belongs to whoever made it
