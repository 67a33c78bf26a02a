"""parse_document(name, data): one parser per kind of file, chosen by the name's suffix (and a PDF by its magic
too), each with a well-kept library: PDFium (pypdfium2) for PDF, python-docx for DOCX, BeautifulSoup for HTML,
charset-normalizer for text that is not UTF-8. What cannot be read is a DocumentError with OpenAI's code:
`unsupported_file` (a kind we do not parse) or `invalid_file` (damaged, encrypted, empty, or no text in it, such as
a scanned PDF: there is no OCR here)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import PurePath

import charset_normalizer
import docx
import pypdfium2 as pdfium
from bs4 import BeautifulSoup

from service.documents.values import DocumentError, ParsedDocument, Section

HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
MARKDOWN_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
MARKDOWN_FENCE = re.compile(r"^ {0,3}(```|~~~)")


class SectionedText:
    """Text built piece by piece, each piece recorded as a section (its page or heading)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.sections: list[Section] = []
        self.length = 0

    def add(self, text: str, page: int | None = None, heading: str | None = None) -> None:
        text = text.strip()
        if not text:
            return
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        previous = self.sections[-1] if self.sections else None
        if (
            previous is not None
            and (previous.page, previous.heading) == (page, heading)
            and previous.end == self.length - 2
        ):
            self.sections[-1] = Section(previous.start, self.length + len(text), page, heading)
        else:
            self.sections.append(Section(self.length, self.length + len(text), page, heading))
        self.parts.append(text)
        self.length += len(text)

    def document(self, title: str | None, what: str) -> ParsedDocument:
        text = "".join(self.parts)
        if not text.strip():
            raise DocumentError("invalid_file", f"The {what} has no text to index.")
        return ParsedDocument(text, title, self.sections)


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without its BOM), else the encoding charset-normalizer finds (Latin-1, cp1252, UTF-16, ...).
    Short texts often fit several single-byte code pages equally well (French read as Central European turns
    "crème" into "crčme"): a tie goes to Windows-1252, the Western code page and a superset of Latin-1's text."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    matches = charset_normalizer.from_bytes(data)
    best = matches.best()
    if best is None:
        raise DocumentError("invalid_file", "The file is not text in any encoding that could be recognised.")
    tied = {m.encoding: m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)}
    return str(tied.get("cp1252", best))


def parse_pdf(data: bytes) -> ParsedDocument:
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise DocumentError("invalid_file", "The PDF is encrypted: upload it without a password.") from None
        raise DocumentError("invalid_file", f"The PDF could not be read ({exc}): is it complete?") from None
    try:
        built = SectionedText()
        for number in range(len(pdf)):
            page = pdf[number]
            textpage = page.get_textpage()
            built.add(textpage.get_text_range().replace("\r\n", "\n"), page=number + 1)
            textpage.close()
            page.close()
        title = (pdf.get_metadata_dict().get("Title") or "").strip() or None
    finally:
        pdf.close()
    try:
        return built.document(title, "PDF")
    except DocumentError:
        raise DocumentError("invalid_file", "The PDF has no text layer (a scan?): it needs OCR first, which vsearch "
                            "does not do.") from None  # fmt: skip


def parse_docx(data: bytes) -> ParsedDocument:
    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError("invalid_file", f"The DOCX could not be read ({exc}).") from None
    built = SectionedText()
    heading = None
    for paragraph in document.paragraphs:
        style = paragraph.style.name if paragraph.style is not None else ""
        if style.startswith("Heading") or style == "Title":
            heading = paragraph.text.strip() or heading
        built.add(paragraph.text, heading=heading)
    for table in document.tables:  # after the body's paragraphs: python-docx keeps them apart
        for row in table.rows:
            built.add(" | ".join(cell.text.strip() for cell in row.cells), heading=heading)
    return built.document(document.core_properties.title or None, "DOCX")


def parse_html(data: bytes) -> ParsedDocument:
    soup = BeautifulSoup(decode_text(data), "html.parser")
    for element in soup(["script", "style", "noscript", "template"]):
        element.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    if soup.title:
        soup.title.decompose()
    built = SectionedText()
    built.add(title or "")  # the title is text a reader searches by, too
    heading: str | None = None
    pending: list[str] = []
    body = soup.body or soup
    for element in body.find_all([*HEADINGS, "p", "li", "pre", "td", "th", "blockquote", "dd", "dt"]):
        if element.find_parent([*HEADINGS, "p", "li", "pre", "td", "th", "blockquote", "dd", "dt"]) is not None:
            continue  # its text is in the enclosing block's
        text = " ".join(element.get_text(" ").split())
        if element.name in HEADINGS:
            built.add(" ".join(pending), heading=heading)
            pending = []
            heading = text or heading
            built.add(text, heading=heading)
        else:
            pending.append(text)
    built.add(" ".join(pending), heading=heading)
    if len(built.parts) <= 1:  # no block elements: the page's visible text as a whole
        built.add(" ".join(body.get_text(" ").split()))
    return built.document(title, "HTML page")


def parse_markdown(data: bytes) -> ParsedDocument:
    built = SectionedText()
    heading: str | None = None
    block: list[str] = []
    fenced = False
    for line in decode_text(data).splitlines():
        if MARKDOWN_FENCE.match(line):
            fenced = not fenced
        match = None if fenced else MARKDOWN_HEADING.match(line)
        if match:
            built.add("\n".join(block), heading=heading)
            block = []
            heading = match.group(2).strip()
            built.add(heading, heading=heading)
        else:
            block.append(line)
    built.add("\n".join(block), heading=heading)
    first = next((s.heading for s in built.sections if s.heading), None)
    return built.document(first, "Markdown file")


def parse_text(data: bytes) -> ParsedDocument:
    built = SectionedText()
    built.add(decode_text(data))
    return built.document(None, "file")


def parse_json(data: bytes) -> ParsedDocument:
    try:
        value = json.loads(decode_text(data))
    except json.JSONDecodeError as exc:
        raise DocumentError(
            "invalid_file", f"The JSON file is not valid JSON ({exc.msg}, line {exc.lineno})."
        ) from None
    built = SectionedText()
    built.add(json.dumps(value, ensure_ascii=False, indent=1))
    return built.document(None, "JSON file")


PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".html": parse_html,
    ".htm": parse_html,
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".txt": parse_text,
    ".text": parse_text,
    ".json": parse_json,
}
SUFFIXES = frozenset(PARSERS)


def parse_document(name: str, data: bytes) -> ParsedDocument:
    """The text of file `name` (its suffix says what it is; a PDF is known by its magic too)."""
    if not data.strip():
        raise DocumentError("invalid_file", f"{name} is empty.")
    suffix = PurePath(name).suffix.lower()
    parser = parse_pdf if data.startswith(b"%PDF-") else PARSERS.get(suffix)
    if parser is None:
        supported = ", ".join(sorted(SUFFIXES))
        raise DocumentError("unsupported_file", f"{name}: files of type '{suffix or 'none'}' are not parsed here "
                            f"(supported: {supported}).")  # fmt: skip
    return parser(data)
