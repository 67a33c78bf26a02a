"""`vsearch ingest` and `vsearch query` as real processes against the live server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

PYTHON = [sys.executable, "-m", "service"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*PYTHON, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def all_ids(http: httpx.Client, index: str) -> list[str]:
    ids, after = [], None
    while True:
        page = http.get(
            f"/v1/indexes/{index}/documents", params={"limit": 1000, **({"after": after} if after else {})}
        ).json()
        ids += [d["id"] for d in page["data"]]
        if not page["has_more"]:
            return ids
        after = page["last_id"]


@pytest.mark.slow
def test_killed_ingest_resumes_without_loss_or_duplicates(server, http, tmp_path: Path):
    total = 20_000
    source = tmp_path / "big.jsonl"
    with source.open("w") as f:
        for i in range(total):
            f.write(json.dumps({"id": f"r{i:05d}", "text": f"row {i} w{i % 97}", "group": i % 10}) + "\n")
            if i == 12_345:
                f.write('{"id": "broken", "text": \n')  # a malformed line
    args = ["ingest", str(source), "--index", "bulk", "--url", server.url, "--batch-size", "200"]
    process = subprocess.Popen([*PYTHON, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill it part-way, once a few batches are acknowledged
        found = list((tmp_path / ".vsearch-ingest").glob("bulk-*.json"))
        if found and json.loads(found[0].read_text())["records_done"] >= 3000:
            checkpoint = found[0]
            break
        time.sleep(0.05)
    assert checkpoint is not None and process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = json.loads(checkpoint.read_text())["records_done"]
    assert done_before < total

    finished = run_cli(*args, cwd=tmp_path)
    assert finished.returncode == 1, finished.stderr  # non-zero: one line was rejected
    counts = dict(re.findall(r"(created|updated|skipped|rejected) (\d+)", finished.stderr))
    # Skipped: the records of the checkpoint, and batches the server acknowledged after it, before the kill.
    assert int(counts["skipped"]) >= done_before and int(counts["rejected"]) == 1
    # Every record once: the bad line rejected. ("updated": a batch the killed run had in flight, committed by
    # the server while the new run sent it again.)
    assert int(counts["created"]) + int(counts["updated"]) + int(counts["skipped"]) == total
    ids = all_ids(http, "bulk")
    assert len(ids) == total and len(set(ids)) == total
    assert set(ids) == {f"r{i:05d}" for i in range(total)}
    rejects = [json.loads(line) for line in (tmp_path / "bulk.rejects.jsonl").read_text().splitlines()]
    assert [r["record"] for r in rejects] == [12_346] and "not valid JSON" in rejects[0]["reason"]

    again = run_cli(*args, "--restart", cwd=tmp_path)  # everything is on the server, unchanged
    assert f"created 0, updated 0, skipped {total}" in again.stderr


@pytest.mark.slow
def test_csv_tree_and_beir_sources(server, http, tmp_path: Path):
    (tmp_path / "people.csv").write_text(
        'name,bio,city\nada,"Wrote the first program, for an engine",London\nalan,Broke codes,\n'
    )
    result = run_cli("ingest", "people.csv", "--index", "people", "--url", server.url, "--id-field", "name",
                     "--text-field", "{name}: {bio}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    ada = http.get("/v1/indexes/people/documents/ada").json()
    assert ada["text"] == "ada: Wrote the first program, for an engine" and ada["metadata"] == {"city": "London"}

    tree = tmp_path / "site"
    (tree / "guide").mkdir(parents=True)
    (tree / "readme.md").write_text("# Setup\nInstall the package and run it.")
    (tree / "guide" / "page.html").write_text(
        "<html><head><title>Guide</title><style>p{}</style></head><body><p>Hello <b>world</b></p>"
        "<script>var x;</script></body></html>"
    )
    (tree / "image.png").write_bytes(b"\x89PNG")
    result = run_cli("ingest", str(tree), "--index", "site", "--url", server.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all_ids(http, "site") == ["guide/page.html", "readme.md"]
    page = http.get("/v1/indexes/site/documents/guide/page.html").json()
    assert page["text"] == "Guide\n\nHello world" and page["metadata"] == {"title": "Guide"}

    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "Aspirin", "text": "reduces fever."}) + "\n"
        + json.dumps({"_id": "d2", "title": "", "text": "Sleep matters."}) + "\n"
    )  # fmt: skip
    result = run_cli(
        "ingest", str(beir), "--index", "beir", "--url", server.url, "--chunking", "truncate", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert http.get("/v1/indexes/beir/documents/d1").json()["text"] == "Aspirin reduces fever."


def test_a_resumed_ingest_remembers_what_was_rejected_before(server, http, tmp_path: Path):
    """The checkpoint carries the rejects of the records it covers: a resumed run reports them and exits non-zero
    for the whole source, and the rejects file lists each bad record once."""
    source = tmp_path / "grows.jsonl"
    rows = [json.dumps({"id": f"g{i}", "text": f"row {i}"}) + "\n" for i in range(6)]
    source.write_text("".join(rows[:2]) + '{"id": "broken", "text": \n' + "".join(rows[2:4]))
    args = ["ingest", str(source), "--index", "grows", "--url", server.url]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 1 and "rejected 1" in first.stderr, first.stderr
    with source.open("a") as f:  # more records after the checkpoint: the next run resumes there
        f.write("".join(rows[4:]))
    resumed = run_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 1, resumed.stderr  # the source still has its bad line
    assert "created 2, updated 0, skipped 4, rejected 1" in resumed.stderr
    rejects = [json.loads(line) for line in (tmp_path / "grows.rejects.jsonl").read_text().splitlines()]
    assert [r["record"] for r in rejects] == [2]
    assert sorted(all_ids(http, "grows")) == [f"g{i}" for i in range(6)]


def test_server_side_rejections_go_to_the_rejects_file(server, http, tmp_path: Path):
    rows = [{"id": f"ok{i}", "text": f"fine {i}"} for i in range(5)]
    rows.insert(2, {"id": "x" * 600, "text": "id too long for the server"})
    rows.insert(4, {"id": "blank", "text": "   "})
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli(
        "ingest", "mixed.jsonl", "--index", "mixed", "--url", server.url, "--rejects", "bad.jsonl", cwd=tmp_path
    )
    assert result.returncode == 1
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert len(reasons) == 2 and "empty text" in reasons and any("documents[2].id" in r for r in reasons)
    assert sorted(all_ids(http, "mixed")) == [f"ok{i}" for i in range(5)]


def test_query_prints_a_table(server, http, tmp_path: Path):
    http.post("/v1/indexes", json={"name": "tabled", "model": "all-MiniLM-L6-v2"})
    http.post("/v1/indexes/tabled/documents", json={"documents": [{"id": "moon", "text": "The moon orbits the earth"}]})
    result = run_cli("query", "tabled", "what circles our planet", "--url", server.url, "--top-k", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "moon" in result.stdout and "The moon orbits the earth" in result.stdout and "score" in result.stdout
    missing = run_cli("query", "no-such-index", "x", "--url", server.url, cwd=tmp_path)
    assert missing.returncode == 1 and "No index named" in missing.stdout
