"""PgIndexStore: one index in PostgreSQL + pgvector, the IndexStoreContract's second implementation.

Two tables per index: documents (metadata as JSONB) and chunks (the vector as `vector(d)`, the document's
metadata again as JSONB with a GIN index, so a filter and the vector search read one table, and a `tsvector` with a
GIN index for lexical search). An HNSW index (pgvector's) serves `kind: "hnsw"`; `flat` is an exact scan.

The store holds no state beyond its config: every replica reads and writes the same tables, each write is one
transaction (acknowledged = committed), and a search's queries share one snapshot (REPEATABLE READ).

Differences from the embedded store, on purpose and documented in the README:
- lexical ranking is PostgreSQL's ts_rank over a tsvector, not BM25; the trigram tokenizer is not offered;
- `quantization` shapes only the HNSW index (sq8: a halfvec index, 2 bytes a dimension; binary: a bit index);
  the table keeps float32 vectors and candidates are rescored from them exactly;
- a filter matching few chunks (EXACT_LIMIT) is scored exactly; a broader one on HNSW uses pgvector's iterative
  index scan, and falls back to an exact scan when that returns fewer than top_k: never fewer than top_k results
  when that many match.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import msgspec
import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from indexes.config import FieldType, IndexConfig, check_config
from indexes.databases.postgres import PgDatabase
from indexes.errors import DocumentNotFound, IndexNotFound, IndexReplaced
from indexes.filters import MetadataFilter
from indexes.postgres.filters import compile_pg_filter, field_value
from indexes.ranking import RankedList
from indexes.searching import EMPTY, ChunkRow, Others, build_hits, lists_for, ranked_search, wanted_rows
from indexes.text import ENGLISH_STOPWORDS, query_words
from indexes.values import (
    ChunkRecord,
    DocumentRecord,
    Hit,
    IndexExport,
    IndexStats,
    Mode,
    PathObserver,
    SearchPath,
    SearchRequest,
    StoredDocument,
    UpsertResult,
    check_dimensions,
)

# Text search configurations for the tokenizers the embedded store names after FTS5's (a fixed table: never input).
TEXT_SEARCH_CONFIGS = {"porter": "english", "unicode61": "simple"}
# metric -> (pgvector distance operator, operator class suffix, score offset): score = offset - distance, so
# cosine similarity, the inner product (<#> is its negative) and minus the Euclidean distance, as the embedded store
METRICS = {
    "cosine": ("<=>", "cosine", 1.0),
    "ip": ("<#>", "ip", 0.0),
    "l2": ("<->", "l2", 0.0),
}
# Candidates per result taken from a quantized HNSW index, then rescored from the table's float32 vectors. Not the
# embedded engine's RESCORE_FACTOR (sq8 2): pgvector's "sq8" is a halfvec index walked by its own ef_search.
HNSW_CANDIDATES = {"none": 1, "sq8": 4, "binary": 20}
MAX_EF_SEARCH = 1000  # pgvector's bound on hnsw.ef_search
# A filter matching at most this many chunks is scored exactly (its matches listed through the GIN or B-tree
# indexes, then sorted by distance); a broader one walks the HNSW graph with iterative scans. Measured at 100k
# (bench_scale --store postgres, 384-d): a 1% filter (1,000 matches) through the graph had recall@10 0.963, exactly
# 1.000 in 4.2 ms p50. Counting up to the limit costs a broad filter 3.8 ms at 2,000 and 13.8 ms at 10,000 (its p50
# 11.9 vs 23.2 ms).
EXACT_LIMIT = 2_000
HALFVEC_FROM = 2001  # pgvector indexes `vector` up to 2,000 dimensions and `halfvec` up to 4,000


def index_expression(config: IndexConfig) -> tuple[str, str]:
    """(what the HNSW index is built over, the same for the query vector, a parameter)."""
    d = config.dimensions
    if config.quantization == "binary":
        return f"(binary_quantize(c.embedding)::bit({d}))", f"binary_quantize(%s::vector({d}))::bit({d})"
    if config.quantization == "sq8" or d >= HALFVEC_FROM:
        return f"(c.embedding::halfvec({d}))", f"%s::halfvec({d})"
    return "c.embedding", "%s"


def index_operator(config: IndexConfig) -> tuple[str, str]:
    """(the ordering operator of the HNSW index, its operator class)."""
    if config.quantization == "binary":
        return "<~>", "bit_hamming_ops"
    operator, suffix, _ = METRICS[config.metric]
    kind = "halfvec" if config.quantization == "sq8" or config.dimensions >= HALFVEC_FROM else "vector"
    return operator, f"{kind}_{suffix}_ops"


def schema(table: str, config: IndexConfig) -> list[str]:
    """The statements that make an index's tables (`table` is a fixed prefix, never input)."""
    return tables(table, config) + table_indexes(table, config)


def tables(table: str, config: IndexConfig) -> list[str]:
    """The tables alone (a restore fills them before building their indexes: faster than keeping them up)."""
    return [
        f'CREATE TABLE {table}_documents (doc_id text COLLATE "C" PRIMARY KEY, text text NOT NULL, '
        "metadata jsonb NOT NULL, content_hash text NOT NULL, chunk_count integer NOT NULL, "
        "created_at double precision NOT NULL, updated_at double precision NOT NULL)",
        f"CREATE TABLE {table}_chunks (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        f'doc_id text COLLATE "C" NOT NULL REFERENCES'
        f" {table}_documents ON DELETE CASCADE, chunk_index integer NOT NULL, "
        f'start integer NOT NULL, "end" integer NOT NULL, metadata jsonb NOT NULL, '
        f"embedding vector({config.dimensions}) NOT NULL, lexical tsvector NOT NULL)",
    ]


def table_indexes(table: str, config: IndexConfig) -> list[str]:
    statements = [
        f"CREATE INDEX ON {table}_chunks (doc_id)",
        f"CREATE INDEX ON {table}_chunks USING gin (metadata jsonb_path_ops)",
        f"CREATE INDEX ON {table}_chunks USING gin (lexical)",
    ]
    if config.kind == "hnsw":
        assert config.hnsw is not None
        over, _ = index_expression(config)
        _, opclass = index_operator(config)
        statements.append(
            f"CREATE INDEX ON {table}_chunks USING hnsw ({over.replace('c.', '')} {opclass}) "
            f"WITH (m = {int(config.hnsw.m)}, ef_construction = {int(config.hnsw.ef_construction)})"
        )
    return statements + field_indexes(table, config.metadata_indexes)


def field_indexes(table: str, fields: dict[str, FieldType] | Sequence[str]) -> list[str]:
    """B-tree indexes over a declared field's number and text value, the expressions the filters compare."""
    statements = []
    for field in fields:
        value = field_value("metadata", field.split("."))
        statements += [
            f"CREATE INDEX ON {table}_chunks (vsearch_number({value}))",
            f'CREATE INDEX ON {table}_chunks ((vsearch_text({value}) COLLATE "C"))',
        ]
    return statements


class PgIndexStore:
    def __init__(self, db: PgDatabase, table: str, config: IndexConfig, on_search: PathObserver | None = None) -> None:
        """`table`: the prefix of this index's tables (the catalog's row for it says which). `on_search`: told the
        path of each search (/metrics)."""
        self._db = db
        self._on_search = on_search
        self._table = table
        self._id = int(table.removeprefix("vs"))  # the catalog's row for this index
        self._documents = f"{table}_documents"
        self._chunks = f"{table}_chunks"
        self.config = config
        self._text_config = TEXT_SEARCH_CONFIGS.get(config.lexical_tokenizer, "simple")

    @contextmanager
    def _transaction(self, snapshot: bool = False) -> Iterator[psycopg.Connection]:
        try:
            with self._db.transaction(snapshot) as conn:
                yield conn
        except psycopg.errors.UndefinedTable:  # the index was deleted, or restored, while this store was lent out
            renamed = self._db.execute("SELECT 1 FROM vsearch_indexes WHERE name = %s", (self.config.name,))
            raise (IndexReplaced if renamed else IndexNotFound)(self.config.name) from None

    # --- writes ---------------------------------------------------------------------------------------------------

    def upsert(self, documents: Sequence[DocumentRecord]) -> UpsertResult:
        check_dimensions(documents, self.config.dimensions)
        created: list[str] = []
        updated: list[str] = []
        now = time.time()
        last = {doc.doc_id: doc for doc in documents}  # a batch naming a document twice keeps its last version
        ordered = sorted(last.values(), key=lambda doc: doc.doc_id)  # rows locked in one order: no deadlocks
        with self._transaction() as conn, conn.cursor() as cursor:
            # The documents' rows first: they lock each document, so that two replicas writing the same one take
            # turns, and the second replaces the first's chunks instead of adding to them.
            cursor.executemany(
                f"INSERT INTO {self._documents} AS d VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (doc_id) DO "
                "UPDATE SET text = excluded.text, metadata = excluded.metadata, content_hash = excluded.content_hash, "
                "chunk_count = excluded.chunk_count, updated_at = excluded.updated_at RETURNING (xmax = 0)",
                [(doc.doc_id, doc.text, Jsonb(doc.metadata), doc.content_hash, len(doc.chunks),
                  doc.created_at or now, doc.updated_at or now) for doc in ordered],
                returning=True,
            )  # fmt: skip
            for doc in ordered:
                (inserted,) = cursor.fetchone() or (False,)
                (created if inserted else updated).append(doc.doc_id)
                cursor.nextset()
            cursor.execute(f"DELETE FROM {self._chunks} WHERE doc_id = ANY(%s)", ([doc.doc_id for doc in ordered],))
            cursor.executemany(
                f'INSERT INTO {self._chunks} (doc_id, chunk_index, start, "end", metadata, embedding, lexical) '
                f"VALUES (%s, %s, %s, %s, %s, %s, to_tsvector('{self._text_config}', %s))",
                [(doc.doc_id, index, chunk.start, chunk.end, Jsonb(doc.metadata),
                  np.ascontiguousarray(chunk.vector, dtype=np.float32), doc.text[chunk.start : chunk.end])
                 for doc in ordered for index, chunk in enumerate(doc.chunks)],
            )  # fmt: skip
        order = {doc.doc_id: i for i, doc in enumerate(documents)}
        return UpsertResult(sorted(created, key=order.get), sorted(updated, key=order.get))  # type: ignore[arg-type]

    def delete(self, doc_ids: Sequence[str]) -> list[str]:
        with self._transaction() as conn:
            rows = conn.execute(
                f"DELETE FROM {self._documents} WHERE doc_id = ANY(%s) RETURNING doc_id", (list(doc_ids),)
            ).fetchall()
        deleted = {row[0] for row in rows}
        return [doc_id for doc_id in dict.fromkeys(doc_ids) if doc_id in deleted]

    def delete_matching(self, where: MetadataFilter) -> list[str]:
        sql, params = compile_pg_filter(where, "d.metadata")
        with self._transaction() as conn:
            rows = conn.execute(f"DELETE FROM {self._documents} d WHERE {sql} RETURNING doc_id", params).fetchall()
        return sorted(row[0] for row in rows)

    def set_config(self, config: IndexConfig) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE vsearch_indexes SET config = %s WHERE id = %s", (Jsonb(msgspec.to_builtins(config)), self._id)
            )
        self.config = config

    def add_metadata_indexes(self, fields: dict[str, FieldType]) -> None:
        new = {field: kind for field, kind in fields.items() if field not in self.config.metadata_indexes}
        if not new:
            return
        config = check_config(msgspec.structs.replace(
            self.config, metadata_indexes={**self.config.metadata_indexes, **new}))  # fmt: skip
        with self._transaction() as conn:
            for statement in field_indexes(self._table, new):
                conn.execute(statement)  # type: ignore[arg-type]
            conn.execute(
                "UPDATE vsearch_indexes SET config = %s WHERE id = %s", (Jsonb(msgspec.to_builtins(config)), self._id)
            )
        self.config = config

    # --- reads ----------------------------------------------------------------------------------------------------

    def content_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT doc_id, content_hash FROM {self._documents} WHERE doc_id = ANY(%s)", (list(doc_ids),)
            ).fetchall()
        return dict(rows)

    def get(self, doc_id: str) -> StoredDocument:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT doc_id, text, metadata, chunk_count, created_at, updated_at "
                f"FROM {self._documents} WHERE doc_id = %s",
                (doc_id,),
            ).fetchone()
        if row is None:
            raise DocumentNotFound(doc_id)
        return StoredDocument(*row)

    def list(self, limit: int, after: str | None = None) -> tuple[list[StoredDocument], bool]:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT doc_id, text, metadata, chunk_count, created_at, updated_at "
                f"FROM {self._documents} WHERE doc_id > %s ORDER BY doc_id LIMIT %s",  # byte order: ids are "C"
                (after or "", limit + 1),
            ).fetchall()
        return [StoredDocument(*row) for row in rows[:limit]], len(rows) > limit

    def stats(self) -> IndexStats:
        with self._transaction(snapshot=True) as conn:
            documents, vectors, size = conn.execute(
                f"SELECT (SELECT count(*) FROM {self._documents}), (SELECT count(*) FROM {self._chunks}), "
                "pg_total_relation_size(%s) + pg_total_relation_size(%s)",
                (self._documents, self._chunks),
            ).fetchone()  # type: ignore[misc]
        return IndexStats(documents, vectors, vectors, size)  # no FAISS: its count is the table's

    @contextmanager
    def export(self, batch: int = 1000) -> Iterator[IndexExport]:
        """One read-only REPEATABLE READ transaction: every batch reads the same instant."""
        with self._transaction(snapshot=True) as conn:
            documents, vectors = conn.execute(
                f"SELECT (SELECT count(*) FROM {self._documents}), (SELECT count(*) FROM {self._chunks})"
            ).fetchone()  # type: ignore[misc]
            yield IndexExport(self.config, documents, vectors, self._exported(conn, batch))

    def _exported(self, conn: psycopg.Connection, batch: int) -> Iterator[list[DocumentRecord]]:
        after = ""
        while rows := conn.execute(
            f"SELECT doc_id, text, metadata, content_hash, created_at, updated_at FROM {self._documents} "
            "WHERE doc_id > %s ORDER BY doc_id LIMIT %s",
            (after, batch),
        ).fetchall():
            chunks: dict[str, list[ChunkRecord]] = {row[0]: [] for row in rows}
            for doc_id, start, end, vector in conn.execute(
                f'SELECT doc_id, start, "end", embedding FROM {self._chunks} WHERE doc_id = ANY(%s) '
                "ORDER BY doc_id, chunk_index",
                (list(chunks),),
            ):
                chunks[doc_id].append(ChunkRecord(start, end, vector.to_numpy().astype("<f4")))  # pgvector Vectors
            yield [DocumentRecord(doc_id, text, metadata, content_hash, chunks[doc_id], created, updated)
                   for doc_id, text, metadata, content_hash, created, updated in rows]  # fmt: skip
            after = rows[-1][0]

    def prefetch_lexical(self, request: SearchRequest, text: str) -> None:
        return None  # the lexical list is one query in the search's own transaction

    def search(
        self, request: SearchRequest, vector: np.ndarray | None, text: str | None, prefetched: object | None = None
    ) -> list[Hit]:
        where = compile_pg_filter(request.filter, "c.metadata") if request.filter is not None else None
        with self._transaction(snapshot=True) as conn:
            snapshot = _Snapshot(self, conn, where)
            hits = ranked_search(snapshot, request, vector, text)
        if self._on_search is not None:
            self._on_search(snapshot.path)
        return hits

    def close(self, checkpoint: bool = True) -> None:
        pass  # nothing held: the pool belongs to the catalog


class _Snapshot:
    """One search's transaction, as the shared search steps see it (searching.RankingSource)."""

    def __init__(self, store: PgIndexStore, conn: psycopg.Connection, where: tuple[str, list] | None) -> None:
        self.store = store
        self.conn = conn
        self.where = where
        self.chunks = store._chunks
        self._few: bool | None = None  # whether the filter matches at most EXACT_LIMIT chunks (asked once)
        self.path: SearchPath = "lexical"  # how the dense list was found

    def _filter(self) -> tuple[str, list]:
        return self.where if self.where is not None else ("TRUE", [])

    def ranked_lists(
        self, mode: Mode, depth: int, vector: np.ndarray | None, text: str | None
    ) -> dict[str, RankedList]:
        return lists_for(mode, depth, vector, text, self.dense, self.lexical)

    def dense(self, query: np.ndarray, top_k: int) -> RankedList:
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        config = self.store.config
        operator, _, offset = METRICS[config.metric]
        sql, params = self._filter()
        distance = f"c.embedding {operator} %s"
        if config.kind == "hnsw" and not self._few_matches():
            assert config.hnsw is not None
            factor = HNSW_CANDIDATES[config.quantization]
            ef = min(MAX_EF_SEARCH, max(config.hnsw.ef_search, top_k * factor))
            # The graph, not the planner's guess: a scan and sort would be exact but linear in the index (until
            # this transaction's next statement, which resets them).
            self.conn.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config('enable_seqscan', 'off', "
                              "true), set_config('enable_bitmapscan', 'off', true)", (str(ef),))  # fmt: skip
            if self.where is not None:  # keep walking the graph until top_k pass the filter (or its budget ends)
                self.conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            over, query_expression = index_expression(config)
            index_op, _ = index_operator(config)
            rows = self.conn.execute(
                f"SELECT id, distance FROM (SELECT c.id, {distance} AS distance FROM {self.chunks} c WHERE {sql} "
                f"ORDER BY {over} {index_op} {query_expression} LIMIT {int(top_k * factor)}) candidates "
                f"ORDER BY distance, id LIMIT {int(top_k)}",
                [query, *params, query],
            ).fetchall()
            self.conn.execute("SELECT set_config('enable_seqscan', 'on', true), "
                              "set_config('enable_bitmapscan', 'on', true)")  # fmt: skip
            if len(rows) == top_k:
                self.path = "unfiltered" if self.where is None else "iterative"
                return self._ranked(rows, offset)
        # Exact: `+ 0` keeps the planner off the HNSW index (the order must come from every match).
        self.path = "unfiltered" if self.where is None else "exact"
        rows = self.conn.execute(
            f"SELECT id, distance FROM (SELECT c.id, ({distance}) + 0 AS distance FROM {self.chunks} c "
            f"WHERE {sql}) matches ORDER BY distance, id LIMIT {int(top_k)}",
            [query, *params],
        ).fetchall()
        return self._ranked(rows, offset)

    def _few_matches(self) -> bool:
        if self.where is None:
            return False
        if self._few is None:
            sql, params = self.where
            (count,) = self.conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {self.chunks} c WHERE {sql} LIMIT {EXACT_LIMIT + 1}) m", params
            ).fetchone()  # type: ignore[misc]
            self._few = count <= EXACT_LIMIT
        return self._few

    @staticmethod
    def _ranked(rows: list[tuple], offset: float) -> RankedList:
        if not rows:
            return EMPTY
        distances = np.array([row[1] for row in rows], dtype=np.float64)
        return offset - distances, np.array([row[0] for row in rows], dtype=np.int64)

    def lexical(self, text: str, top_k: int) -> RankedList:
        """ts_rank over the chunks' tsvectors, any of the query's words matching (higher is better)."""
        stopwords = ENGLISH_STOPWORDS if self.store.config.lexical_tokenizer == "porter" else frozenset()
        words = query_words(text, stopwords)
        if not words:
            return EMPTY
        sql, params = self._filter()
        rows = self.conn.execute(
            f"SELECT c.id, ts_rank(c.lexical, q) AS rank FROM {self.chunks} c, "
            f"to_tsquery('{self.store._text_config}', %s) q WHERE c.lexical @@ q AND {sql} "
            f"ORDER BY rank DESC, c.id LIMIT {int(top_k)}",
            [" | ".join(words), *params],
        ).fetchall()
        if not rows:
            return EMPTY
        return np.array([r[1] for r in rows], dtype=np.float64), np.array([r[0] for r in rows], dtype=np.int64)

    def documents_of(self, ids: Sequence[int]) -> dict[int, str]:
        rows = self.conn.execute(f"SELECT id, doc_id FROM {self.chunks} WHERE id = ANY(%s)", (list(ids),))
        return dict(rows.fetchall())

    def stored_vectors(self, ids: np.ndarray) -> np.ndarray:
        rows = dict(self.conn.execute(f"SELECT id, embedding FROM {self.chunks} WHERE id = ANY(%s)", (ids.tolist(),)))
        return np.stack([rows[i].to_numpy().astype(np.float32) for i in ids.tolist()])  # pgvector Vectors

    def hits(
        self,
        scores: np.ndarray,
        ids: np.ndarray,
        ranks: dict[int, dict[str, int]],
        others: Others,
        request: SearchRequest,
    ) -> list[Hit]:
        """Reads text and metadata even without request.with_documents (one query either way)."""
        if not len(ids):
            return []
        vector = "c.embedding" if request.with_vectors else "NULL"
        rows = self.conn.execute(
            f'SELECT c.id, c.doc_id, c.chunk_index, c.start, c."end", {vector}, d.text, d.metadata, d.chunk_count '
            f"FROM {self.chunks} c JOIN {self.store._documents} d ON d.doc_id = c.doc_id WHERE c.id = ANY(%s)",
            (wanted_rows(ids, others),),
        ).fetchall()
        by_id = {
            row[0]: ChunkRow(
                row[1],
                row[2],
                row[3],
                row[4],
                None if row[5] is None else row[5].to_numpy().astype("<f4"),
                row[6],
                row[7],
                row[8],
            )  # fmt: skip
            for row in rows
        }
        return build_hits(scores, ids, by_id, ranks, others)
