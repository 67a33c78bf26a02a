"""IndexStore: one index folder. SQLite (WAL) is the record; the FAISS index is derived from it.

A write is acknowledged once its SQLite transaction commits. FAISS is updated in memory right after, under the
same write lock, and checkpointed to disk now and then with the change sequence it reflects; on open, a missing,
stale or damaged checkpoint is caught up or rebuilt from SQLite, so a crash at any instant loses nothing that
was acknowledged.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import sqlite_utils

from indexes.config import IndexConfig, check_config
from indexes.directory import ChunkDirectory, ChunkName
from indexes.errors import DocumentNotFound, IndexNotFound
from indexes.filters import MetadataFilter, compile_filter, index_column, json_path
from indexes.ranking import RankedList
from indexes.rwlock import RWLock
from indexes.searching import EMPTY, ChunkRow, Others, build_hits, ranked_search, search_depth, wanted_rows
from indexes.sqlite import Database, sqlite3
from indexes.values import (
    DocumentRecord,
    Hit,
    IndexStats,
    Mode,
    SearchRequest,
    StoredDocument,
    UpsertResult,
    check_dimensions,
)
from indexes.vectors import MERGE_SIZE, RESCORE_FACTOR, VectorIndex

log = logging.getLogger(__name__)

DATABASE = "index.sqlite"
VECTORS = "vectors.faiss"
CHECKPOINT_SECONDS = 30
# Writes quiet this long: what is left in FAISS's `fresh` is merged into `main`. Every search scans `fresh`
# exhaustively (10,000 384-d vectors: 0.57 ms a query, 20,000: 1.1 ms), and with no further write nothing else
# would merge it.
QUIET_SECONDS = 5
MAX_QUERY_TERMS = 64
LEXICAL_TOKENIZERS = {
    "porter": "porter unicode61 remove_diacritics 2",  # English stemming over Unicode words, accents folded
    "unicode61": "unicode61 remove_diacritics 2",  # no stemming: any language with spaces between words
    "trigram": "trigram",  # substrings: codes, identifiers, languages without spaces
}


FilterPath = Literal["exact", "selector", "overfetch"]


class PrefetchedList(msgspec.Struct, frozen=True):
    """A lexical list computed ahead of its search, and what it was computed for."""

    version: int  # the store's write count then
    text: str
    depth: int
    filter: MetadataFilter | None
    ranked: RankedList

    def valid_for(self, version: int, text: str | None, where: MetadataFilter | None) -> bool:
        return (self.version, self.text, self.filter) == (version, text, where)


class PlannerLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Where plan_filter() switches paths. Measured on 100k x 384-d (bench_scale's data) on 2 cores, p50 ms of the
    three paths forced, flat / HNSW (docs/architecture.md has the table): a 1% filter (1,000 matches) exact 10.3 /
    10.9, ID selector 5.2 / 5.4, over-fetch 66 / 58; 5%: 112 / 62, 33 / 28, 23 / 14; 20%: 246 / 180, 55 / 52,
    24 / 8. Exact scoring costs ~10 us per match (its blob read), the selector a membership test per vector held
    (~40 ns) plus ~1 us per match, over-fetch one FAISS search plus a lookup per candidate (top_k / share)."""

    exact_limit: int = 500  # at most this many estimated matches: scored exactly from SQLite's vectors...
    exact_share: float = 0.004  # ... or at most this share of the index (where the selector's scan costs more)
    broad_share: float = 0.03  # at least this share matches: over-fetch, whatever the fields
    sample_size: int = 256  # chunks looked up to estimate the share


class StoreOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How an open index runs (not part of its config: the same index can be opened with others)."""

    search_threads: int = 1  # FAISS's OpenMP threads for one search (VectorIndex.search)
    build_threads: int = 0  # ... for a merge into `main` (0: every core)
    merge_size: int = MERGE_SIZE  # fresh vectors that trigger a merge
    compact_ratio: float = 0.2  # tombstones, as a share of `main`, that trigger a rebuild
    planner: PlannerLimits = PlannerLimits()


DEFAULT_OPTIONS = StoreOptions()


class FilterPlan(msgspec.Struct, frozen=True):
    """How dense searches under one filter run, as plan_filter() chose: the estimated share of the index it
    matches, and the chunk ids that pass (listed for the exact and selector paths)."""

    path: FilterPath
    share: float
    ids: np.ndarray


class PlanCache:
    """The plans of the filters used last, each for the index version it was made at (a write makes them stale).
    A filter used again before the next write skips its estimate and its listing, as Lucene caches filters' sets
    of documents: at 1M, listing a 1% filter's 10,000 chunks took 34 ms of its 49."""

    def __init__(self, size: int = 32) -> None:
        self._plans: OrderedDict[tuple, FilterPlan] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()  # searches run side by side

    def get(self, key: tuple) -> FilterPlan | None:
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
            return plan

    def put(self, key: tuple, plan: FilterPlan) -> None:
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > self._size:
                self._plans.popitem(last=False)


def plan_filter(estimated: float, share: float, enumerable: bool, limits: PlannerLimits) -> FilterPath:
    """How to answer a filtered dense search. A few matches: score them exactly. Many, and SQLite can list them
    from a declared field's index: FAISS over them with an ID selector. Otherwise (a broad filter, or one SQLite
    could only list by scanning every document) over-fetch from FAISS and test the filter on what comes back."""
    if estimated <= limits.exact_limit or share <= limits.exact_share:
        return "exact"
    if share >= limits.broad_share or not enumerable:
        return "overfetch"
    return "selector"


# English function words, left out of queries on English (porter) indexes: BM25 gives them almost no weight, yet
# each matches most documents, all of which FTS5 then scores (SciFact: lexical p50 5.9 -> 3.3 ms, nDCG@10 the same).
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be by can did do does for from had has have how in is it its of on or that the their this "
    "to was were what when where which who why will with".split()
)


def query_words(text: str, stopwords: frozenset[str] = frozenset()) -> list[str]:
    """A lexical query's words: runs of letters, digits and '_' (no query syntax ever gets through), each once,
    less `stopwords` unless that leaves none."""
    words = list(dict.fromkeys(re.findall(r"\w+", text.lower())))[:MAX_QUERY_TERMS]
    return [word for word in words if word not in stopwords] or words


def fts_query(text: str, stopwords: frozenset[str] = frozenset()) -> str:
    """Any text as an FTS5 query: its words, each quoted as a literal, any of them matching (BM25 ranks the
    documents with more and rarer words first)."""
    return " OR ".join(f'"{word}"' for word in query_words(text, stopwords))


class IndexStore:
    def __init__(
        self,
        folder: Path,
        config: IndexConfig | None = None,
        options: StoreOptions = DEFAULT_OPTIONS,
    ) -> None:
        """Open the index in `folder`, creating it with `config` when given."""
        self.folder = folder
        self._options = options
        self._search_threads = options.search_threads
        self._vectors_path = folder / VECTORS
        self._lock = RWLock()  # readers: searches and reads; writer: a commit plus its FAISS update
        self._checkpoint_lock = threading.Lock()
        self._saving = threading.Event()  # a checkpoint is writing FAISS's `main`: merges wait
        self._build_threads = options.build_threads
        self._planner = options.planner
        self._merge_size = options.merge_size
        self._compact_ratio = options.compact_ratio
        self._closed = False  # set under the write lock: after it, every read and write is IndexNotFound
        self._version = 0  # bumped by every committed write, under the write lock (prefetch_lexical, PlanCache)
        self._plans = PlanCache()
        self._directory: ChunkDirectory | None = None  # loaded in the background after the open; None till then
        self._last_write = time.monotonic()
        self._quiet_merge_armed = False  # a thread waits for writes to pause, to merge `fresh`
        if config is not None:
            folder.mkdir(parents=True, exist_ok=False)
        self._db = Database(folder / DATABASE)  # synchronous=FULL: an acknowledged write survives power loss
        if config is not None:
            self._create_schema(check_config(config))
        self.config = msgspec.json.decode(self._meta("config"), type=IndexConfig)
        self._ensure_lexical_table()
        self._vectors, self._checkpoint_seq = self._open_vectors()
        self._last_checkpoint = time.monotonic()
        if self._vectors.merge_due():  # much was written after the checkpoint: serve now, merge in the background
            self._in_background(self._merge, "merge")
        else:
            self._merge_when_quiet()
        if self._vectors.main.ntotal:
            self._settle_main()
        if config is not None:  # created just now: nothing to read
            self._directory = ChunkDirectory.scan([])
        else:
            self._in_background(self._load_directory, "chunk directory")

    # --- SQLite plumbing ------------------------------------------------------------------------------------------

    def _create_schema(self, config: IndexConfig) -> None:
        db = sqlite_utils.Database(self._db.conn)
        db["meta"].create({"key": str, "value": str}, pk="key")
        db["documents"].create(
            {"doc_id": str, "text": str, "metadata": str, "content_hash": str, "chunk_count": int,
             "created_at": float, "updated_at": float},
            pk="doc_id", not_null={"text", "metadata", "content_hash", "chunk_count"},
        )  # fmt: skip
        # AUTOINCREMENT: chunk ids are FAISS ids and must never be reused, even after deletes.
        self._db.execute(
            "CREATE TABLE chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, "
            "chunk_index INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, vector BLOB NOT NULL, "
            "seq INTEGER NOT NULL)"
        )
        db["chunks"].create_index(["doc_id"])
        db["chunks"].create_index(["seq"])
        # Ids removed from SQLite after the last FAISS checkpoint (and, for HNSW, since the last compaction).
        db["deleted_chunks"].create({"id": int, "seq": int}, pk="id")
        self._create_lexical_table(config)
        self._index_fields(self._db.conn, config.metadata_indexes)
        db["meta"].insert_all(
            [{"key": "config", "value": msgspec.json.encode(config).decode()}, {"key": "seq", "value": "0"}]
        )

    @staticmethod
    def _index_fields(db: sqlite3.Connection, fields: Iterable[str]) -> None:
        """A generated column (virtual: computed from the metadata, nothing stored twice) and a B-tree index for
        each field; building the index reads every document, so existing ones are covered."""
        for field in fields:
            column, path = index_column(field), json_path(field).replace("'", "''")
            db.execute(f"ALTER TABLE documents ADD COLUMN \"{column}\" GENERATED ALWAYS AS "
                       f"(json_extract(metadata, '{path}')) VIRTUAL")  # fmt: skip
            db.execute(f'CREATE INDEX "mi_{column}" ON documents ("{column}")')

    def add_metadata_indexes(self, fields: dict[str, str]) -> None:
        """Declare more indexed metadata fields (and build their indexes from the stored documents)."""
        with self._writing():
            new = {field: kind for field, kind in fields.items() if field not in self.config.metadata_indexes}
            if not new:
                return
            config = check_config(msgspec.structs.replace(
                self.config, metadata_indexes={**self.config.metadata_indexes, **new}))  # fmt: skip
            with self._db.transaction() as db:
                self._index_fields(db, new)
                db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (msgspec.json.encode(config).decode(),))
            self.config = config
            self._vectors.config = config

    def _where(self, where: MetadataFilter) -> MetadataFilter:
        """`where` compiled for this index's declared fields, so that their indexes are used."""
        if not self.config.metadata_indexes:
            return where
        return compile_filter(where.spec, self.config.metadata_indexes)

    def _create_lexical_table(self, config: IndexConfig) -> None:
        # FTS5 over chunk texts, rowid = chunk id; the tokenizer clause comes from a fixed table, never from input.
        tokenize = LEXICAL_TOKENIZERS[config.lexical_tokenizer]
        self._db.execute(f"CREATE VIRTUAL TABLE chunks_fts USING fts5(text, tokenize = '{tokenize}')")

    def _ensure_lexical_table(self) -> None:
        """Indexes made before hybrid search get their FTS5 table on open, filled from the documents."""
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks_fts'").fetchone():
            return
        with self._db.transaction() as db:
            self._create_lexical_table(self.config)
            db.execute(
                "INSERT INTO chunks_fts (rowid, text) SELECT c.id, substr(d.text, c.start + 1, c.end - c.start) "
                "FROM chunks c JOIN documents d ON d.doc_id = c.doc_id"
            )

    def _meta(self, key: str) -> str:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def _seq(self) -> int:
        return int(self._meta("seq"))

    def _next_seq(self, db: sqlite3.Connection) -> int:
        return int(db.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value").fetchone()[0])

    # --- FAISS recovery -------------------------------------------------------------------------------------------

    def _open_vectors(self) -> tuple[VectorIndex, int]:
        seq = self._seq()
        loaded = VectorIndex.load(self._vectors_path, self.config, self._merge_size)
        if loaded is not None and loaded[1] <= seq:
            vectors, checkpoint = loaded
            self._catch_up(vectors, checkpoint)
            if self._consistent(vectors):
                return vectors, checkpoint
        return self._rebuild(), -1

    def _catch_up(self, vectors: VectorIndex, since: int) -> None:
        """Replay what SQLite committed after the checkpoint: removals first, then additions (into `fresh`, searched
        exactly: the first query needs no merge)."""
        removed = [row[0] for row in self._db.execute("SELECT id FROM deleted_chunks WHERE seq > ?", (since,))]
        vectors.remove(np.array(removed, dtype=np.int64))
        for ids, matrix in self._vector_pages("WHERE seq > ?", (since,)):
            vectors.add(ids, matrix)

    def _consistent(self, vectors: VectorIndex) -> bool:
        return vectors.live == self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]

    def _rebuild(self) -> VectorIndex:
        vectors = VectorIndex(self.config, merge_size=self._merge_size)
        for ids, matrix in self._vector_pages("", ()):
            vectors.add(ids, matrix)
            vectors.merge(self._build_threads)
        return vectors

    def _vector_pages(self, where: str, params: tuple, page: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cursor = self._db.execute(f"SELECT id, vector FROM chunks {where} ORDER BY id", params)
        while rows := cursor.fetchmany(page):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, self._matrix([r[1] for r in rows])

    def _matrix(self, blobs: Sequence[bytes]) -> np.ndarray:
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), self.config.dimensions)

    def _merge(self) -> None:
        """Move FAISS's `fresh` vectors into `main`; not while a checkpoint is writing `main` (the next write
        merges instead)."""
        with self._lock.write():
            if self._closed or self._saving.is_set():
                return
            self._vectors.merge(self._build_threads)
        self._settle_main()

    def checkpoint(self) -> None:
        """Write FAISS to disk with the sequence it reflects, then forget the deletions it includes. Writers and
        readers wait only while `fresh` and the tombstones are copied, not while the file is written."""
        with self._checkpoint_lock:  # one checkpoint at a time
            with self._lock.read():
                if self._closed:
                    return
                seq = self._seq()
                if seq == self._checkpoint_seq and self._vectors_path.exists():
                    return
                snapshot = self._vectors.snapshot()
                self._saving.set()  # no merge changes `main` until it is written
            try:
                snapshot.save(self._vectors_path, seq)
            finally:
                self._saving.clear()
            self._db.execute("DELETE FROM deleted_chunks WHERE seq <= ?", (seq,))
            self._checkpoint_seq = seq
            self._last_checkpoint = time.monotonic()

    def _settle_main(self) -> None:
        """In a background thread, back FAISS's `main` with huge pages. After whatever (re)built `main`: the open,
        each merge (what it grew was allocated anew), a compaction. Memory already on huge pages costs nothing."""
        self._in_background(self._back_main_with_huge_pages, "huge pages")

    def _back_main_with_huge_pages(self) -> None:
        """VectorIndex.back_with_huge_pages, holding merges back meanwhile as a checkpoint does; searches go on."""
        with self._checkpoint_lock:
            with self._lock.read():
                if self._closed:
                    return
                vectors = self._vectors
                self._saving.set()
            try:
                vectors.back_with_huge_pages()
            finally:
                self._saving.clear()

    def _merge_when_quiet(self) -> None:
        """After a write (under the write lock) or the open: once writes pause for QUIET_SECONDS, merge `fresh`."""
        self._last_write = time.monotonic()
        if self._vectors.fresh.ntotal and not self._quiet_merge_armed:
            self._quiet_merge_armed = True
            self._in_background(self._merge_once_quiet, "merge")

    def _merge_once_quiet(self) -> None:
        try:
            while True:
                time.sleep(max(0.0, self._last_write + QUIET_SECONDS - time.monotonic()))
                with self._lock.write():
                    if self._closed:
                        return
                    if time.monotonic() - self._last_write >= QUIET_SECONDS and not self._saving.is_set():
                        self._quiet_merge_armed = False  # under the lock: a write after this arms a new wait
                        self._vectors.merge(self._build_threads)
                        break
                time.sleep(0.5)  # a write came meanwhile (wait on), or a checkpoint is writing `main` (try again)
        except BaseException:
            self._quiet_merge_armed = False  # a failed merge: the next write tries again
            raise
        self._settle_main()

    def _load_directory(self) -> None:
        """Read every chunk's name into the ChunkDirectory, under the read lock: writes wait for it (~1.2 s at 1M
        chunks, once after an open), and so does close(), which must never close the connection in use here.
        Until it is installed, hits are named from SQLite."""
        with self._lock.read():
            if self._closed:
                return
            cursor = self._db.execute("SELECT doc_id, id FROM chunks ORDER BY doc_id, id")  # the doc_id index
            self._directory = ChunkDirectory.scan(iter(lambda: cursor.fetchmany(50_000), []))

    def _maybe_checkpoint(self) -> None:
        # Writing FAISS costs time in proportion to its size, so not after every batch, and in the background:
        # what a crash loses in between is replayed from SQLite on the next open. (checkpoint() skips it when
        # nothing changed.)
        if time.monotonic() - self._last_checkpoint > CHECKPOINT_SECONDS and not self._checkpoint_lock.locked():
            self._last_checkpoint = time.monotonic()
            self._in_background(self.checkpoint, "checkpoint")

    def _in_background(self, task: Callable[[], None], what: str) -> None:
        """Run `task` in a thread of its own. A failure (a full disk) is logged: the record is SQLite, and the next
        checkpoint or open makes up for it."""

        def run() -> None:
            try:
                task()
            except Exception:
                log.exception("%s of index '%s' failed", what, self.config.name)
            finally:
                self._db.disconnect()

        threading.Thread(target=run, name=f"{what}-{self.config.name}", daemon=True).start()

    def _maybe_compact(self) -> None:
        """Deleted vectors stay in `main` as tombstones; past a share of it, rebuild it without them."""
        vectors = self._vectors
        if len(vectors.tombstones) <= self._compact_ratio * max(vectors.ntotal, 1):
            return
        with self._lock.write():
            if self._closed:
                return
            self._vectors = self._rebuild()
            self._checkpoint_seq = -1
        self.checkpoint()
        self._settle_main()

    # --- writes ---------------------------------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self._lock.read():
            self._check_open()
            yield

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock.write():
            self._check_open()
            yield

    def _check_open(self) -> None:
        if self._closed:  # deleted (or shut down) while the caller held on to it
            raise IndexNotFound(self.config.name)

    def content_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of `doc_ids` that exists (to skip unchanged documents)."""
        with self._reading():
            return self._content_hashes(doc_ids)

    def _content_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        return dict(self._db.select_in("SELECT doc_id, content_hash FROM documents WHERE doc_id IN ({marks})", doc_ids))

    def upsert(self, documents: Sequence[DocumentRecord]) -> UpsertResult:
        """Insert or replace documents and their chunks in one transaction; returns which were new."""
        created: list[str] = []
        updated: list[str] = []
        now = time.time()
        check_dimensions(documents, self.config.dimensions)
        with self._writing():
            with self._db.transaction() as db:
                seq = self._next_seq(db)
                removed = self._delete_chunks(db, [doc.doc_id for doc in documents], seq)
                new_ids, new_vectors, names = [], [], {}
                for doc in documents:
                    row = db.execute("SELECT created_at FROM documents WHERE doc_id = ?", (doc.doc_id,)).fetchone()
                    (updated if row else created).append(doc.doc_id)
                    db.execute(
                        "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (doc.doc_id, doc.text, json.dumps(doc.metadata, ensure_ascii=False), doc.content_hash,
                         len(doc.chunks), row[0] if row else now, now),
                    )  # fmt: skip
                    for index, chunk in enumerate(doc.chunks):
                        vector = np.ascontiguousarray(chunk.vector, dtype="<f4")
                        (chunk_id,) = db.execute(
                            "INSERT INTO chunks (doc_id, chunk_index, start, end, vector, seq) "
                            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                            (doc.doc_id, index, chunk.start, chunk.end, vector.tobytes(), seq),
                        ).fetchone()
                        new_ids.append(chunk_id)
                        new_vectors.append(vector)
                        names[chunk_id] = ChunkName(doc.doc_id, index, len(doc.chunks))
                        db.execute(
                            "INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)",
                            (chunk_id, doc.text[chunk.start : chunk.end]),
                        )
            # Committed: now mirror it in FAISS before any reader can look.
            self._version += 1
            self._vectors.remove(np.array(removed, dtype=np.int64))
            if new_ids:
                self._vectors.add(np.array(new_ids, dtype=np.int64), np.stack(new_vectors))
            if self._directory is not None:
                self._directory.remove(removed)
                self._directory.add(names)
            merged = self._vectors.merge_due() and not self._saving.is_set()
            if merged:
                self._vectors.merge(self._build_threads)
            self._merge_when_quiet()
        if merged:
            self._settle_main()
        self._maybe_compact()
        self._maybe_checkpoint()
        return UpsertResult(created, updated)

    def _delete_chunks(self, db: sqlite3.Connection, doc_ids: Sequence[str], seq: int) -> list[int]:
        deleted = self._db.select_in("DELETE FROM chunks WHERE doc_id IN ({marks}) RETURNING id", doc_ids)
        removed = [row[0] for row in deleted]
        db.executemany("INSERT OR REPLACE INTO deleted_chunks VALUES (?, ?)", [(i, seq) for i in removed])
        db.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(i,) for i in removed])
        return removed

    def delete(self, doc_ids: Sequence[str]) -> list[str]:
        """Delete documents and their chunks; returns the ids that existed."""
        with self._writing():
            with self._db.transaction() as db:
                existing = list(self._content_hashes(doc_ids))
                if not existing:
                    return []
                seq = self._next_seq(db)
                removed = self._delete_chunks(db, existing, seq)
                list(self._db.select_in("DELETE FROM documents WHERE doc_id IN ({marks})", existing))
            self._version += 1
            self._vectors.remove(np.array(removed, dtype=np.int64))
            if self._directory is not None:
                self._directory.remove(removed)
            self._merge_when_quiet()
        self._maybe_compact()
        self._maybe_checkpoint()
        return existing

    def delete_matching(self, where: MetadataFilter) -> list[str]:
        where = self._where(where)
        with self._reading():
            rows = self._db.execute(f"SELECT doc_id FROM documents d WHERE {where.sql}", where.params).fetchall()
        return self.delete([row[0] for row in rows])

    def set_config(self, config: IndexConfig) -> None:
        """Change what may change after creation (ef_search, query_model)."""
        with self._writing():
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (msgspec.json.encode(config).decode(),))
            self.config = config
            self._vectors.config = config

    # --- reads ----------------------------------------------------------------------------------------------------

    def get(self, doc_id: str) -> StoredDocument:
        with self._reading():
            row = self._db.execute(
                "SELECT doc_id, text, metadata, chunk_count, created_at, updated_at FROM documents WHERE doc_id = ?",
                (doc_id,),
            ).fetchone()
        if row is None:
            raise DocumentNotFound(doc_id)
        return self._document(row)

    def list(self, limit: int, after: str | None = None) -> tuple[list[StoredDocument], bool]:
        """A page of documents in id order, after the cursor `after`; and whether more follow."""
        with self._reading():
            rows = self._db.execute(
                "SELECT doc_id, text, metadata, chunk_count, created_at, updated_at FROM documents "
                "WHERE doc_id > ? ORDER BY doc_id LIMIT ?",
                (after or "", limit + 1),
            ).fetchall()
        return [self._document(row) for row in rows[:limit]], len(rows) > limit

    @staticmethod
    def _document(row: tuple) -> StoredDocument:
        return StoredDocument(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])

    def stats(self) -> IndexStats:
        with self._reading():  # one consistent moment for both stores
            documents = self._db.execute("SELECT count(*) FROM documents").fetchone()[0]
            vectors = self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]
            live = self._vectors.live
        # The index's own files, each stat()ed by name: listing the folder would take a file descriptor, which a
        # server at its limit may not have (the catalog frees them where it opens files, not here).
        files = [self.folder / f"{DATABASE}{suffix}" for suffix in ("", "-wal", "-shm")] + [self._vectors_path]
        size = sum(path.stat().st_size for path in files if path.exists())
        return IndexStats(documents, vectors, live, size)

    def prefetch_lexical(self, request: SearchRequest, text: str) -> PrefetchedList | None:
        """A hybrid search's lexical list, computed ahead (while the query is being embedded); search() uses it
        only if no write has landed since, so results are still one snapshot."""
        if request.mode != "hybrid":
            return None
        _, depth = search_depth(request)
        with self._reading():
            where = self._where(request.filter) if request.filter else None
            ranked = self._lexical_search(text, depth, where)
            return PrefetchedList(self._version, text, depth, request.filter, ranked)

    def search(
        self,
        request: SearchRequest,
        vector: np.ndarray | None,
        text: str | None,
        prefetched: PrefetchedList | None = None,
    ) -> list[Hit]:
        """The `top_k` best chunks (or documents, grouped) that pass the filter, best first (searching.py).
        `prefetched`: this search's lexical list from prefetch_lexical(), used if nothing was written since."""
        with self._reading():
            where = self._where(request.filter) if request.filter else None  # once, for both lists of hybrid
            ready = None
            if prefetched is not None and prefetched.valid_for(self._version, text, request.filter):
                ready = (prefetched.depth, prefetched.ranked)
            return ranked_search(_Snapshot(self, where, ready), request, vector, text)

    def _ranked_lists(
        self,
        mode: str,
        depth: int,
        vector: np.ndarray | None,
        text: str | None,
        where: MetadataFilter | None,
        lexical: RankedList | None = None,
    ) -> dict[str, RankedList]:
        lists: dict[str, RankedList] = {}
        if mode in ("dense", "hybrid"):
            assert vector is not None
            lists["dense"] = self._dense_search(vector, depth, where)
        if mode in ("lexical", "hybrid"):
            lists["lexical"] = lexical if lexical is not None else self._lexical_search(text or "", depth, where)
        return lists

    def _documents_of(self, ids: Sequence[int]) -> dict[int, str]:
        if self._directory is not None:
            return {chunk_id: name.doc_id for chunk_id, name in self._directory.names(ids).items()}
        return dict(self._db.select_in("SELECT id, doc_id FROM chunks WHERE id IN ({marks})", ids))

    def _stored_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The float32 vectors of chunks `ids`, in that order."""
        rows = dict(self._db.select_in("SELECT id, vector FROM chunks WHERE id IN ({marks})", ids.tolist()))
        return self._matrix([rows[i] for i in ids.tolist()])

    def _lexical_search(self, text: str, top_k: int, where: MetadataFilter | None) -> RankedList:
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
        rows = self._db.execute(
            f"{sql} WHERE chunks_fts MATCH ?{condition} ORDER BY rank LIMIT ?", [*params, top_k]
        ).fetchall()
        return -np.array([r[1] for r in rows], dtype=np.float64), np.array([r[0] for r in rows], dtype=np.int64)

    def _dense_search(self, query: np.ndarray, top_k: int, where: MetadataFilter | None) -> RankedList:
        """The `top_k` nearest chunks that pass `where`; for a filter, by the path plan_filter() picks."""
        if where is None:
            return self._rescored(query, top_k, *self._vectors.search(query, top_k, self._search_threads))
        key = (self._version, where.sql, where.params)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(where)
            self._plans.put(key, plan)
        if plan.path == "overfetch":
            return self._overfetch(query, top_k, where, plan.share)
        if not len(plan.ids):
            return EMPTY
        if plan.path == "exact":
            return self._score_exactly(query, plan.ids.tolist(), top_k)
        return self._rescored(query, top_k, *self._vectors.search(query, top_k, self._search_threads, plan.ids))

    def _plan(self, where: MetadataFilter) -> FilterPlan:
        """How to answer dense searches filtered by `where` (plan_filter()), with the candidates listed."""
        joined = f"FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE {where.sql}"
        total = self._vectors.live
        if total <= self._planner.exact_limit:  # nothing to estimate: the whole index is a small set
            share, enumerable = 1.0, True
        else:
            share, enumerable = self._matching_share(where), self._enumerable(joined, where)
        path = plan_filter(share * total, share, enumerable, self._planner)
        if path == "exact":
            # An estimate from a sample can be far off: list at most 4x what was expected, and if there are more,
            # go the way a filter of that size would (with every candidate, never the truncated list). All listed:
            # their count decides, not the estimate; past the exact limit, FAISS goes over them (1,000 of 100k sq8
            # HNSW, in-process: scoring all from SQLite p50 2.75 ms, FAISS with their ID selector 0.83 ms).
            limit = 4 * max(self._planner.exact_limit, int(share * total))
            candidates = self._candidates(joined, where, limit)
            share = len(candidates) / max(total, 1)  # the truth if all were listed, else a lower bound
            if len(candidates) <= limit:
                exact = plan_filter(len(candidates), share, True, self._planner) == "exact"
                return FilterPlan("exact" if exact else "selector", share, np.array(candidates, dtype=np.int64))
            path = "selector" if enumerable else "overfetch"
        if path == "overfetch":
            return FilterPlan("overfetch", share, np.empty(0, np.int64))
        return FilterPlan("selector", share, np.array(self._candidates(joined, where, None), dtype=np.int64))

    def _candidates(self, joined: str, where: MetadataFilter, limit: int | None) -> list[int]:
        """The chunk ids that pass the filter (up to `limit` + 1), read by id only: no vector blob is touched."""
        sql, params = f"SELECT c.id {joined}", list(where.params)
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit + 1]
        return [row[0] for row in self._db.execute(sql, params)]

    def _matching_share(self, where: MetadataFilter) -> float:
        """The filter's selectivity, estimated on a random sample of the index's chunks (each looked up by id)."""
        tested = self._tested(self._vectors.sample_ids(self._planner.sample_size).tolist(), where)
        return (sum(tested.values()) + 0.5) / (len(tested) + 1)  # never 0: nothing passing a sample is rare, not none

    def _tested(self, ids: Sequence[int], where: MetadataFilter) -> dict[int, bool]:
        """Whether each of the chunks `ids` that exist passes the filter. CROSS JOIN keeps SQLite on the ids (then
        each document by its key), where it might otherwise list the filter's matches through a metadata index."""
        rows = self._db.select_in(
            f"SELECT c.id, {where.sql} FROM chunks c CROSS JOIN documents d ON d.doc_id = c.doc_id "
            "WHERE c.id IN ({marks})",
            list(ids),
            where.params,
        )
        return {row[0]: bool(row[1]) for row in rows}

    def _enumerable(self, joined: str, where: MetadataFilter) -> bool:
        """Whether SQLite finds the filter's matches through an index (declared fields) instead of a scan."""
        plan = self._db.execute(f"EXPLAIN QUERY PLAN SELECT c.id {joined}", where.params).fetchall()
        return not any(re.match(r"SCAN [cd]\b", row[3]) for row in plan)  # (an $in list's json_each is scanned)

    def _score_exactly(self, query: np.ndarray, ids: Sequence[int], top_k: int) -> RankedList:
        """The best `top_k` of `ids`, scored from SQLite's float32 vectors."""
        rows = list(self._db.select_in("SELECT id, vector FROM chunks WHERE id IN ({marks})", ids))
        if not rows:
            return EMPTY
        found = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        scores = self._vectors.exact_scores(query, self._matrix([r[1] for r in rows]))
        best = np.argsort(-scores, kind="stable")[:top_k]
        return scores[best], found[best]

    def _rescored(self, query: np.ndarray, top_k: int, scores: np.ndarray, ids: np.ndarray) -> RankedList:
        """FAISS's candidates, best first; a quantized index's approximate ones are rescored exactly."""
        if not self._vectors.approximate:
            return scores[:top_k], ids[:top_k]
        depth = top_k * RESCORE_FACTOR[self.config.quantization]
        return self._score_exactly(query, [int(i) for i in ids[:depth]], top_k)

    def _overfetch(self, query: np.ndarray, top_k: int, where: MetadataFilter, share: float) -> RankedList:
        """The best `top_k` that pass a broad filter: FAISS's best k' of everything (k' from the estimated share,
        with a margin), filtered, and k' widened x4 until `top_k` pass or k' covers the whole index. Exact for flat:
        every passing vector better than the last one kept is within FAISS's exact top k'."""
        total = self._vectors.ntotal
        wanted = max(top_k * 2, int(top_k / share * 2))
        while True:
            scores, ids = self._vectors.search(query, min(wanted, total), threads=self._search_threads)
            tested = self._tested(ids.tolist(), where)
            keep = np.fromiter((tested.get(i, False) for i in ids.tolist()), dtype=bool, count=len(ids))
            if keep.sum() >= top_k or wanted >= total:
                return self._rescored(query, top_k, scores[keep], ids[keep])
            wanted *= 4

    def _hits(
        self,
        scores: np.ndarray,
        ids: np.ndarray,
        ranks: dict[int, dict[str, int]],
        others: Others,
        request: SearchRequest,
    ) -> list[Hit]:
        if not len(ids):
            return []
        directory = self._directory
        if directory is not None and not request.with_documents and not request.with_vectors:
            names = directory.names(wanted_rows(ids, others))  # in memory: no page of SQLite read
            named = {i: ChunkRow(n.doc_id, n.chunk_index, 0, 0, None, "", {}, n.chunk_count) for i, n in names.items()}
            return build_hits(scores, ids, named, ranks, others)
        vector = "c.vector" if request.with_vectors else "NULL"  # the blobs are read only when asked for
        rows = self._db.select_in(
            f"SELECT c.id, c.doc_id, c.chunk_index, c.start, c.end, {vector}, d.text, d.metadata, d.chunk_count "
            "FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.id IN ({marks})",
            wanted_rows(ids, others),
        )
        by_id = {
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
        return build_hits(scores, ids, by_id, ranks, others)

    def close(self, checkpoint: bool = True) -> None:
        """Checkpoint (unless the index is being deleted) and close. Waits for the write or reads in progress;
        whoever holds this store afterwards gets IndexNotFound, never a database reopened at the same path."""
        try:
            if checkpoint and not self._closed:
                self.checkpoint()
            else:
                with self._checkpoint_lock:  # a background checkpoint still writing in the folder: let it finish
                    pass
        finally:
            with self._lock.write():
                self._closed = True
                self._db.close()


class _Snapshot:
    """The store, under its read lock, as the shared search steps see it (searching.RankingSource)."""

    def __init__(self, store: IndexStore, where: MetadataFilter | None, lexical: tuple[int, RankedList] | None) -> None:
        self.store = store
        self.where = where
        self.lexical = lexical  # (depth, list) computed ahead

    def ranked_lists(
        self, mode: Mode, depth: int, vector: np.ndarray | None, text: str | None
    ) -> dict[str, RankedList]:
        ready = self.lexical[1] if self.lexical is not None and self.lexical[0] == depth else None
        return self.store._ranked_lists(mode, depth, vector, text, self.where, ready)

    def documents_of(self, ids: Sequence[int]) -> dict[int, str]:
        return self.store._documents_of(ids)

    def stored_vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.store._stored_vectors(ids)

    def hits(
        self,
        scores: np.ndarray,
        ids: np.ndarray,
        ranks: dict[int, dict[str, int]],
        others: Others,
        request: SearchRequest,
    ) -> list[Hit]:
        return self.store._hits(scores, ids, ranks, others, request)
