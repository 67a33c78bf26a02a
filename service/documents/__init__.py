"""Documents people have (PDF, DOCX, HTML, Markdown, plain text in any common encoding, JSON) turned into text with
its sections (a PDF's pages, the headings of the others), so a chunk can be cited. Shared by `vsearch ingest` and,
next, vector stores. Parsing is blocking work: run it in a worker thread."""

from service.documents.parsers import SUFFIXES, parse_document
from service.documents.values import DocumentError, ParsedDocument, Section

__all__ = ["SUFFIXES", "DocumentError", "ParsedDocument", "Section", "parse_document"]
