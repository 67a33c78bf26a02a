"""The FAISS side of an index: derived from SQLite, kept in memory, checkpointed to one file.

Two FAISS indexes per index:
- `main`, of the index's kind (flat or HNSW, float32 or quantized), only ever grown in large batches, never
  changed in place: a deletion is a tombstone, excluded at search time, until the store compacts by rebuilding;
- `fresh`, an exact flat index of what was added since the last merge into `main`.
A write lands in `fresh` (a copy, cheap at any size); `merge()` moves `fresh` into `main` once it is big enough,
in one batch with all of FAISS's threads (HNSW builds several times faster in large batches on all cores). Because
`main` changes only by merge, a checkpoint can write it without holding any lock (see IndexStore.checkpoint), and a
restart serves from the checkpoint with what is newer in `fresh`, searched exactly, at once.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from indexes.config import IndexConfig
from indexes.embedded.memory import back_with_huge_pages, release_free_memory
from indexes.values import normalize

_MAGIC = b"VSFAISS2"
_HEADER = struct.Struct("<8sqIq")  # magic, sequence it reflects, crc32 of the payload, payload length
MERGE_SIZE = 10_000  # fresh vectors that trigger a merge: large enough for HNSW's batch speed and for training
# Quantized indexes keep only approximate vectors: they propose this many times top_k candidates, which the store
# rescores exactly from SQLite's float32 vectors (a page read each when they are not cached). sq8, 1M x 384-d HNSW
# at ef_search 256, 200 queries: recall@10 0.976 with 4x, 3x or 2x, 0.955 with 1x.
RESCORE_FACTOR = {"none": 1, "sq8": 2, "binary": 20}


class VectorIndex:
    """FAISS ids are the SQLite chunk ids, which only grow: every id in `main` is below every id in `fresh`."""

    def __init__(
        self,
        config: IndexConfig,
        main: faiss.Index | None = None,
        fresh: faiss.Index | None = None,
        tombstones: set[int] | None = None,
        merge_size: int = MERGE_SIZE,
    ) -> None:
        self.config = config
        self.merge_size = merge_size
        self.main = main if main is not None else self._new_main(config)
        self.fresh = fresh if fresh is not None else faiss.IndexIDMap2(faiss.IndexFlat(config.dimensions, self._metric))
        self.tombstones: set[int] = tombstones or set()  # ids deleted from `main`
        self._fresh_ids: set[int] = set(int(i) for i in faiss.vector_to_array(self.fresh.id_map))
        self._main_ids = faiss.vector_to_array(self.main.id_map)  # a copy: `main` changes only by merge
        self._live: _LiveSelector | None = None

    @property
    def _metric(self) -> int:
        return faiss.METRIC_L2 if self.config.metric == "l2" else faiss.METRIC_INNER_PRODUCT

    @property
    def _binary(self) -> bool:
        return self.config.quantization == "binary"

    @property
    def approximate(self) -> bool:
        """Whether `search` scores are approximate (quantized): the store rescores them."""
        return self.config.quantization != "none"

    @staticmethod
    def _new_main(config: IndexConfig) -> faiss.Index:
        d, quantization = config.dimensions, config.quantization
        metric = faiss.METRIC_L2 if config.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        hnsw = config.hnsw if config.kind == "hnsw" else None
        if quantization == "binary":  # one bit per dimension (its sign), Hamming distance
            base = faiss.IndexBinaryHNSW(d, hnsw.m) if hnsw else faiss.IndexBinaryFlat(d)
            if hnsw:
                base.hnsw.efConstruction = hnsw.ef_construction
            return faiss.IndexBinaryIDMap(base)
        if quantization == "sq8":  # one byte per dimension, per-dimension ranges learnt from the first merge
            sq8 = faiss.ScalarQuantizer.QT_8bit
            base = faiss.IndexHNSWSQ(d, sq8, hnsw.m, metric) if hnsw else faiss.IndexScalarQuantizer(d, sq8, metric)
        else:
            base = faiss.IndexHNSWFlat(d, hnsw.m, metric) if hnsw else faiss.IndexFlat(d, metric)
        if hnsw:
            base.hnsw.efConstruction = hnsw.ef_construction
        return faiss.IndexIDMap(base)  # not IDMap2: its reverse map of every id is 41 MiB at 1M, never read

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """float32, C-contiguous, and unit length for cosine (so inner product is the cosine)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.config.dimensions)
        return normalize(vectors) if self.config.metric == "cosine" else vectors

    def _main_codes(self, vectors: np.ndarray) -> np.ndarray:
        return np.packbits(vectors > 0, axis=1) if self._binary else vectors

    @property
    def ntotal(self) -> int:
        """Vectors held, tombstoned ones included."""
        return int(self.main.ntotal + self.fresh.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.tombstones)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.fresh.add_with_ids(self.prepare(vectors), np.asarray(ids, dtype=np.int64))
            self._fresh_ids.update(int(i) for i in ids)

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        in_fresh = [int(i) for i in ids if int(i) in self._fresh_ids]
        if in_fresh:
            self.fresh.remove_ids(np.array(in_fresh, dtype=np.int64))
            self._fresh_ids.difference_update(in_fresh)
        # An id in neither (a replayed deletion of something never added here) is not a tombstone.
        ids = np.asarray(ids, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._main_ids, ids), max(len(self._main_ids) - 1, 0))
        in_main = ids[self._main_ids[at] == ids] if len(self._main_ids) else ids[:0]  # main's ids are ascending
        self.tombstones.update(int(i) for i in in_main)

    def sample_ids(self, size: int) -> np.ndarray:
        """`size` ids drawn at random from those held (tombstoned ones included), for estimates."""
        held = len(self._main_ids) + len(self._fresh_ids)
        if not held:
            return np.empty(0, np.int64)
        # Positions into main's ids, then fresh's: no copy of all ids per filtered query (8 MB at 1M).
        positions = np.random.default_rng().integers(0, held, size)
        in_main = positions < len(self._main_ids)
        picked = np.empty(size, dtype=np.int64)
        picked[in_main] = self._main_ids[positions[in_main]]
        fresh = np.fromiter(self._fresh_ids, dtype=np.int64)  # at most about a merge's worth
        picked[~in_main] = fresh[positions[~in_main] - len(self._main_ids)]
        return picked

    def merge_due(self) -> bool:
        return self.fresh.ntotal >= self.merge_size

    def merge(self, threads: int = 0) -> None:
        """Move `fresh` into `main` in one batch (training a quantizer first, on these vectors, if it needs it).
        `threads`: FAISS's OpenMP threads for it (0: every core)."""
        if not self.fresh.ntotal or (not self.main.is_trained and self.fresh.ntotal < self.merge_size):
            return  # a quantizer learns from a merge-sized sample at least; until then all is exact in `fresh`
        faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
        ids = faiss.vector_to_array(self.fresh.id_map).copy()
        vectors = self.fresh.index.reconstruct_n(0, len(ids))
        codes = self._main_codes(vectors)
        if not self.main.is_trained:
            self.main.train(codes)
        self.main.add_with_ids(codes, ids)
        self._main_ids = np.concatenate([self._main_ids, ids])
        self.fresh.reset()
        self._fresh_ids.clear()
        release_free_memory()

    def scores_from(self, distances: np.ndarray) -> np.ndarray:
        """Higher is better for every metric: the inner product (= cosine for cosine), or minus the Euclidean
        distance for l2."""
        if self.config.metric == "l2":
            return -np.sqrt(np.maximum(distances, 0))
        return distances

    def exact_scores(self, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """What FAISS would score, computed directly (for candidates scored from SQLite's vectors)."""
        query, vectors = self.prepare(query)[0], self.prepare(vectors)
        if self.config.metric == "l2":
            return -np.linalg.norm(vectors - query, axis=1)
        return vectors @ query

    def search(
        self, query: np.ndarray, k: int, threads: int = 1, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the `k` best live vectors, best first; only ids in `allowed`, when given. For a
        quantized index, `k` times RESCORE_FACTOR candidates with approximate scores, for the store to rescore.

        `threads`: FAISS's OpenMP threads for it (0: OpenMP's default, every core). OpenMP keeps that count per
        calling thread, so it is set here, in the thread that searches. One query gains little from more: measured
        at 100k x 384 flat over HTTP on 2 cores, p50 12.6 ms by vector and 16.4 ms by text with 1 thread, 16.8 and
        39.0 ms with the default, whose threads spin against the inference threads."""
        if threads > 0:
            faiss.omp_set_num_threads(threads)
        query = self.prepare(query)
        keep: list[object] = []  # the SWIG selectors must outlive the search: params.sel alone does not
        only, bitmap = self._selector(allowed)
        keep += [only, bitmap]
        lists = []
        if self.fresh.ntotal:
            lists.append(self._search_one(self.fresh, query, k, only, graph=False))
        if self.main.ntotal:
            main_only = only
            live = self._live_selector()
            if live is not None:
                main_only = live.selector
                keep.append(live)
                if only is not None:
                    main_only = faiss.IDSelectorAnd(only, main_only)
                    keep.append(main_only)
            depth = k * RESCORE_FACTOR[self.config.quantization]
            codes = self._main_codes(query)
            if only is not None and self.config.kind == "hnsw":
                # A filter's candidates, scanned exhaustively in the graph's own storage (by position): exact, where
                # a graph walk through mostly filtered-out nodes misses matches.
                by_position = faiss.IDSelectorTranslated(self.main.id_map, main_only)
                keep.append(by_position)
                scores, positions = self._search_one(self._main_storage(), codes, depth, by_position, graph=False)
                lists.append((scores, self._main_ids[positions]))
            else:
                lists.append(self._search_one(self.main, codes, depth, main_only, graph=self.config.kind == "hnsw"))
        if not lists:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        scores, ids = np.concatenate([s for s, _ in lists]), np.concatenate([i for _, i in lists])
        best = np.argsort(-scores, kind="stable")
        return scores[best], ids[best]

    def _live_selector(self) -> _LiveSelector | None:
        """main's ids less the tombstones, as an ID selector; cached, since building it per search cost 0.6 ms with
        5,000 tombstones at 1M. Tombstones only grow (compaction makes a new VectorIndex), so their count tells
        whether the cached one is current."""
        count = len(self.tombstones)
        if not count:
            return None
        live = self._live
        if live is None or live.tombstones != count:
            live = self._live = _LiveSelector(count, np.fromiter(self.tombstones, dtype=np.int64, count=count))
        return live

    @staticmethod
    def _selector(allowed: np.ndarray | None) -> tuple[faiss.IDSelector | None, np.ndarray | None]:
        """An ID selector for `allowed`: a bitmap over ids up to the largest (a bit test per vector scanned, where
        IDSelectorBatch hashes), and the bitmap, which must outlive the search."""
        if allowed is None:
            return None, None
        if not len(allowed):
            return faiss.IDSelectorBatch(allowed), None
        member = np.zeros(int(allowed.max()) + 1, dtype=bool)
        member[allowed] = True
        bitmap = np.packbits(member, bitorder="little")
        # Its n is the bitmap's size in bytes (an id is tested only if id / 8 < n): never the number of bits,
        # or ids past the last allowed one would be looked up beyond the array.
        return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap

    def _main_storage(self) -> faiss.Index:
        """The flat (or quantized flat) index under `main`'s HNSW graph, by position; `main`'s own, if flat."""
        if self.config.kind != "hnsw":
            return (faiss.downcast_IndexBinary if self._binary else faiss.downcast_index)(self.main.index)
        if self._binary:
            return faiss.downcast_IndexBinary(faiss.downcast_IndexBinary(self.main.index).storage)
        return faiss.downcast_index(faiss.downcast_index(self.main.index).storage)

    def back_with_huge_pages(self) -> None:
        """Map `main`'s arrays with huge pages (memory.back_with_huge_pages). Not while a merge may grow them (the
        store calls it while `main` is held still, as for a checkpoint)."""
        for address, size in self._main_arrays():
            back_with_huge_pages(address, size)

    def _main_arrays(self) -> list[tuple[int, int]]:
        """(address, bytes) of the arrays a search of `main` reads: its codes and, for HNSW, the graph's links."""
        storage = self._main_storage()
        arrays = [(storage.xb if self._binary else storage.codes, 1)]
        if self.config.kind == "hnsw":
            hnsw = (faiss.downcast_IndexBinary if self._binary else faiss.downcast_index)(self.main.index).hnsw
            arrays += [(hnsw.neighbors, 4), (hnsw.offsets, 8), (hnsw.levels, 4)]
        return [(int(array.data()), array.size() * width) for array, width in arrays if array.size()]

    def _search_one(
        self, index: faiss.Index, query: np.ndarray, k: int, only: faiss.IDSelector | None, graph: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, int(index.ntotal))
        if graph:
            assert self.config.hnsw is not None
            params = faiss.SearchParametersHNSW(efSearch=max(self.config.hnsw.ef_search, k))
        else:
            params = faiss.SearchParameters()
        if only is not None:
            params.sel = only
        distances, ids = index.search(query, k, params=params)
        found = ids[0] >= 0
        if index is not self.fresh and self._binary:  # h differing sign bits of d: the angle is about pi * h / d
            return np.cos(np.pi * distances[0][found] / self.config.dimensions).astype(np.float32), ids[0][found]
        return self.scores_from(distances[0][found]), ids[0][found]

    def snapshot(self) -> VectorIndex:
        """A copy to checkpoint from: `fresh` and the tombstones copied, `main` shared (it changes only by merge,
        which the store holds back while the copy is written)."""
        return VectorIndex(self.config, self.main, faiss.clone_index(self.fresh), set(self.tombstones), self.merge_size)

    def save(self, path: Path, seq: int) -> None:
        """Atomically write the index with the change sequence it reflects, streamed: no copy of it in memory."""
        partial = path.with_suffix(".partial")
        with partial.open("wb") as f:
            f.write(_HEADER.pack(_MAGIC, seq, 0, 0))
            crc, length = 0, 0

            def write(chunk: bytes) -> int:
                nonlocal crc, length
                crc, length = zlib.crc32(chunk, crc), length + len(chunk)
                f.write(chunk)
                return len(chunk)

            writer = faiss.PyCallbackIOWriter(write)
            (faiss.write_index_binary if self._binary else faiss.write_index)(self.main, writer)
            faiss.write_index(self.fresh, writer)
            del writer  # flushes its buffer through `write`
            write(np.fromiter(sorted(self.tombstones), dtype="<i8").tobytes())
            f.seek(0)
            f.write(_HEADER.pack(_MAGIC, seq, crc, length))
            f.flush()
            os.fsync(f.fileno())
        partial.replace(path)

    @classmethod
    def load(cls, path: Path, config: IndexConfig, merge_size: int = MERGE_SIZE) -> tuple[VectorIndex, int] | None:
        """The checkpointed index and its sequence, or None if the file is missing, damaged or of another shape.
        Streamed: memory peaks at the index's own size."""
        try:
            with path.open("rb") as f:
                magic, seq, crc, length = _HEADER.unpack(f.read(_HEADER.size))
                if magic != _MAGIC or os.fstat(f.fileno()).st_size != _HEADER.size + length:
                    return None
                read = _CheckedReader(f.read)
                reader = faiss.PyCallbackIOReader(read)
                binary = config.quantization == "binary"
                main = (faiss.read_index_binary if binary else faiss.read_index)(reader)
                fresh = faiss.read_index(reader)
                del reader
                tombstones = np.frombuffer(read(length - read.consumed), dtype="<i8")
                if read.crc != crc or read.consumed != length:
                    return None
        except (OSError, struct.error, RuntimeError, ValueError):
            return None
        if main.d != config.dimensions or fresh.d != config.dimensions:
            return None
        return cls(config, main, fresh, set(tombstones.tolist()), merge_size), seq


class _LiveSelector:
    """Every id but `dead`'s, for FAISS; it holds the SWIG objects the selector points to, so they live as long."""

    def __init__(self, tombstones: int, dead: np.ndarray) -> None:
        self.tombstones = tombstones
        self._dead = faiss.IDSelectorBatch(dead)
        self.selector = faiss.IDSelectorNot(self._dead)


class _CheckedReader:
    """Reads through `read`, keeping the count and the crc32 of what it returned."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.crc = 0
        self.consumed = 0

    def __call__(self, size: int) -> bytes:
        chunk = self._read(size)
        self.crc = zlib.crc32(chunk, self.crc)
        self.consumed += len(chunk)
        return chunk
