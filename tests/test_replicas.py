"""Two `vsearch serve` processes on one PostgreSQL: what one replica acknowledges, the other serves at once; a
fine-tuning job runs once, on whichever replica claims it, and both serve its model; a replica killed mid-ingest
loses nothing it acknowledged, and one killed mid-job has its job taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from tests.helpers import new_database, start_server, wait_until
from tests.test_cli_and_models import free_port
from tests.test_fine_tuning import TOPICS, jsonl, training_lines
from tests.test_indexes_api import MODEL

pytestmark = pytest.mark.slow  # replica processes started, killed and restarted

LEASE_S = 3  # short, so that a dead replica's job is taken over within the test


class Replica:
    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "VSEARCH_DATABASE_URL": database_url, "VSEARCH_JOB_LEASE_S": str(LEASE_S)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "replica exited"
            assert time.monotonic() < deadline, "replica did not start"
            time.sleep(0.2)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


@pytest.fixture()
def database(postgres: str) -> str:
    return new_database(postgres)


@pytest.fixture()
def replicas(database: str, tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    """Two replicas started together (their schema creation races, which the advisory lock settles)."""
    started: list[Replica] = []
    threads = [
        threading.Thread(target=lambda i=i: started.append(Replica(tmp_path / f"replica{i}", database)))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(started) == 2
    yield started[0], started[1]
    for replica in started:
        replica.stop()
    for i in range(2):  # everything lives in PostgreSQL: a replica's data dir holds the ONNX graphs (and spools)
        assert {path.name for path in (tmp_path / f"replica{i}").iterdir()} <= {"models", "spool"}


def test_what_one_replica_acknowledges_the_other_serves_at_once(replicas):
    a, b = replicas
    assert a.http.post("/v1/indexes", json={"name": "shared", "model": MODEL, "kind": "hnsw"}).status_code == 200
    assert b.http.get("/v1/indexes/shared").json()["kind"] == "hnsw"
    docs = [{"id": f"d{i}", "text": text, "metadata": {"topic": i}} for i, (_, text) in enumerate(TOPICS)]
    assert a.http.post("/v1/indexes/shared/documents", json={"documents": docs}).status_code == 200
    hits = b.http.post("/v1/indexes/shared/query", json={"query": "why is the sky blue", "top_k": 1}).json()["data"]
    assert hits[0]["id"] == "d2"
    filtered = b.http.post("/v1/indexes/shared/query", json={"query": "sky", "filter": {"topic": {"$gte": 10}}})
    assert {hit["id"] for hit in filtered.json()["data"]} == {"d10", "d11"}
    # A config change through B is seen by A; a delete through A is seen by B.
    assert b.http.patch("/v1/indexes/shared", json={"ef_search": 64}).status_code == 200
    assert a.http.get("/v1/indexes/shared").json()["hnsw"]["ef_search"] == 64
    assert a.http.delete("/v1/indexes/shared").status_code == 200
    assert b.http.get("/v1/indexes/shared").status_code == 404


def test_a_fine_tuning_job_runs_once_and_both_replicas_serve_its_model(replicas, database):
    a, b = replicas
    upload = a.http.post("/v1/files", files={"file": ("train.jsonl", jsonl(training_lines()))},
                         data={"purpose": "fine-tune"})  # fmt: skip
    assert upload.status_code == 200, upload.text
    assert b.http.get(f"/v1/files/{upload.json()['id']}/content").content == jsonl(training_lines())
    created = a.http.post("/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": upload.json()["id"],
                                                       "hyperparameters": {"n_epochs": 3}})  # fmt: skip
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    job = wait_until(lambda: (j := b.http.get(f"/v1/fine_tuning/jobs/{job_id}").json())["status"] in
                     ("succeeded", "failed") and j, "the job")  # fmt: skip
    assert job["status"] == "succeeded", job
    events = b.http.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    assert [e["message"] for e in events].count("Fine-tuning job started") == 1  # run exactly once
    model = job["fine_tuned_model"]
    for replica in (a, b):
        assert model in [m["id"] for m in replica.http.get("/v1/models").json()["data"]]
    vectors = [np.array(r.http.post("/v1/embeddings", json={"model": model, "input": "tides"}).json()["data"][0]
                        ["embedding"]) for r in (a, b)]  # fmt: skip
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)


def test_a_replica_killed_during_ingest_loses_nothing_it_acknowledged(replicas):
    a, b = replicas
    assert a.http.post("/v1/indexes", json={"name": "crash", "model": MODEL, "dimensions": 8}).status_code == 200
    acknowledged: list[str] = []
    stop = threading.Event()
    rng = np.random.default_rng(0)

    def ingest() -> None:
        batch = 0
        while not stop.is_set():
            docs = [{"id": f"b{batch}-{i}", "vector": rng.normal(size=8).tolist()} for i in range(50)]
            try:
                response = a.http.post("/v1/indexes/crash/documents", json={"documents": docs})
            except httpx.TransportError:
                return  # killed mid-request: not acknowledged
            if response.status_code == 200:
                acknowledged.extend(d["id"] for d in docs)
            batch += 1

    writer = threading.Thread(target=ingest)
    writer.start()
    wait_until(lambda: len(acknowledged) >= 1000, "some acknowledged batches")
    a.kill()
    stop.set()
    writer.join()
    for doc_id in acknowledged:
        assert b.http.get(f"/v1/indexes/crash/documents/{doc_id}").status_code == 200, doc_id
    stats = b.http.get("/v1/indexes/crash").json()
    assert stats["document_count"] >= len(acknowledged)
    hits = b.http.post("/v1/indexes/crash/query", json={"vector": [1.0] * 8, "top_k": 5}).json()["data"]
    assert len(hits) == 5


def test_a_job_whose_replica_died_is_taken_over(replicas, database):
    a, b = replicas
    lines = training_lines() * 40  # enough steps to be caught running
    upload = a.http.post("/v1/files", files={"file": ("train.jsonl", jsonl(lines))}, data={"purpose": "fine-tune"})
    created = a.http.post("/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": upload.json()["id"],
                                                       "hyperparameters": {"n_epochs": 200}})  # fmt: skip
    job_id = created.json()["id"]

    def holder() -> str | None:
        with psycopg.connect(database) as conn:
            row = conn.execute("SELECT owner, status FROM vsearch_jobs WHERE id = %s", (job_id,)).fetchone()
        return row[0] if row and row[1] == "running" else None

    owner = wait_until(holder, "the job to run")
    running, other = (a, b) if f"-{a.process.pid}-" in str(owner) else (b, a)
    running.kill()
    job = wait_until(lambda: (j := other.http.get(f"/v1/fine_tuning/jobs/{job_id}").json())["status"] in
                     ("succeeded", "failed") and j, "the job to be taken over and finish", timeout=600)  # fmt: skip
    assert job["status"] == "succeeded", job
    with psycopg.connect(database) as conn:  # the events since the takeover alone are more than a page
        messages = [row[0] for row in conn.execute(
            "SELECT body->>'message' FROM vsearch_job_events WHERE job_id = %s ORDER BY seq", (job_id,))]  # fmt: skip
    restart = messages.index("The replica running this job stopped; it starts again.")
    assert messages.count("Fine-tuning job started") == 2 and messages.index("Fine-tuning job started") < restart
    assert other.http.post("/v1/embeddings", json={"model": job["fine_tuned_model"], "input": "x"}).status_code == 200
    assert job["trained_tokens"] > 0


def test_migrate_is_idempotent_and_an_unreachable_database_is_a_clear_error(database):
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "service", "migrate", "--database-url", database],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
    with psycopg.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'vsearch%'")}
    assert {"vsearch_indexes", "vsearch_files", "vsearch_jobs", "vsearch_adapters", "vsearch_embedding_cache"} <= tables
    refused = subprocess.run([sys.executable, "-m", "service", "migrate", "--database-url",
                              f"postgresql://nobody@127.0.0.1:{free_port()}/none"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode == 2 and "PostgreSQL is unreachable" in refused.stderr


def test_connections_postgres_dropped_are_replaced_unseen(database, tmp_path: Path):
    live = start_server(tmp_path / "data", database_url=database)
    try:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            assert http.post("/v1/indexes", json={"name": "x", "model": MODEL, "dimensions": 4}).status_code == 200
            assert http.post("/v1/indexes/x/documents", json={"documents": [{"id": "a", "vector": [1, 0, 0, 0]}]}
                             ).status_code == 200  # fmt: skip
            with psycopg.connect(database, autocommit=True) as conn:  # every connection of the pool dies
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")  # fmt: skip
            statuses = [http.post("/v1/indexes/x/query", json={"vector": [1, 0, 0, 0]}).status_code for _ in range(12)]
            assert set(statuses) == {200}, statuses  # the pool tests each connection it lends, and reconnects
            failed = http.post("/v1/indexes/x/query", json={"vector": [1, 0, 0, 0]})
            assert failed.status_code == 200 and failed.json()["data"][0]["id"] == "a"
    finally:
        live.stop()
