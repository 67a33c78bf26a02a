"""IndexRecord: an index's SQLite file, the record. Every statement the embedded engine runs is here: the schema and
its numbered steps, documents and chunks written and read, FTS5's BM25, and the filter's lookups the planner asks.

Locking is the store's (IndexStore's read/write lock); this class only talks to SQLite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path

import msgspec
import numpy as np
import sqlite_utils

from indexes.config import IndexConfig
from indexes.databases.sqlite import Database, Migration, batches, sqlite3
from indexes.embedded.directory import ChunkName
from indexes.embedded.filters import SqlFilter, index_column
from indexes.filters import json_path
from indexes.ranking import RankedList
from indexes.searching import EMPTY, ChunkRow
from indexes.text import ENGLISH_STOPWORDS, query_words
from indexes.values import ChunkRecord, DocumentRecord, IndexExport, StoredDocument, UpsertResult

DATABASE = "index.sqlite"
LEXICAL_TOKENIZERS = {
    "porter": "porter unicode61 remove_diacritics 2",  # English stemming over Unicode words, accents folded
    "unicode61": "unicode61 remove_diacritics 2",  # no stemming: any language with spaces between words
    "trigram": "trigram",  # substrings: codes, identifiers, languages without spaces
}
DOCUMENT_COLUMNS = "doc_id, text, metadata, chunk_count, created_at, updated_at"


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def _tables(db: sqlite3.Connection, config: IndexConfig) -> None:
    """Version 1: documents, chunks, the deleted-chunk log, meta (config and write sequence), declared fields."""
    if _has_table(db, "documents"):  # made by a vsearch from before schema versions: this layout already
        return
    tables = sqlite_utils.Database(db)
    tables["meta"].create({"key": str, "value": str}, pk="key")
    tables["documents"].create(
        {"doc_id": str, "text": str, "metadata": str, "content_hash": str, "chunk_count": int,
         "created_at": float, "updated_at": float},
        pk="doc_id", not_null={"text", "metadata", "content_hash", "chunk_count"},
    )  # fmt: skip
    # AUTOINCREMENT: chunk ids are FAISS ids and must never be reused, even after deletes.
    db.execute(
        "CREATE TABLE chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, "
        "chunk_index INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, vector BLOB NOT NULL, "
        "seq INTEGER NOT NULL)"
    )
    tables["chunks"].create_index(["doc_id"])
    tables["chunks"].create_index(["seq"])
    # Ids removed from SQLite after the last FAISS checkpoint (and, for HNSW, since the last compaction).
    tables["deleted_chunks"].create({"id": int, "seq": int}, pk="id")
    index_fields(db, config.metadata_indexes)
    tables["meta"].insert_all([{"key": "config", "value": msgspec.json.encode(config).decode()},
                               {"key": "seq", "value": "0"}])  # fmt: skip


def _lexical(db: sqlite3.Connection, config: IndexConfig) -> None:
    """Version 2: FTS5 over chunk texts (rowid = chunk id), filled from the documents for an index made before."""
    if _has_table(db, "chunks_fts"):  # made by a vsearch from before schema versions, after hybrid search came
        return
    tokenize = LEXICAL_TOKENIZERS[config.lexical_tokenizer]  # from a fixed table, never from input
    db.execute(f"CREATE VIRTUAL TABLE chunks_fts USING fts5(text, tokenize = '{tokenize}')")
    db.execute("INSERT INTO chunks_fts (rowid, text) SELECT c.id, substr(d.text, c.start + 1, c.end - c.start) "
               "FROM chunks c JOIN documents d ON d.doc_id = c.doc_id")  # fmt: skip


STEPS = (_tables, _lexical)  # append only: step N brings version N-1 to N


def migrations(config: IndexConfig) -> list[Migration]:
    return [partial(step, config=config) for step in STEPS]


def index_fields(db: sqlite3.Connection, fields: Iterable[str]) -> None:
    """A generated column (virtual: computed from the metadata, nothing stored twice) and a B-tree index for each
    field; building the index reads every document, so existing ones are covered."""
    for field in fields:
        column, path = index_column(field), json_path(field).replace("'", "''")
        db.execute(f"ALTER TABLE documents ADD COLUMN \"{column}\" GENERATED ALWAYS AS "
                   f"(json_extract(metadata, '{path}')) VIRTUAL")  # fmt: skip
        db.execute(f'CREATE INDEX "mi_{column}" ON documents ("{column}")')


def stored_config(db: Database) -> IndexConfig:
    return msgspec.json.decode(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0],
                               type=IndexConfig)  # fmt: skip


def export(conn: sqlite3.Connection, batch: int = 1000) -> IndexExport:
    """The record's content through `conn`, a connection in one read transaction (Database.reading()): what a
    snapshot reads, from the server's open index or from the file alone (a backup beside a running server)."""
    config = msgspec.json.decode(conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0],
                                 type=IndexConfig)  # fmt: skip
    documents = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
    vectors = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    return IndexExport(config, documents, vectors, _exported(conn, config.dimensions, batch))


def _exported(conn: sqlite3.Connection, dimensions: int, batch: int) -> Iterator[list[DocumentRecord]]:
    after = ""  # ids are never empty
    while rows := conn.execute(
        "SELECT doc_id, text, metadata, content_hash, created_at, updated_at FROM documents WHERE doc_id > ? "
        "ORDER BY doc_id LIMIT ?",
        (after, batch),
    ).fetchall():
        chunks: dict[str, list[ChunkRecord]] = {row[0]: [] for row in rows}
        for part in batches(list(chunks)):
            marks = ",".join("?" * len(part))
            for doc_id, start, end, blob in conn.execute(
                f"SELECT doc_id, start, end, vector FROM chunks WHERE doc_id IN ({marks}) ORDER BY doc_id, chunk_index",
                part,
            ):
                chunks[doc_id].append(ChunkRecord(start, end, np.frombuffer(blob, "<f4").reshape(dimensions)))
        yield [DocumentRecord(doc_id, text, json.loads(metadata), content_hash, chunks[doc_id], created, updated)
               for doc_id, text, metadata, content_hash, created, updated in rows]  # fmt: skip
        after = rows[-1][0]


def fts_query(text: str, stopwords: frozenset[str] = frozenset()) -> str:
    """Any text as an FTS5 query: its words, each quoted as a literal, any of them matching (BM25 ranks the
    documents with more and rarer words first)."""
    return " OR ".join(f'"{word}"' for word in query_words(text, stopwords))


class IndexRecord:
    def __init__(self, path: Path, config: IndexConfig | None = None) -> None:
        """Open the record at `path`, bringing its schema up to date; create it with `config` when given."""
        self.db = Database(path)  # synchronous=FULL: an acknowledged write survives power loss
        self.db.migrate(migrations(config if config is not None else stored_config(self.db)))
        self.config = stored_config(self.db)

    # --- meta -----------------------------------------------------------------------------------------------------

    def seq(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

    def save_config(self, db: sqlite3.Connection, config: IndexConfig) -> None:
        db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (msgspec.json.encode(config).decode(),))

    # --- writes (inside the caller's transaction) -----------------------------------------------------------------

    def next_seq(self, db: sqlite3.Connection) -> int:
        return int(db.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value").fetchone()[0])

    def write_documents(
        self, db: sqlite3.Connection, documents: Sequence[DocumentRecord], seq: int, now: float
    ) -> tuple[UpsertResult, list[int], list[np.ndarray], dict[int, ChunkName]]:
        """Insert or replace each document and add its chunks: (which were new, chunk ids, their vectors, their
        names). The documents' old chunks must be deleted first (delete_chunks)."""
        created: list[str] = []
        updated: list[str] = []
        new_ids, new_vectors, names = [], [], {}
        for doc in documents:
            row = db.execute("SELECT created_at FROM documents WHERE doc_id = ?", (doc.doc_id,)).fetchone()
            (updated if row else created).append(doc.doc_id)
            db.execute(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                (doc.doc_id, doc.text, json.dumps(doc.metadata, ensure_ascii=False), doc.content_hash,
                 len(doc.chunks), doc.created_at or (row[0] if row else now), doc.updated_at or now),
            )  # fmt: skip
            for index, chunk in enumerate(doc.chunks):
                vector = np.ascontiguousarray(chunk.vector, dtype="<f4")
                (chunk_id,) = db.execute(
                    "INSERT INTO chunks (doc_id, chunk_index, start, end, vector, seq) VALUES (?, ?, ?, ?, ?, ?) "
                    "RETURNING id",
                    (doc.doc_id, index, chunk.start, chunk.end, vector.tobytes(), seq),
                ).fetchone()
                new_ids.append(chunk_id)
                new_vectors.append(vector)
                names[chunk_id] = ChunkName(doc.doc_id, index, len(doc.chunks))
                db.execute("INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)",
                           (chunk_id, doc.text[chunk.start : chunk.end]))  # fmt: skip
        return UpsertResult(created, updated), new_ids, new_vectors, names

    def delete_chunks(self, db: sqlite3.Connection, doc_ids: Sequence[str], seq: int) -> list[int]:
        """Delete the documents' chunks (logging their ids for FAISS); returns the chunk ids."""
        deleted = self.db.select_in("DELETE FROM chunks WHERE doc_id IN ({marks}) RETURNING id", doc_ids)
        removed = [row[0] for row in deleted]
        db.executemany("INSERT OR REPLACE INTO deleted_chunks VALUES (?, ?)", [(i, seq) for i in removed])
        db.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(i,) for i in removed])
        return removed

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        list(self.db.select_in("DELETE FROM documents WHERE doc_id IN ({marks})", doc_ids))

    def prune_deleted(self, seq: int) -> None:
        """Forget the deletions a FAISS checkpoint at `seq` includes."""
        self.db.execute("DELETE FROM deleted_chunks WHERE seq <= ?", (seq,))

    # --- documents ------------------------------------------------------------------------------------------------

    def content_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        return dict(self.db.select_in("SELECT doc_id, content_hash FROM documents WHERE doc_id IN ({marks})", doc_ids))

    def document(self, doc_id: str) -> StoredDocument | None:
        row = self.db.execute(f"SELECT {DOCUMENT_COLUMNS} FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return None if row is None else _document(row)

    def documents(self, limit: int, after: str | None) -> tuple[list[StoredDocument], bool]:
        rows = self.db.execute(
            f"SELECT {DOCUMENT_COLUMNS} FROM documents WHERE doc_id > ? ORDER BY doc_id LIMIT ?",
            (after or "", limit + 1),
        ).fetchall()
        return [_document(row) for row in rows[:limit]], len(rows) > limit

    def matching_documents(self, where: SqlFilter) -> list[str]:
        return [row[0] for row in self.db.execute(f"SELECT doc_id FROM documents d WHERE {where.sql}", where.params)]

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        documents = self.db.execute("SELECT count(*) FROM documents").fetchone()[0]
        return documents, self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]

    # --- chunks ---------------------------------------------------------------------------------------------------

    def removed_since(self, seq: int) -> np.ndarray:
        return np.array([r[0] for r in self.db.execute("SELECT id FROM deleted_chunks WHERE seq > ?", (seq,))],
                        dtype=np.int64)  # fmt: skip

    def vector_pages(self, since: int | None = None, page: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every chunk's (ids, vectors) in id order, by pages; `since`: only those written after that sequence."""
        where, params = ("WHERE seq > ?", (since,)) if since is not None else ("", ())
        cursor = self.db.execute(f"SELECT id, vector FROM chunks {where} ORDER BY id", params)
        while rows := cursor.fetchmany(page):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, self.matrix([r[1] for r in rows])

    def matrix(self, blobs: Sequence[bytes]) -> np.ndarray:
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), self.config.dimensions)

    def vectors_of(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(the ids found, their float32 vectors), in no particular order."""
        rows = list(self.db.select_in("SELECT id, vector FROM chunks WHERE id IN ({marks})", ids))
        found = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return found, self.matrix([r[1] for r in rows])

    def documents_of(self, ids: Sequence[int]) -> dict[int, str]:
        return dict(self.db.select_in("SELECT id, doc_id FROM chunks WHERE id IN ({marks})", ids))

    def chunk_names(self) -> Iterator[list[tuple[str, int]]]:
        """(doc_id, chunk id) of every chunk, by document then id, in pages (read through the doc_id index)."""
        cursor = self.db.execute("SELECT doc_id, id FROM chunks ORDER BY doc_id, id")
        return iter(lambda: cursor.fetchmany(50_000), [])

    def hit_rows(self, ids: Sequence[int], with_vectors: bool) -> dict[int, ChunkRow]:
        vector = "c.vector" if with_vectors else "NULL"  # the blobs are read only when asked for
        rows = self.db.select_in(
            f"SELECT c.id, c.doc_id, c.chunk_index, c.start, c.end, {vector}, d.text, d.metadata, d.chunk_count "
            "FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.id IN ({marks})",
            ids,
        )
        return {
            row[0]: ChunkRow(
                row[1],
                row[2],
                row[3],
                row[4],
                None if row[5] is None else np.frombuffer(row[5], "<f4"),
                row[6],
                json.loads(row[7]),
                row[8],
            )  # fmt: skip
            for row in rows
        }

    # --- lexical search and the filter's lookups ------------------------------------------------------------------

    def lexical(self, text: str, top_k: int, where: SqlFilter | None) -> RankedList:
        """BM25 over the chunks' FTS5 table; higher scores are better (FTS5's bm25() is lower-is-better)."""
        match = fts_query(text, ENGLISH_STOPWORDS if self.config.lexical_tokenizer == "porter" else frozenset())
        if not match:
            return EMPTY
        sql = "SELECT chunks_fts.rowid, bm25(chunks_fts) AS rank FROM chunks_fts"
        params: list = [match]
        condition = ""
        if where is not None:
            sql += " JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.doc_id = c.doc_id"
            condition = f" AND {where.sql}"
            params += where.params
        rows = self.db.execute(
            f"{sql} WHERE chunks_fts MATCH ?{condition} ORDER BY rank LIMIT ?", [*params, top_k]
        ).fetchall()
        return -np.array([r[1] for r in rows], dtype=np.float64), np.array([r[0] for r in rows], dtype=np.int64)

    def matching_chunks(self, where: SqlFilter, limit: int | None) -> list[int]:
        """The chunk ids that pass the filter (up to `limit` + 1), read by id only: no vector blob is touched."""
        sql, params = f"SELECT c.id {_joined(where)}", list(where.params)
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit + 1]
        return [row[0] for row in self.db.execute(sql, params)]

    def passing(self, ids: Sequence[int], where: SqlFilter) -> dict[int, bool]:
        """Whether each of the chunks `ids` that exist passes the filter. CROSS JOIN keeps SQLite on the ids (then
        each document by its key), where it might otherwise list the filter's matches through a metadata index."""
        rows = self.db.select_in(
            f"SELECT c.id, {where.sql} FROM chunks c CROSS JOIN documents d ON d.doc_id = c.doc_id "
            "WHERE c.id IN ({marks})",
            list(ids),
            where.params,
        )
        return {row[0]: bool(row[1]) for row in rows}

    def enumerable(self, where: SqlFilter) -> bool:
        """Whether SQLite finds the filter's matches through an index (declared fields) instead of a scan."""
        plan = self.db.execute(f"EXPLAIN QUERY PLAN SELECT c.id {_joined(where)}", where.params).fetchall()
        return not any(re.match(r"SCAN [cd]\b", row[3]) for row in plan)  # (an $in list's json_each is scanned)

    def size_files(self) -> list[Path]:
        return [self.db.path.with_name(f"{DATABASE}{suffix}") for suffix in ("", "-wal", "-shm")]


def _joined(where: SqlFilter) -> str:
    return f"FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE {where.sql}"


def _document(row: tuple) -> StoredDocument:
    return StoredDocument(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])
