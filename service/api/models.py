"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath

from service.api.errors import error_responses
from service.embeddings.base import Embedder
from service.embeddings.registry import EmbedderRegistry
from service.schemas import Model, ModelList


def _model(embedder: Embedder) -> Model:
    return Model(id=embedder.model_id, created=embedder.created, owned_by=embedder.owned_by)


@get("/v1/models", responses=error_responses(), summary="List models", tags=["models"])
async def list_models(registry: NamedDependency[EmbedderRegistry]) -> ModelList:
    return ModelList(data=[_model(embedder) for embedder in await registry.listed()])


@get("/v1/models/{model_id:path}", responses=error_responses(404), summary="Retrieve a model", tags=["models"])
async def retrieve_model(model_id: FromPath[str], registry: NamedDependency[EmbedderRegistry]) -> Model:
    return _model(await registry.known(model_id.lstrip("/")))
