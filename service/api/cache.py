"""GET /v1/cache: the embedding cache's counters."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency

from service.api.errors import error_responses
from service.embeddings.cache import EmbeddingCache
from service.schemas import CacheStatsObject


@get("/v1/cache", responses=error_responses(), summary="Embedding cache statistics", tags=["embeddings"])
async def cache_stats(cache: NamedDependency[EmbeddingCache]) -> CacheStatsObject:
    stats = cache.stats()  # in memory
    return CacheStatsObject(hits=stats.hits, misses=stats.misses, entries=stats.entries, max_entries=cache.max_entries)
