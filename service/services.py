"""Services: everything with state that a running app owns, built from the settings, closed on shutdown. The API
reaches the domain only through these doors: search, fine_tuning (with its files), vector_stores (with their
background processor), registry (the models)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indexes.contract import CatalogContract
from indexes.databases.loop import run
from indexes.databases.postgres import PgDatabase
from indexes.databases.sqlite import Database
from indexes.embedded.catalog import IndexCatalog
from indexes.embedded.store import StoreOptions
from indexes.postgres.catalog import PgCatalog
from service.config import Settings
from service.embeddings.cache import CachedEmbedder, EmbeddingCache, PgEmbeddingCache, SqliteEmbeddingCache
from service.embeddings.local import InferenceOptions, LocalEmbedder
from service.embeddings.model_files import bundled_model_files, load_model_files
from service.embeddings.registry import EmbedderRegistry
from service.embeddings.remote import RemoteEmbedder, RemoteProvider
from service.finetune.adapters import AdapterFiles, AdapterStore, PgAdapters
from service.finetune.files import FileStore, LocalFileStore, PgFileStore, Spool
from service.finetune.jobs import JobStore, PgJobStore, SqliteJobStore
from service.finetune.service import FineTuningService, SharedJobs
from service.metrics import Gauges, Metrics
from service.search.service import SearchService
from service.snapshots.schedule import SnapshotSchedule
from service.snapshots.service import SnapshotService
from service.vector_stores.service import VectorStoreOptions, VectorStoreService
from service.vector_stores.tables import VectorStoreTables, pg_dialect, sqlite_dialect
from service.vector_stores.worker import FileProcessor


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
    vector_stores: VectorStoreService
    processor: FileProcessor  # the vector stores' background work
    snapshots: SnapshotService
    schedule: SnapshotSchedule | None  # scheduled snapshots (snapshot_interval_h), if on
    database: PgDatabase | None = None  # with database_url: the pool every store above shares

    async def start(self) -> None:
        await self.registry.start()
        await self.fine_tuning.start()
        await self.processor.start()
        if self.schedule is not None:
            await self.schedule.start()

    async def stop(self) -> None:
        if self.schedule is not None:
            await self.schedule.stop()
        await self.processor.stop()
        await self.fine_tuning.stop()
        for provider in self.providers:
            await provider.aclose()
        await run(self.close)  # checkpoints every open index

    async def gauges(self) -> Gauges:
        """What Prometheus reads at each scrape."""
        indexes = [(info.config.name, info.stats) for info in await self.search.index_stats()]
        cache = self.cache.stats()
        jobs = await self.fine_tuning.jobs.count_by_status()
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
        self.vector_stores.tables.close()
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
        (data / "cache").mkdir(exist_ok=True)
        cache_db = Database(data / "cache" / "embeddings.sqlite", synchronous="NORMAL")
        cache = SqliteEmbeddingCache(cache_db, settings.cache_max_entries)
    registry, providers = build_registry(settings, cache)
    registry.on_embedded = metrics.count_embedded
    if database is not None:
        catalog: CatalogContract = PgCatalog(database, on_search=lambda path: metrics.count_search("postgres", path))
        files: FileStore = PgFileStore(Spool(data / "spool", settings.limits.max_upload_bytes), database)
        jobs: JobStore = PgJobStore(database)
        adapters: AdapterStore = PgAdapters(database)
        shared = SharedJobs(lease_s=settings.job_lease_s)
        tables = VectorStoreTables(pg_dialect(database))
    else:
        options = StoreOptions(search_threads=settings.faiss_threads,
                               on_search=lambda path: metrics.count_search("embedded", path))  # fmt: skip
        catalog = IndexCatalog(data / "indexes", settings.max_open_indexes, options)
        files_dir = data / "files"
        files = LocalFileStore(Spool(files_dir, settings.limits.max_upload_bytes), Database(files_dir / "files.sqlite"))
        (data / "finetune").mkdir(exist_ok=True)
        jobs = SqliteJobStore(Database(data / "finetune" / "jobs.sqlite"))
        adapters = AdapterFiles(data / "finetune" / "adapters")
        shared = None
        (data / "vector_stores").mkdir(exist_ok=True)
        tables = VectorStoreTables(sqlite_dialect(Database(data / "vector_stores" / "records.sqlite")))
    search = SearchService(catalog, registry, settings.limits)
    fine_tuning = FineTuningService(jobs, files, registry, search, adapters, shared)  # its start() loads the models
    if database is not None:
        registry.discover = fine_tuning.load_models  # models trained by another replica
    options = VectorStoreOptions(default_model=settings.vector_store_model, workers=settings.vector_store_workers,
                                 lease_s=settings.job_lease_s, poll_s=1.0 if database is not None else 10.0,
                                 sweep_s=settings.vector_store_sweep_s)  # fmt: skip
    vector_stores = VectorStoreService(tables, files, registry=registry, search=search, options=options)
    processor = FileProcessor(vector_stores, shared=database is not None)
    snapshots = SnapshotService(settings.snapshot_dir or data / "snapshots", search,
                                settings.limits.max_snapshot_upload_bytes, shared=database is not None)  # fmt: skip
    schedule = None
    if settings.snapshot_interval_h > 0:
        schedule = SnapshotSchedule(snapshots, settings.snapshot_interval_h * 3600, settings.snapshot_keep)
    services = Services(settings, registry, search, files, fine_tuning, providers, cache, metrics, vector_stores,
                        processor, snapshots, schedule, database)  # fmt: skip
    metrics.watch_storage(services.gauges)
    return services


def sqlite_files(data: Path) -> dict[str, Path]:
    """The embedded engine's databases besides the indexes', by component (schema versions, backups)."""
    return {"jobs": data / "finetune" / "jobs.sqlite", "files": data / "files" / "files.sqlite",
            "cache": data / "cache" / "embeddings.sqlite",
            "vector_stores": data / "vector_stores" / "records.sqlite"}  # fmt: skip


def schema_versions(services: Services) -> dict[str, int]:
    """The schema version of each store's database (`vsearch migrate` prints them); each index's own file has its
    version too."""
    if services.database is not None:
        return services.database.versions()
    versions = {}
    for name, path in sqlite_files(services.settings.data_dir).items():
        db = Database(path)
        try:
            versions[name] = db.version()
        finally:
            db.close()
    return versions
