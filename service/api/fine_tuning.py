"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, events, checkpoints."""

from __future__ import annotations

from typing import Annotated

from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from service.api.errors import error_responses
from service.finetune.records import FineTuningJob, JobSpec
from service.finetune.service import FineTuningService
from service.limits import MAX_PAGE_SIZE
from service.schemas import FineTuningJobList, JobCheckpointList, JobEventList

FineTuning = NamedDependency[FineTuningService]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE)]
NAMED = error_responses(400, 404)


@post("/", responses=error_responses(400, 404), status_code=200, summary="Create a fine-tuning job")
async def create_job(data: JSONBody[JobSpec], fine_tuning: FineTuning) -> FineTuningJob:
    return await fine_tuning.create(data)


@get("/", responses=error_responses(400, 404), summary="List fine-tuning jobs, newest first")
async def list_jobs(
    fine_tuning: FineTuning, limit: Limit = 20, after: FromQuery[str | None] = None
) -> FineTuningJobList:
    jobs, has_more = await fine_tuning.list(limit, after)
    return FineTuningJobList(data=jobs, has_more=has_more)


@get("/{job_id:str}", responses=error_responses(404), summary="Retrieve a fine-tuning job")
async def retrieve_job(job_id: FromPath[str], fine_tuning: FineTuning) -> FineTuningJob:
    return await fine_tuning.get(job_id)


@post("/{job_id:str}/cancel", responses=NAMED, status_code=200, summary="Cancel a fine-tuning job")
async def cancel_job(job_id: FromPath[str], fine_tuning: FineTuning) -> FineTuningJob:
    return await fine_tuning.cancel(job_id)


@get("/{job_id:str}/events", responses=NAMED, summary="A job's events, newest first")
async def list_events(
    job_id: FromPath[str], fine_tuning: FineTuning, limit: Limit = 20, after: FromQuery[str | None] = None
) -> JobEventList:
    events, has_more = await fine_tuning.events(job_id, limit, after)
    return JobEventList(data=events, has_more=has_more)


@get("/{job_id:str}/checkpoints", responses=NAMED, summary="A job's checkpoints (one per epoch), newest first")
async def list_checkpoints(
    job_id: FromPath[str],
    fine_tuning: FineTuning,
    limit: Limit = 10,
    after: FromQuery[str | None] = None,
) -> JobCheckpointList:
    items, has_more = await fine_tuning.checkpoints(job_id, limit, after)
    return JobCheckpointList(
        data=items, first_id=items[0].id if items else None, last_id=items[-1].id if items else None, has_more=has_more
    )


fine_tuning_router = Router(
    path="/v1/fine_tuning/jobs",
    route_handlers=[create_job, list_jobs, retrieve_job, cancel_job, list_events, list_checkpoints],
    tags=["fine-tuning"],
)
