"""Prometheus metrics, in a registry owned by one app (two apps in one process keep separate counts)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from indexes.values import SearchPath

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Gauges = dict[str, list[tuple[dict[str, str], float]]]  # metric name -> (labels, value) samples


class _StateCollector(Collector):
    """Values read when Prometheus scrapes: index sizes, cache counters, jobs by status."""

    def __init__(self, read: Callable[[], Gauges]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        documentation = {
            "vsearch_index_documents": "Documents in each index",
            "vsearch_index_vectors": "Vectors (chunks) in each index",
            "vsearch_index_bytes": "Bytes on disk of each index",
            "vsearch_embedding_cache_hits": "Inputs served from the embedding cache since start",
            "vsearch_embedding_cache_misses": "Inputs the embedding cache did not have since start",
            "vsearch_embedding_cache_entries": "Entries in the embedding cache",
            "vsearch_fine_tuning_jobs": "Fine-tuning jobs by status",
            "vsearch_http_requests_in_flight": "Requests being served now (those the in-flight bound counts)",
        }
        for name, samples in self.read().items():
            labels = sorted(samples[0][0]) if samples else []
            family = GaugeMetricFamily(name, documentation.get(name, name), labels=labels)
            for label_values, value in samples:
                family.add_metric([label_values[k] for k in labels], value)
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vsearch_http_requests", "HTTP requests by route and status", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "vsearch_http_request_seconds", "HTTP request latency by route", ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry,
        )  # fmt: skip
        self.searches = Counter(
            "vsearch_searches", "Searches by engine and how the dense list was found: unfiltered, exact (a filter's "
            "few matches scored one by one), selector (FAISS over the listed matches), overfetch (FAISS, candidates "
            "tested), iterative (pgvector's HNSW walked until enough pass), lexical (no dense list)",
            ["engine", "path"], registry=self.registry,
        )  # fmt: skip
        self._storage_reads: list[Callable[[], Awaitable[Gauges]]] = []
        self._storage: Gauges = {}
        self.registry.register(_StateCollector(lambda: self._storage))
        self.embedded = Counter(
            "vsearch_embedded_inputs", "Inputs embedded, by model (rate() gives embeddings per second)", ["model"],
            registry=self.registry,
        )  # fmt: skip

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def count_embedded(self, model: str, count: int) -> None:
        self.embedded.labels(model).inc(count)

    def count_search(self, engine: str, path: SearchPath) -> None:
        self.searches.labels(engine, path).inc()

    def watch(self, read: Callable[[], Gauges]) -> None:
        """Gauges read from memory at each scrape."""
        self.registry.register(_StateCollector(read))

    def watch_storage(self, read: Callable[[], Awaitable[Gauges]]) -> None:
        """Gauges read from storage at each scrape (awaited by render(), before the registry is read)."""
        self._storage_reads.append(read)

    async def render(self) -> bytes:
        self._storage = {}
        for read in self._storage_reads:
            self._storage.update(await read())
        return generate_latest(self.registry)
