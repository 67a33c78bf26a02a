"""Probes of an attacker and of an unlucky operator: each one lost, misplaced or poisoned data, or blocked or 500'd,
before the fixes that these tests hold in place (issue 12's numbered points)."""

from __future__ import annotations

import errno
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from indexes.databases.sqlite import sqlite3
from tests.helpers import LiveServer, free_port, start_server
from tests.test_embeddings_api import assert_error
from tests.test_indexes_api import MODEL, add, new_index, query


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "data")
    yield live
    live.stop()


def client(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=60)


class Gate:
    """Holds a domain call at a chosen point until the test has done its part (the ordering a race needs)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def wrap_async(self, function):
        async def held(*args, **kwargs):
            self.entered.set()
            while not self.release.is_set():  # never blocks the event loop
                await _sleep()
            return await function(*args, **kwargs)

        return held

    def wrap(self, function):
        def held(*args, **kwargs):
            self.entered.set()
            assert self.release.wait(60)
            return function(*args, **kwargs)

        return held


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.01)


# --- 1. document ids round-trip exactly -----------------------------------------------------------------------------

ODD_IDS = ["a/", "a", "b//c", "b/c", "/lead", "lead", "delete", "a%2F", "percent%", "q?x=1", "hash#1", "sp ace",
           "ünï/cødé", "..a", "a/..", "delete/x", "x/delete", "x" * 512]  # fmt: skip


def test_every_accepted_id_reaches_its_own_document_and_only_it(http):
    name = new_index(http)
    add(http, name, [{"id": doc_id, "text": f"text of {doc_id}"} for doc_id in ODD_IDS])
    for doc_id in ODD_IDS:
        path = f"/v1/indexes/{name}/documents/{quote(doc_id, safe='')}"
        got = http.get(path)
        assert got.status_code == 200 and got.json()["id"] == doc_id, (doc_id, got.text)
        assert got.json()["text"] == f"text of {doc_id}"
    for doc_id in ODD_IDS:
        path = f"/v1/indexes/{name}/documents/{quote(doc_id, safe='')}"
        assert http.delete(path).json() == {"id": doc_id, "object": "document", "deleted": True}
        assert http.get(path).status_code == 404
        remaining = {d["id"] for d in http.get(f"/v1/indexes/{name}/documents", params={"limit": 100}).json()["data"]}
        assert doc_id not in remaining and remaining == set(ODD_IDS[ODD_IDS.index(doc_id) + 1 :]), doc_id


@pytest.mark.parametrize("doc_id", [".", "..", "tab\there", "nul\x00", "line\nbreak"])
def test_ids_that_cannot_round_trip_are_refused_at_ingest(http, doc_id):
    name = new_index(http)
    response = http.post(f"/v1/indexes/{name}/documents", json={"documents": [{"id": doc_id, "text": "x"}]})
    error = assert_error(response, 400, "documents[0].id", None)
    assert "id" in error["message"]


# --- 2. an ingest never lands in another index of the same name ----------------------------------------------------


def test_deleting_an_index_during_an_ingest_stops_the_ingest(fresh, monkeypatch):
    gate = Gate()
    registry = fresh.services.registry
    monkeypatch.setattr(registry, "embed", gate.wrap_async(registry.embed))
    outcome: dict = {}
    with client(fresh) as http:
        http.post("/v1/indexes", json={"name": "race", "model": MODEL}).raise_for_status()
        docs = [{"id": f"d{i}", "text": f"document number {i}"} for i in range(600)]

        def ingest() -> None:
            with client(fresh) as other:
                outcome["response"] = other.post("/v1/indexes/race/documents", json={"documents": docs})

        thread = threading.Thread(target=ingest)
        thread.start()
        assert gate.entered.wait(60)  # the ingest has its index and is about to embed
        assert http.delete("/v1/indexes/race").status_code == 200
        http.post("/v1/indexes", json={"name": "race", "model": MODEL, "dimensions": 64}).raise_for_status()
        gate.release.set()
        thread.join(60)
        assert_error(outcome["response"], 404, "name", "index_not_found")
        again = http.get("/v1/indexes/race").json()
        assert again["dimensions"] == 64 and again["document_count"] == 0 and again["vector_count"] == 0


def test_a_damaged_index_never_takes_down_the_listing_or_metrics(fresh):
    with client(fresh) as http:
        http.post("/v1/indexes", json={"name": "good", "model": MODEL}).raise_for_status()
        http.post("/v1/indexes", json={"name": "bad", "model": MODEL}).raise_for_status()
    fresh.stop()
    index = fresh.settings.data_dir / "indexes" / "bad" / "index.sqlite"
    with sqlite3.connect(index) as db:  # a config that no longer matches the stored vectors' shape
        db.execute("UPDATE meta SET value = json_set(value, '$.dimensions', 7) WHERE key = 'config'")
        db.execute("INSERT INTO chunks (doc_id, chunk_index, start, end, vector, seq) VALUES ('x', 0, 0, 0, ?, 1)",
                   (b"\0" * 4 * 384,))  # fmt: skip
    (fresh.settings.data_dir / "indexes" / "bad" / "vectors.faiss").unlink()
    again = start_server(fresh.settings.data_dir)
    try:
        with client(again) as http:
            listed = http.get("/v1/indexes")
            assert listed.status_code == 200 and [i["name"] for i in listed.json()["data"]] == ["good"]
            assert http.get("/metrics").status_code == 200
            assert_error(http.get("/v1/indexes/bad"), 503, "name", "index_unavailable")
            assert http.get("/v1/indexes/good").status_code == 200
            assert_error(http.post("/v1/indexes", json={"name": "bad", "model": MODEL}), 409, "name", "index_exists")
            assert http.delete("/v1/indexes/bad").status_code == 200  # what an operator does with it
            assert http.post("/v1/indexes", json={"name": "bad", "model": MODEL}).status_code == 200
    finally:
        again.stop()


# --- 3. a half-made index folder is never an index -----------------------------------------------------------------


def test_an_index_folder_left_half_made_is_skipped_and_can_be_created_again(fresh):
    fresh.stop()
    indexes = fresh.settings.data_dir / "indexes"
    sqlite3.connect(indexes / "empty.sqlite").close()  # a stray file is no index either
    (indexes / "half").mkdir()
    sqlite3.connect(indexes / "half" / "index.sqlite").close()  # SIGKILL or ENOSPC before any table existed
    (indexes / ".creating-gone-1234").mkdir()  # the temporary folder of an interrupted create
    again = start_server(fresh.settings.data_dir)
    try:
        with client(again) as http:
            assert http.get("/v1/indexes").json()["data"] == []
            assert http.get("/metrics").status_code == 200
            assert_error(http.get("/v1/indexes/half"), 404, "name", "index_not_found")
            created = http.post("/v1/indexes", json={"name": "half", "model": MODEL})
            assert created.status_code == 200, created.text
            assert [i["name"] for i in http.get("/v1/indexes").json()["data"]] == ["half"]
        assert not (indexes / ".creating-gone-1234").exists()
    finally:
        again.stop()


# --- 9. large $in -------------------------------------------------------------------------------------------------


def test_in_with_ten_thousand_values(http):
    name = new_index(http)
    add(http, name, [{"id": f"d{i}", "text": f"doc {i}", "metadata": {"n": i, "s": f"v{i}"}} for i in range(30)])
    numbers = list(range(5, 10_005, 1))[:10_000]
    strings = [f"v{i}" for i in range(10_000)]
    assert {h["id"] for h in query(http, name, query="doc", top_k=50, filter={"n": {"$in": numbers}})} == {
        f"d{i}" for i in range(5, 30)
    }
    hits = query(http, name, query="doc", top_k=50, filter={"s": {"$nin": strings[:9_990]}, "n": {"$in": numbers}})
    assert hits == []
    too_many = http.post(f"/v1/indexes/{name}/query", json={"query": "doc", "filter": {"n": {"$in": numbers + [0]}}})
    assert_error(too_many, 400, "filter", None)


# --- 11. shutdown and HNSW counts ---------------------------------------------------------------------------------


def test_a_broken_checkpoint_file_does_not_stop_the_others_at_shutdown(fresh):
    with client(fresh) as http:
        for name in ("first", "second", "third"):
            http.post("/v1/indexes", json={"name": name, "model": MODEL}).raise_for_status()
            add(http, name, [{"id": "a", "text": f"{name} text"}])
    indexes = fresh.settings.data_dir / "indexes"
    for name in ("first", "third"):
        (indexes / name / "vectors.faiss").unlink(missing_ok=True)
    (indexes / "second" / "vectors.faiss").unlink(missing_ok=True)
    (indexes / "second" / "vectors.faiss").mkdir()  # an operator's mistake: a folder where the file goes
    fresh.stop()
    assert (indexes / "first" / "vectors.faiss").is_file() and (indexes / "third" / "vectors.faiss").is_file()
    again = start_server(fresh.settings.data_dir)
    try:
        with client(again) as http:
            for name in ("first", "second", "third"):
                assert [h["id"] for h in query(http, name, query=f"{name} text")] == ["a"], name
    finally:
        again.stop()


def test_hnsw_counts_agree_after_a_restart_that_followed_a_compaction(tmp_path: Path):
    """The state concurrent deletes leave when one compacts while another deletes: the checkpoint written right
    after the compaction holds a tombstone, so the deletions from before the compaction are not forgotten."""
    import numpy as np

    from indexes.config import IndexConfig
    from indexes.embedded.catalog import IndexCatalog
    from indexes.values import ChunkRecord, DocumentRecord

    catalog = IndexCatalog(tmp_path)
    catalog.create(IndexConfig(name="h", model=MODEL, dimensions=4, kind="hnsw"))
    rng = np.random.default_rng(5)
    with catalog.use("h") as store:
        store.upsert([DocumentRecord(f"d{i}", "", {}, "x", [ChunkRecord(0, 0, rng.normal(size=4).astype("f4"))])
                      for i in range(100)])  # fmt: skip
        store.delete([f"d{i}" for i in range(30)])  # past 20%: compacted, and its checkpoint forgot them
        stale = [(i, 1) for i in range(1, 31)]  # ... unless a delete raced in: then the log keeps them
        store._index.record.db.execute("BEGIN")
        store._index.record.db.conn.executemany("INSERT OR REPLACE INTO deleted_chunks VALUES (?, ?)", stale)
        store._index.record.db.execute("COMMIT")
        store.delete(["d30"])  # the racing delete: a tombstone in the checkpoint
        assert store.stats().faiss_vectors == store.stats().vector_count == 69
    catalog.close()
    with IndexCatalog(tmp_path).use("h") as reopened:
        stats = reopened.stats()
        assert stats.faiss_vectors == stats.vector_count == 69
        assert len(reopened.search(_search(100), np.ones((1, 4), "f4"), None)) == 69


def _search(top_k: int):
    from indexes.values import SearchRequest

    return SearchRequest(top_k=top_k)


def _wait(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


# --- 4. values beyond float32 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_values_beyond_float32_are_refused(http, metric):
    name = new_index(http, metric=metric)
    vector = [0.0] * 384
    add(http, name, [{"id": "normal", "text": "a normal document", "vector": [0.05] * 384}])
    poisoned = {"id": "poison", "text": "x", "vector": [1e39, *vector[1:]]}
    response = http.post(f"/v1/indexes/{name}/documents", json={"documents": [poisoned]})
    assert_error(response, 400, "documents[0].vector", None)
    assert_error(http.post(f"/v1/indexes/{name}/query", json={"vector": [-1e39] + vector[1:]}), 400, "vector", None)
    assert_error(http.post(f"/v1/indexes/{name}/query", json={"query": "a", "min_score": 1e39}), 400, "min_score", None)
    hits = query(http, name, query="a normal document")
    assert [h["id"] for h in hits] == ["normal"] and all(isinstance(h["score"], float) for h in hits)


# --- 5. a cancelled job stays cancelled -----------------------------------------------------------------------------


def test_a_job_cancelled_while_its_files_are_validated_stays_cancelled(fresh, monkeypatch):
    from tests.test_fine_tuning import jsonl, training_lines

    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=f"{fresh.url}/v1", api_key="unused", max_retries=0)
    upload = api.files.create(file=("train.jsonl", jsonl(training_lines())), purpose="fine-tune")
    files = fresh.services.fine_tuning.files
    gate = Gate()
    monkeypatch.setattr(files, "lines", gate.wrap(files.lines))
    job = api.fine_tuning.jobs.create(model=MODEL, training_file=upload.id, hyperparameters={"n_epochs": 1})
    assert gate.entered.wait(60)  # the worker is reading the training file
    assert api.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    gate.release.set()
    # The worker runs one job at a time: once a later job is done, it is done with the cancelled one.
    later = api.fine_tuning.jobs.create(model=MODEL, training_file=upload.id, hyperparameters={"n_epochs": 1})
    _wait(lambda: api.fine_tuning.jobs.retrieve(later.id).status in ("succeeded", "failed"))
    cancelled = api.fine_tuning.jobs.retrieve(job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    messages = [e.message for e in api.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert not any("queued" in m or "started" in m for m in messages), messages
    fresh.stop()
    again = start_server(fresh.settings.data_dir)
    try:
        api = openai.OpenAI(base_url=f"{again.url}/v1", api_key="unused", max_retries=0)
        probe = api.fine_tuning.jobs.create(model=MODEL, training_file=upload.id, hyperparameters={"n_epochs": 1})
        _wait(lambda: api.fine_tuning.jobs.retrieve(probe.id).status in ("succeeded", "failed"))
        assert api.fine_tuning.jobs.retrieve(job.id).status == "cancelled"  # and it did not run after the restart
    finally:
        again.stop()


# --- 7. multipart uploads -------------------------------------------------------------------------------------------


def test_a_huge_form_field_is_refused_and_never_echoed(http):
    purpose = "fine-tune" + "x" * 200_000
    response = http.post("/v1/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": purpose})
    error = assert_error(response, 400, "purpose", None)
    assert "xxxxxxxx" not in response.text and len(response.content) < 1000, error
    wrong = http.post("/v1/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "<script>alert(1)"})
    assert_error(wrong, 400, "purpose", None)
    assert "<script>" not in wrong.text


def test_too_many_parts_is_a_400(http):
    fields = {f"field{i}": "v" for i in range(17)}
    response = http.post("/v1/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "fine-tune", **fields})
    assert_error(response, 400, "file", None)


# --- 11. smaller ones ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "fallback"),
    [("résumé 日本.jsonl", "r_sum_ __.jsonl"), ('evil"; filename="run.exe', "evil_; filename=_run.exe")],
)
def test_download_names_any_upload_filename_exactly(http, filename, fallback):
    uploaded = http.post("/v1/files", files={"file": (filename, b"{}\n")}, data={"purpose": "user_data"}).json()
    assert uploaded["filename"] == filename
    response = http.get(f"/v1/files/{uploaded['id']}/content")
    assert response.status_code == 200 and response.content == b"{}\n"
    header = response.headers["content-disposition"]
    assert header == f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# --- 6. refuse quickly ----------------------------------------------------------------------------------------------


def test_a_15_mb_input_is_refused_by_its_length(http):
    huge = "word " * 3_000_000
    for body, route, param in [
        ({"model": MODEL, "input": huge}, "/v1/embeddings", "input"),
        ({"model": MODEL, "input": ["short", huge]}, "/v1/embeddings", "input"),
    ]:
        error = assert_error(http.post(route, json=body), 400, param, None)
        assert "15,000,000 characters" in error["message"] and "256 tokens" in error["message"]
    name = new_index(http)
    for mode in ("dense", "lexical", "hybrid"):
        response = http.post(f"/v1/indexes/{name}/query", json={"query": huge, "mode": mode})
        assert "characters" in assert_error(response, 400, "query", None)["message"]
    assert http.get("/health").status_code == 200


# --- 8. one in-flight bound for the whole process -------------------------------------------------------------------


def half_sent(url: str, path: str) -> socket.socket:
    """A request whose body never finishes arriving: it stays in flight until the socket closes."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: 100\r\n\r\n{{\"model\"".encode())  # fmt: skip
    return sock


@pytest.mark.slow
def test_the_in_flight_bound_is_one_for_every_route(tmp_path: Path):
    live = start_server(tmp_path, max_requests_in_flight=2)
    try:
        with client(live) as http:
            http.post("/v1/indexes", json={"name": "held", "model": MODEL}).raise_for_status()
            held = [half_sent(live.url, "/v1/embeddings"), half_sent(live.url, "/v1/indexes/held/query")]
            try:
                _wait(lambda: http.get("/v1/models").status_code == 429)  # a third route, refused
                refused = http.get("/v1/indexes")
                assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
                assert refused.json()["error"]["type"] == "rate_limit_error"
                assert refused.json()["error"]["code"] == "too_many_requests"
                assert http.get("/health").status_code == 200 and http.get("/metrics").status_code == 200
            finally:
                for sock in held:
                    sock.close()
            _wait(lambda: http.get("/v1/models").status_code == 200)
    finally:
        live.stop()


# --- the keyless default cannot be driven from a web page -----------------------------------------------------------


def test_a_web_page_cannot_drive_a_keyless_server(http, server):
    name = new_index(http)
    add(http, name, [{"id": "keep", "text": "do not delete me"}])
    port = server.url.rsplit(":", 1)[1]
    delete_all = b'{"filter": {}}'
    # What a page on another site can send without a CORS preflight: text/plain, forms; and its Origin comes along.
    as_text = http.post(f"/v1/indexes/{name}/documents/delete", content=delete_all,
                        headers={"content-type": "text/plain", "origin": "https://evil.example"})  # fmt: skip
    assert_error(as_text, 403, None, "origin_not_allowed")
    no_origin = http.post(f"/v1/indexes/{name}/documents/delete", content=delete_all,
                          headers={"content-type": "text/plain"})  # fmt: skip
    assert_error(no_origin, 415, None, "unsupported_media_type")
    form = http.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "user_data"},
                     headers={"origin": "https://evil.example"})  # fmt: skip
    assert_error(form, 403, None, "origin_not_allowed")
    # DNS rebinding: attacker.example resolved to 127.0.0.1, the browser still says whose page it is.
    rebound = http.get("/v1/indexes", headers={"host": f"attacker.example:{port}"})
    assert_error(rebound, 400, None, "host_not_allowed")
    assert http.get(f"/v1/indexes/{name}/documents/keep").status_code == 200
    # The server's own pages (same origin), and clients that send no Origin, are served.
    own = http.get("/v1/indexes", headers={"origin": server.url})
    assert own.status_code == 200 and name in [i["name"] for i in own.json()["data"]]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert http.get("/health", headers={"host": host}).status_code == 200, host


def test_allowed_origins_and_hosts_are_configurable(tmp_path: Path):
    live = start_server(tmp_path, allowed_origins=["https://app.example"], allowed_hosts=["search.internal"])
    try:
        with client(live) as http:
            port = live.url.rsplit(":", 1)[1]
            assert http.get("/v1/models", headers={"host": f"search.internal:{port}"}).status_code == 200
            assert http.get("/v1/models", headers={"host": f"other.internal:{port}"}).status_code == 400
            preflight = http.options("/v1/embeddings", headers={
                "origin": "https://app.example", "access-control-request-method": "POST",
                "access-control-request-headers": "content-type"})  # fmt: skip
            assert preflight.status_code in (200, 204)
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            called = http.post("/v1/embeddings", json={"model": MODEL, "input": "hi"},
                               headers={"origin": "https://app.example"})  # fmt: skip
            assert called.status_code == 200
            assert called.headers["access-control-allow-origin"] == "https://app.example"
            other = http.post("/v1/embeddings", json={"model": MODEL, "input": "hi"},
                              headers={"origin": "https://evil.example"})  # fmt: skip
            assert_error(other, 403, None, "origin_not_allowed")
    finally:
        live.stop()


# --- 10. file descriptors -------------------------------------------------------------------------------------------


def serve_process(data_dir: Path, port: int, open_files: int | None = None, stderr: int = subprocess.DEVNULL):
    """`vsearch serve` in a process of its own (optionally with `ulimit -n open_files`, soft and hard). Its log
    goes nowhere unless asked for, then the caller must read it (a full pipe would stop the server)."""

    def limit() -> None:  # noqa: D401
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    command = [sys.executable, "-m", "service", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=limit, text=True)


@pytest.mark.slow
def test_many_indexes_under_a_low_open_files_limit(tmp_path: Path):
    port = free_port()
    process = serve_process(tmp_path, port, 256)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            _wait(lambda: _answers(http), timeout=120)
            vector = [0.05] * 384
            statuses = []
            for i in range(100):  # about 4 descriptors each if all stayed open: well past 256
                name = f"many-{i}"
                statuses.append(http.post("/v1/indexes", json={"name": name, "model": MODEL}).status_code)
                documents = [{"id": "a", "text": "a", "vector": vector}]
                statuses.append(http.post(f"/v1/indexes/{name}/documents", json={"documents": documents}).status_code)
                statuses.append(http.post(f"/v1/indexes/{name}/query", json={"vector": vector}).status_code)
            assert set(statuses) == {200}, sorted(set(statuses))
            listing = http.get("/v1/indexes")
            assert listing.status_code == 200, listing.text
            assert len(listing.json()["data"]) == 100
            assert http.get("/metrics").status_code == 200
    finally:
        process.kill()
        process.wait()


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/health").status_code == 200
    except httpx.TransportError:
        return False


# --- 11. disk full, and a data dir that cannot be used ------------------------------------------------------------


def disk_full_errors() -> list[Exception]:
    sqlite_full = sqlite3.OperationalError("database or disk is full")
    sqlite_full.sqlite_errorcode = sqlite3.SQLITE_FULL  # as sqlite3 sets it
    return [OSError(errno.ENOSPC, "No space left on device"), sqlite_full]


@pytest.mark.parametrize("error", disk_full_errors(), ids=["ENOSPC", "SQLITE_FULL"])
def test_disk_full_is_a_507_that_says_so(fresh, monkeypatch, error):
    from indexes.embedded.store import IndexStore

    with client(fresh) as http:
        name = new_index(http)

        def full(*args, **kwargs):
            raise error

        monkeypatch.setattr(IndexStore, "upsert", full)
        response = http.post(f"/v1/indexes/{name}/documents", json={"documents": [{"id": "a", "text": "a"}]})
        assert response.status_code == 507 and set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert "no space left on device" in response.json()["error"]["message"].lower()
        monkeypatch.undo()
        assert http.post(f"/v1/indexes/{name}/documents", json={"documents": [{"id": "a", "text": "a"}]}).is_success


@pytest.mark.slow
def test_an_unusable_data_dir_is_one_clear_line(tmp_path: Path):
    (tmp_path / "file").write_text("not a folder")
    process = serve_process(tmp_path / "file" / "data", free_port(), stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.strip().count("\n") == 0 and "cannot use the data dir" in stderr and "Traceback" not in stderr


# --- 11. fine-tuning input ------------------------------------------------------------------------------------------


def test_batch_size_one_is_refused_when_the_job_is_created(http):
    body = {"model": MODEL, "training_file": "file-x", "hyperparameters": {"batch_size": 1}}
    assert_error(http.post("/v1/fine_tuning/jobs", json=body), 400, "hyperparameters.batch_size", None)
    method = {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 1}}}
    body = {"model": MODEL, "training_file": "file-x", "method": method}
    assert_error(http.post("/v1/fine_tuning/jobs", json=body), 400, "method.supervised.hyperparameters.batch_size")


@pytest.mark.parametrize(
    ("method", "bad_line", "words"),
    [
        ("supervised", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]},
                                     {"role": "assistant", "content": "a"}]}, "'text' must be a string"),
        ("supervised", {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},
         "'content' must be a string"),
        ("dpo", {"query": "a question", "positive": "its answer"}, "a dpo job needs preference examples"),
    ],
)  # fmt: skip
def test_bad_training_lines_fail_validation_not_the_server(openai_client, method, bad_line, words):
    from tests.test_fine_tuning import jsonl, training_lines, wait_for

    lines = [line for line in training_lines() if method != "dpo" or "preferred_output" in line] * 3
    lines[1] = bad_line
    upload = openai_client.files.create(file=("t.jsonl", jsonl(lines)), purpose="fine-tune")
    job = openai_client.fine_tuning.jobs.create(model=MODEL, training_file=upload.id, method={"type": method})
    failed = wait_for(openai_client, job.id, {"failed", "succeeded"})
    assert failed.status == "failed" and failed.error.code == "invalid_training_file", failed.error
    assert failed.error.param == "training_file" and "line 2" in failed.error.message and words in failed.error.message
