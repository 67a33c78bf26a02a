"""Files and fine-tuning jobs, driven end to end by the official openai client against the live server."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from indexes.databases.sqlite import Database
from service.finetune.jobs import SqliteJobStore
from service.finetune.records import FineTuningJob, Hyperparameters, Method
from tests.conftest import STORES, each_store
from tests.helpers import LiveServer, start_server
from tests.test_embeddings_api import assert_error
from tests.test_indexes_api import MODEL, add, new_index, query

pytestmark = pytest.mark.slow  # fine-tuning jobs trained end to end, servers restarted


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest) -> LiveServer:
    """Files and jobs on the embedded store (SQLite and the data dir) and in PostgreSQL."""
    return each_store(request)


TOPICS = [
    ("how do volcanoes erupt", "Magma rises through the crust and pressure forces lava and ash out of the vent."),
    ("best way to store coffee beans", "Keep roasted beans in an airtight container away from light and heat."),
    ("why is the sky blue", "Rayleigh scattering sends short blue wavelengths of sunlight across the sky."),
    ("how to tie a bowline knot", "Form a small loop, pass the end up through it, around the line and back down."),
    ("what causes tides", "The moon's gravity pulls on the oceans, raising bulges that the earth rotates through."),
    ("how do vaccines work", "They train the immune system with a harmless antigen so it remembers the pathogen."),
    ("how to prune tomato plants", "Remove the suckers between the stem and branches so fruit gets the energy."),
    ("what is a black hole", "A region where gravity is so strong that not even light can escape its horizon."),
    ("how to make sourdough starter", "Mix flour and water daily and let wild yeast and bacteria ferment it."),
    ("why do cats purr", "Cats purr through vibrating laryngeal muscles, often when content or healing."),
    ("how does a compass work", "A magnetised needle aligns with the earth's magnetic field and points north."),
    ("how to learn a language fast", "Practise daily with spaced repetition and speak with native speakers early."),
]


def training_lines() -> list[dict]:
    """The three accepted formats, mixed."""
    lines = []
    for i, (question, passage) in enumerate(TOPICS):
        if i % 3 == 0:
            lines.append({"messages": [{"role": "system", "content": "search"}, {"role": "user", "content": question},
                                       {"role": "assistant", "content": passage}]})  # fmt: skip
        elif i % 3 == 1:
            lines.append({"input": {"messages": [{"role": "user", "content": question}]},
                          "preferred_output": [{"role": "assistant", "content": passage}],
                          "non_preferred_output": [{"role": "assistant", "content": TOPICS[i - 1][1]}]})  # fmt: skip
        else:
            lines.append({"query": question, "positive": passage, "negative": [TOPICS[i - 2][1]]})
    return lines


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def wait_for(client: openai.OpenAI, job_id: str, statuses: set[str], timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.2)


def test_fine_tuning_flow_with_the_openai_client(openai_client, http):
    upload = openai_client.files.create(file=("train.jsonl", io.BytesIO(jsonl(training_lines()))), purpose="fine-tune")
    assert upload.id.startswith("file-") and upload.purpose == "fine-tune" and upload.filename == "train.jsonl"
    validation = openai_client.files.create(
        file=("valid.jsonl", io.BytesIO(jsonl(training_lines()[:4]))), purpose="fine-tune"
    )

    job = openai_client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=upload.id,
        validation_file=validation.id,
        suffix="topics",
        seed=42,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 4}}},
        metadata={"team": "search"},
    )
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.status == "validating_files" and job.seed == 42 and job.metadata == {"team": "search"}
    assert job.organization_id and job.training_file == upload.id and job.validation_file == validation.id

    done = wait_for(openai_client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:{MODEL}:vsearch:topics:{job.id}"
    assert done.finished_at >= done.created_at and done.trained_tokens > 0 and done.error is None
    assert done.hyperparameters.n_epochs == 3 and done.method.type == "supervised"
    # What ran is on the record: "auto" resolved, in both places OpenAI shows it.
    assert job.hyperparameters.learning_rate_multiplier == "auto"
    resolved = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0}
    assert done.hyperparameters.model_dump(exclude_unset=True) == resolved
    assert done.method.supervised.hyperparameters.model_dump(exclude_unset=True) == resolved

    assert job.id in [j.id for j in openai_client.fine_tuning.jobs.list().data]
    events = openai_client.fine_tuning.jobs.list_events(job.id, limit=100).data
    messages = [e.message for e in events]
    assert "The job has successfully completed" in messages[0]
    assert any(e.type == "metrics" for e in events) and messages[-1].startswith("Validating training file")
    checkpoints = openai_client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [9, 6, 3]  # 12 examples / batch 4 = 3 steps an epoch
    assert checkpoints[0].metrics.valid_loss is not None
    assert checkpoints[0].fine_tuned_model_checkpoint.startswith(done.fine_tuned_model)

    (result_id,) = done.result_files
    result = openai_client.files.retrieve(result_id)
    assert result.purpose == "fine-tune-results"
    csv_text = openai_client.files.content(result_id).text
    assert csv_text.splitlines()[0] == "step,train_loss,train_accuracy,valid_loss,valid_accuracy"
    assert len(csv_text.splitlines()) == 10

    # The model is listed and embeds queries.
    assert done.fine_tuned_model in [m.id for m in openai_client.models.list().data]
    tuned = openai_client.embeddings.create(
        model=done.fine_tuned_model, input="why is the sky blue", encoding_format="float"
    )
    base = openai_client.embeddings.create(model=MODEL, input="why is the sky blue", encoding_format="float")
    tuned_vector, base_vector = np.array(tuned.data[0].embedding), np.array(base.data[0].embedding)
    assert abs(np.linalg.norm(tuned_vector) - 1) < 1e-5 and not np.allclose(tuned_vector, base_vector)

    # ... and serves as an index's query model, with the documents' base vectors left as they are.
    name = new_index(http)
    add(http, name, [{"id": f"t{i}", "text": passage} for i, (_, passage) in enumerate(TOPICS)])
    patched = http.patch(f"/v1/indexes/{name}", json={"query_model": done.fine_tuned_model}).json()
    assert patched["query_model"] == done.fine_tuned_model
    response = http.post(f"/v1/indexes/{name}/query", json={"query": "why is the sky blue", "top_k": 1}).json()
    assert response["model"] == done.fine_tuned_model and response["data"][0]["id"] == "t2"
    assert http.patch(f"/v1/indexes/{name}", json={"query_model": None}).json()["query_model"] is None
    assert query(http, name, query="why is the sky blue", top_k=1)[0]["id"] == "t2"

    # A fine-tuned model cannot be fine-tuned again.
    with pytest.raises(openai.BadRequestError):
        openai_client.fine_tuning.jobs.create(model=done.fine_tuned_model, training_file=upload.id)


def test_job_with_a_bad_file_fails_validation(openai_client):
    lines = training_lines()
    lines[2] = {"messages": [{"role": "user", "content": "a question with no answer"}]}
    upload = openai_client.files.create(file=("bad.jsonl", io.BytesIO(jsonl(lines))), purpose="fine-tune")
    job = openai_client.fine_tuning.jobs.create(model=MODEL, training_file=upload.id)
    failed = wait_for(openai_client, job.id, {"failed", "succeeded"})
    assert failed.status == "failed"
    assert failed.error.code == "invalid_training_file" and failed.error.param == "training_file"
    assert failed.error.message == f"{upload.id}: line 3: no assistant message"
    assert failed.fine_tuned_model is None

    few = openai_client.files.create(file=("few.jsonl", io.BytesIO(jsonl(training_lines()[:3]))), purpose="fine-tune")
    failed = wait_for(
        openai_client, openai_client.fine_tuning.jobs.create(model=MODEL, training_file=few.id).id, {"failed"}
    )
    assert "at least 10" in failed.error.message


def test_job_is_cancelled(openai_client):
    upload = openai_client.files.create(file=("train.jsonl", io.BytesIO(jsonl(training_lines()))), purpose="fine-tune")
    job = openai_client.fine_tuning.jobs.create(
        model=MODEL, training_file=upload.id, hyperparameters={"n_epochs": 200, "batch_size": 2}
    )
    wait_for(openai_client, job.id, {"running"})
    cancelled = openai_client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    time.sleep(1.5)
    after = openai_client.fine_tuning.jobs.retrieve(job.id)
    assert after.status == "cancelled" and after.fine_tuned_model is None
    assert any("cancelled" in e.message for e in openai_client.fine_tuning.jobs.list_events(job.id).data)
    with pytest.raises(openai.BadRequestError):
        openai_client.fine_tuning.jobs.cancel(job.id)


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": MODEL}, 400, "training_file", None),
        ({"model": MODEL, "training_file": "file-doesnotexist"}, 400, "training_file", "invalid_file_id"),
        ({"model": "nope", "training_file": "file-x"}, 404, "model", "model_not_found"),
        ({"model": MODEL, "training_file": "file-x", "suffix": ""}, 400, "suffix", None),
        ({"model": MODEL, "training_file": "file-x", "seed": -1}, 400, "seed", None),
        ({"model": MODEL, "training_file": "file-x", "method": {"type": "reinforcement"}}, 400, "method.type", None),
        (
            {"model": MODEL, "training_file": "file-x", "hyperparameters": {"n_epochs": "many"}},
            400,
            "hyperparameters.n_epochs",
            None,
        ),
        ({"model": MODEL, "training_file": "file-x", "metadata": {str(i): "v" for i in range(17)}}, 400, "metadata",
         None),
        ({"model": MODEL, "training_file": "file-x", "learning_rate": 1}, 400, "learning_rate", None),
    ],
)  # fmt: skip
def test_create_job_errors(http, body, status, param, code):
    assert_error(http.post("/v1/fine_tuning/jobs", json=body), status, param, code)


def test_files_api(openai_client, http):
    first = openai_client.files.create(file=("a.jsonl", io.BytesIO(b'{"x": 1}\n')), purpose="fine-tune")
    second = openai_client.files.create(file=("b.txt", io.BytesIO(b"hello")), purpose="user_data")
    listed = [f.id for f in openai_client.files.list().data]
    assert listed.index(second.id) < listed.index(first.id)  # newest first
    assert [f.id for f in openai_client.files.list(purpose="user_data").data] == [second.id]
    assert openai_client.files.retrieve(first.id).bytes == 9
    assert openai_client.files.content(first.id).content == b'{"x": 1}\n'
    assert openai_client.files.delete(second.id).deleted is True
    assert_error(http.get(f"/v1/files/{second.id}"), 404, "file_id", "file_not_found")
    assert_error(http.get("/v1/files/../../etc/passwd"), 404, None, "unknown_url")
    assert_error(http.get("/v1/files/file-..%2F..%2Fx"), 404, None, "unknown_url")
    assert_error(http.get("/v1/files/file-abc.def"), 404, "file_id", "file_not_found")
    bad_purpose = http.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "nonsense"})
    assert_error(bad_purpose, 400, "purpose")
    assert_error(http.post("/v1/files", files={"file": ("a.txt", b"x")}), 400, "purpose")
    no_file = http.post("/v1/files", files={"purpose": (None, "fine-tune")})
    assert_error(no_file, 400, "file")
    # Not multipart at all: refused by media type, before the route (a web page could send a form cross-site).
    assert_error(http.post("/v1/files", data={"purpose": "fine-tune"}), 415, None, "unsupported_media_type")
    assert_error(http.post("/v1/files", json={"purpose": "fine-tune"}), 415, None, "unsupported_media_type")


def test_upload_size_limit(tmp_path: Path):
    live = start_server(tmp_path, max_upload_bytes=1000)
    try:
        response = httpx.post(
            f"{live.url}/v1/files", files={"file": ("big.jsonl", b"x" * 5000)}, data={"purpose": "fine-tune"}
        )
        assert_error(response, 413, "file", "file_too_large")
        assert not list((tmp_path / "files").glob("file-*"))  # nothing left behind
        ok = httpx.post(
            f"{live.url}/v1/files", files={"file": ("small.jsonl", b"x" * 900)}, data={"purpose": "fine-tune"}
        )
        assert ok.status_code == 200 and ok.json()["bytes"] == 900
    finally:
        live.stop()


def test_unfinished_job_runs_again_after_a_restart(tmp_path: Path):
    first = start_server(tmp_path)
    try:
        upload = httpx.post(
            f"{first.url}/v1/files", files={"file": ("t.jsonl", jsonl(training_lines()))}, data={"purpose": "fine-tune"}
        ).json()
    finally:
        first.stop()
    # A job the previous process left 'running' when it died.
    store = SqliteJobStore(Database(tmp_path / "finetune" / "jobs.sqlite"))
    asyncio.run(store.save(
        FineTuningJob(
            id="ftjob-interrupted", created_at=int(time.time()), hyperparameters=Hyperparameters(n_epochs=1),
            model=MODEL, organization_id="org-vsearch", status="running", training_file=upload["id"], seed=1,
            method=Method(type="supervised"),
        )
    ))  # fmt: skip
    store.close()
    second = start_server(tmp_path)
    try:
        client = openai.OpenAI(base_url=f"{second.url}/v1", api_key="unused")
        done = wait_for(client, "ftjob-interrupted", {"succeeded", "failed"})
        assert done.status == "succeeded"
        assert any(
            "restarted" in e.message for e in client.fine_tuning.jobs.list_events("ftjob-interrupted", limit=50).data
        )
    finally:
        second.stop()
    # And its model is still served after another restart.
    third = start_server(tmp_path)
    try:
        models = httpx.get(f"{third.url}/v1/models").json()["data"]
        assert done.fine_tuned_model in [m["id"] for m in models]
    finally:
        third.stop()


# A query side the base model gets wrong by design: every ticket starts with the same long boilerplate, and the
# index holds articles about the helpdesk itself, which that boilerplate matches. Trained on 12 tickets (with those
# articles as negatives), the adapter learns to look past the boilerplate, and that carries over to held-back ones.
BOILERPLATE = (
    "Customer helpdesk ticket #4471, priority normal, queue: general questions. "
    "Please find the help article that answers this ticket: "
)
HELPDESK_ARTICLES = [
    "How the customer helpdesk queue assigns each ticket to an agent and a help article.",
    "Helpdesk tickets: finding the help article that answers a customer's ticket.",
    "Our customer support queue: ticket priorities, help articles and response times.",
    "Writing a help article for the helpdesk so tickets in the queue are answered faster.",
]
HELD_BACK = [
    ("how do bees make honey", "Bees swallow nectar, pass it between workers and fan it until the water evaporates."),
    ("why do leaves change colour in autumn",
     "Chlorophyll breaks down in the cold, revealing yellow and red pigments."),
    ("how does a refrigerator keep food cold",
     "A compressor pumps refrigerant that absorbs heat inside and releases it outside."),
    ("what makes bread rise", "Yeast ferments sugars into carbon dioxide gas that is trapped by the gluten network."),
]  # fmt: skip


def test_fine_tuned_query_model_ranks_held_back_passages_higher(openai_client, http):
    lines = [{"query": BOILERPLATE + q, "positive": p, "negative": HELPDESK_ARTICLES} for q, p in TOPICS]
    upload = openai_client.files.create(file=("tickets.jsonl", io.BytesIO(jsonl(lines))), purpose="fine-tune")
    job = openai_client.fine_tuning.jobs.create(
        model=MODEL, training_file=upload.id, seed=1, hyperparameters={"n_epochs": 10, "batch_size": 4}
    )
    done = wait_for(openai_client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error

    name = new_index(http)
    passages = [p for _, p in TOPICS + HELD_BACK] + HELPDESK_ARTICLES
    add(http, name, [{"id": f"p{i}", "text": text} for i, text in enumerate(passages)])

    def ranks() -> list[int]:
        """Rank of each held-back ticket's own article among all the index's documents."""
        found = []
        for i, (question, _) in enumerate(HELD_BACK):
            hits = query(http, name, query=BOILERPLATE + question, top_k=len(passages))
            found.append([hit["id"] for hit in hits].index(f"p{len(TOPICS) + i}") + 1)
        return found

    base = ranks()
    http.patch(f"/v1/indexes/{name}", json={"query_model": done.fine_tuned_model}).raise_for_status()
    tuned = ranks()
    assert min(base) > 1  # the base model puts a helpdesk article first for every held-back ticket
    # Measured here: base [5, 4, 5, 5], tuned [1, 3, 6, 1]. A linear adapter from 12 pairs need not lift every
    # ticket, but it must lift most of them, and the mean reciprocal rank by far.
    assert sum(t < b for t, b in zip(tuned, base, strict=True)) >= 3, (base, tuned)
    assert tuned.count(1) >= 2, (base, tuned)
    assert sum(1 / t for t in tuned) > 2 * sum(1 / b for b in base), (base, tuned)
