"""Services: everything with state that a running app owns, built from the settings, closed on shutdown."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from indexes.catalog import IndexCatalog
from service.config import Settings
from service.embeddings.cache import CachedEmbedder, EmbeddingCache
from service.embeddings.local import LocalEmbedder
from service.embeddings.model_files import bundled_model_files, load_model_files
from service.embeddings.registry import EmbedderRegistry
from service.embeddings.remote import ProviderSettings, RemoteEmbedder, RemoteModel, RemoteProvider
from service.finetune.files import FileStore
from service.finetune.jobs import JobStore
from service.finetune.service import FineTuningService
from service.metrics import Metrics
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
    metrics: Metrics

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

    def gauges(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """What Prometheus reads at each scrape."""
        indexes = []
        for name in self.catalog.names():
            stats = self.catalog.get(name).stats()
            indexes.append((name, stats))
        cache = self.cache.stats()
        jobs = self.fine_tuning.jobs.count_by_status()
        return {
            "vsearch_index_documents": [({"index": n}, s.document_count) for n, s in indexes],
            "vsearch_index_vectors": [({"index": n}, s.vector_count) for n, s in indexes],
            "vsearch_index_bytes": [({"index": n}, s.bytes) for n, s in indexes],
            "vsearch_embedding_cache_hits": [({}, cache.hits)],
            "vsearch_embedding_cache_misses": [({}, cache.misses)],
            "vsearch_embedding_cache_entries": [({}, cache.entries)],
            "vsearch_fine_tuning_jobs": [({"status": status}, count) for status, count in sorted(jobs.items())],
        }

    def close(self) -> None:
        self.catalog.close()  # checkpoints every open index
        self.registry.close()
        self.cache.close()


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    model_cache = settings.data_dir / "models"
    metrics = Metrics()
    registry = EmbedderRegistry(on_embedded=metrics.count_embedded)
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
    search = SearchService(catalog, registry, settings.max_documents_per_request, settings.max_top_k)
    files = FileStore(settings.data_dir / "files", settings.max_upload_bytes)
    fine_tuning = FineTuningService(
        JobStore(settings.data_dir / "finetune" / "jobs.sqlite"),
        files,
        registry,
        catalog,
        settings.data_dir / "finetune" / "adapters",
    )
    fine_tuning.load_models()
    services = Services(settings, registry, catalog, search, fine_tuning, providers, cache, metrics)
    metrics.watch(services.gauges)
    return services
