"""Snapshots, backups and moving indexes between engines, on both engines: a snapshot taken during an ingest is one
instant; a restore is atomic for a reader polling through it; a snapshot goes embedded -> PostgreSQL -> embedded with
identical results and no embedding; damaged, truncated, foreign and crafted files are refused and change nothing;
SIGKILL while snapshotting or restoring leaves nothing half-made; a full disk is a 507; `vsearch backup | restore |
export | import` beside a running server."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import numpy as np
import openai
import pytest

from indexes.archive import zstd
from indexes.config import IndexConfig
from indexes.values import ChunkRecord, DocumentRecord, IndexExport
from service.snapshots.backup import PG_OWN, PG_TABLES
from tests.conftest import each_store
from tests.helpers import LiveServer, new_database, serve_process, start_server, wait_until

MODEL = "all-MiniLM-L6-v2"
DIM = 384
OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def server(request: pytest.FixtureRequest) -> LiveServer:
    return each_store(request)


def unit_vectors(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def documents(prefix: str, start: int, n: int, seed: int) -> list[dict]:
    """Documents with their own vectors (nothing to embed) and a text for lexical search."""
    words = ["apple", "river", "stone", "cloud", "engine", "forest", "violet", "copper"]
    return [{"id": f"{prefix}{start + i:06d}", "vector": v.tolist(), "metadata": {"n": start + i},
             "text": f"{words[(start + i) % 8]} {words[(start + i) % 5]} note {start + i}"}
            for i, v in enumerate(unit_vectors(n, seed + start))]  # fmt: skip


def new_index(http: httpx.Client, prefix: str = "snap") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    assert http.post("/v1/indexes", json={"name": name, "model": MODEL}).status_code == 200
    return name


def add(http: httpx.Client, name: str, docs: list[dict]) -> None:
    for start in range(0, len(docs), 500):
        response = http.post(f"/v1/indexes/{name}/documents", json={"documents": docs[start : start + 500]})
        assert response.status_code == 200, response.text


def snapshot(http: httpx.Client, name: str) -> dict:
    response = http.post(f"/v1/indexes/{name}/snapshots")
    assert response.status_code == 201, response.text
    return response.json()


def download(http: httpx.Client, name: str, snapshot_id: str) -> bytes:
    response = http.get(f"/v1/indexes/{name}/snapshots/{snapshot_id}/content")
    assert response.status_code == 200
    return response.content


def upload(http: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return http.post(f"/v1/indexes/{name}/snapshots/restore", content=data, headers=OCTET)


def nearest(http: httpx.Client, name: str, vector: np.ndarray, top_k: int = 10) -> list[tuple[str, float]]:
    response = http.post(f"/v1/indexes/{name}/query", json={"vector": vector.tolist(), "top_k": top_k})
    assert response.status_code == 200, response.text
    return [(hit["id"], hit["score"]) for hit in response.json()["data"]]


def same_results(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    ids_equal = [i for i, _ in a] == [i for i, _ in b]
    return ids_equal and all(abs(x - y) <= 1e-6 for (_, x), (_, y) in zip(a, b, strict=True))


def embedded_inputs(url: str) -> float:
    """The model's request counter in /metrics: inputs embedded by the bundled model so far."""
    text = httpx.get(f"{url}/metrics").text
    match = re.search(r'^vsearch_embedded_inputs_total\{model="all-MiniLM-L6-v2"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def stats(http: httpx.Client, name: str) -> tuple[int, int]:
    body = http.get(f"/v1/indexes/{name}").json()
    return body["document_count"], body["vector_count"]


# --- an instant, atomic swaps, between engines ------------------------------------------------------------------


def test_a_snapshot_taken_during_an_ingest_is_one_instant(http: httpx.Client):
    name = new_index(http)
    batch, batches = 100, 30
    acknowledged: list[int] = []  # batches whose write returned

    def ingest() -> None:
        for k in range(batches):
            add(http_writer, name, documents("d", k * batch, batch, seed=7))
            acknowledged.append(k)

    with httpx.Client(base_url=str(http.base_url), timeout=60) as http_writer:
        writer = threading.Thread(target=ingest)
        writer.start()
        wait_until(lambda: len(acknowledged) >= 3, "the ingest to be under way")
        before = len(acknowledged)
        taken = snapshot(http, name)
        after = len(acknowledged)
        writer.join()
    count = taken["document_count"]
    # The acknowledged documents at some instant: whole batches, at least those acknowledged before the snapshot
    # began, at most those acknowledged by its end plus the one in flight.
    assert count % batch == 0 and before * batch <= count <= (after + 1) * batch, (before, count, after)
    assert taken["vector_count"] == count and count < batches * batch
    restored = f"{name}-restored"
    response = http.post(f"/v1/indexes/{restored}/snapshots/restore", json={"snapshot_id": taken["id"], "index": name})
    assert response.status_code == 200, response.text
    assert (response.json()["document_count"], response.json()["vector_count"]) == (count, count)
    # The original as it was at that instant: the batches written after it removed.
    later = [f"d{i:06d}" for i in range(count, batches * batch)]
    for start in range(0, len(later), 1000):
        assert http.post(f"/v1/indexes/{name}/documents/delete", json={"ids": later[start : start + 1000]}).is_success
    for query in unit_vectors(5, seed=99):
        assert same_results(nearest(http, name, query), nearest(http, restored, query))
    for text in ("apple river", "copper note 42"):
        body = {"query": text, "mode": "lexical", "top_k": 10}
        hits = [http.post(f"/v1/indexes/{n}/query", json=body).json()["data"] for n in (name, restored)]
        assert same_results(*[[(h["id"], h["score"]) for h in found] for found in hits])
    original, copy = (http.get(f"/v1/indexes/{n}/documents/d000042").json() for n in (name, restored))
    assert original == copy  # text, metadata, chunk count and both timestamps kept


def test_a_restore_is_atomic_for_a_reader_polling_through_it(http: httpx.Client):
    name, source = new_index(http), new_index(http)
    add(http, name, documents("old-", 0, 200, seed=1))
    add(http, source, documents("new-", 0, 300, seed=2))
    data = download(http, source, snapshot(http, source)["id"])
    query = unit_vectors(1, seed=3)[0]
    seen: list[list[tuple[int, frozenset[str], int]]] = [[], []]  # each reader's (status, id prefixes, count)
    done = threading.Event()

    def poll(mine: list[tuple[int, frozenset[str], int]]) -> None:
        with httpx.Client(base_url=str(http.base_url), timeout=60) as reader:
            while not done.is_set() or len(mine) < 5:
                response = reader.post(f"/v1/indexes/{name}/query", json={"vector": query.tolist(), "top_k": 20})
                count = reader.get(f"/v1/indexes/{name}").json().get("document_count", -1)
                prefixes = frozenset(h["id"].split("-")[0] for h in response.json().get("data", []))
                mine.append((response.status_code, prefixes, count))

    readers = [threading.Thread(target=poll, args=(mine,)) for mine in seen]
    for reader in readers:
        reader.start()
    wait_until(lambda: min(map(len, seen)) >= 2, "the readers to start")
    response = upload(http, name, data)
    done.set()
    for reader in readers:
        reader.join()
    assert response.status_code == 200, response.text
    for mine in seen:
        assert all(status == 200 for status, _, _ in mine), {status for status, _, _ in mine}
        assert all(prefixes in ({"old"}, {"new"}) for _, prefixes, _ in mine), "a search saw both indexes at once"
        assert {count for _, _, count in mine} <= {200, 300}
        views = [prefixes for _, prefixes, _ in mine]
        assert views == sorted(views, key=lambda view: view == {"new"}), "a reader saw the old index after the new"
    assert stats(http, name) == (300, 300)
    assert {hit.split("-")[0] for hit, _ in nearest(http, name, query)} == {"new"}


def test_a_snapshot_moves_embedded_to_postgres_and_back_without_embedding(
    embedded_server: LiveServer, postgres_server: LiveServer
):
    embedded = httpx.Client(base_url=embedded_server.url, timeout=120)
    postgres = httpx.Client(base_url=postgres_server.url, timeout=120)
    name = new_index(embedded, "moving")
    long_text = " ".join(f"sentence {i} about rivers, stones and the copper engine of the forest." for i in range(80))
    texts = [{"id": f"t{i:03d}", "text": f"note {i}: {['rivers', 'stones', 'clouds'][i % 3]} and engines",
              "metadata": {"i": i, "kind": ["a", "b"][i % 2]}} for i in range(40)]  # fmt: skip
    texts.append({"id": "long", "text": long_text, "metadata": {"i": -1}})  # several chunks
    add(embedded, name, texts)
    data = download(embedded, name, snapshot(embedded, name)["id"])
    before = embedded_inputs(embedded_server.url), embedded_inputs(postgres_server.url)
    moved = upload(postgres, name, data)
    assert moved.status_code == 200, moved.text
    back_data = download(postgres, name, snapshot(postgres, name)["id"])
    back = upload(embedded, f"{name}-back", back_data)
    assert back.status_code == 200, back.text
    assert (embedded_inputs(embedded_server.url), embedded_inputs(postgres_server.url)) == before  # nothing embedded
    assert stats(embedded, name) == stats(postgres, name) == stats(embedded, f"{name}-back")
    assert stats(embedded, name)[1] > 41  # the long text is several chunks
    for query in unit_vectors(5, seed=11):
        original = nearest(embedded, name, query)
        assert same_results(original, nearest(postgres, name, query))
        assert same_results(original, nearest(embedded, f"{name}-back", query))
    for client, index in ((postgres, name), (embedded, f"{name}-back")):
        assert client.get(f"/v1/indexes/{index}/documents/long").json() == embedded.get(
            f"/v1/indexes/{name}/documents/long").json()  # fmt: skip


# --- the API's other answers --------------------------------------------------------------------------------------


def test_snapshots_are_listed_read_and_deleted(http: httpx.Client, server: LiveServer):
    name = new_index(http)
    add(http, name, documents("d", 0, 20, seed=5))
    first, second = snapshot(http, name), snapshot(http, name)
    file = server.settings.data_dir / "snapshots" / name / f"{first['id']}.vsnap"
    assert file.stat().st_mode & 0o777 == 0o600  # on disk too, the server's user alone reads it
    listed = http.get(f"/v1/indexes/{name}/snapshots").json()
    assert [s["id"] for s in listed["data"]] == [second["id"], first["id"]] and listed["object"] == "list"
    assert {"id", "created_at", "bytes", "document_count", "vector_count", "checksum"} <= set(first)
    data = download(http, name, first["id"])
    assert len(data) == first["bytes"] and first["checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert http.get(f"/v1/indexes/{name}/snapshots/{first['id']}").json() == first
    assert http.delete(f"/v1/indexes/{name}/snapshots/{first['id']}").json()["deleted"] is True
    missing = http.get(f"/v1/indexes/{name}/snapshots/{first['id']}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "snapshot_not_found"
    assert http.get(f"/v1/indexes/{name}/snapshots/..%2F..%2Fetc").status_code in (400, 404)
    assert http.post("/v1/indexes/no-such-index/snapshots").status_code == 404
    by_id = http.post(f"/v1/indexes/{name}/snapshots/restore", json={"snapshot_id": "snap_0000"})
    assert by_id.status_code == 404
    empty = http.post(f"/v1/indexes/{name}/snapshots/restore", json={})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "snapshot_id"


# --- refused files ------------------------------------------------------------------------------------------------


def members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with zstd.ZstdFile(io.BytesIO(data)) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        return [(member, tar.extractfile(member).read()) for member in tar]  # type: ignore[union-attr]


def packed(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with zstd.ZstdFile(out, "w") as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
        for info, content in entries:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
    return out.getvalue()


def with_manifest(data: bytes, change: Callable[[dict], None]) -> bytes:
    entries = members(data)
    manifest = msgspec.json.decode(entries[0][1])
    change(manifest)
    return packed([(entries[0][0], msgspec.json.encode(manifest)), *entries[1:]])


def flipped(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    return bytes(damaged)


def plain_flip(data: bytes) -> bytes:
    """A flipped byte inside a vector, in a file whose compression frames are sound: only the checksums tell."""
    entries = members(data)
    info, content = entries[2]
    content = bytearray(content)
    content[5] ^= 0x01
    return packed([*entries[:2], (info, bytes(content)), *entries[3:]])


DAMAGE = {
    "flipped byte": (flipped, "cannot be read"),
    "flipped vector byte": (plain_flip, "checksum mismatch"),
    "truncated": (lambda data: data[: len(data) * 2 // 3], "truncated"),
    "wrong format version": (lambda data: with_manifest(data, lambda m: m.update(format_version=99)), "version 99"),
    "not a snapshot": (lambda data: with_manifest(data, lambda m: m.update(format="zip")), "not a vsearch"),
    "other dimensions": (
        lambda data: with_manifest(data, lambda m: m["config"].update(dimensions=256)),
        "256 dimensions",
    ),
    "unknown model": (lambda data: with_manifest(data, lambda m: m["config"].update(model="no-such-model")), "no-such"),
    "garbage after the end": (lambda data: data + zstd.compress(b"x" * 100), "after its end"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_or_foreign_snapshot_is_refused_and_changes_nothing(http: httpx.Client, damage: str):
    name = new_index(http)
    add(http, name, documents("d", 0, 50, seed=8))
    data = download(http, name, snapshot(http, name)["id"])
    add(http, name, documents("e", 0, 10, seed=9))  # the index now differs from the snapshot
    query = unit_vectors(1, seed=10)[0]
    before = nearest(http, name, query)
    spoil, says = DAMAGE[damage]
    response = upload(http, name, spoil(data))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert says in error["message"].lower() or says in error["message"], error
    assert error["param"] == "file" and set(error) == {"message", "type", "param", "code"}
    assert stats(http, name) == (60, 60) and nearest(http, name, query) == before
    assert upload(http, name, data).status_code == 200 and stats(http, name) == (50, 50)  # the sound file restores


def test_a_snapshot_of_other_dimensions_does_not_replace_an_index(http: httpx.Client, server: LiveServer):
    narrow = f"narrow-{uuid.uuid4().hex[:8]}"
    created = http.post("/v1/indexes", json={"name": narrow, "model": MODEL, "dimensions": 128})
    assert created.status_code == 200, created.text
    wide = new_index(http)
    add(http, wide, documents("d", 0, 10, seed=12))
    response = upload(http, narrow, download(http, wide, snapshot(http, wide)["id"]))
    assert response.status_code == 400 and response.json()["error"]["code"] == "dimensions_mismatch"
    assert "128" in response.json()["error"]["message"] and stats(http, narrow) == (0, 0)


def crafted(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> bytes:
    manifest = {"format": "vsearch-index-snapshot", "format_version": 1,
                "config": {"name": "x", "model": MODEL, "dimensions": DIM}, "documents": 1, "vectors": 1}  # fmt: skip
    first = tarfile.TarInfo("manifest.json")
    evil = tarfile.TarInfo(name)
    evil.type, evil.linkname = kind, target
    return packed([(first, msgspec.json.encode(manifest)), (evil, b"" if target else b"pwned\n")])


def test_crafted_archives_cannot_write_outside_or_exhaust_memory(tmp_path: Path):
    live = start_server(tmp_path / "data", api_keys=["k"])
    try:
        http = httpx.Client(base_url=live.url, timeout=120, headers={"authorization": "Bearer k"})
        name = new_index(http)
        add(http, name, documents("d", 0, 5, seed=13))
        taken = snapshot(http, name)
        outsider = httpx.get(f"{live.url}/v1/indexes/{name}/snapshots/{taken['id']}/content")
        assert outsider.status_code == 401  # a snapshot is the index's data: only with a key
        assert len(download(http, name, taken["id"])) == taken["bytes"]
        target = tmp_path / "evil"
        bomb = io.BytesIO()  # a member that says it is 300 MiB (of zeros, which compress to almost nothing)
        with zstd.ZstdFile(bomb, "w") as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
            tar.addfile(tarfile.TarInfo("manifest.json"), None)
            info = tarfile.TarInfo("manifest.json")
            info.size = 300 << 20
            tar.addfile(info, io.BytesIO(bytes(300 << 20)))
        attacks = {
            "a path outside": crafted(f"../../../../{target}"),
            "an absolute path": crafted(str(target)),
            "a symlink": crafted("part-000000.jsonl", tarfile.SYMTYPE, str(target)),
            "a hard link": crafted("part-000000.jsonl", tarfile.LNKTYPE, "/etc/passwd"),
            "a decompression bomb": bomb.getvalue(),
        }
        assert len(attacks["a decompression bomb"]) < 1 << 20
        for attack, data in attacks.items():
            response = upload(http, name, data)
            assert response.status_code == 400, (attack, response.text)
            assert response.json()["error"]["code"] == "invalid_snapshot", attack
        assert not target.exists() and not list(tmp_path.rglob("evil*")) and not list(tmp_path.rglob("*pwned*"))
        assert stats(http, name) == (5, 5)
    finally:
        live.stop()


def test_a_snapshot_upload_over_the_limit_is_a_413(tmp_path: Path):
    live = start_server(tmp_path / "data", max_snapshot_upload_bytes=10_000)
    try:
        http = httpx.Client(base_url=live.url, timeout=120)
        name = new_index(http)
        add(http, name, documents("d", 0, 30, seed=30))
        response = upload(http, name, download(http, name, snapshot(http, name)["id"]))
        assert response.status_code == 413 and "max_snapshot_upload_bytes" in response.json()["error"]["message"]
        assert not list((tmp_path / "data" / "snapshots" / ".uploads").iterdir())  # the spooled part is gone
    finally:
        live.stop()


def test_a_full_disk_during_a_snapshot_is_a_507_and_leaves_nothing(monkeypatch, tmp_path: Path):
    from service.snapshots import service as snapshots

    live = start_server(tmp_path / "data")
    try:
        http = httpx.Client(base_url=live.url, timeout=120)
        name = new_index(http)
        add(http, name, documents("d", 0, 30, seed=14))
        real = snapshots.write_snapshot

        def fills_the_disk(content: IndexExport, out) -> None:
            out.write(b"x" * 4096)  # part of a file exists when the disk fills
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(snapshots, "write_snapshot", fills_the_disk)
        response = http.post(f"/v1/indexes/{name}/snapshots")
        assert response.status_code == 507 and response.json()["error"]["code"] == "insufficient_storage"
        assert http.get(f"/v1/indexes/{name}/snapshots").json()["data"] == []
        assert not [p for p in (tmp_path / "data" / "snapshots").rglob("*") if p.is_file()]  # no partial file
        assert stats(http, name) == (30, 30)
        monkeypatch.setattr(snapshots, "write_snapshot", real)
        assert snapshot(http, name)["document_count"] == 30
    finally:
        live.stop()


# --- scheduled snapshots --------------------------------------------------------------------------------------------


def test_scheduled_snapshots_come_round_and_keep_the_newest(tmp_path: Path):
    live = start_server(tmp_path / "data", snapshot_interval_h=1 / 3600, snapshot_keep=2)  # every second
    try:
        http = httpx.Client(base_url=live.url, timeout=60)
        name = new_index(http)
        add(http, name, documents("d", 0, 10, seed=15))
        manual = snapshot(http, name)

        def scheduled() -> list[str]:
            listed = http.get(f"/v1/indexes/{name}/snapshots").json()["data"]
            assert manual["id"] in [s["id"] for s in listed]  # never pruned
            return [s["id"] for s in listed if s["scheduled"]]

        first = wait_until(scheduled, "a scheduled snapshot")[-1]
        wait_until(lambda: first not in scheduled(), "the oldest scheduled snapshot to be pruned", timeout=120)
        assert 1 <= len(scheduled()) <= 2
    finally:
        live.stop()


# --- SIGKILL ------------------------------------------------------------------------------------------------------


def synthetic_snapshot(name: str, count: int) -> bytes:
    """A snapshot file of `count` documents (one chunk each), written by the snapshot writer itself."""
    from indexes.archive import write_snapshot

    def batches() -> Iterator[list[DocumentRecord]]:
        for start in range(0, count, 1000):
            vectors = unit_vectors(min(1000, count - start), seed=start)
            yield [DocumentRecord(f"d{start + i:07d}", f"text {start + i}", {"n": start + i}, "h",
                                  [ChunkRecord(0, 4, v)], 1.0, 1.0) for i, v in enumerate(vectors)]  # fmt: skip

    out = io.BytesIO()
    write_snapshot(IndexExport(IndexConfig(name=name, model=MODEL, dimensions=DIM), count, count, batches()), out)
    return out.getvalue()


def kill_when(process: subprocess.Popen, appears: Callable[[], bool], work: Callable[[], object]) -> None:
    """Run `work` (a request to the server) in a thread and SIGKILL the server as soon as `appears()`."""
    thread = threading.Thread(target=lambda: _quietly(work), daemon=True)
    thread.start()
    wait_until(appears, "the work to be under way", every=0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    thread.join(timeout=60)


def _quietly(work: Callable[[], object]) -> None:
    with contextlib.suppress(httpx.TransportError):  # the server was killed under it
        work()


@pytest.mark.slow
def test_sigkill_mid_snapshot_or_mid_restore_leaves_nothing_half_made(tmp_path: Path):
    data = tmp_path / "data"
    process, url = serve_process(data)
    try:
        http = httpx.Client(base_url=url, timeout=300)
        assert upload(http, "big", synthetic_snapshot("big", 60_000)).status_code == 200
        folder = data / "snapshots" / "big"
        kill_when(process, lambda: folder.is_dir() and any(folder.glob(".tmp-*")),
                  lambda: http.post("/v1/indexes/big/snapshots"))  # fmt: skip
        process, url = serve_process(data)
        http = httpx.Client(base_url=url, timeout=300)
        assert http.get("/v1/indexes/big/snapshots").json()["data"] == []
        assert not list(folder.iterdir())  # the half-written file was removed at start
        assert stats(http, "big") == (60_000, 60_000)

        keep = new_index(http, "keep")
        add(http, keep, documents("k", 0, 100, seed=16))
        query = unit_vectors(1, seed=17)[0]
        before = nearest(http, keep, query)
        big = download(http, "big", snapshot(http, "big")["id"])
        kill_when(process, lambda: any((data / "indexes").glob(f".creating-{keep}-*")),
                  lambda: upload(http, keep, big))  # fmt: skip
        process, url = serve_process(data)
        http = httpx.Client(base_url=url, timeout=300)
        assert stats(http, keep) == (100, 100) and nearest(http, keep, query) == before  # the old index, intact
        assert not [p.name for p in (data / "indexes").iterdir() if p.name.startswith(".")]
        assert upload(http, keep, big).status_code == 200 and stats(http, keep) == (60_000, 60_000)
    finally:
        process.kill()
        process.wait(timeout=30)


# --- the command line -----------------------------------------------------------------------------------------------


def vsearch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_backup_while_serving_then_restore_everything(tmp_path: Path):
    data, backup = tmp_path / "data", tmp_path / "backup"
    process, url = serve_process(data)
    try:
        http = httpx.Client(base_url=url, timeout=120)
        name = new_index(http)
        add(http, name, documents("d", 0, 300, seed=18))
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        uploaded = client.files.create(file=("pairs.jsonl", b'{"query": "q", "positive": "p"}\n'), purpose="fine-tune")
        store = client.vector_stores.create(name="kept")
        writes = threading.Thread(target=lambda: add(http, name, documents("late", 0, 2000, seed=19)))
        writes.start()  # the backup runs beside writes
        done = vsearch("backup", str(backup), "--data-dir", str(data))
        writes.join()
        assert done.returncode == 0, done.stderr
        busy = vsearch("restore", str(backup), "--data-dir", str(data))
        assert busy.returncode == 2 and "another vsearch process" in busy.stderr  # the server holds the data dir
    finally:
        process.kill()
        process.wait(timeout=30)
    manifest = msgspec.json.decode((backup / "backup.json").read_bytes())
    count = manifest["indexes"][name]["documents"]
    assert 300 <= count <= 2300 and (count - 300) % 500 in (0, 300)  # whole requests (batches of 500)
    restored = tmp_path / "restored"
    done = vsearch("restore", str(backup), "--data-dir", str(restored))
    assert done.returncode == 0, done.stderr
    process, url = serve_process(restored)
    try:
        http = httpx.Client(base_url=url, timeout=120)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert stats(http, name) == (count, count)
        assert client.files.content(uploaded.id).read() == b'{"query": "q", "positive": "p"}\n'
        assert client.vector_stores.retrieve(store.id).name == "kept"
    finally:
        process.kill()
        process.wait(timeout=30)


def test_export_from_the_data_dir_and_import_into_postgres(postgres: str, tmp_path: Path, embedded_server: LiveServer):
    http = httpx.Client(base_url=embedded_server.url, timeout=120)
    name = new_index(http, "export")
    add(http, name, documents("d", 0, 200, seed=20))
    file = tmp_path / "index.vsnap"
    data_dir = str(embedded_server.settings.data_dir)
    done = vsearch("export", name, "--out", str(file), "--data-dir", data_dir)  # beside the running server
    assert done.returncode == 0, done.stderr
    database = new_database(postgres)
    done = vsearch("import", str(file), "--name", "imported", "--database-url", database,
                   "--data-dir", str(tmp_path / "pg-data"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    live = start_server(tmp_path / "pg-data", database_url=database)
    try:
        moved = httpx.Client(base_url=live.url, timeout=120)
        assert stats(moved, "imported") == (200, 200) and embedded_inputs(live.url) == 0
        for query in unit_vectors(3, seed=21):
            assert same_results(nearest(http, name, query), nearest(moved, "imported", query))
    finally:
        live.stop()


def test_backup_and_restore_on_postgres(postgres: str, tmp_path: Path):
    source, target = new_database(postgres), new_database(postgres)
    live = start_server(tmp_path / "a", database_url=source)
    try:
        http = httpx.Client(base_url=live.url, timeout=120)
        name = new_index(http)
        add(http, name, documents("d", 0, 100, seed=22))
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        uploaded = client.files.create(file=("a.txt", b"kept bytes"), purpose="assistants")
        done = vsearch("backup", str(tmp_path / "backup"), "--database-url", source, "--data-dir", str(tmp_path / "a"))
        assert done.returncode == 0, done.stderr
    finally:
        live.stop()
    done = vsearch("restore", str(tmp_path / "backup"), "--database-url", target, "--data-dir", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    live = start_server(tmp_path / "b", database_url=target)
    try:
        http = httpx.Client(base_url=live.url, timeout=120)
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        assert stats(http, name) == (100, 100)
        assert client.files.content(uploaded.id).read() == b"kept bytes"
        again = client.files.create(file=("b.txt", b"new"), purpose="assistants")  # identities carry on after
        assert [f.id for f in client.files.list(order="asc")] == [uploaded.id, again.id]
    finally:
        live.stop()


def test_the_backup_names_every_service_table_of_postgres(postgres_server: LiveServer):
    from indexes.databases.postgres import PgDatabase

    database = PgDatabase(postgres_server.settings.database_url or "", pool_size=1)
    try:
        tables = {row[0] for row in database.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        database.close()
    service_tables = {t for t in tables if not re.fullmatch(r"vs\d+_(documents|chunks)", t)} - set(PG_OWN)
    assert service_tables == set(PG_TABLES)


def test_the_index_swap_is_seen_by_a_store_lent_out(server: LiveServer, http: httpx.Client):
    """A reader that holds the old index's store when the restore lands is told IndexReplaced, and the service
    acquires the new one: a query in flight across the swap gets an answer, never a 404."""
    name, source = new_index(http), new_index(http)
    add(http, name, documents("old-", 0, 20, seed=23))
    add(http, source, documents("new-", 0, 20, seed=24))
    data = download(http, source, snapshot(http, source)["id"])
    catalog = server.services.search._catalog  # the engine's catalog, to hold a store as a request would
    held = catalog.acquire(name)
    try:
        assert upload(http, name, data).status_code == 200
        from indexes.errors import IndexReplaced

        with pytest.raises(IndexReplaced):
            held.stats()
    finally:
        catalog.release(held)
    assert {h[0].split("-")[0] for h in nearest(http, name, unit_vectors(1, seed=25)[0])} == {"new"}


def test_a_backups_indexes_alone_move_to_postgres(postgres: str, tmp_path: Path):
    live = start_server(tmp_path / "data")
    try:
        http = httpx.Client(base_url=live.url, timeout=120)
        names = [new_index(http) for _ in range(2)]
        for seed, name in enumerate(names):
            add(http, name, documents("d", 0, 50 + seed, seed=26 + seed))
        done = vsearch("backup", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "data"))
        assert done.returncode == 0, done.stderr
    finally:
        live.stop()
    database, pg_data = new_database(postgres), str(tmp_path / "pg-data")
    refused = vsearch("restore", str(tmp_path / "backup"), "--database-url", database, "--data-dir", pg_data)
    assert refused.returncode == 2 and "--indexes-only" in refused.stderr
    done = vsearch("restore", str(tmp_path / "backup"), "--indexes-only", "--database-url", database,
                   "--data-dir", pg_data)  # fmt: skip
    assert done.returncode == 0, done.stderr
    live = start_server(tmp_path / "pg-data", database_url=database)
    try:
        http = httpx.Client(base_url=live.url, timeout=120)
        assert [stats(http, name) for name in names] == [(50, 50), (51, 51)]
    finally:
        live.stop()


@pytest.mark.slow
def test_sigkill_mid_restore_on_postgres_leaves_the_old_index(postgres: str, tmp_path: Path):
    import psycopg

    database = new_database(postgres)
    env = {"VSEARCH_DATABASE_URL": database}
    process, url = serve_process(tmp_path / "data", env=env)
    try:
        http = httpx.Client(base_url=url, timeout=300)
        keep = new_index(http, "keep")
        add(http, keep, documents("k", 0, 100, seed=27))
        query = unit_vectors(1, seed=28)[0]
        before = nearest(http, keep, query)
        with psycopg.connect(database, autocommit=True) as watcher:

            def copying() -> bool:  # the restore's transaction is filling its new tables
                rows = watcher.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'COPY vs%'").fetchall()
                return bool(rows)

            kill_when(process, copying, lambda: upload(http, keep, synthetic_snapshot(keep, 60_000)))
            process, url = serve_process(tmp_path / "data", env=env)
            http = httpx.Client(base_url=url, timeout=300)
            assert stats(http, keep) == (100, 100) and nearest(http, keep, query) == before
            rows = watcher.execute("SELECT name FROM vsearch_indexes").fetchall()
            assert rows == [(keep,)]  # no half-made index left behind, and its tables went with the transaction
            tables = watcher.execute("SELECT count(*) FROM pg_tables WHERE tablename ~ '^vs[0-9]+_'").fetchone()
            assert tables == (2,)
    finally:
        process.kill()
        process.wait(timeout=30)


def test_a_restore_mends_a_damaged_index(tmp_path: Path):
    live = start_server(tmp_path / "data")
    try:
        http = httpx.Client(base_url=live.url, timeout=120)
        name = new_index(http)
        add(http, name, documents("d", 0, 40, seed=29))
        data = download(http, name, snapshot(http, name)["id"])
    finally:
        live.stop()
    folder = tmp_path / "data" / "indexes" / name
    for path in folder.iterdir():
        path.unlink()
    (folder / "index.sqlite").write_bytes(b"not a database, after a disk fault" * 100)
    live = start_server(tmp_path / "data")
    try:
        http = httpx.Client(base_url=live.url, timeout=120)
        assert http.get(f"/v1/indexes/{name}").status_code == 503
        assert upload(http, name, data).status_code == 200
        assert stats(http, name) == (40, 40)
    finally:
        live.stop()
