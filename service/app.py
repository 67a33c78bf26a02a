"""create_app(settings) -> Litestar: builds the services a data dir needs and wires routes, DI and errors."""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from service.api.cache import cache_stats
from service.api.embeddings import create_embeddings
from service.api.files import files_router
from service.api.fine_tuning import fine_tuning_router
from service.api.health import health, metrics, ready
from service.api.indexes import indexes_router
from service.api.models import list_models, retrieve_model
from service.config import Settings
from service.errors import error_to_response
from service.middleware import ApiKeyMiddleware, InFlightLimitMiddleware, ObservabilityMiddleware
from service.services import build_services


def create_app(settings: Settings) -> Litestar:
    services = build_services(settings)

    def constant(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    return Litestar(
        route_handlers=[
            create_embeddings,
            list_models,
            retrieve_model,
            indexes_router,
            files_router,
            fine_tuning_router,
            cache_stats,
            health,
            ready,
            metrics,
        ],
        dependencies={
            "services": constant(services),
            "registry": constant(services.registry),
            "search": constant(services.search),
            "files": constant(services.fine_tuning.files),
            "fine_tuning": constant(services.fine_tuning),
            "cache": constant(services.cache),
            "metrics": constant(services.metrics),
            "max_inputs": constant(settings.max_inputs_per_request),
        },
        # Outermost first: every request is observed, then checked for a key, then counted against the limit.
        middleware=[
            DefineMiddleware(ObservabilityMiddleware, metrics=services.metrics),
            DefineMiddleware(ApiKeyMiddleware, keys=settings.api_keys),
            DefineMiddleware(InFlightLimitMiddleware, limit=settings.max_requests_in_flight),
        ],
        exception_handlers={Exception: error_to_response},
        on_startup=[services.start],
        on_shutdown=[services.stop],
        request_max_body_size=settings.max_request_bytes,
        openapi_config=OpenAPIConfig(
            title="vsearch",
            version="0.1.0",
            description="Self-hosted semantic search with OpenAI-compatible embeddings and fine-tuning.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin(path="/openapi.json")],
        ),
        state=State({"services": services, "api_keys": settings.api_keys}),
        logging_config=None,  # logging is the process's business (service/logs.py), not each app's
        debug=False,
    )
