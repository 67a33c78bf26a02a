"""/health (liveness), /ready (readiness) and /metrics (Prometheus)."""

from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.di import NamedDependency

from service.metrics import CONTENT_TYPE, Metrics
from service.services import Services


@get("/health", summary="Liveness: the process answers", tags=["operations"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", summary="Readiness: models loaded and indexes reachable", tags=["operations"])
async def ready(services: NamedDependency[Services]) -> Response[dict]:
    models = [embedder.model_id for embedder in services.registry.all()]
    try:
        indexes = await asyncio.to_thread(services.catalog.names)
    except OSError as exc:
        return Response({"status": "not_ready", "reason": f"data dir unreadable: {exc}"}, status_code=503)
    if not models:
        return Response({"status": "not_ready", "reason": "no model loaded"}, status_code=503)
    return Response({"status": "ready", "models": models, "indexes": len(indexes)})


@get("/metrics", summary="Prometheus metrics", tags=["operations"], media_type=CONTENT_TYPE)
async def metrics(metrics: NamedDependency[Metrics]) -> Response[bytes]:
    return Response(await asyncio.to_thread(metrics.render), media_type=CONTENT_TYPE)
