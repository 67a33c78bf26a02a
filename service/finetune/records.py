"""Fine-tuning's records, in OpenAI's shapes: the job request, the job, its events and checkpoints. The job store
keeps them as they are, and the API sends them as they are."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Auto = Literal["auto"]
JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
EventLevel = Literal["info", "warn", "error"]
EventType = Literal["message", "metrics"]


class Hyperparameters(Struct, forbid_unknown_fields=True, kw_only=True):
    """As asked ("auto" where not given); once the job runs, the values it used."""

    # At least 2: the adapter learns by telling each query's passage from the others in its batch.
    batch_size: Auto | Annotated[int, Meta(ge=2, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Meta(gt=0, le=100)] = "auto"
    n_epochs: Auto | Annotated[int, Meta(ge=1, le=200)] = "auto"
    # dpo only; accepted and recorded, not used by the trainer (README). Absent unless given.
    beta: Auto | Annotated[float, Meta(gt=0, le=2)] | msgspec.UnsetType = msgspec.UNSET
    # projection only (vsearch's method): the width of the fitted model's vectors. Absent unless given.
    dimensions: Annotated[int, Meta(ge=1, le=8192)] | msgspec.UnsetType = msgspec.UNSET


class SupervisedMethod(Struct, forbid_unknown_fields=True, kw_only=True):
    hyperparameters: Hyperparameters | None = None


class ProjectionMethod(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """vsearch's method: a model whose vectors are `hyperparameters.dimensions` wide, for documents and queries.
    Trained on the training file's pairs when there is one; else fitted on the stored vectors of `index`."""

    hyperparameters: Hyperparameters | None = None
    index: str | None = None


class Method(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    type: Literal["supervised", "dpo", "projection"]
    supervised: SupervisedMethod | None = None
    dpo: SupervisedMethod | None = None
    projection: ProjectionMethod | None = None


class WandbIntegration(Struct, forbid_unknown_fields=True, kw_only=True):
    project: str
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = None


class Integration(Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["wandb"]
    wandb: WandbIntegration


class HardNegatives(Struct, forbid_unknown_fields=True, kw_only=True):
    """vsearch extension: mine hard negatives for each training query from an index embedded with the job's
    model (its nearest documents that are not the query's positive)."""

    index: Annotated[str, Meta(description="An index embedded with the job's base model.", examples=["docs"])]
    count: Annotated[int, Meta(ge=1, le=32, description="Negatives mined per training query.")] = 4


class JobSpec(Struct, forbid_unknown_fields=True, kw_only=True):
    """What a new job is asked to do (OpenAI's create-job request)."""

    model: str
    training_file: str | None = None  # required, except by a projection fitted on an index
    validation_file: str | None = None
    suffix: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2147483647)] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated by OpenAI in favour of method
    integrations: list[Integration] | None = None
    metadata: Annotated[dict[str, Annotated[str, Meta(max_length=512)]], Meta(max_length=16)] | None = None
    hard_negatives: HardNegatives | None = None


class JobError(Struct, kw_only=True):
    code: str
    message: str
    param: str | None


class FineTuningJob(Struct, kw_only=True):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str] = msgspec.field(default_factory=list)
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str | None  # None only for a projection fitted on an index's vectors
    validation_file: str | None = None
    integrations: list[Integration] | None = None
    seed: int
    estimated_finish: int | None = None
    method: Method
    metadata: dict[str, str] | None = None
    suffix: str | None = None
    hard_negatives: HardNegatives | None = None


class JobEvent(Struct, kw_only=True):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: EventLevel
    message: str
    data: dict[str, Any] | None = None
    type: EventType = "message"


class CheckpointMetrics(Struct, kw_only=True, omit_defaults=True):
    step: float
    train_loss: float
    train_mean_token_accuracy: float
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class JobCheckpoint(Struct, kw_only=True):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int
