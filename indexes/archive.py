"""The snapshot format: one index, portable between the engines, written and read as a stream.

A snapshot is a tar stream, compressed with zstd (its frames carry their own checksums), of these members in order:

    manifest.json       format, format_version, the index's config (model id included), document and vector counts
    part-000000.jsonl   a batch of documents, one JSON object a line: id, text, metadata, content_hash, created_at,
                        updated_at, chunks (each [start, end])
    part-000000.f32     those chunks' vectors, in the same order: little-endian float32, `dimensions` a row
    ...                 (more parts)
    checksums.json      each member's size and SHA-256, and the counts again

Nothing is re-embedded on restore: the vectors are the stored ones, bit for bit. Reading never writes a member to a
path: each is taken by its expected name (anything else, a link, a path, an extra member, is refused), sized before
it is read (a member is at most MAX_MEMBER_BYTES decompressed), checked against the manifest's counts as it goes,
and the checksums are compared at the end, before the reader's iteration ends. So a damaged, truncated or crafted
file raises InvalidSnapshot, naming the problem, before a restore (which consumes every batch first) swaps anything
in.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import time
from collections.abc import Iterator
from typing import IO, Any

import msgspec
import numpy as np

from indexes.config import IndexConfig, check_config
from indexes.errors import InvalidConfig, InvalidSnapshot
from indexes.values import ChunkRecord, DocumentRecord, IndexExport

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

FORMAT = "vsearch-index-snapshot"
FORMAT_VERSION = 1
MANIFEST, CHECKSUMS = "manifest.json", "checksums.json"
PART_BYTES, PART_DOCUMENTS = 16 << 20, 1000  # a part is cut once it holds either
MAX_MEMBER_BYTES = 256 << 20  # decompressed, per member (what a reader holds in memory at once)
MAX_META_BYTES = 1 << 20  # the manifest and the checksums
ZSTD_LEVEL = 3


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    format_version: int
    created_at: float = 0.0
    config: dict[str, Any] = {}  # an IndexConfig, decoded once the version is known to be ours
    documents: int = 0
    vectors: int = 0


class ArchivedDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    text: str
    metadata: dict[str, Any]
    content_hash: str
    created_at: float
    updated_at: float
    chunks: list[tuple[int, int]]


class MemberSum(msgspec.Struct, frozen=True):
    bytes: int
    sha256: str


class Checksums(msgspec.Struct, frozen=True):
    members: dict[str, MemberSum]
    documents: int
    vectors: int


def _part(index: int, suffix: str) -> str:
    return f"part-{index:06d}.{suffix}"


# --- writing ----------------------------------------------------------------------------------------------------


def write_snapshot(export: IndexExport, out: IO[bytes]) -> tuple[int, int]:
    """Write `export` to `out` as a snapshot; returns (documents, vectors) written."""
    sums: dict[str, MemberSum] = {}
    options = {zstd.CompressionParameter.compression_level: ZSTD_LEVEL, zstd.CompressionParameter.checksum_flag: 1}
    with zstd.ZstdFile(out, "w", options=options) as compressed, tarfile.open(fileobj=compressed, mode="w|") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
            sums[name] = MemberSum(len(data), hashlib.sha256(data).hexdigest())

        manifest = Manifest(format=FORMAT, format_version=FORMAT_VERSION, created_at=time.time(),
                            config=msgspec.to_builtins(export.config), documents=export.documents,
                            vectors=export.vectors)  # fmt: skip
        add(MANIFEST, msgspec.json.encode(manifest))
        documents = vectors = parts = 0
        lines: list[bytes] = []
        rows: list[bytes] = []

        def flush() -> None:
            nonlocal parts
            add(_part(parts, "jsonl"), b"".join(lines))
            add(_part(parts, "f32"), b"".join(rows))
            parts += 1
            lines.clear()
            rows.clear()

        size = 0
        for batch in export.batches:
            for doc in batch:
                line = msgspec.json.encode(ArchivedDocument(
                    doc.doc_id, doc.text, doc.metadata, doc.content_hash, doc.created_at or 0.0,
                    doc.updated_at or 0.0, [(c.start, c.end) for c in doc.chunks])) + b"\n"  # fmt: skip
                vectors_of = [np.asarray(c.vector, dtype="<f4").tobytes() for c in doc.chunks]
                lines.append(line)
                rows.extend(vectors_of)
                size += len(line) + sum(map(len, vectors_of))
                documents, vectors = documents + 1, vectors + len(vectors_of)
                if size >= PART_BYTES or len(lines) >= PART_DOCUMENTS:
                    flush()
                    size = 0
        if lines:
            flush()
        add(CHECKSUMS, msgspec.json.encode(Checksums(dict(sums), documents, vectors)))
    return documents, vectors


# --- reading ----------------------------------------------------------------------------------------------------


class SnapshotReader:
    """A snapshot being read from a stream: `config` and the counts from its manifest at once, then `batches()`, each
    checked as it streams; the iteration ends only once the checksums matched."""

    def __init__(self, source: IO[bytes]) -> None:
        self._sums: dict[str, MemberSum] = {}
        self._compressed = zstd.ZstdFile(source, "r")
        try:
            self._tar = tarfile.open(fileobj=self._compressed, mode="r|")  # noqa: SIM115 (read across batches())
            manifest = _decode(self._member(MANIFEST, MAX_META_BYTES), Manifest, MANIFEST)
        except (tarfile.TarError, zstd.ZstdError, EOFError, OSError) as exc:
            raise _damaged(exc) from None
        if manifest.format != FORMAT:
            raise InvalidSnapshot(f"Not a vsearch index snapshot (format '{manifest.format}').", "file")
        if manifest.format_version != FORMAT_VERSION:
            raise InvalidSnapshot(
                f"The snapshot has format version {manifest.format_version}; this vsearch reads version "
                f"{FORMAT_VERSION}.",
                "file",
            )
        try:
            self.config = check_config(msgspec.convert(manifest.config, IndexConfig))
        except (msgspec.ValidationError, InvalidConfig) as exc:
            raise InvalidSnapshot(f"The snapshot's index config is not valid: {exc}", "file") from None
        self.documents, self.vectors = manifest.documents, manifest.vectors

    def batches(self) -> Iterator[list[DocumentRecord]]:
        try:
            yield from self._batches()
        except (tarfile.TarError, zstd.ZstdError, EOFError, OSError) as exc:
            raise _damaged(exc) from None

    def _batches(self) -> Iterator[list[DocumentRecord]]:
        documents = vectors = 0
        last_id = ""
        index = 0
        while True:
            member = self._next()
            if member is None:
                raise InvalidSnapshot("The snapshot is truncated: it ends before its checksums.", "file")
            if member.name == CHECKSUMS:
                self._finish(member, documents, vectors)  # before the consumer's last next() returns
                return
            lines = self._read(member, _part(index, "jsonl"), MAX_MEMBER_BYTES).splitlines()
            batch = []
            for number, line in enumerate(lines):
                doc = _decode(line, ArchivedDocument, f"{member.name} line {number + 1}")
                if doc.id <= last_id:
                    raise InvalidSnapshot(f"{member.name}: document '{doc.id}' is out of order or repeated.", "file")
                if any(not 0 <= start <= end <= len(doc.text) for start, end in doc.chunks):
                    raise InvalidSnapshot(f"{member.name}: document '{doc.id}' has a chunk outside its text.", "file")
                last_id = doc.id
                batch.append(doc)
            rows = sum(len(doc.chunks) for doc in batch)
            documents, vectors = documents + len(batch), vectors + rows
            if documents > self.documents or vectors > self.vectors:
                raise InvalidSnapshot("The snapshot holds more documents or vectors than its manifest says.", "file")
            width = self.config.dimensions * 4
            vector_member = self._next()
            if vector_member is None:
                raise InvalidSnapshot("The snapshot is truncated: a part has no vectors.", "file")
            if vector_member.size != rows * width:
                raise InvalidSnapshot(
                    f"{vector_member.name} holds {vector_member.size} bytes; {rows} vectors of "
                    f"{self.config.dimensions} dimensions need {rows * width}.",
                    "file",
                )
            matrix = np.frombuffer(self._read(vector_member, _part(index, "f32"), MAX_MEMBER_BYTES), dtype="<f4")
            matrix = matrix.reshape(rows, self.config.dimensions)
            if not np.isfinite(matrix).all():
                raise InvalidSnapshot(f"{vector_member.name} holds a vector that is not finite.", "file")
            records, row = [], 0
            for doc in batch:
                chunks = [ChunkRecord(s, e, matrix[row + k]) for k, (s, e) in enumerate(doc.chunks)]
                row += len(chunks)
                records.append(DocumentRecord(doc.id, doc.text, doc.metadata, doc.content_hash, chunks,
                                              doc.created_at or None, doc.updated_at or None))  # fmt: skip
            yield records
            index += 1

    def _finish(self, member: tarfile.TarInfo, documents: int, vectors: int) -> None:
        expected = _decode(self._read(member, CHECKSUMS, MAX_META_BYTES, summed=False), Checksums, CHECKSUMS)
        if self._next() is not None:
            raise InvalidSnapshot("The snapshot has members after its checksums.", "file")
        # The tar's end is padded with zeros to a whole record; anything else after it (another snapshot glued on,
        # garbage) is refused.
        rest = self._compressed.read(tarfile.RECORDSIZE + 1)
        if len(rest) > tarfile.RECORDSIZE or rest.count(0) != len(rest):
            raise InvalidSnapshot("The snapshot has data after its end.", "file")
        for name, found in self._sums.items():
            if expected.members.get(name) != found:
                raise InvalidSnapshot(f"Checksum mismatch in {name}: the snapshot is damaged.", "file")
        if set(expected.members) != set(self._sums):
            raise InvalidSnapshot("The snapshot is missing members its checksums list.", "file")
        if (documents, vectors) != (self.documents, self.vectors) or (documents, vectors) != (
            expected.documents,
            expected.vectors,
        ):
            raise InvalidSnapshot(
                f"The snapshot holds {documents} documents and {vectors} vectors; its manifest says "
                f"{self.documents} and {self.vectors}.",
                "file",
            )

    def _next(self) -> tarfile.TarInfo | None:
        return self._tar.next()

    def _member(self, name: str, limit: int) -> bytes:
        member = self._next()
        if member is None:
            raise InvalidSnapshot(f"The snapshot is empty: no {name}.", "file")
        return self._read(member, name, limit)

    def _read(self, member: tarfile.TarInfo, name: str, limit: int, summed: bool = True) -> bytes:
        """The member's bytes, if it is the regular file `name` of at most `limit` bytes."""
        if member.name != name or not member.isreg():
            raise InvalidSnapshot(f"Unexpected member '{member.name}' in the snapshot (expected '{name}').", "file")
        if member.size > limit:
            raise InvalidSnapshot(f"Member '{name}' is {member.size} bytes, more than a snapshot holds.", "file")
        stream = self._tar.extractfile(member)
        data = stream.read() if stream is not None else b""
        if len(data) != member.size:
            raise InvalidSnapshot(f"The snapshot is truncated in '{name}'.", "file")
        if summed:
            self._sums[name] = MemberSum(len(data), hashlib.sha256(data).hexdigest())
        return data


def _decode(data: bytes, kind: type, where: str) -> Any:
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise InvalidSnapshot(f"{where} is not valid: {exc}", "file") from None


def _damaged(exc: BaseException) -> InvalidSnapshot:
    if isinstance(exc, EOFError):
        return InvalidSnapshot("The snapshot is truncated: the file ends in the middle.", "file")
    return InvalidSnapshot(f"The snapshot cannot be read: {exc}", "file")
