"""How a vector store's file becomes an index's document, and a hit becomes a search result: the chunk sizes a
chunking strategy means for the store's model, the document's metadata (attributes, filename, the sections that
let a chunk be cited), and the page or heading of a chunk."""

from __future__ import annotations

from typing import Any

from service.documents import ParsedDocument
from service.errors import InvalidRequest
from service.search.values import Chunking, Hit
from service.vector_stores.filters import ATTRIBUTES, check_attribute_key
from service.vector_stores.records import (
    AUTO_CHUNK_TOKENS,
    AUTO_OVERLAP_TOKENS,
    Attributes,
    ChunkingStrategy,
    Metadata,
    StaticChunking,
    StaticChunkSizes,
)

MAX_KEYS, MAX_KEY_CHARS, MAX_VALUE_CHARS = 16, 64, 512  # OpenAI's limits on metadata and attributes
FILENAME, SECTIONS = "filename", "sections"  # beside ATTRIBUTES in a document's metadata


def chunk_sizes(strategy: ChunkingStrategy | None, window: int, param: str) -> StaticChunking:
    """The sizes a strategy means for a model whose window holds `window` tokens: `auto` is OpenAI's 800 tokens
    overlapping by 400; a size past the window is clipped to it, the overlap scaled alike (a chunk is embedded
    whole or not at all)."""
    if isinstance(strategy, StaticChunking):
        size, overlap = strategy.static.max_chunk_size_tokens, strategy.static.chunk_overlap_tokens
        if overlap * 2 > size:
            raise InvalidRequest("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens.",
                                 param=f"{param}.static.chunk_overlap_tokens")  # fmt: skip
    else:
        size, overlap = AUTO_CHUNK_TOKENS, AUTO_OVERLAP_TOKENS
    if size > window:
        size, overlap = window, overlap * window // size
    return StaticChunking(StaticChunkSizes(max_chunk_size_tokens=size, chunk_overlap_tokens=overlap))


def engine_chunking(sizes: StaticChunking) -> Chunking:
    return Chunking(max_tokens=sizes.static.max_chunk_size_tokens, overlap_tokens=sizes.static.chunk_overlap_tokens)


def check_metadata(metadata: Metadata | Attributes, param: str) -> None:
    """OpenAI's limits: at most 16 keys of at most 64 characters, string values of at most 512."""
    if len(metadata) > MAX_KEYS:
        raise InvalidRequest(f"{param} has {len(metadata)} keys; at most {MAX_KEYS} are allowed.", param=param)
    for key, value in metadata.items():
        if len(key) > MAX_KEY_CHARS:
            raise InvalidRequest(f"{param} key {key[:20]!r}... is longer than {MAX_KEY_CHARS} characters.",
                                 param=param)  # fmt: skip
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            raise InvalidRequest(f"{param}.{key} is longer than {MAX_VALUE_CHARS} characters.", param=f"{param}.{key}")


def check_attributes(attributes: Attributes, param: str) -> None:
    check_metadata(attributes, param)
    for key in attributes:
        check_attribute_key(key, param)


def document_metadata(attributes: Attributes, filename: str, parsed: ParsedDocument) -> dict[str, Any]:
    """What the index keeps beside a file's text: its attributes (what filters read), its name, and where each
    section starts ([offset, page, heading]) so a chunk can be cited."""
    sections = [[s.start, s.page, s.heading] for s in parsed.sections]
    return {ATTRIBUTES: attributes, FILENAME: filename, SECTIONS: sections}


def chunk_location(hit: Hit) -> dict[str, Any]:
    """Where the hit's chunk sits: its span, the page (PDF) or heading (Markdown, DOCX, HTML) it starts on, and,
    for a chunk that runs on, the last page (`page_end`) or every heading it covers (`headings`)."""
    location: dict[str, Any] = {"start": hit.start, "end": hit.end}
    pages: list[int] = []
    headings: list[str] = []
    sections = hit.metadata.get(SECTIONS, [])
    for i, (start, page, heading) in enumerate(sections):
        end = sections[i + 1][0] if i + 1 < len(sections) else None
        if start >= hit.end or (end is not None and end <= hit.start):
            continue  # not under the chunk
        if page is not None:
            pages.append(page)
        if heading and heading not in headings:
            headings.append(heading)
    if pages:
        location["page"] = pages[0]
        if pages[-1] != pages[0]:
            location["page_end"] = pages[-1]
    if headings:
        location["heading"] = headings[0]
        if len(headings) > 1:
            location["headings"] = headings
    return location
