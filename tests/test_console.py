"""The web console and the API reference in a real headless Chromium (Debian's `chromium`, driven by Playwright's
Python package with executable_path: no browser is downloaded). Every request the page makes is watched: nothing
may leave loopback. Screenshots of each screen go to test-artifacts/console/."""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import openai
import pytest

from tests.helpers import start_server
from tests.test_fine_tuning import jsonl, training_lines, wait_for

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "console"
MODEL = "all-MiniLM-L6-v2"
CORPUS = [
    {"id": "fox", "text": "The quick brown fox jumps over the lazy dog.", "metadata": {"kind": "animal"}},
    {"id": "espresso", "text": "Espresso is brewed by forcing hot water through finely ground coffee.",
     "metadata": {"kind": "drink"}},
    {"id": "zx81", "text": "Reference manual for the ZX81-QTR serial adapter, model 7731.",
     "metadata": {"kind": "manual"}},
    {"id": "tides", "text": "Tides are caused by the gravitational pull of the moon on the oceans.",
     "metadata": {"kind": "science"}},
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,  # a browser driven through every screen, a fine-tuning job among them
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: `.ci/run` installs it (apt)"),
]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture()
def page(browser):
    """A page whose every request must go to loopback: any other is refused and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def guard(route, request) -> None:
        if urlparse(request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.outside = outside
    yield page
    context.close()
    assert outside == [], f"the page tried to reach {outside}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_api_reference_renders_offline_with_authorize(page, server):
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "vsearch" in page.inner_text(".swagger-ui .info .title")
    assert page.locator("button.authorize").count() == 1  # the bearer scheme
    page.get_by_text("/v1/indexes/{name}/query").first.wait_for()
    shot(page, "docs")
    spec = page.request.get(f"{server.url}/docs/openapi.json").json()
    assert spec["components"]["securitySchemes"] == {"apiKey": {"type": "http", "scheme": "bearer"}}
    query = spec["components"]["schemas"]["QueryRequest"]["properties"]
    assert "$gte" in query["filter"]["description"] and query["filter"]["examples"]
    assert all(query[field].get("description") for field in ("mode", "include", "group_by", "diversity"))


def test_console_end_to_end(page, server, tmp_path: Path):
    page.goto(server.url)
    page.wait_for_selector("#index-select")
    # Create an index and upload a small JSON Lines file into it.
    page.click("button[data-tab=indexes]")
    page.fill("#new-index-name", "console-demo")
    page.select_option("#new-index-model", MODEL)
    page.click("#create-index")
    page.wait_for_selector("#indexes td:text-is('console-demo')")
    upload = tmp_path / "corpus.jsonl"
    upload.write_text("".join(json.dumps(doc) + "\n" for doc in CORPUS))
    page.set_input_files("#upload-file", str(upload))
    page.click("#upload-button")
    page.wait_for_selector("#upload-status:has-text('Done: 4 created')")
    assert page.eval_on_selector("#upload-progress", "p => p.value / p.max") == 1
    page.wait_for_selector("#indexes tr:has(td:text-is('console-demo')) td:text-is('4')")
    shot(page, "indexes")

    # A query in each mode: the expected top hit, with the query's words highlighted.
    page.click("button[data-tab=search]")
    page.select_option("#index-select", "console-demo")
    for mode, text, top in [("dense", "coffee drinks", "espresso"), ("lexical", "ZX81-QTR", "zx81"),
                            ("hybrid", "serial adapter 7731", "zx81")]:  # fmt: skip
        page.select_option("#mode-a", mode)
        page.fill("#query-input", text)
        page.click("#search-button")
        page.wait_for_selector(f"#results-a li:first-child .hit-id:text-is('{top}')")
        ranks = page.inner_text("#results-a li:first-child .ranks")
        assert ranks.startswith({"dense": "dense", "lexical": "lexical", "hybrid": "dense"}[mode]), ranks
    assert "lexical #1" in ranks and page.locator("#results-a li").count() == 4  # hybrid: both lists, all four
    assert page.locator("#results-a li:first-child mark").count() >= 1
    shot(page, "search")

    # A bad filter: the server's own error, rendered.
    page.fill("#filter-input", '{"kind": {"$regex": "a.*"}}')
    page.click("#search-button")
    page.wait_for_selector("#error:not([hidden])")
    assert "$regex" in page.inner_text("#error") and "filter" in page.inner_text("#error")
    shot(page, "error")
    page.fill("#filter-input", '{"kind": "animal"}')
    page.click("#search-button")
    page.wait_for_selector("#error", state="hidden")
    page.wait_for_selector("#results-a li:first-child .hit-id:text-is('fox')")

    # Documents, page by page.
    page.click("button[data-tab=documents]")
    page.wait_for_selector("#documents td:text-is('espresso')")
    assert page.locator("#documents tbody tr").count() == 4
    shot(page, "documents")


def test_compare_base_and_fine_tuned_and_see_the_job(page, server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x")
    upload = client.files.create(file=("train.jsonl", io.BytesIO(jsonl(training_lines()))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=upload.id, suffix="console",
                                         hyperparameters={"n_epochs": 3, "batch_size": 4})  # fmt: skip
    done = wait_for(client, job.id, {"succeeded", "failed"})
    assert done.status == "succeeded"
    with_docs = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x")
    assert with_docs.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model
    import httpx

    httpx.post(f"{server.url}/v1/indexes", json={"name": "console-ft", "model": MODEL}).raise_for_status()
    httpx.post(f"{server.url}/v1/indexes/console-ft/documents", json={"documents": CORPUS}).raise_for_status()

    page.goto(server.url)
    page.wait_for_selector(f"#model-b option[value='{done.fine_tuned_model}']", state="attached")
    page.select_option("#index-select", "console-ft")
    page.check("#compare-toggle")
    page.select_option("#mode-b", "dense")
    page.select_option("#model-b", done.fine_tuned_model)
    page.fill("#query-input", "how do tides work")
    page.click("#search-button")
    page.wait_for_selector("#results-b li:first-child .hit-id")
    assert page.inner_text("#results-a li:first-child .hit-id") == "tides"
    assert page.locator("#results-b li").count() == 4 and page.is_visible("#results-b-column")
    shot(page, "compare")

    page.click("button[data-tab=jobs]")
    page.click(f"#jobs button:text-is('{done.id}')")
    page.wait_for_selector("#job-chart polyline.loss-line")
    assert page.locator("#job-events li").count() >= 3
    assert page.locator(f"#jobs tr:has(button:text-is('{done.id}')) td.status").inner_text() == "succeeded"
    shot(page, "jobs")


def test_a_server_with_keys_asks_for_one(page, tmp_path: Path):
    # Built in a thread of its own: sync Playwright runs an event loop on this one, where storage refuses to work.
    with ThreadPoolExecutor(1) as pool:
        secured = pool.submit(start_server, tmp_path, api_keys=["s3cret"]).result()
    try:
        page.goto(secured.url)
        page.wait_for_selector("#key-dialog[open]")
        shot(page, "key")
        page.fill("#key-input", "s3cret")
        page.click("#key-save")
        page.wait_for_selector("#key-dialog", state="hidden")
        page.click("button[data-tab=indexes]")
        page.wait_for_selector("#indexes thead")
        assert page.evaluate("sessionStorage.getItem('vsearch-api-key')") == "s3cret"
        assert page.is_hidden("#error")
    finally:
        secured.stop()


def test_vector_stores_view_shows_files_errors_and_search(page, server):
    """Sync Playwright runs an event loop in this thread: the openai client (httpx, sync) is fine here."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    store = client.vector_stores.create(name="console-library")
    batch = client.vector_stores.file_batches.upload_and_poll(store.id, files=[
        ("knots.md", io.BytesIO(b"# Knots\n## Bowline\nA bowline makes a fixed loop at the end of a line.")),
        ("empty.txt", io.BytesIO(b"")),
    ])  # fmt: skip
    assert (batch.file_counts.completed, batch.file_counts.failed) == (1, 1)
    page.goto(server.url)
    page.click("button[data-tab=stores]")
    page.click(f"#stores button:text-is('{store.id}')")
    page.wait_for_selector("#store-files td:text-is('knots.md')")
    assert "invalid_file: empty.txt is empty." in page.inner_text("#store-files")
    page.fill("#store-query", "how to tie a fixed loop")
    page.click("#store-search-button")
    page.wait_for_selector("#store-results li:first-child .hit-head:has-text('knots.md (Knots)')")
    assert page.locator("#store-results li:first-child mark").count() >= 1
    shot(page, "vector-stores")
    client.vector_stores.delete(store.id)
