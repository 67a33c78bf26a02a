"""Filters against a plain Python evaluation, exact filtered search, restarts, recovery and concurrency."""

from __future__ import annotations

import platform
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import httpx
import numpy as np
import pytest
import sqlite_utils.utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexes.config import HnswConfig, IndexConfig
from indexes.databases.sqlite import sqlite3
from indexes.embedded.catalog import IndexCatalog
from indexes.embedded.memory import HUGE_PAGE, LARGE_ALLOCATION, map_large_allocations, release_free_memory
from indexes.embedded.planner import PlannerLimits, plan_filter
from indexes.embedded.store import IndexStore, StoreOptions
from indexes.embedded.vectors import VectorIndex
from indexes.values import ChunkRecord, DocumentRecord, SearchRequest
from tests.conftest import STORES, each_store
from tests.helpers import LiveServer, start_server, wait_until
from tests.test_indexes_api import MODEL, add, new_index, query


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest) -> LiveServer:
    """Every test here runs against the embedded store and against PostgreSQL."""
    return each_store(request)


# --- a plain Python evaluation of the filter language, to check the SQL compiler against --------------------------

MISSING = object()


def lookup(metadata: dict, path: str) -> Any:
    value: Any = metadata
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def equals(value: Any, target: Any) -> bool:
    if target is None:
        return value is None
    if isinstance(target, bool):
        return isinstance(value, bool) and value == target
    if is_number(target):
        return is_number(value) and value == target
    return isinstance(value, str) and value == target


def compare(value: Any, op: str, target: Any) -> bool:
    if not ((is_number(target) and is_number(value)) or (isinstance(target, str) and isinstance(value, str))):
        return False
    return {"$gt": value > target, "$gte": value >= target, "$lt": value < target, "$lte": value <= target}[op]


def matches(metadata: dict, spec: dict) -> bool:
    for key, condition in spec.items():
        if key == "$and":
            ok = all(matches(metadata, s) for s in condition)
        elif key == "$or":
            ok = any(matches(metadata, s) for s in condition)
        elif key == "$not":
            ok = not matches(metadata, condition)
        else:
            value = lookup(metadata, key)
            ops = condition if isinstance(condition, dict) else {"$eq": condition}
            ok = all(field_matches(value, op, target) for op, target in ops.items())
        if not ok:
            return False
    return True


def field_matches(value: Any, op: str, target: Any) -> bool:
    if op == "$eq":
        return equals(value, target)
    if op == "$ne":
        return not equals(value, target)
    if op == "$in":
        return any(equals(value, t) for t in target)
    if op == "$nin":
        return not any(equals(value, t) for t in target)
    if op == "$exists":
        return (value is not MISSING) == target
    return compare(value, op, target)


# --- random documents and filters --------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.5, -1.5, 2.0]),
    st.sampled_from(["x", "y", "z", ""]),
    st.booleans(),
    st.none(),
)
FIELDS = ["a", "b", "c", "nested.k", "missing"]


def random_metadata(rng: random.Random) -> dict:
    metadata: dict[str, Any] = {}
    choices: list[Any] = [-3, -1, 0, 1, 2, 3, 0.5, -1.5, 2.0, "x", "y", "z", "", True, False, None]
    for field in ("a", "b", "c"):
        if rng.random() < 0.8:
            metadata[field] = rng.choice(choices)
    if rng.random() < 0.6:
        metadata["nested"] = {"k": rng.choice(choices)} if rng.random() < 0.9 else "flat"
    if rng.random() < 0.2:
        metadata["list"] = [1, 2]
    return metadata


def field_conditions() -> st.SearchStrategy:
    ordered = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, -1.5]), st.sampled_from(["x", "y", ""]))
    return st.one_of(
        SCALARS,
        st.dictionaries(
            st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"]),
            SCALARS,
            min_size=1,
            max_size=2,
        ).map(lambda ops: {op: fix_operand(op, value) for op, value in ops.items()}),
        st.fixed_dictionaries({"$gt": ordered}),
    )


def fix_operand(op: str, value: Any) -> Any:
    if op in ("$in", "$nin"):
        return [value, "y"]
    if op == "$exists":
        return bool(value)
    if op in ("$gt", "$gte", "$lt", "$lte") and (value is None or isinstance(value, bool)):
        return 1
    return value


FILTERS = st.recursive(
    st.dictionaries(st.sampled_from(FIELDS), field_conditions(), min_size=1, max_size=2),
    lambda inner: st.one_of(
        st.fixed_dictionaries({"$and": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$or": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$not": inner}),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module", params=["undeclared", "declared"])
def random_index(server, request) -> tuple[str, dict[str, dict]]:
    """The same documents; "declared": every filtered field has an index of its own, added after the documents
    (so the index is built from them), and filters must give exactly the same results."""
    rng = random.Random(7)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        name = new_index(http, dimensions=4)
        documents = {f"d{i}": random_metadata(rng) for i in range(300)}
        add(
            http,
            name,
            [{"id": i, "metadata": m, "vector": [rng.random() for _ in range(4)]} for i, m in documents.items()],
        )
        if request.param == "declared":
            fields = {field: "keyword" for field in FIELDS}
            changed = http.patch(f"/v1/indexes/{name}", json={"metadata_indexes": fields})
            assert changed.status_code == 200 and changed.json()["metadata_indexes"] == fields, changed.text
    return name, documents


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=FILTERS)
def test_filters_match_python_evaluation(http, random_index, spec):
    name, documents = random_index
    expected = {doc_id for doc_id, metadata in documents.items() if matches(metadata, spec)}
    hits = query(http, name, vector=[0.5, 0.5, 0.5, 0.5], top_k=1000, filter=spec, include=[])
    assert {h["id"] for h in hits} == expected
    deleted_nothing = http.post(
        f"/v1/indexes/{name}/documents/delete", json={"filter": {"$and": [spec, {"a": "never"}]}}
    )
    assert deleted_nothing.json()["deleted"] == 0


@pytest.mark.parametrize(
    "spec",
    [
        {"a": [1, 2]},
        {"a": {"b": 1}},
        {"a": {"$gt": True}},
        {"a": {"$in": []}},
        {"a": {"$in": 3}},
        {"a": {"$exists": 1}},
        {"$nor": []},
        {"a..b": 1},
        {'a"); DROP TABLE documents; --': 1},
        {"a": {"$gt": 2**70}},
        {"$not": 3},
    ],
)
def test_invalid_filters_are_400(http, random_index, spec):
    name, _ = random_index
    response = http.post(f"/v1/indexes/{name}/query", json={"vector": [1, 0, 0, 0], "filter": spec})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "filter"
    assert "filter" in response.json()["error"]["message"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_filter_matching_one_in_ten_thousand(http, kind):
    rng = np.random.default_rng(1)
    name = new_index(http, dimensions=8, kind=kind)
    vectors = rng.normal(size=(10_000, 8)).round(4)
    for start in range(0, 10_000, 1000):
        add(
            http,
            name,
            [
                {"id": f"n{i}", "vector": vectors[i].tolist(), "metadata": {"rare": i == 4321, "group": i % 10}}
                for i in range(start, start + 1000)
            ],
        )
    far_away = (-vectors[4321]).tolist()  # the rare document is the worst match for this query
    hits = query(http, name, vector=far_away, top_k=5, filter={"rare": True})
    assert [h["id"] for h in hits] == ["n4321"]
    # A broad filter (1 in 10) still gives top_k results, all matching, best first.
    hits = query(http, name, vector=far_away, top_k=20, filter={"group": 3})
    assert len(hits) == 20 and all(int(h["id"][1:]) % 10 == 3 for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@pytest.mark.slow
def test_restart_finds_everything(tmp_path: Path):
    first = start_server(tmp_path)
    try:
        with httpx.Client(base_url=first.url, timeout=60) as http:
            name = new_index(http)
            add(http, name, [{"id": f"p{i}", "text": f"paragraph {i} about topic {i % 7}"} for i in range(40)])
            before = query(http, name, query="topic 3", top_k=10)
    finally:
        first.stop()
    second = start_server(tmp_path)
    try:
        with httpx.Client(base_url=second.url, timeout=60) as http:
            assert http.get(f"/v1/indexes/{name}").json()["document_count"] == 40
            assert query(http, name, query="topic 3", top_k=10) == before
    finally:
        second.stop()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["delete", "corrupt", "truncate"])
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_missing_or_corrupt_faiss_file_is_rebuilt(tmp_path: Path, damage: str, kind: str):
    first = start_server(tmp_path)
    try:
        with httpx.Client(base_url=first.url, timeout=60) as http:
            name = new_index(http, kind=kind)
            add(http, name, [{"id": f"p{i}", "text": f"note {i} on subject {i % 5}"} for i in range(30)])
            http.post(f"/v1/indexes/{name}/documents/delete", json={"ids": ["p1", "p2"]})
            before = query(http, name, query="subject 2", top_k=10)
    finally:
        first.stop()
    faiss_file = tmp_path / "indexes" / name / "vectors.faiss"
    assert faiss_file.exists()
    if damage == "delete":
        faiss_file.unlink()
    elif damage == "corrupt":
        data = bytearray(faiss_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        faiss_file.write_bytes(bytes(data))
    else:
        faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    second = start_server(tmp_path)
    try:
        with httpx.Client(base_url=second.url, timeout=60) as http:
            assert query(http, name, query="subject 2", top_k=10) == before
            assert http.get(f"/v1/indexes/{name}").json()["vector_count"] == 28
    finally:
        second.stop()


STORAGE = [("flat", "none"), ("hnsw", "none"), ("flat", "sq8"), ("hnsw", "sq8"), ("flat", "binary"),
           ("hnsw", "binary")]  # fmt: skip
SMALL_MERGES = StoreOptions(merge_size=20)  # so that FAISS's `main`, `fresh` and tombstones all take part


@pytest.mark.parametrize(("kind", "quantization"), STORAGE)
def test_crash_without_checkpoint_is_caught_up_from_sqlite(tmp_path: Path, kind: str, quantization: str):
    """A store that is never closed (a crash) still opens with every committed write, from an old checkpoint;
    quantized or not."""
    config = IndexConfig(name="crash", model=MODEL, dimensions=8, kind=kind, quantization=quantization)
    catalog = IndexCatalog(tmp_path, options=SMALL_MERGES)
    catalog.create(config)
    store = catalog.acquire("crash")
    rng = np.random.default_rng(3)

    def docs(ids: range) -> list[DocumentRecord]:
        return [DocumentRecord(f"d{i}", "", {}, "h", [ChunkRecord(0, 0, rng.normal(size=8).astype("f4"))]) for i in ids]

    store.upsert(docs(range(50)))
    store.checkpoint()  # the file on disk now reflects the first 50
    store.upsert(docs(range(40, 80)))  # replaces 10, adds 30: after the checkpoint
    store.delete(["d0", "d1"])
    expected = store.search(SearchRequest(top_k=100), np.ones((1, 8), "f4"), None)
    reopened = IndexStore(tmp_path / "crash", options=SMALL_MERGES)  # as if the process had died: no close
    got = reopened.search(SearchRequest(top_k=100), np.ones((1, 8), "f4"), None)
    assert [(h.id, round(h.score, 5)) for h in got] == [(h.id, round(h.score, 5)) for h in expected]
    assert len(got) == 78
    reopened.close()
    restarted = IndexStore(tmp_path / "crash", options=SMALL_MERGES)  # after a clean shutdown's checkpoint
    again = restarted.search(SearchRequest(top_k=100), np.ones((1, 8), "f4"), None)
    assert [(h.id, round(h.score, 5)) for h in again] == [(h.id, round(h.score, 5)) for h in expected]
    restarted.close()


@pytest.mark.parametrize("quantization", ["none", "binary"])
def test_a_checkpoint_with_the_older_id_map_still_loads(tmp_path: Path, quantization: str):
    """`main` was once an IDMap2 (it also keeps a map from id to position: 41 MiB at 1M, never read); checkpoints
    written then load and search as before."""
    config = IndexConfig(name="old", model=MODEL, dimensions=8, quantization=quantization)
    binary = quantization == "binary"
    old_main = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(8)) if binary else faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    vectors = VectorIndex(config, main=old_main, merge_size=10)
    rng = np.random.default_rng(4)
    data = rng.normal(size=(30, 8)).astype("f4")
    vectors.add(np.arange(30), data)
    vectors.merge()
    vectors.add(np.arange(30, 35), rng.normal(size=(5, 8)).astype("f4"))
    vectors.remove(np.array([3]))
    expected = vectors.search(data[:1], 10)
    vectors.save(tmp_path / "vectors.faiss", seq=7)
    loaded, seq = VectorIndex.load(tmp_path / "vectors.faiss", config) or (None, None)
    assert seq == 7 and loaded is not None
    got = loaded.search(data[:1], 10)
    assert got[1].tolist() == expected[1].tolist() and 3 not in got[1].tolist()
    assert np.allclose(got[0], expected[0])


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_each_deletion_is_excluded_from_the_next_search(kind: str):
    """The tombstones' selector is cached between searches: a deletion after a search must still take effect."""
    hnsw = HnswConfig() if kind == "hnsw" else None
    vectors = VectorIndex(IndexConfig(name="t", model=MODEL, dimensions=8, kind=kind, hnsw=hnsw), merge_size=10)
    data = np.random.default_rng(6).normal(size=(40, 8)).astype("f4")
    vectors.add(np.arange(40), data)
    vectors.merge()
    for gone in ([0], [1, 2], [5]):
        best = vectors.search(data[gone[0] : gone[0] + 1], 40)[1].tolist()
        assert gone[0] in best  # still there, then deleted
        vectors.remove(np.array(gone))
        after = vectors.search(data[gone[0] : gone[0] + 1], 40)[1].tolist()
        assert not set(gone) & set(after) and len(after) == len(set(after)) == 40 - len(vectors.tombstones)


@pytest.mark.skipif(platform.machine() != "x86_64" or sys.platform != "linux", reason="pysqlite3-binary: x86-64 Linux")
def test_sqlite_is_the_bundled_newer_one():
    """Where pyproject.toml installs pysqlite3-binary (CI, the Docker image), every store uses its SQLite."""
    assert sqlite3.__name__ == "pysqlite3" and sqlite3.sqlite_version_info >= (3, 51)
    assert sqlite_utils.utils.sqlite3 is sqlite3  # sqlite-utils picks it up too


def test_large_allocations_get_their_own_mappings():
    """glibc (Debian's, as in CI and the Docker image) takes the threshold the server sets at start."""
    assert map_large_allocations(LARGE_ALLOCATION)
    release_free_memory()  # and trimming is there to call after merges


def huge_page_kib(address: int, size: int) -> int:
    """AnonHugePages of this process's mappings over `size` bytes at `address` (madvise splits a mapping)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split()[0]
        if "-" in first and ":" not in first:  # a mapping's header: start-end perms ...
            start, end = (int(x, 16) for x in first.split("-"))
            inside = start < address + size and address < end
        elif inside and first == "AnonHugePages:":
            total += int(line.split()[1])
    return total


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_faiss_arrays_move_to_huge_pages_after_a_merge(tmp_path: Path, kind: str):
    """A merge is followed, in the background, by mapping `main`'s arrays with 2 MiB pages: same results."""
    map_large_allocations(LARGE_ALLOCATION)  # as the server does: each array its own mapping, none of numpy's
    hnsw = HnswConfig(m=8) if kind == "hnsw" else None
    store = IndexStore(tmp_path / "h", IndexConfig(name="h", model=MODEL, dimensions=512, kind=kind, hnsw=hnsw),
                       StoreOptions(merge_size=5000))  # fmt: skip
    data = np.random.default_rng(9).normal(size=(5000, 512)).astype("f4")
    store.upsert([DocumentRecord(f"d{i}", "", {}, "h", [ChunkRecord(0, 0, v)]) for i, v in enumerate(data)])
    codes, size = store._index.vectors._main_arrays()[0]
    assert size == data.nbytes  # the float32 vectors: 10 MB
    whole = (codes + size) // HUGE_PAGE - -(-codes // HUGE_PAGE)  # the huge pages that fit inside: 3 or 4
    assert whole >= 3
    request = SearchRequest(top_k=5)
    before = [[hit.id for hit in store.search(request, data[i : i + 1], None)] for i in range(0, 5000, 500)]
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[never]" not in thp.read_text():  # the kernel offers them (as here and in CI)
        deadline = time.monotonic() + 60
        while huge_page_kib(codes, size) < whole * 2048 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert huge_page_kib(codes, size) >= whole * 2048
    after = [[hit.id for hit in store.search(request, data[i : i + 1], None)] for i in range(0, 5000, 500)]
    assert after == before and [ids[0] for ids in after] == [f"d{i}" for i in range(0, 5000, 500)]
    store.close()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_deletions_compact(tmp_path: Path, kind: str):
    """Deleted vectors stay in FAISS as tombstones until they are half of it; then it is rebuilt without them."""
    store = IndexStore(tmp_path / "h", IndexConfig(name="h", model=MODEL, dimensions=4, kind=kind),
                       StoreOptions(compact_ratio=0.5, merge_size=10))  # fmt: skip
    rng = np.random.default_rng(5)
    for _ in range(5):  # rewrite the same 20 documents: 80 superseded vectors over time
        store.upsert(
            [
                DocumentRecord(f"d{i}", "", {}, "h", [ChunkRecord(0, 0, rng.normal(size=4).astype("f4"))])
                for i in range(20)
            ]
        )
    assert store.stats().faiss_vectors == 20 and store._index.vectors.ntotal <= 40
    assert len(store.search(SearchRequest(top_k=100), np.ones((1, 4), "f4"), None)) == 20
    store.close()


def test_queries_never_see_half_a_batch(http):
    name = new_index(http, dimensions=4)
    stop = threading.Event()
    failures: list[str] = []

    def reader() -> None:
        with httpx.Client(base_url=str(http.base_url), timeout=60) as client:
            while not stop.is_set():
                hits = query(client, name, vector=[1, 1, 1, 1], top_k=1000, include=["metadata"])
                sizes: dict[int, int] = {}
                for hit in hits:
                    sizes[hit["metadata"]["batch"]] = sizes.get(hit["metadata"]["batch"], 0) + 1
                failures.extend(f"batch {b} seen with {n} of 50" for b, n in sizes.items() if n != 50)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    rng = random.Random(0)
    for batch in range(12):
        ids = [f"b{batch}-{i}" for i in range(50)]
        add(
            http,
            name,
            [{"id": i, "vector": [rng.random() for _ in range(4)], "metadata": {"batch": batch}} for i in ids],
        )
    stop.set()
    for thread in readers:
        thread.join()
    assert not failures, failures[:5]
    assert http.get(f"/v1/indexes/{name}").json()["document_count"] == 600


def test_index_model_must_exist_for_query_model(http):
    response = http.post("/v1/indexes", json={"name": "qm", "model": MODEL, "query_model": "nope"})
    assert response.status_code == 404 and response.json()["error"]["param"] == "query_model"


def test_filter_planner_thresholds():
    limits = PlannerLimits(exact_limit=500, exact_share=0.004, broad_share=0.03)
    assert plan_filter(400, 0.004, enumerable=False, limits=limits) == "exact"
    assert plan_filter(3_000, 0.003, enumerable=True, limits=limits) == "exact"  # 1M documents: a small share
    assert plan_filter(1_000, 0.01, enumerable=True, limits=limits) == "selector"
    assert plan_filter(1_000, 0.01, enumerable=False, limits=limits) == "overfetch"  # listing them means a scan
    assert plan_filter(5_000, 0.05, enumerable=True, limits=limits) == "overfetch"


FORCED = {  # limits under which plan_filter() takes one path for every filter below (the selector needs a
    "exact": PlannerLimits(exact_limit=10**9),  # declared field)
    "selector": PlannerLimits(exact_limit=0, exact_share=0, broad_share=2.0),
    "overfetch": PlannerLimits(exact_limit=0, exact_share=0, broad_share=0.0),
}


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("path", list(FORCED))
def test_filtered_top_k_is_exact_on_every_path(tmp_path: Path, monkeypatch, kind: str, path: str):
    """Whichever path answers (exact scoring of the candidates, FAISS with an ID selector, FAISS over-fetch widened
    until enough pass), a filtered search gives exactly the brute-force filtered top k: on flat always, on HNSW
    wherever no graph walk is involved (exact scoring and the selector, which scans the graph's storage)."""
    import indexes.embedded.maintenance
    import indexes.embedded.planner
    from indexes.filters import parse_filter

    taken: list[str] = []
    monkeypatch.setattr(
        indexes.embedded.planner, "plan_filter", lambda *a, **k: taken.append(plan_filter(*a, **k)) or taken[-1]
    )
    options = StoreOptions(planner=FORCED[path], merge_size=1000)  # 3,000 vectors: `main` and `fresh` both searched
    catalog = IndexCatalog(tmp_path, options=options)
    catalog.create(IndexConfig(name="exact", model=MODEL, dimensions=8, kind=kind, metadata_indexes={"cat": "integer"}))
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(3500, 8)).astype("f4")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    with catalog.use("exact") as store:
        store.upsert([DocumentRecord(f"d{i}", "", {"cat": i % 100}, "h", [ChunkRecord(0, 0, vectors[i])])
                      for i in range(3500)])  # fmt: skip
        store.delete([f"d{i}" for i in range(0, 3500, 7)])  # tombstones in `main`, removals from `fresh`
        live = [i for i in range(3500) if i % 7]
        query = rng.normal(size=8).astype("f4")
        scores = unit @ (query / np.linalg.norm(query))
        for spec, matching in [({"cat": {"$gte": 20}}, lambda i: i % 100 >= 20),  # 80%
                               ({"cat": {"$in": [3, 4]}}, lambda i: i % 100 in (3, 4)),  # 2%: widened twice
                               ({"cat": 7}, lambda i: i % 100 == 7)]:  # fmt: skip
            hits = store.search(SearchRequest(top_k=10, filter=parse_filter(spec)), query[None, :], None)
            assert taken[-1] == path
            expected = sorted((i for i in live if matching(i)), key=lambda i: -scores[i])[:10]
            if kind == "hnsw" and path == "overfetch":  # a graph walk: approximate, but only matches, best first
                assert len(hits) == 10 and all(matching(int(h.id[1:])) for h in hits)
                assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
                continue
            assert [h.id for h in hits] == [f"d{i}" for i in expected], spec
            assert np.allclose([h.score for h in hits], scores[expected], atol=1e-5)
    catalog.close()


def test_the_id_selector_admits_exactly_the_allowed_ids():
    """FAISS's IDSelectorBitmap takes the bitmap's size in bytes; given the number of bits it reads past the
    array for ids beyond the last allowed one (found at 1M: 3 wrong hits in 1,000)."""
    allowed = np.array([3, 17, 64, 1000], dtype=np.int64)
    selector, bitmap = VectorIndex._selector(allowed)
    assert selector.n == len(bitmap) == 1000 // 8 + 1
    members = [i for i in range(0, 9000) if selector.is_member(i)]
    assert members == allowed.tolist()


@pytest.mark.parametrize("declared", [True, False])
def test_an_estimate_far_below_the_truth_still_gives_the_exact_top_k(tmp_path: Path, monkeypatch, declared: bool):
    """A sample can miss a filter's matches: the planner expects a handful, lists at most 4x that, finds more, and
    must then search over every match (a truncated candidate list would lose some of the true top k)."""
    import indexes.embedded.maintenance
    import indexes.embedded.planner
    from indexes.filters import parse_filter

    monkeypatch.setattr(
        indexes.embedded.planner.FilterPlanner, "matching_share", lambda self, index, where: 0.0001
    )  # an unlucky sample
    fields = {"cat": "integer"} if declared else {}
    options = StoreOptions(planner=PlannerLimits(exact_limit=5, exact_share=0.0), merge_size=1000)
    store = IndexStore(tmp_path / "e", IndexConfig(name="e", model=MODEL, dimensions=8, metadata_indexes=fields),
                       options)  # fmt: skip
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(2000, 8)).astype("f4")
    store.upsert([DocumentRecord(f"d{i}", "", {"cat": i % 10}, "h", [ChunkRecord(0, 0, vectors[i])])
                  for i in range(2000)])  # fmt: skip
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for asked in rng.normal(size=(5, 8)).astype("f4"):
        hits = store.search(SearchRequest(top_k=10, filter=parse_filter({"cat": 3})), asked[None, :], None)
        scores = unit @ (asked / np.linalg.norm(asked))
        expected = sorted((i for i in range(2000) if i % 10 == 3), key=lambda i: -scores[i])[:10]
        assert [h.id for h in hits] == [f"d{i}" for i in expected]
    store.close()


def test_an_estimate_somewhat_below_the_truth_goes_by_the_count_it_listed(tmp_path: Path, monkeypatch):
    """The sample expects a handful; all 20 matches fit in what the planner lists (4x that), but 20 is past the
    exact limit: FAISS searches over them (the selector path), with the exact top k."""
    import indexes.embedded.maintenance
    import indexes.embedded.planner
    from indexes.filters import parse_filter

    monkeypatch.setattr(
        indexes.embedded.planner.FilterPlanner, "matching_share", lambda self, index, where: 0.001
    )  # expects 2
    options = StoreOptions(planner=PlannerLimits(exact_limit=5, exact_share=0.0), merge_size=1000)
    store = IndexStore(tmp_path / "e", IndexConfig(name="e", model=MODEL, dimensions=8,
                                                   metadata_indexes={"cat": "integer"}), options)  # fmt: skip
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(2000, 8)).astype("f4")
    store.upsert([DocumentRecord(f"d{i}", "", {"cat": i % 100}, "h", [ChunkRecord(0, 0, vectors[i])])
                  for i in range(2000)])  # fmt: skip
    where = parse_filter({"cat": 3})
    plan = store._planner.plan(store._index, store._compiled(where))
    assert plan.path == "selector" and len(plan.ids) == 20 and plan.share == pytest.approx(0.01)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for asked in rng.normal(size=(5, 8)).astype("f4"):
        hits = store.search(SearchRequest(top_k=10, filter=where), asked[None, :], None)
        scores = unit @ (asked / np.linalg.norm(asked))
        expected = sorted((i for i in range(2000) if i % 100 == 3), key=lambda i: -scores[i])[:10]
        assert [h.id for h in hits] == [f"d{i}" for i in expected]
    store.close()


@pytest.mark.parametrize("path", ["exact", "selector"])
def test_a_cached_filter_plan_never_outlives_a_write(tmp_path: Path, monkeypatch, path: str):
    """A filter used again reuses its plan (and its listed candidates) until the next write: a document added or
    deleted since is found, or gone, at once."""
    import indexes.embedded.maintenance
    import indexes.embedded.planner
    from indexes.filters import parse_filter

    monkeypatch.setattr(indexes.embedded.planner, "plan_filter", lambda *args: path)
    store = IndexStore(tmp_path / "p", IndexConfig(name="p", model=MODEL, dimensions=4,
                                                   metadata_indexes={"cat": "integer"}))  # fmt: skip
    rng = np.random.default_rng(5)
    store.upsert([DocumentRecord(f"d{i}", "", {"cat": i % 2}, "h", [ChunkRecord(0, 0, rng.normal(size=4).astype("f4"))])
                  for i in range(600)])  # fmt: skip
    target = np.array([1.0, 2.0, 3.0, 4.0], dtype="f4")
    request = SearchRequest(top_k=3, filter=parse_filter({"cat": 1}))
    before = [hit.id for hit in store.search(request, target[None, :], None)]
    assert [hit.id for hit in store.search(request, target[None, :], None)] == before  # from the cached plan
    store.upsert([DocumentRecord("new", "", {"cat": 1}, "h", [ChunkRecord(0, 0, target)])])
    assert [hit.id for hit in store.search(request, target[None, :], None)][0] == "new"
    store.delete(["new", before[0]])
    after = [hit.id for hit in store.search(request, target[None, :], None)]
    assert "new" not in after and before[0] not in after and after[:2] == before[1:]
    store.close()


@pytest.mark.parametrize("quantization", ["sq8", "binary"])
def test_quantized_search_rescoring_is_exact_within_its_candidates(tmp_path: Path, quantization: str):
    """A quantized index proposes candidates; their scores are the exact float32 ones from SQLite, and a vector
    that is in the index is found first by itself."""
    store = IndexStore(tmp_path / "q", IndexConfig(name="q", model=MODEL, dimensions=16, quantization=quantization),
                       StoreOptions(merge_size=200))  # fmt: skip
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(1000, 16)).astype("f4")
    store.upsert([DocumentRecord(f"d{i}", "", {}, "h", [ChunkRecord(0, 0, vectors[i])]) for i in range(1000)])
    assert store._index.vectors.main.ntotal >= 800  # most of it quantized
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in (3, 500, 999):
        hits = store.search(SearchRequest(top_k=5), vectors[i][None, :], None)
        assert hits[0].id == f"d{i}"
        assert np.allclose([h.score for h in hits], [unit[int(h.id[1:])] @ unit[i] for h in hits], atol=1e-5)
    store.close()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_what_is_left_in_fresh_is_merged_once_writes_pause(tmp_path: Path, monkeypatch, kind: str):
    """Fewer vectors than a merge takes stay in `fresh` (scanned by every search) only until writes pause; a write
    meanwhile, or a reopen, finds the same documents before and after. The pause is held open (an hour) while the
    test looks, then closed (0 s): no window of time to hit or miss on a busy machine."""
    hnsw = HnswConfig() if kind == "hnsw" else None
    config = IndexConfig(name="q", model=MODEL, dimensions=8, kind=kind, hnsw=hnsw)
    store = IndexStore(tmp_path / "q", config, StoreOptions(merge_size=1000))
    data = np.random.default_rng(3).normal(size=(300, 8)).astype("f4")

    def documents(first: int, last: int) -> list[DocumentRecord]:
        return [DocumentRecord(f"d{i}", "", {}, "h", [ChunkRecord(0, 0, data[i])]) for i in range(first, last)]

    def merged(expected: int) -> None:
        store.maintenance.set_quiet_seconds(0)  # writes have paused
        wait_until(lambda: not store._index.vectors.fresh.ntotal, "the quiet merge", timeout=60)
        assert (store._index.vectors.fresh.ntotal, store._index.vectors.main.ntotal) == (0, expected)
        store.maintenance.set_quiet_seconds(3600)

    request = SearchRequest(top_k=3)
    store.maintenance.set_quiet_seconds(3600)
    store.upsert(documents(0, 200))
    assert store._index.vectors.fresh.ntotal == 200  # under merge_size: no merge on the write itself
    before = [[hit.id for hit in store.search(request, data[i : i + 1], None)] for i in range(0, 200, 20)]
    merged(200)
    assert [[hit.id for hit in store.search(request, data[i : i + 1], None)] for i in range(0, 200, 20)] == before
    store.upsert(documents(200, 300))
    store.delete(["d0"])
    merged(300)
    store.close(checkpoint=False)  # `main` as of the last checkpoint (none): all of it is caught up into `fresh`
    store = IndexStore(tmp_path / "q", options=StoreOptions(merge_size=1000))  # waits its 5 s, or is told 0
    merged(299)
    assert [hit.id for hit in store.search(request, data[250:251], None)][0] == "d250"
    assert "d0" not in [hit.id for hit in store.search(request, data[0:1], None)]
    store.close()
