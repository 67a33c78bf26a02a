"""Document sources for bulk ingest, read as streams: JSONL, CSV, a BEIR corpus folder, a folder of documents.

Each yields `Record`s in a fixed order (so a resumed run can skip what an earlier one finished), each with the
bytes it took in the source (for progress) and either its fields or why it could not be read.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.documents import SUFFIXES, DocumentError, parse_document


@dataclass
class Record:
    number: int  # 0-based position in the source
    size: int  # bytes it took in the source
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why it could not be read (it goes to the rejects file)
    raw: str | None = None


@dataclass
class Source:
    kind: str  # jsonl, csv, beir, tree
    path: Path
    total_bytes: int
    default_id_field: str = "id"
    default_text: str = "text"


def open_source(path: Path, kind: str | None = None) -> Source:
    if kind is None:
        if path.is_dir():
            kind = "beir" if (path / "corpus.jsonl").exists() else "tree"
        elif path.suffix.lower() == ".csv":
            kind = "csv"
        else:
            kind = "jsonl"
    if kind == "beir":
        corpus = path / "corpus.jsonl"
        return Source("beir", corpus, corpus.stat().st_size, default_id_field="_id", default_text="{title} {text}")
    if kind == "tree":
        total = sum(p.stat().st_size for p in _tree_files(path))
        return Source("tree", path, total, default_id_field="path")
    return Source(kind, path, path.stat().st_size)


def read_records(source: Source) -> Iterator[Record]:
    if source.kind in ("jsonl", "beir"):
        yield from _jsonl(source.path)
    elif source.kind == "csv":
        yield from _csv(source.path)
    else:
        yield from _tree(source.path)


def _jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as f:
        for number, line in enumerate(f):
            text = line.decode("utf-8", "replace").strip()
            if not text:
                yield Record(number, len(line), error="empty line", raw=text)
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Record(number, len(line), error=f"line {number + 1}: not valid JSON ({exc.msg})", raw=text)
                continue
            if not isinstance(value, dict):
                yield Record(number, len(line), error=f"line {number + 1}: not a JSON object", raw=text)
            else:
                yield Record(number, len(line), fields=value)


def _csv(path: Path) -> Iterator[Record]:
    consumed = [0]

    def lines() -> Iterator[str]:
        with path.open("rb") as f:
            for line in f:
                consumed[0] += len(line)
                yield line.decode("utf-8", "replace")

    reported = 0
    for number, row in enumerate(csv.DictReader(lines())):
        size, reported = consumed[0] - reported, consumed[0]
        if None in row:  # more cells than the header has names
            yield Record(number, size, error=f"row {number + 1}: more fields than the header", raw=str(row))
        else:
            yield Record(number, size, fields=dict(row))


def _tree_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix.lower() in SUFFIXES:
                found.append(path)
    return found


def _tree(root: Path) -> Iterator[Record]:
    """Each document of the folder (service/documents/ parses it), its path relative to `root` as its id."""
    for number, path in enumerate(_tree_files(root)):
        data = path.read_bytes()
        relative = path.relative_to(root).as_posix()
        try:
            parsed = parse_document(relative, data)
        except DocumentError as exc:
            yield Record(number, len(data), error=f"{relative}: {exc.message}", raw=relative)
            continue
        fields: dict[str, Any] = {"path": relative, "text": parsed.text}
        if parsed.title:
            fields["title"] = parsed.title
        yield Record(number, len(data), fields=fields)
