"""What a parser gives: the text, its title, and its sections; or a DocumentError saying why not."""

from __future__ import annotations

from typing import Literal

import msgspec

from service.errors import InvalidRequest

DocumentErrorCode = Literal["unsupported_file", "invalid_file"]  # OpenAI's last_error codes for a file


class Section(msgspec.Struct, frozen=True):
    """A span of the text (character offsets) that sits on one page, or under one heading."""

    start: int
    end: int
    page: int | None = None  # 1-based (PDF)
    heading: str | None = None  # the nearest heading above (Markdown, DOCX, HTML)


class ParsedDocument(msgspec.Struct, frozen=True):
    text: str
    title: str | None
    sections: list[Section]  # in order, covering the text; empty for text with no structure

    def section_at(self, offset: int) -> Section | None:
        """The section holding character `offset` (a chunk's start), if any."""
        for section in self.sections:
            if section.start <= offset < section.end:
                return section
        return None


class DocumentError(InvalidRequest):
    """A file that cannot be parsed, and what a person can do about it."""

    def __init__(self, code: DocumentErrorCode, message: str) -> None:
        super().__init__(message, param="file", code=code)
