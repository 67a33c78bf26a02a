"""Parsing real documents: a PDF printed by headless Chromium (two pages, and one with no text layer), a DOCX written
by python-docx, an HTML page, Markdown, Latin-1 text, JSON; and the files that must fail with OpenAI's codes: a
corrupt PDF, an encrypted one, an empty file, a scanned page, a kind we do not parse. Then `vsearch ingest` over a
folder of them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import docx
import pypdf
import pytest

from service.documents import DocumentError, parse_document
from tests.test_ingest import all_ids, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: `.ci/run` installs it (apt)")
browser = pytest.mark.browser  # prints with Chromium

TWO_PAGES = """<html><head><title>Tide tables</title><style>.next { page-break-before: always }</style></head><body>
<h1>Tides</h1><p>The moon's gravity pulls on the oceans and raises two bulges of water.</p>
<h2 class="next">Spring tides</h2><p>Spring tides come when the sun and the moon line up with the earth.</p>
</body></html>"""
NO_TEXT = """<html><body><svg width="400" height="300"><rect width="400" height="300" fill="#345"/>
<circle cx="200" cy="150" r="80" fill="#fc3"/></svg></body></html>"""


def print_pdf(html: str, folder: Path, name: str) -> Path:
    """`html` printed to PDF by headless Chromium, as a person's browser would."""
    page, pdf = folder / f"{name}.html", folder / f"{name}.pdf"
    page.write_text(html)
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={folder / 'chromium'}",
         "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return pdf


def write_docx(path: Path) -> Path:
    document = docx.Document()
    document.core_properties.title = "Brewing guide"
    document.add_heading("Coffee", level=1)
    document.add_paragraph("Keep roasted beans in an airtight container away from light and heat.")
    document.add_heading("Tea", level=1)
    document.add_paragraph("Green tea brews best in water just below the boil, for two minutes.")
    document.save(str(path))
    return path


def at(parsed, sentence: str):
    """The section holding `sentence`."""
    return parsed.section_at(parsed.text.index(sentence))


@browser
@needs_chromium
def test_a_pdf_printed_by_chromium_gives_its_text_by_page(tmp_path: Path):
    parsed = parse_document("tides.pdf", print_pdf(TWO_PAGES, tmp_path, "tides").read_bytes())
    assert parsed.title == "Tide tables"
    assert at(parsed, "raises two bulges of water").page == 1
    assert at(parsed, "the sun and the moon line up").page == 2


def test_a_docx_gives_its_text_under_its_headings(tmp_path: Path):
    parsed = parse_document("guide.docx", write_docx(tmp_path / "guide.docx").read_bytes())
    assert parsed.title == "Brewing guide"
    assert at(parsed, "airtight container").heading == "Coffee"
    assert at(parsed, "just below the boil").heading == "Tea"


def test_html_markdown_latin1_and_json():
    html = parse_document("page.html", TWO_PAGES.encode())
    assert html.title == "Tide tables" and "<p>" not in html.text
    assert at(html, "line up with the earth").heading == "Spring tides"
    markdown = parse_document(
        "notes.md", b"# Setup\nInstall it.\n\n```\n# not a heading\n```\n## Run\nStart the server.\n"
    )
    assert markdown.title == "Setup"
    assert at(markdown, "Start the server").heading == "Run"
    assert at(markdown, "# not a heading").heading == "Setup"  # inside a code fence
    latin1 = parse_document("café.txt", "Le café crème coûte trois euros à Genève.".encode("latin-1"))
    assert latin1.text == "Le café crème coûte trois euros à Genève."
    data = parse_document("item.json", json.dumps({"name": "bowline", "uses": ["sailing"]}).encode())
    assert "bowline" in data.text and "sailing" in data.text


@pytest.mark.slow
@browser
@needs_chromium
def test_files_that_cannot_be_read_fail_with_openais_codes(tmp_path: Path):
    pdf = print_pdf(TWO_PAGES, tmp_path, "tides").read_bytes()
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(tmp_path / "tides.pdf"))
    writer.encrypt("s3cret")
    encrypted = tmp_path / "locked.pdf"
    with encrypted.open("wb") as f:
        writer.write(f)
    scanned = print_pdf(NO_TEXT, tmp_path, "scan").read_bytes()
    cases = [
        ("corrupt.pdf", pdf[: len(pdf) // 3], "invalid_file", "could not be read"),
        ("locked.pdf", encrypted.read_bytes(), "invalid_file", "encrypted"),
        ("empty.txt", b"", "invalid_file", "empty"),
        ("scan.pdf", scanned, "invalid_file", "no text layer"),
        ("slides.key", b"PK\x03\x04 not ours", "unsupported_file", "not parsed here"),
        ("broken.docx", b"PK\x03\x04 not a zip archive", "invalid_file", "DOCX could not be read"),
    ]
    for name, data, code, words in cases:
        with pytest.raises(DocumentError) as caught:
            parse_document(name, data)
        assert (caught.value.code, words in caught.value.message) == (code, True), (name, caught.value.message)


@pytest.mark.slow
@browser
@needs_chromium
def test_vsearch_ingest_reads_a_folder_of_documents(server, http, tmp_path: Path):
    folder = tmp_path / "library"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(print_pdf(TWO_PAGES, tmp_path, "tides"), folder / "tides.pdf")
    write_docx(folder / "sub" / "guide.docx")
    (folder / "notes.md").write_text("# Knots\nA bowline makes a fixed loop at the end of a line.\n")
    (folder / "menu.txt").write_bytes("Crème brûlée and café au lait.".encode("latin-1"))
    (folder / "scan.pdf").write_bytes(print_pdf(NO_TEXT, tmp_path, "scan").read_bytes())
    result = run_cli("ingest", str(folder), "--index", "library", "--url", server.url, cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # the scan has no text: rejected, the others indexed
    assert sorted(all_ids(http, "library")) == ["menu.txt", "notes.md", "sub/guide.docx", "tides.pdf"]
    rejects = [json.loads(line) for line in (tmp_path / "library.rejects.jsonl").read_text().splitlines()]
    assert [r["document"] for r in rejects] == ["scan.pdf"] and "no text layer" in rejects[0]["reason"]
    hits = http.post("/v1/indexes/library/query", json={"query": "when do spring tides happen", "top_k": 1}).json()
    assert hits["data"][0]["id"] == "tides.pdf" and hits["data"][0]["metadata"]["title"] == "Tide tables"
    assert http.get("/v1/indexes/library/documents/menu.txt").json()["text"] == "Crème brûlée and café au lait."
