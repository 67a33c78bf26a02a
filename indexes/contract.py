"""What the service needs from a storage engine: a catalog of named indexes, and each index's store.

Two engines implement them side by side: the embedded one (indexes/embedded/: SQLite + FAISS, one folder per index)
and the scale-out one (indexes/postgres/: PostgreSQL + pgvector). The service (service/search/service.py) uses only
what is written here; tests/test_architecture.py checks both engines' signatures against it. The behaviour:

- Every write is atomic and durable once it returns: a crash at any instant loses nothing acknowledged, and a
  reader sees a batch entirely or not at all.
- `search` returns only documents that pass the filter, at most `top_k`, best first, never fewer than `top_k` when
  that many match (exact for flat indexes; HNSW may miss near-ties but never returns a non-match).
- Scores are higher-is-better (cosine, inner product, minus the L2 distance; BM25 for lexical).
- Errors are indexes/errors.py's: IndexNotFound (IndexReplaced), IndexExists, DocumentNotFound, InvalidDocument,
  InvalidFilter, InvalidConfig, IndexUnavailable, StorageUnavailable, SchemaTooNew.
- Every method blocks (storage work, FAISS): call it in a worker thread (indexes/databases/loop.run); on a thread
  that runs an event loop it raises BlockingCallOnLoop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from indexes.config import FieldType, IndexConfig
from indexes.filters import MetadataFilter
from indexes.values import (
    DocumentRecord,
    Hit,
    IndexExport,
    IndexStats,
    SearchRequest,
    StoredDocument,
    UpsertResult,
)


class IndexStoreContract(Protocol):
    """One named index: its documents, their chunks and vectors, and search over them."""

    config: IndexConfig

    def upsert(self, documents: Sequence[DocumentRecord]) -> UpsertResult:
        """Insert or replace documents (by id) with their chunks, in one transaction."""
        ...

    def delete(self, doc_ids: Sequence[str]) -> list[str]:
        """Delete these documents; returns the ids that existed."""
        ...

    def delete_matching(self, where: MetadataFilter) -> list[str]: ...

    def content_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of `doc_ids` that exists (so unchanged documents are skipped)."""
        ...

    def get(self, doc_id: str) -> StoredDocument: ...

    def list(self, limit: int, after: str | None = None) -> tuple[list[StoredDocument], bool]:
        """A page in id order after the cursor, and whether more follow."""
        ...

    def prefetch_lexical(self, request: SearchRequest, text: str) -> object | None:
        """Optional work ahead for a hybrid search (None: nothing to do ahead)."""
        ...

    def search(
        self, request: SearchRequest, vector: np.ndarray | None, text: str | None, prefetched: object | None = None
    ) -> list[Hit]:
        """`prefetched`: what prefetch_lexical() returned for this search, or None."""
        ...

    def stats(self) -> IndexStats: ...

    def export(self, batch: int = 1000) -> AbstractContextManager[IndexExport]:
        """Everything in the index as of one instant, for a snapshot: reads and writes go on meanwhile, unseen by
        it. Read the batches inside the context, on the thread that entered it."""
        ...

    def set_config(self, config: IndexConfig) -> None:
        """Change what may change after creation (ef_search, query_model)."""
        ...

    def add_metadata_indexes(self, fields: dict[str, FieldType]) -> None:
        """Declare more indexed metadata fields, built from the stored documents."""
        ...

    def close(self, checkpoint: bool = True) -> None: ...


class CatalogContract(Protocol):
    """The named indexes. A store lent by use()/acquire() stays usable until released, even if the index is
    deleted meanwhile (then its reads and writes raise IndexNotFound)."""

    def create(self, config: IndexConfig) -> None: ...

    def delete(self, name: str) -> None: ...

    def restore(self, config: IndexConfig, batches: Iterable[Sequence[DocumentRecord]]) -> None:
        """Build index `config.name` from these documents, their vectors as given (nothing is embedded), and put it
        in place of the index of that name (if any) in one step: readers see the old index or the new one, never a
        mix, and a store lent out for the old one raises IndexReplaced. An error while building (from `batches`
        too), or a crash, leaves the old index as it was."""
        ...

    def names(self) -> list[str]: ...

    def use(self, name: str) -> AbstractContextManager[IndexStoreContract]: ...

    def acquire(self, name: str) -> IndexStoreContract: ...

    def release(self, store: IndexStoreContract) -> None: ...

    def close(self) -> None:
        """Close every open index (checkpointing what needs it)."""
        ...
