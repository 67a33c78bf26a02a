"""Services: everything with state that a running app owns, built from the settings, closed on shutdown. The API
reaches the domain only through these doors: search, fine_tuning (with its files), registry (the models)."""

from __future__ import annotations

from dataclasses import dataclass

from indexes.catalog import IndexCatalog
from indexes.contract import CatalogContract
from indexes.postgres.catalog import SCHEMA as CATALOG_SCHEMA
from indexes.postgres.catalog import PgCatalog
from indexes.postgres.database import PgDatabase
from indexes.store import StoreOptions
from service.config import Settings
from service.embeddings.cache import PG_SCHEMA as CACHE_SCHEMA
from service.embeddings.cache import CachedEmbedder, EmbeddingCache, PgEmbeddingCache
from service.embeddings.local import InferenceOptions, LocalEmbedder
from service.embeddings.model_files import bundled_model_files, load_model_files
from service.embeddings.registry import EmbedderRegistry
from service.embeddings.remote import RemoteEmbedder, RemoteProvider
from service.finetune.adapters import PG_SCHEMA as ADAPTERS_SCHEMA
from service.finetune.adapters import AdapterFiles, AdapterStore, PgAdapters
from service.finetune.files import PG_SCHEMA as FILES_SCHEMA
from service.finetune.files import FileStore, PgFileStore
from service.finetune.jobs import PG_SCHEMA as JOBS_SCHEMA
from service.finetune.jobs import JobStore, PgJobStore
from service.finetune.service import FineTuningService, SharedJobs
from service.metrics import Gauges, Metrics
from service.search.service import SearchService


@dataclass
class Services:
    settings: Settings
    registry: EmbedderRegistry
    search: SearchService
    files: FileStore
    fine_tuning: FineTuningService
    providers: list[RemoteProvider]
    cache: EmbeddingCache
    metrics: Metrics
    database: PgDatabase | None = None  # with database_url: the pool every store above shares

    async def start(self) -> None:
        await self.registry.start()
        await self.fine_tuning.start()

    async def stop(self) -> None:
        await self.fine_tuning.stop()
        for provider in self.providers:
            await provider.aclose()
        self.close()

    def gauges(self) -> Gauges:
        """What Prometheus reads at each scrape."""
        indexes = [(info.config.name, info.stats) for info in self.search.index_stats()]
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
        self.search.close()
        self.registry.close()
        self.cache.close()
        self.fine_tuning.jobs.close()
        self.files.close()
        if self.database is not None:
            self.database.close()


def build_registry(settings: Settings, cache: EmbeddingCache) -> tuple[EmbedderRegistry, list[RemoteProvider]]:
    registry = EmbedderRegistry()
    model_files = [bundled_model_files()] if settings.bundled_model else []
    model_files += [load_model_files(folder) for folder in settings.model_dirs]
    inference = InferenceOptions(threads=settings.inference_threads, workers=settings.inference_workers,
                                 spinning=settings.inference_spinning)  # fmt: skip
    for files in model_files:
        for precision in ("fp32", "int8") if settings.int8_models else ("fp32",):
            registry.add(LocalEmbedder(files, settings.data_dir / "models", precision, inference))
    providers = []
    for config in settings.providers:
        provider = RemoteProvider(config)
        providers.append(provider)
        for model in config.models:
            remote = RemoteEmbedder(provider, model)
            registry.add(CachedEmbedder(remote, cache) if config.cache else remote)
    return registry, providers


def postgres_schema() -> list[str]:
    """Every table and function vsearch keeps in PostgreSQL (idempotent statements: `vsearch migrate` runs them;
    each store also runs its own at start, under an advisory lock)."""
    return [*CATALOG_SCHEMA, *FILES_SCHEMA, *JOBS_SCHEMA, *ADAPTERS_SCHEMA, *CACHE_SCHEMA]


def build_services(settings: Settings) -> Services:
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    database = None
    if settings.database_url is not None:
        database = PgDatabase(settings.database_url, settings.database_pool_size,
                              int(settings.database_statement_timeout_s * 1000))  # fmt: skip
        cache: EmbeddingCache = PgEmbeddingCache(database, settings.cache_max_entries)
    else:
        cache = EmbeddingCache(data / "cache" / "embeddings.sqlite", settings.cache_max_entries)
    registry, providers = build_registry(settings, cache)
    registry.on_embedded = metrics.count_embedded
    if database is not None:
        catalog: CatalogContract = PgCatalog(database)
        files: FileStore = PgFileStore(database, data / "spool", settings.limits.max_upload_bytes)
        jobs: JobStore | PgJobStore = PgJobStore(database)
        adapters: AdapterStore = PgAdapters(database)
        shared = SharedJobs(lease_s=settings.job_lease_s)
    else:
        catalog = IndexCatalog(data / "indexes", settings.max_open_indexes,
                               StoreOptions(search_threads=settings.faiss_threads))  # fmt: skip
        files = FileStore(data / "files", settings.limits.max_upload_bytes)
        jobs = JobStore(data / "finetune" / "jobs.sqlite")
        adapters = AdapterFiles(data / "finetune" / "adapters")
        shared = None
    search = SearchService(catalog, registry, settings.limits)
    fine_tuning = FineTuningService(jobs, files, registry, search, adapters, shared)
    fine_tuning.load_models()
    if database is not None:
        registry.discover = fine_tuning.load_models  # models trained by another replica
    services = Services(settings, registry, search, files, fine_tuning, providers, cache, metrics, database)
    metrics.watch(services.gauges)
    return services
