"""OpenAI's vector stores, through the official `openai` client, on both engines: stores, files, batches, search
with nested compound filters over attributes, pagination, errors in OpenAI's shape; real documents (a PDF printed
by Chromium, a DOCX, HTML, Markdown, Latin-1 text) and the files that must fail with OpenAI's codes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from pathlib import Path

import httpx
import openai
import pypdf
import pytest

from tests.conftest import each_store
from tests.helpers import LiveServer, new_database, serve_process, start_server, wait_until
from tests.test_documents import CHROMIUM, NO_TEXT, TWO_PAGES, print_pdf, write_docx

FILTER = {  # year >= 2020 and (kind == "guide" or lang in ["fr"])
    "type": "and",
    "filters": [
        {"type": "gte", "key": "year", "value": 2020},
        {"type": "or", "filters": [{"type": "eq", "key": "kind", "value": "guide"},
                                   {"type": "in", "key": "lang", "value": ["fr"]}]},
    ],
}  # fmt: skip


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def server(request: pytest.FixtureRequest) -> LiveServer:
    return each_store(request)


@pytest.fixture()
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def upload(client: openai.OpenAI, name: str, data: bytes) -> str:
    return client.files.create(file=(name, data), purpose="assistants").id


def found(client: openai.OpenAI, store_id: str, query: str, **search) -> list:
    return list(client.vector_stores.search(store_id, query=query, **search))


def test_a_store_from_creation_to_deletion(client: openai.OpenAI, http: httpx.Client):
    store = client.vector_stores.create(name="kitchen", metadata={"team": "cooks"},
                                        expires_after={"anchor": "last_active_at", "days": 7})  # fmt: skip
    assert (store.object, store.status, store.file_counts.total, store.metadata) == ("vector_store", "completed", 0,
                                                                                     {"team": "cooks"})  # fmt: skip
    assert store.expires_at == store.last_active_at + 7 * 86400
    guide = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id,
        file=("coffee.md", b"# Coffee\nKeep roasted beans in an airtight jar, away from light."),
        attributes={"year": 2024, "kind": "guide", "lang": "en"},
    )  # fmt: skip
    assert (guide.status, guide.last_error, guide.attributes["kind"]) == ("completed", None, "guide")
    assert guide.chunking_strategy.type == "static" and guide.usage_bytes > 0
    batch = client.vector_stores.file_batches.create_and_poll(store.id, files=[
        {"file_id": upload(client, "tea.txt", b"Green tea brews best just below the boil."),
         "attributes": {"year": 2023, "kind": "note", "lang": "fr"}},
        {"file_id": upload(client, "old.txt", b"Boil the kettle for tea and coffee alike."),
         "attributes": {"year": 2019, "kind": "guide", "lang": "en"}},
        {"file_id": upload(client, "bread.txt", b"Bread dough rises in a warm place for an hour."),
         "attributes": {"year": 2024, "kind": "note", "lang": "en"}},
    ])  # fmt: skip
    assert (batch.object, batch.status, batch.file_counts.completed, batch.file_counts.total) == (
        "vector_store.files_batch", "completed", 3, 3)  # fmt: skip

    hits = found(client, store.id, "how to store coffee and brew tea", filters=FILTER, max_num_results=10)
    assert sorted(h.filename for h in hits) == ["coffee.md", "tea.txt"]  # old.txt is too old, bread.txt a note in en
    assert hits[0].content[0].type == "text" and all(0 <= h.score <= 1 for h in hits)
    # A score is the chunk's cosine similarity to the query, so a threshold cuts what is unrelated, in either ranker.
    unrelated = found(client, store.id, "quantum chromodynamics on a lattice", ranking_options={"score_threshold": 0.4})
    assert unrelated == []
    dense = found(client, store.id, "airtight jar for beans",
                  ranking_options={"ranker": "none", "score_threshold": 0.3})  # fmt: skip
    assert [h.filename for h in dense] == ["coffee.md"] and dense[0].attributes["year"] == 2024

    # New attributes: processed again, then filters read them.
    tea = next(f for f in client.vector_stores.files.list(store.id) if f.attributes.get("lang") == "fr")
    client.vector_stores.files.update(tea.id, vector_store_id=store.id, attributes={"year": 2025, "kind": "guide"})
    wait_until(lambda: client.vector_stores.files.retrieve(tea.id, vector_store_id=store.id).status == "completed",
               "the file to be processed again")  # fmt: skip
    assert [h.attributes for h in found(client, store.id, "tea", filters={"type": "eq", "key": "year", "value": 2025})
            ] == [{"year": 2025, "kind": "guide"}]  # fmt: skip

    content = list(client.vector_stores.files.content(guide.id, vector_store_id=store.id))
    assert "airtight jar" in "".join(part.text for part in content)

    deleted = client.vector_stores.files.delete(guide.id, vector_store_id=store.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (guide.id, True, "vector_store.file.deleted")
    assert "coffee.md" not in [h.filename for h in found(client, store.id, "airtight jar for coffee beans")]
    assert http.get(f"/v1/files/{guide.id}").status_code == 200  # the File itself stays

    renamed = client.vector_stores.update(store.id, name="pantry", metadata={"team": "bakers"})
    assert (renamed.name, renamed.metadata, renamed.file_counts.total) == ("pantry", {"team": "bakers"}, 3)
    gone = client.vector_stores.delete(store.id)
    assert (gone.id, gone.deleted, gone.object) == (store.id, True, "vector_store.deleted")
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_lists_page_as_openai_does(client: openai.OpenAI):
    made = [client.vector_stores.create(name=f"page-{i}").id for i in range(5)]
    newest_first = [s.id for s in client.vector_stores.list(limit=2) if s.id in made]  # every page, by the cursor
    assert newest_first == made[::-1]
    page = client.vector_stores.list(limit=2, order="asc", after=made[1])
    assert [s.id for s in page.data] == made[2:4] and page.has_more
    before = client.vector_stores.list(limit=2, order="asc", before=made[3])
    assert [s.id for s in before.data] == made[1:3]

    store = made[0]
    ids = [upload(client, f"n{i}.txt", f"Note number {i} about knots.".encode()) for i in range(3)]
    batch = client.vector_stores.file_batches.create_and_poll(store, file_ids=ids, attributes={"kind": "note"})
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store, order="asc", limit=2)
    assert [f.id for f in listed.data] == ids[:2] and listed.has_more
    assert [f.id for f in client.vector_stores.files.list(store, order="asc", filter="completed")] == ids
    assert list(client.vector_stores.files.list(store, filter="failed")) == []
    for store_id in made:
        client.vector_stores.delete(store_id)


def test_bad_requests_get_openais_errors(client: openai.OpenAI, http: httpx.Client):
    store = client.vector_stores.create(name="errors")
    file_id = upload(client, "a.txt", b"Anything at all.")
    cases = [
        ("/v1/vector_stores/vs_nope/search", {"query": "x"}, 404, "vector_store_id"),
        (f"/v1/vector_stores/{store.id}/search", {"query": "x", "max_num_results": 51}, 400, "max_num_results"),
        (f"/v1/vector_stores/{store.id}/search", {"query": ""}, 400, "query"),
        (f"/v1/vector_stores/{store.id}/search", {"query": ["x"] * 101}, 400, "query"),
        (f"/v1/vector_stores/{store.id}/search", {"query": "x", "filters": {"type": "xor", "filters": []}}, 400,
         "filters.type"),
        (f"/v1/vector_stores/{store.id}/search",
         {"query": "x", "filters": {"type": "and", "filters": [{"type": "in", "key": "k", "value": 3}]}}, 400,
         "filters.filters[0].value"),
        (f"/v1/vector_stores/{store.id}/files", {"file_id": "file-000000000000000000000000"}, 404, "file_id"),
        (f"/v1/vector_stores/{store.id}/files", {"file_id": file_id, "chunking_strategy": {
            "type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150}}}, 400,
         "chunking_strategy.static.chunk_overlap_tokens"),
        (f"/v1/vector_stores/{store.id}/files", {"file_id": file_id, "chunking_strategy": {
            "type": "static", "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}}}, 400, None),
        (f"/v1/vector_stores/{store.id}/files",
         {"file_id": file_id, "attributes": {f"k{i}": i for i in range(17)}}, 400, "attributes"),
        (f"/v1/vector_stores/{store.id}/files", {"file_id": file_id, "attributes": {"a.b": 1}}, 400, "attributes"),
        (f"/v1/vector_stores/{store.id}/file_batches", {"file_ids": [file_id], "files": [{"file_id": file_id}]}, 400,
         "file_ids"),
        ("/v1/vector_stores", {"name": "x", "metadata": {"k": "v" * 513}}, 400, "metadata.k"),
        ("/v1/vector_stores", {"name": "x", "model": "no-such-model"}, 404, "model"),
    ]  # fmt: skip
    for path, body, status, param in cases:
        response = http.post(path, json=body)
        error = response.json()["error"]
        assert (response.status_code, set(error)) == (status, {"message", "type", "param", "code"}), (path, body)
        if param is not None:
            assert error["param"] == param, (body, error)
    assert http.get(f"/v1/vector_stores/{store.id}/files?filter=done").status_code == 400
    client.vector_stores.delete(store.id)


def test_a_cancelled_batch_leaves_no_file_in_progress_and_no_chunks_of_cancelled_files(
    client: openai.OpenAI, http: httpx.Client
):
    store = client.vector_stores.create(name="cancelled")
    file_ids = [upload(client, f"essay-{i}.txt", essay(i)) for i in range(6)]
    batch = client.vector_stores.file_batches.create(store.id, file_ids=file_ids)
    cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert cancelled.status == "cancelled"
    files = wait_until(lambda: (f := list(client.vector_stores.files.list(store.id, limit=100)))
                       and all(x.status != "in_progress" for x in f) and f, "every file to settle")  # fmt: skip
    statuses = {f.id: f.status for f in files}
    assert set(statuses.values()) <= {"completed", "cancelled"} and "cancelled" in statuses.values(), statuses

    def stored(file_id: str) -> bool:
        return http.get(f"/v1/indexes/{store.id}/documents/{file_id}").status_code == 200

    # A file being processed when the batch was cancelled drops its chunks once it ends: wait for that.
    wait_until(lambda: all(stored(i) == (s == "completed") for i, s in statuses.items()), "cancelled files' chunks")
    assert client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id).file_counts.cancelled == \
        list(statuses.values()).count("cancelled")  # fmt: skip
    client.vector_stores.delete(store.id)


# --- real documents -----------------------------------------------------------------------------------------------

TOPICS = {  # a page each, long enough that a page holds chunks of its own
    "Bees": "Honeybees gather nectar from flowers and turn it into honey inside the hive. Worker bees dance to tell "
            "the others where the best flowers grow. The queen lays up to two thousand eggs on a summer day. ",
    "Volcanoes": "Magma rises through cracks in the crust and erupts as lava, ash and gas. Some volcanoes sleep for "
                 "centuries before they wake again. Volcanic soil is rich and farmers plant on the slopes. ",
    "Lighthouses": "A lighthouse warns ships away from rocks with a beam that turns through the night. Its keeper "
                   "once trimmed the wicks and wound the clockwork that turned the lens. ",
}  # fmt: skip
KEEPER = "The keeper polished the great glass lens every evening before dusk."
HANDBOOK = (
    "<html><head><style>h1 { page-break-before: always }</style></head><body>"
    + "".join(
        f"<h1>{title}</h1>" + f"<p>{text * 6}</p>" + (f"<p>{KEEPER}</p>" if title == "Lighthouses" else "")
        for title, text in TOPICS.items()
    )
    + "</body></html>"
)


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Files as people have them: printed by Chromium, written by python-docx, and the ones that cannot be read."""
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium: `.ci/run` installs it (apt)")
    folder = tmp_path_factory.mktemp("documents")
    pdf = print_pdf(TWO_PAGES, folder, "tides").read_bytes()
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf)))
    writer.encrypt("s3cret")
    locked = io.BytesIO()
    writer.write(locked)
    return {
        "tides.pdf": pdf,
        "handbook.pdf": print_pdf(HANDBOOK, folder, "handbook").read_bytes(),
        "guide.docx": write_docx(folder / "guide.docx").read_bytes(),
        "page.html": b"<html><head><title>Knots</title></head><body><h1>Knots</h1><h2>Bowline</h2>"
        b"<p>A bowline makes a fixed loop at the end of a line.</p></body></html>",
        "notes.md": b"# Setup\nInstall it first.\n\n## Running\nStart the server with the serve command.\n",
        "menu.txt": "Le café crème coûte trois euros à Genève.".encode("latin-1"),
        "corrupt.pdf": pdf[: len(pdf) // 3],
        "locked.pdf": locked.getvalue(),
        "empty.txt": b"",
        "scan.pdf": print_pdf(NO_TEXT, folder, "scan").read_bytes(),
    }


@pytest.mark.browser
def test_real_documents_are_searchable_and_cited(client: openai.OpenAI, documents: dict[str, bytes]):
    store = client.vector_stores.create(name="library")
    batch = client.vector_stores.file_batches.upload_and_poll(store.id, files=list(documents.items()))
    assert (batch.status, batch.file_counts.completed, batch.file_counts.failed) == ("completed", 6, 4)
    files = {f.id: f for f in client.vector_stores.files.list(store.id, limit=100)}
    names = {client.files.retrieve(file_id).filename: file for file_id, file in files.items()}
    failures = {name: (f.status, f.last_error.code) for name, f in names.items() if f.last_error}
    assert failures == {name: ("failed", "invalid_file") for name in ("corrupt.pdf", "locked.pdf", "empty.txt",
                                                                       "scan.pdf")}  # fmt: skip
    assert "encrypted" in names["locked.pdf"].last_error.message
    assert "no text layer" in names["scan.pdf"].last_error.message

    def cited(sentence: str) -> tuple[str, dict]:
        best = found(client, store.id, sentence, max_num_results=1)[0]
        assert sentence.split()[-1].strip(".") in best.content[0].text
        return best.filename, best.model_extra["metadata"]

    # Each of these small files is one chunk: it starts on the first page or heading, and runs on.
    name, where = cited("Spring tides come when the sun and the moon line up.")
    assert (name, where["page"], where["page_end"]) == ("tides.pdf", 1, 2)
    name, where = cited(KEEPER)  # the third page holds chunks of its own
    assert name == "handbook.pdf" and where["page"] <= 3 <= where.get("page_end", where["page"])
    assert where["page"] >= 2
    name, where = cited("Green tea brews best in water just below the boil.")
    assert (name, where["headings"]) == ("guide.docx", ["Coffee", "Tea"])
    name, where = cited("A bowline makes a fixed loop at the end of a line.")
    assert (name, where["headings"][-1]) == ("page.html", "Bowline")
    name, where = cited("Start the server with the serve command.")
    assert (name, where["headings"]) == ("notes.md", ["Setup", "Running"])
    name, _ = cited("Le café crème coûte trois euros à Genève.")
    assert name == "menu.txt"
    pages = list(client.vector_stores.files.content(names["tides.pdf"].id, vector_store_id=store.id))
    assert len(pages) == 2 and "bulges" in pages[0].text and "Spring tides" in pages[1].text
    client.vector_stores.delete(store.id)


# --- expiry -------------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_an_expired_store_is_swept_and_refuses_searches(tmp_path: Path):
    live = start_server(tmp_path, vector_store_sweep_s=0.05)
    clock = Clock()
    live.services.vector_stores.clock = clock
    try:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        store = client.vector_stores.create(name="brief", expires_after={"anchor": "last_active_at", "days": 1})
        client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("a.txt", b"Short-lived notes."))
        kept = client.vector_stores.create(name="kept")
        assert found(client, store.id, "notes")
        clock.now += 2 * 86400
        wait_until(lambda: store.id not in [i["name"] for i in httpx.get(f"{live.url}/v1/indexes").json()["data"]],
                   "the sweep to remove the expired store's index")  # fmt: skip
        expired = client.vector_stores.retrieve(store.id)
        assert (expired.status, expired.file_counts.total) == ("expired", 0)
        with pytest.raises(openai.BadRequestError) as caught:
            found(client, store.id, "notes")
        assert caught.value.code == "vector_store_expired"
        assert client.vector_stores.retrieve(kept.id).status == "completed"  # no expiry: kept
    finally:
        live.stop()


# --- durability ---------------------------------------------------------------------------------------------------


def essay(i: int) -> bytes:
    """A long file of its own (many chunks), so a batch of them takes a while to embed."""
    sentences = [f"Essay {i}, part {j}: the river town number {i} kept ledger {j} of grain, salt and timber."
                 for j in range(120)]  # fmt: skip
    return " ".join(sentences).encode()


def counts(url: str, store_id: str, batch_id: str) -> dict:
    return httpx.get(f"{url}/v1/vector_stores/{store_id}/file_batches/{batch_id}", timeout=30).json()["file_counts"]


def killed_part_way(process: subprocess.Popen, url: str, files: int, name: str) -> tuple[str, str, list[str]]:
    """A batch of `files` essays attached on the server `process` at `url`, which is SIGKILLed once one file is done
    and others are not: (store id, batch id, file ids)."""
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        file_ids = [upload(client, f"essay-{i}.txt", essay(i)) for i in range(files)]
        store = client.vector_stores.create(name=name)
        batch = client.vector_stores.file_batches.create(store.id, file_ids=file_ids)
        seen = wait_until(lambda: (c := counts(url, store.id, batch.id))["completed"] >= 1 and c, "a file to complete")
        os.kill(process.pid, signal.SIGKILL)  # part-way: files done, in hand, and waiting
        process.wait(timeout=30)
        assert seen["in_progress"] > 0, seen
        return store.id, batch.id, file_ids
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_a_batch_survives_sigkill_without_loss_or_duplicates(tmp_path: Path):
    store_id, batch_id, file_ids = killed_part_way(*serve_process(tmp_path / "data"), files=20, name="durable")
    process, url = serve_process(tmp_path / "data")
    try:
        final = wait_until(lambda: (c := counts(url, store_id, batch_id))["in_progress"] == 0 and c, "the batch")
        assert (final["completed"], final["failed"], final["total"]) == (20, 0, 20)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        clean = client.vector_stores.create(name="clean", file_ids=file_ids)
        wait_until(lambda: client.vector_stores.retrieve(clean.id).status == "completed", "the clean run")
        after_kill, clean_run = (httpx.get(f"{url}/v1/indexes/{name}").json() for name in (store_id, clean.id))
        assert after_kill["document_count"] == clean_run["document_count"] == 20
        assert after_kill["vector_count"] == clean_run["vector_count"] == after_kill["faiss_vectors"]
    finally:
        process.kill()
        process.wait(timeout=30)


def test_replicas_process_each_file_once(postgres: str, tmp_path: Path):
    url = new_database(postgres)
    replicas = [start_server(tmp_path / name, database_url=url) for name in ("a", "b")]
    try:
        client = openai.OpenAI(base_url=f"{replicas[0].url}/v1", api_key="unused", max_retries=0)
        file_ids = [upload(client, f"note-{i}.txt", f"Note {i}: the tide turned at {i} o'clock.".encode())
                    for i in range(12)]  # fmt: skip
        store = client.vector_stores.create(name="shared")
        batch = client.vector_stores.file_batches.create(store.id, file_ids=file_ids)
        other = openai.OpenAI(base_url=f"{replicas[1].url}/v1", api_key="unused", max_retries=0)
        done = other.vector_stores.file_batches.poll(batch.id, vector_store_id=store.id)  # the other replica reads it
        assert (done.status, done.file_counts.completed) == ("completed", 12)
        assert sum(replica.services.processor.processed for replica in replicas) == 12
    finally:
        for replica in replicas:
            replica.stop()


@pytest.mark.slow
def test_a_dead_replicas_files_are_taken_over(postgres: str, tmp_path: Path):
    """Replica A dies (SIGKILL) holding files; replica B takes them over once A's leases run out."""
    url = new_database(postgres)
    a = serve_process(tmp_path / "a", env={"VSEARCH_DATABASE_URL": url, "VSEARCH_JOB_LEASE_S": "2"})
    store_id, batch_id, _ = killed_part_way(*a, files=8, name="orphaned")
    replica = start_server(tmp_path / "b", database_url=url, job_lease_s=2)
    try:
        final = wait_until(lambda: (c := counts(replica.url, store_id, batch_id))["in_progress"] == 0 and c, "B")
        assert (final["completed"], final["total"]) == (8, 8)
        index = httpx.get(f"{replica.url}/v1/indexes/{store_id}").json()
        assert index["document_count"] == 8 and replica.services.processor.processed >= 1
    finally:
        replica.stop()


def test_a_storage_outage_leaves_the_file_to_be_processed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An outage is not the file's fault: it stays in_progress, and is taken again once its lease ends."""
    from service.errors import Unavailable

    live = start_server(tmp_path, job_lease_s=1)
    ingest, calls = live.services.search.ingest, []

    async def down_once(*args, **kwargs):  # the fault: the database unreachable on the first try
        calls.append(args[0])
        if len(calls) == 1:
            raise Unavailable("The database is unreachable.", code="storage_unavailable")
        return await ingest(*args, **kwargs)

    monkeypatch.setattr(live.services.search, "ingest", down_once)
    try:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        store = client.vector_stores.create(name="outage")
        file = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("a.txt", b"Still here."))
        assert (file.status, file.last_error, calls) == ("completed", None, [store.id, store.id])
    finally:
        live.stop()
