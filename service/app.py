"""create_app(settings) -> Litestar: builds the services a data dir needs and wires routes, DI and errors."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from indexes.catalog import IndexCatalog
from service.api.cache import cache_stats
from service.api.embeddings import create_embeddings
from service.api.files import files_router
from service.api.fine_tuning import fine_tuning_router
from service.api.indexes import indexes_router
from service.api.models import list_models, retrieve_model
from service.config import Settings
from service.embeddings.cache import CachedEmbedder, EmbeddingCache
from service.embeddings.local import LocalEmbedder
from service.embeddings.model_files import bundled_model_files, load_model_files
from service.embeddings.registry import EmbedderRegistry
from service.embeddings.remote import ProviderSettings, RemoteEmbedder, RemoteModel, RemoteProvider
from service.errors import error_to_response
from service.finetune.files import FileStore
from service.finetune.jobs import JobStore
from service.finetune.service import FineTuningService
from service.search import SearchService

log = logging.getLogger("vsearch")


@dataclass
class Services:
    """Everything with state that a running app owns; closed on shutdown."""

    settings: Settings
    registry: EmbedderRegistry
    catalog: IndexCatalog
    search: SearchService
    fine_tuning: FineTuningService
    providers: list[RemoteProvider]
    cache: EmbeddingCache

    async def start(self) -> None:
        for embedder in self.registry.all():
            if hasattr(embedder, "probe"):
                try:
                    await embedder.probe()
                except Exception as exc:  # the upstream may come up later; index creation says so meanwhile
                    log.warning("could not learn the dimensions of %s: %s", embedder.model_id, exc)
        await self.fine_tuning.start()

    async def stop(self) -> None:
        await self.fine_tuning.stop()
        for provider in self.providers:
            await provider.aclose()
        self.close()

    def close(self) -> None:
        self.catalog.close()  # checkpoints every open index
        self.registry.close()
        self.cache.close()


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    model_cache = settings.data_dir / "models"
    registry = EmbedderRegistry()
    model_files = [bundled_model_files()] if settings.bundled_model else []
    model_files += [load_model_files(folder) for folder in settings.model_dirs]
    for files in model_files:
        registry.add(LocalEmbedder(files, model_cache, settings.inference_threads))
    cache = EmbeddingCache(settings.data_dir / "cache" / "embeddings.sqlite", settings.cache_max_entries)
    providers = []
    for config in settings.providers:
        provider = RemoteProvider(
            ProviderSettings(
                name=config.name,
                base_url=config.base_url,
                api_key=os.environ.get(config.api_key_env) if config.api_key_env else None,
                max_batch_inputs=config.max_batch_inputs,
                max_batch_bytes=config.max_batch_bytes,
                max_concurrency=config.max_concurrency,
                timeout_s=config.timeout_s,
                max_retries=config.max_retries,
                deadline_s=config.deadline_s,
            )
        )
        providers.append(provider)
        for model in config.models:
            remote = RemoteEmbedder(
                provider,
                RemoteModel(
                    id=model.id,
                    upstream_id=model.upstream_id or model.id,
                    max_input_tokens=model.max_input_tokens,
                    supports_dimensions=model.supports_dimensions,
                    dimensions=model.dimensions,
                ),
            )
            registry.add(CachedEmbedder(remote, cache) if config.cache else remote)
    catalog = IndexCatalog(settings.data_dir / "indexes")
    search = SearchService(catalog, registry, settings.max_documents_per_request)
    files = FileStore(settings.data_dir / "files", settings.max_upload_bytes)
    fine_tuning = FineTuningService(
        JobStore(settings.data_dir / "finetune" / "jobs.sqlite"),
        files,
        registry,
        catalog,
        settings.data_dir / "finetune" / "adapters",
    )
    fine_tuning.load_models()
    return Services(settings, registry, catalog, search, fine_tuning, providers, cache)


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
        ],
        dependencies={
            "registry": constant(services.registry),
            "search": constant(services.search),
            "files": constant(services.fine_tuning.files),
            "fine_tuning": constant(services.fine_tuning),
            "cache": constant(services.cache),
            "max_inputs": constant(settings.max_inputs_per_request),
        },
        exception_handlers={Exception: error_to_response},
        on_startup=[services.start],
        on_shutdown=[services.stop],
        openapi_config=OpenAPIConfig(
            title="vsearch",
            version="0.1.0",
            description="Self-hosted semantic search with OpenAI-compatible embeddings and fine-tuning.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin(path="/openapi.json")],
        ),
        state=State({"services": services}),
        debug=False,
    )
