"""/health (liveness), /ready (readiness) and /metrics (Prometheus)."""

from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.di import NamedDependency

from service.errors import ERROR_RESPONSES, VsearchError
from service.metrics import CONTENT_TYPE, Metrics
from service.services import Services


class NotReady(VsearchError):
    status_code = 503
    type = "server_error"
    code = "not_ready"


@get("/health", responses=ERROR_RESPONSES, summary="Liveness: the process answers", tags=["operations"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", responses=ERROR_RESPONSES, summary="Readiness: models loaded and indexes reachable", tags=["operations"])
async def ready(services: NamedDependency[Services]) -> Response[dict]:
    models = [embedder.model_id for embedder in services.registry.all()]
    try:
        indexes = await asyncio.to_thread(services.catalog.names)
    except OSError as exc:
        raise NotReady(f"Not ready: the data dir cannot be read ({exc}).") from None
    if not models:
        raise NotReady("Not ready: no model is loaded.")
    return Response({"status": "ready", "models": models, "indexes": len(indexes)})


@get("/metrics", responses=ERROR_RESPONSES, summary="Prometheus metrics", tags=["operations"], media_type=CONTENT_TYPE)
async def metrics(metrics: NamedDependency[Metrics]) -> Response[bytes]:
    return Response(await asyncio.to_thread(metrics.render), media_type=CONTENT_TYPE)
