"""/health (liveness), /ready (readiness) and /metrics (Prometheus)."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency

from service.api.errors import error_responses
from service.embeddings.registry import EmbedderRegistry
from service.errors import Unavailable
from service.metrics import CONTENT_TYPE, Metrics
from service.search.service import SearchService


@get("/health", summary="Liveness: the process answers", tags=["operations"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", responses=error_responses(503, edge=False), summary="Readiness: models loaded and indexes reachable",
     tags=["operations"])  # fmt: skip
async def ready(registry: NamedDependency[EmbedderRegistry], search: NamedDependency[SearchService]) -> Response[dict]:
    models = [embedder.model_id for embedder in await registry.listed()]
    try:
        indexes = await search.index_names()
    except OSError as exc:
        raise Unavailable(f"Not ready: the data dir cannot be read ({exc}).", code="not_ready") from None
    if not models:
        raise Unavailable("Not ready: no model is loaded.", code="not_ready")
    return Response({"status": "ready", "models": models, "indexes": len(indexes)})


@get("/metrics", responses=error_responses(401, edge=False), summary="Prometheus metrics", tags=["operations"],
     media_type=CONTENT_TYPE)  # fmt: skip
async def metrics(metrics: NamedDependency[Metrics]) -> Response[bytes]:
    return Response(await metrics.render(), media_type=CONTENT_TYPE)
