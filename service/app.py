"""create_app(settings): the services a data dir needs, the Litestar app over them (routes, DI, the error
mapping, OpenAPI, lifespan), and the Edge around it all."""

from __future__ import annotations

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from service.api.cache import cache_stats
from service.api.console import console_assets, console_page, docs_renderers, swagger_assets
from service.api.edge import Edge, EdgePolicy
from service.api.embeddings import create_embeddings
from service.api.errors import exception_to_response
from service.api.files import files_router
from service.api.fine_tuning import fine_tuning_router
from service.api.health import health, metrics, ready
from service.api.indexes import indexes_router
from service.api.models import list_models, retrieve_model
from service.api.snapshots import snapshots_router
from service.api.vector_stores import vector_stores_router
from service.config import Settings
from service.services import Services, build_services


def create_app(settings: Settings, services: Services | None = None) -> Edge:
    """The ASGI app for `settings`; `services` are built from them unless given (tests may hold on to them)."""
    services = services or build_services(settings)

    def constant(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    router = Litestar(
        route_handlers=[
            create_embeddings,
            list_models,
            retrieve_model,
            indexes_router,
            snapshots_router,
            files_router,
            fine_tuning_router,
            vector_stores_router,
            cache_stats,
            console_page,
            console_assets,
            swagger_assets,
            health,
            ready,
            metrics,
        ],
        dependencies={
            "registry": constant(services.registry),
            "search": constant(services.search),
            "files": constant(services.files),
            "fine_tuning": constant(services.fine_tuning),
            "vector_stores": constant(services.vector_stores),
            "snapshots": constant(services.snapshots),
            "cache": constant(services.cache),
            "metrics": constant(services.metrics),
            "max_inputs": constant(settings.limits.max_inputs_per_request),
            "accept_token_ids": constant(settings.accept_token_ids),
        },
        exception_handlers={Exception: exception_to_response},
        on_startup=[services.start],
        on_shutdown=[services.stop],
        request_max_body_size=settings.limits.max_request_bytes,  # per route: uploads have their own limit
        # Pages of allowed_origins may call the API (the edge refuses every other origin before this).
        cors_config=CORSConfig(
            allow_origins=settings.allowed_origins,
            allow_headers=["authorization", "content-type", "x-request-id"],
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
        )
        if settings.allowed_origins
        else None,
        openapi_config=OpenAPIConfig(
            title="vsearch",
            version="0.1.0",
            description="Self-hosted semantic search with OpenAI-compatible embeddings and fine-tuning.",
            path="/docs",
            render_plugins=docs_renderers,  # Swagger UI from the package's own files: no CDN
            # "Authorize" in the docs: the key every route takes when api_keys are set.
            components=Components(security_schemes={"apiKey": SecurityScheme(type="http", scheme="bearer")}),
            security=[{"apiKey": []}],
        ),
        logging_config=None,  # logging is the process's business (service/logs.py), not each app's
        debug=False,
    )
    return Edge(router, EdgePolicy.of(settings), services.metrics)
