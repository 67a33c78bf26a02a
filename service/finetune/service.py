"""FineTuningService: the door to fine-tuning jobs. Creates and cancels them, runs them one at a time on a
background worker (validate files, embed, train, publish the model), and answers for their records."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any

import msgspec
import numpy as np

from indexes.databases.loop import run
from indexes.errors import StorageUnavailable
from indexes.values import IndexExport
from service.embeddings.adapter import AdapterEmbedder
from service.embeddings.base import Embedder
from service.embeddings.projection import ProjectionEmbedder
from service.embeddings.registry import EmbedderRegistry
from service.errors import InvalidRequest, NotFound
from service.finetune.adapters import AdapterStore
from service.finetune.files import FileStore, save_bytes
from service.finetune.formats import Example, TrainingFileError, parse_examples
from service.finetune.jobs import UNFINISHED, JobStore, PgJobStore, SqliteJobStore, new_job_id
from service.finetune.projection import principal_axes, projection_infonce, train_projection
from service.finetune.records import (
    CheckpointMetrics,
    EventLevel,
    FineTuningJob,
    Hyperparameters,
    JobCheckpoint,
    JobError,
    JobEvent,
    JobSpec,
    Method,
    ProjectionMethod,
    SupervisedMethod,
)
from service.finetune.trainer import StepMetrics, TrainingConfig, TrainingSet, evaluate, infonce, train_adapter
from service.search.service import SearchService

log = logging.getLogger("vsearch")

ORGANIZATION = "vsearch"
AUTO_EPOCHS = 30
AUTO_BATCH_SIZE = 64
BASE_LEARNING_RATE = 1e-3  # times learning_rate_multiplier
MIN_TRAINING_EXAMPLES = 10
MIN_VALIDATION_EXAMPLES = 2


def resolved(hyperparameters: Hyperparameters) -> Hyperparameters:
    """ "auto" replaced by the values the trainer uses, as OpenAI reports them once a job runs."""
    h = hyperparameters
    return msgspec.structs.replace(
        h,
        n_epochs=AUTO_EPOCHS if h.n_epochs == "auto" else h.n_epochs,
        batch_size=AUTO_BATCH_SIZE if h.batch_size == "auto" else h.batch_size,
        learning_rate_multiplier=1.0 if h.learning_rate_multiplier == "auto" else h.learning_rate_multiplier,
    )


def training_config(job: FineTuningJob) -> TrainingConfig:
    h = resolved(job.hyperparameters)
    return TrainingConfig(
        epochs=int(h.n_epochs),
        batch_size=int(h.batch_size),
        learning_rate=BASE_LEARNING_RATE * float(h.learning_rate_multiplier),
        # Mined hard negatives give a sharper gradient: pull harder toward the identity (measured on SciFact).
        regularisation=0.01 if job.hard_negatives else 0.001,
        seed=job.seed,
    )


def model_id(job: FineTuningJob) -> str:
    return f"ft:{job.model}:{ORGANIZATION}:{job.suffix or ''}:{job.id}"


def fine_tuned(job: FineTuningJob, base: Embedder, weights: np.ndarray, created: int) -> Embedder:
    """The model a succeeded job publishes: a projection (documents and queries), or a query adapter."""
    if job.method.type == "projection":
        return ProjectionEmbedder(model_id(job), base, weights, created)
    return AdapterEmbedder(model_id(job), base, weights, created)


def metrics_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["step", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy"],
                            extrasaction="ignore")  # fmt: skip
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def check_projection(search: SearchService, spec: JobSpec, method: ProjectionMethod, base: Embedder) -> None:
    """InvalidRequest unless the projection job can run: a width below the base's, and pairs or an index to fit on."""
    width = (method.hyperparameters or Hyperparameters()).dimensions
    if width is msgspec.UNSET or not width < base.dimensions:
        raise InvalidRequest(f"A projection needs method.projection.hyperparameters.dimensions, below the "
                             f"{base.dimensions} of {spec.model}.",
                             param="method.projection.hyperparameters.dimensions")  # fmt: skip
    if spec.hard_negatives is not None:
        raise InvalidRequest("hard_negatives apply to query adapters, not projections.", param="hard_negatives")
    if method.index is not None:
        info = await search.describe_index(method.index)
        if info.config.model != spec.model or info.config.dimensions != base.dimensions:
            raise InvalidRequest(f"Index '{method.index}' must hold full-width vectors of {spec.model} to fit "
                                 "a projection on.", param="method.projection.index")  # fmt: skip
        if info.stats.vector_count < width:
            raise InvalidRequest(f"Index '{method.index}' holds {info.stats.vector_count} vectors; a projection "
                                 f"to {width} dimensions needs at least that many.",
                                 param="method.projection.index")  # fmt: skip
    elif spec.training_file is None:
        raise InvalidRequest("A projection is fitted on a training file's pairs or on an index's vectors: give "
                             "'training_file' or method.projection.index.", param="training_file")  # fmt: skip


def method_record(method: Method, hyperparameters: Hyperparameters) -> Method:
    """The job's method as recorded: its section holding the hyperparameters in force."""
    if method.type == "projection":
        index = method.projection.index if method.projection else None
        return Method(type="projection", projection=ProjectionMethod(hyperparameters=hyperparameters, index=index))
    section = SupervisedMethod(hyperparameters=hyperparameters)
    return Method(type="dpo", dpo=section) if method.type == "dpo" else Method(type="supervised", supervised=section)


async def fit_on_index(search: SearchService, job: FineTuningJob) -> tuple[np.ndarray, str]:
    """The principal axes of the index's stored vectors, read as of one instant (writes go on meanwhile)."""
    assert job.method.projection is not None and job.method.projection.index is not None
    index, width = job.method.projection.index, int(job.hyperparameters.dimensions)  # type: ignore[call-overload]
    counted: list[int] = []

    def fit(content: IndexExport) -> np.ndarray:
        counted.append(content.vectors)
        vectors = (np.stack([c.vector for doc in batch for c in doc.chunks]) for batch in content.batches if batch)
        return principal_axes(vectors, width)

    weights = await search.export_index(index, fit)
    return weights, f"Fitted {width} principal axes on the {counted[0]} vectors of index '{index}'"


class JobCancelled(Exception):
    """Raised inside a run when the user cancelled it: the run stops where it is."""


class SharedJobs(msgspec.Struct, frozen=True, kw_only=True):
    """How replicas share jobs through PostgreSQL (PgJobStore): each claims the next job it finds, holds it by
    renewing a lease, and looks for jobs every `poll_s` (and at once when it created one)."""

    lease_s: float = 30.0
    poll_s: float = 1.0


class FineTuningService:
    def __init__(
        self,
        jobs: JobStore,
        files: FileStore,
        registry: EmbedderRegistry,
        search: SearchService,
        adapters: AdapterStore,
        shared: SharedJobs | None = None,
    ) -> None:
        """`shared`: jobs live in PostgreSQL and replicas take turns (`jobs` is then a PgJobStore); None: this
        process alone runs the jobs of its data dir."""
        self.jobs = jobs
        self.files = files
        self.registry = registry
        self.search = search
        self.adapters = adapters
        self.shared = shared
        self._owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"  # this replica, for leases
        self._wakeup = asyncio.Event()
        self._cancel: dict[str, threading.Event] = {}
        self._status_lock = asyncio.Lock()  # a status change and the cancel it checks for, one at a time
        self._queue: asyncio.Queue[str] | None = None
        self._worker: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------------

    async def load_models(self) -> None:
        """Publish the models of succeeded jobs not served yet (at start; and, with replicas, whenever a model is
        missed or listed: another replica may have trained it)."""
        for job in await self.jobs.succeeded():
            if not job.fine_tuned_model or job.fine_tuned_model in self.registry:
                continue
            if job.model not in self.registry:  # (not get(): a miss would discover, which is this)
                log.warning("fine-tuned model %s: base %s is not served; skipped", job.fine_tuned_model, job.model)
                continue
            weights = await self.adapters.load(job.id)  # only for a model that will be served: discovery runs often
            if weights is None:
                continue
            self.registry.add(fine_tuned(job, self.registry.get(job.model), weights, job.finished_at or 0))

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        await self.load_models()
        if self.shared is not None:
            self._worker = asyncio.get_running_loop().create_task(self._work_shared(self.shared))
            return
        assert isinstance(self.jobs, SqliteJobStore)  # one node: its own jobs
        for job in await self.jobs.unfinished():  # interrupted by a restart: run again from the start
            await self.jobs.clear_progress(job.id)
            await self.jobs.update(job.id, status="validating_files", trained_tokens=None, estimated_finish=None)
            await self.jobs.add_event(job.id, "The server restarted while this job was unfinished; it starts again.")
            self._queue.put_nowait(job.id)
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        for flag in self._cancel.values():
            flag.set()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    # --- the door -------------------------------------------------------------------------------------------------

    async def create(self, spec: JobSpec) -> FineTuningJob:
        job = await self._create(spec)
        self._wakeup.set()  # with replicas: look for it now rather than at the next poll
        return job

    async def _create(self, spec: JobSpec) -> FineTuningJob:
        base = await self.registry.known(spec.model)
        if base.base_model is not None:
            raise InvalidRequest(
                f"Model {spec.model} is itself fine-tuned; fine-tune its base model {base.base_model} instead.",
                param="model",
            )
        method = spec.method or Method(type="supervised")
        if method.type == "projection":
            await check_projection(self.search, spec, method.projection or ProjectionMethod(), base)
        elif spec.training_file is None:
            raise InvalidRequest("'training_file' is required.", param="training_file")
        for param, file_id in (("training_file", spec.training_file), ("validation_file", spec.validation_file)):
            if file_id is not None:
                await self._check_file(param, file_id)
        if spec.hard_negatives is not None:
            index = (await self.search.describe_index(spec.hard_negatives.index)).config
            if index.model != spec.model or index.dimensions != base.dimensions:
                raise InvalidRequest(
                    f"Index '{index.name}' must hold full-width vectors of {spec.model} to give hard negatives.",
                    param="hard_negatives.index",
                )
        section = {"dpo": method.dpo, "projection": method.projection}.get(method.type, method.supervised)
        hyperparameters = (section.hyperparameters if section else None) or spec.hyperparameters or Hyperparameters()
        if method.type == "supervised" and hyperparameters.beta is not msgspec.UNSET:
            raise InvalidRequest("'beta' applies to the dpo method only.",
                                 param="method.supervised.hyperparameters.beta")  # fmt: skip
        job = FineTuningJob(
            id=new_job_id(),
            created_at=int(time.time()),
            hyperparameters=hyperparameters,
            model=spec.model,
            organization_id=f"org-{ORGANIZATION}",
            status="validating_files",
            training_file=spec.training_file,
            validation_file=spec.validation_file,
            integrations=spec.integrations,
            seed=spec.seed if spec.seed is not None else int(np.random.default_rng().integers(0, 2**31 - 1)),
            method=method_record(method, hyperparameters),
            metadata=spec.metadata,
            suffix=spec.suffix,
            hard_negatives=spec.hard_negatives,
        )
        await self._enqueue(job)
        return job

    async def _check_file(self, param: str, file_id: str) -> None:
        try:
            record = await self.files.get(file_id)
        except NotFound:
            raise InvalidRequest(f"Invalid file ID: {file_id}", param=param, code="invalid_file_id") from None
        if record.purpose != "fine-tune":
            raise InvalidRequest(
                f"File {file_id} has purpose '{record.purpose}'; fine-tuning needs purpose 'fine-tune'.", param=param
            )

    async def _enqueue(self, job: FineTuningJob) -> None:
        if self._queue is None:
            raise RuntimeError("the fine-tuning worker is not running")
        await self.jobs.save(job)
        if job.training_file is not None:
            await self.jobs.add_event(job.id, f"Validating training file: {job.training_file}")
        if job.integrations:
            await self.jobs.add_event(job.id, "Integrations are recorded but not used: vsearch sends nothing to wandb.",
                                      level="warn")  # fmt: skip
        if self.shared is None:
            self._queue.put_nowait(job.id)

    async def cancel(self, job_id: str) -> FineTuningJob:
        async with self._status_lock:
            job = await self.jobs.get(job_id)
            if job.status not in UNFINISHED:
                raise InvalidRequest(f"Job {job_id} has already {job.status}; it cannot be cancelled.",
                                     param="job_id")  # fmt: skip
            self._cancel.setdefault(job_id, threading.Event()).set()
            job = await self.jobs.update(job_id, status="cancelled", finished_at=int(time.time()),
                                         estimated_finish=None)  # fmt: skip
        await self.jobs.add_event(job_id, "Job cancelled at the user's request.")
        return job

    async def get(self, job_id: str) -> FineTuningJob:
        return await self.jobs.get(job_id)

    async def list(self, limit: int, after: str | None) -> tuple[list[FineTuningJob], bool]:
        return await self.jobs.list(limit, after)

    async def events(self, job_id: str, limit: int, after: str | None) -> tuple[list[JobEvent], bool]:
        return await self.jobs.events(job_id, limit, after)

    async def checkpoints(self, job_id: str, limit: int, after: str | None) -> tuple[list[JobCheckpoint], bool]:
        return await self.jobs.checkpoints(job_id, limit, after)

    # --- the worker -----------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            await self._run_one(await self._queue.get())

    async def _work_shared(self, shared: SharedJobs) -> None:
        """With replicas: claim the next job nobody holds, run it while renewing the lease, repeat."""
        assert isinstance(self.jobs, PgJobStore)
        jobs = self.jobs
        while True:
            self._wakeup.clear()
            try:
                claimed = await jobs.claim(self._owner, shared.lease_s)
            except StorageUnavailable:  # the database is unreachable for now: try again at the next poll
                log.exception("could not look for fine-tuning jobs")
                claimed = None
            if claimed is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), shared.poll_s)
                continue
            job_id = claimed.job.id
            if claimed.taken_over:
                await self._restart(job_id, "The replica running this job stopped; it starts again.")
            lease = asyncio.get_running_loop().create_task(self._hold(jobs, job_id, shared))
            try:
                await self._run_one(job_id)
            finally:
                lease.cancel()

    async def _restart(self, job_id: str, why: str) -> None:
        await self.jobs.clear_progress(job_id)
        with contextlib.suppress(JobCancelled):
            await self._move(job_id, why, status="validating_files", trained_tokens=None, estimated_finish=None)

    async def _hold(self, jobs: PgJobStore, job_id: str, shared: SharedJobs) -> None:
        """Renew the lease on a running job; stop the run if it was cancelled (through any replica) or if the lease
        was lost (this replica stalled past it, and another took the job over)."""
        flag = self._cancel.setdefault(job_id, threading.Event())
        while True:
            await asyncio.sleep(shared.lease_s / 3)
            try:
                held = await jobs.renew(job_id, self._owner, shared.lease_s)
                cancelled = (await jobs.get(job_id)).status == "cancelled"
            except StorageUnavailable:
                continue  # the database is unreachable for now; the lease runs on until it comes back
            if cancelled or not held:
                flag.set()

    async def _run_one(self, job_id: str) -> None:
        try:
            await self._run(await self.jobs.get(job_id))
        except asyncio.CancelledError:
            raise
        except JobCancelled:
            pass
        except TrainingFileError as exc:
            await self._fail(job_id, JobError(code=exc.code, message=str(exc), param=exc.param))
        except Exception as exc:  # a bug, or a base model that failed: the job fails, the worker goes on
            log.exception("fine-tuning job %s failed", job_id)
            await self._fail(job_id, JobError(code="server_error", message=str(exc), param=None))
        finally:
            self._cancel.pop(job_id, None)

    def _check_cancelled(self, job_id: str) -> None:
        if self._cancel.setdefault(job_id, threading.Event()).is_set():
            raise JobCancelled

    async def _move(self, job_id: str, message: str, level: EventLevel = "info", **changes: object) -> FineTuningJob:
        """Change the job unless the user cancelled it first (then stop the run)."""
        async with self._status_lock:
            if (await self.jobs.get(job_id)).status == "cancelled":
                raise JobCancelled
            job = await self.jobs.update(job_id, **changes)
        await self.jobs.add_event(job_id, message, level=level)
        return job

    async def _fail(self, job_id: str, error: JobError) -> None:
        with contextlib.suppress(JobCancelled):
            await self._move(job_id, f"Job failed: {error.message}", level="error", status="failed", error=error,
                       finished_at=int(time.time()), estimated_finish=None)  # fmt: skip

    async def _run(self, job: FineTuningJob) -> None:
        self._check_cancelled(job.id)
        examples, validation = await run(self._read_files, job)
        job = await self._move(job.id,
                               f"Files validated ({len(examples)} training examples), moving job to queued state",
                         status="queued")  # fmt: skip
        self._check_cancelled(job.id)
        hyperparameters = resolved(job.hyperparameters)
        job = await self._move(job.id, "Fine-tuning job started", status="running", hyperparameters=hyperparameters,
                         method=method_record(job.method, hyperparameters))  # fmt: skip
        if job.training_file is None:  # a projection fitted on an index's stored vectors: nothing is embedded
            weights, message = await fit_on_index(self.search, job)
            await self.jobs.add_event(job.id, message)
            await self._publish(job, weights, [], 0)
            return
        projecting = job.method.type == "projection"
        data, tokens = await self._embed(job, examples, with_mined_negatives=True)
        valid_data = (await self._embed(job, validation, with_mined_negatives=False))[0] if validation else None
        self._check_cancelled(job.id)
        progress = _Progress(self, job, len(examples), valid_data, asyncio.get_running_loop())
        cancelled = self._cancel.setdefault(job.id, threading.Event()).is_set
        if projecting:
            start = principal_axes([data.queries, data.positives], int(hyperparameters.dimensions))  # type: ignore[call-overload]
            weights = await run(train_projection, data, start, progress.config, progress.on_step, progress.on_epoch,
                                cancelled)  # fmt: skip
        else:
            weights = await run(train_adapter, data, progress.config, progress.on_step, progress.on_epoch, cancelled)
        self._check_cancelled(job.id)
        await self._publish(job, weights, progress.rows, tokens * progress.config.epochs)

    def _read_files(self, job: FineTuningJob) -> tuple[list[Example], list[Example]]:
        if job.training_file is None:
            return [], []
        method = "supervised" if job.method.type == "projection" else job.method.type
        examples = self._read_examples(job.training_file, MIN_TRAINING_EXAMPLES, method, "training_file")
        validation = []
        if job.validation_file:
            validation = self._read_examples(job.validation_file, MIN_VALIDATION_EXAMPLES, method, "validation_file")
        return examples, validation

    def _read_examples(self, file_id: str, minimum: int, method: str, param: str) -> list[Example]:
        try:
            return parse_examples(self.files.lines(file_id), minimum, method)
        except TrainingFileError as exc:
            raise TrainingFileError(f"{file_id}: {exc}", param=param) from None

    async def _publish(self, job: FineTuningJob, weights: np.ndarray, rows: list[dict], trained_tokens: int) -> None:
        await self.adapters.save(job.id, weights)
        result = await save_bytes(self.files, "step_metrics.csv", "fine-tune-results", metrics_csv(rows))
        name = model_id(job)
        await self._move(job.id, f"New fine-tuned model created: {name}", status="succeeded", fine_tuned_model=name,
                   result_files=[result.id], trained_tokens=trained_tokens, finished_at=int(time.time()),
                   estimated_finish=None)  # fmt: skip
        # Served only once the job is on record as succeeded: a cancel that came first publishes nothing.
        self.registry.add(fine_tuned(job, self.registry.get(job.model), weights, int(time.time())))
        await self.jobs.add_event(job.id, "The job has successfully completed")

    async def _embed(
        self, job: FineTuningJob, examples: list[Example], with_mined_negatives: bool
    ) -> tuple[TrainingSet, int]:
        """Base-model vectors for the queries, the passages (each distinct text once) and the negatives."""
        passages = list(dict.fromkeys([e.positive for e in examples] + [n for e in examples for n in e.negatives]))
        queries = await self.registry.embed(job.model, [e.query for e in examples], truncate=True)
        embedded = await self.registry.embed(job.model, passages, truncate=True)
        row = {text: i for i, text in enumerate(passages)}
        vectors = embedded.vectors
        negatives = [vectors[[row[n] for n in e.negatives]] if e.negatives else vectors[:0] for e in examples]
        if with_mined_negatives and job.hard_negatives is not None:
            mined = await self._mine_negatives(job, queries.vectors, examples)
            negatives = [np.concatenate([own, extra]) for own, extra in zip(negatives, mined, strict=True)]
            await self.jobs.add_event(
                job.id, f"Mined {sum(len(m) for m in mined)} hard negatives from index '{job.hard_negatives.index}'"
            )
        data = TrainingSet(
            queries.vectors, vectors[[row[e.positive] for e in examples]], [e.positive for e in examples], negatives
        )
        return data, queries.prompt_tokens + embedded.prompt_tokens

    async def _mine_negatives(
        self, job: FineTuningJob, queries: np.ndarray, examples: list[Example]
    ) -> list[np.ndarray]:
        """For each query, its nearest documents in the index that are not its own positive passage."""
        assert job.hard_negatives is not None
        count = job.hard_negatives.count
        positives_of: dict[str, set[str]] = {}
        for e in examples:  # a query may have several positives: none of them is a negative
            positives_of.setdefault(e.query, set()).add(e.positive.strip())
        widest = max(len(p) for p in positives_of.values())
        nearest = await self.search.nearest(job.hard_negatives.index, queries, count + widest + 2)
        mined = []
        for hits, example in zip(nearest, examples, strict=True):
            chosen = [h.vector for h in hits if h.text.strip() not in positives_of[example.query]][:count]
            mined.append(np.stack(chosen) if chosen else np.zeros((0, queries.shape[1]), np.float32))
        return mined


class _Progress:
    """A running job's step metrics, events, estimated finish and per-epoch checkpoints. Called from the training
    thread: what it records goes through the event loop (`on_loop`), as every store call does."""

    def __init__(
        self,
        service: FineTuningService,
        job: FineTuningJob,
        examples: int,
        valid: TrainingSet | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.service = service
        self.loop = loop
        self.job = job
        self.valid = valid
        self.config = training_config(job)
        self.total = -(-examples // self.config.batch_size) * self.config.epochs
        self.started = time.time()
        self.rows: list[dict] = []

    def on_step(self, step: StepMetrics, weights: np.ndarray) -> None:
        self.rows.append({"step": step.step, "train_loss": step.loss, "train_accuracy": step.accuracy})
        if step.step % 10 == 0 or step.step == self.total:
            jobs = self.service.jobs
            self.on_loop(jobs.add_event(
                self.job.id,
                f"Step {step.step}/{self.total}: training loss={step.loss:.4f}",
                data={"step": step.step, "train_loss": step.loss, "train_mean_token_accuracy": step.accuracy,
                      "total_steps": self.total},
                type_="metrics",
            ))  # fmt: skip
            remaining = (time.time() - self.started) / step.step * (self.total - step.step)
            self.on_loop(jobs.update(self.job.id, estimated_finish=int(time.time() + remaining)))

    def on_loop(self, work: Coroutine[Any, Any, object]) -> None:
        """Run a store call on the event loop and wait for it (this thread trains; the loop owns the stores). The
        bound: a loop stopped under a running job fails the job instead of leaving this thread waiting forever."""
        asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=120)

    def on_epoch(self, epoch: int, weights: np.ndarray) -> None:
        last = self.rows[-1]
        valid_loss = valid_accuracy = None
        if self.valid is not None:
            loss = projection_infonce if self.job.method.type == "projection" else infonce
            valid_loss, valid_accuracy = evaluate(weights, self.valid, self.config.batch_size, self.config.temperature,
                                                  loss)  # fmt: skip
            last.update(valid_loss=valid_loss, valid_accuracy=valid_accuracy)
        step = last["step"]
        self.on_loop(self.service.adapters.save(f"{self.job.id}-step-{step}", weights))
        self.on_loop(self.service.jobs.add_checkpoint(
            self.job.id,
            f"{model_id(self.job)}:ckpt-step-{step}",
            step,
            CheckpointMetrics(
                step=step, train_loss=last["train_loss"], train_mean_token_accuracy=last["train_accuracy"],
                valid_loss=valid_loss, valid_mean_token_accuracy=valid_accuracy,
                full_valid_loss=valid_loss, full_valid_mean_token_accuracy=valid_accuracy,
            ),
        ))  # fmt: skip
        message = f"Checkpoint created at step {step} (epoch {epoch}/{self.config.epochs})"
        self.on_loop(self.service.jobs.add_event(self.job.id, message))
