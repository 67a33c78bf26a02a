"""The filter planner: how a filtered dense search runs on the embedded engine. From the filter's share of the index
(estimated on a random sample of chunks looked up by id) and whether SQLite can list its matches through a declared
field's B-tree, plan_filter() picks one of three paths: score the few matches exactly from SQLite's vectors; FAISS
with an ID selector over the listed matches; or FAISS over-fetch, each candidate tested by id. Plans are cached per
filter until the next write."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Literal

import msgspec
import numpy as np

from indexes.embedded.filters import SqlFilter

if TYPE_CHECKING:  # the planner reads the open index; it does not make one
    from indexes.embedded.state import OpenIndex

FilterPath = Literal["exact", "selector", "overfetch"]


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


class FilterPlanner:
    """plan_filter() applied to one index, with the candidates listed, and the plans of the filters used last kept
    in a PlanCache."""

    def __init__(self, limits: PlannerLimits) -> None:
        self.limits = limits
        self._plans = PlanCache()

    def plan(self, index: OpenIndex, where: SqlFilter) -> FilterPlan:
        """Under the index's read lock."""
        key = (index.version, where)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(index, where)
            self._plans.put(key, plan)
        return plan

    def _plan(self, index: OpenIndex, where: SqlFilter) -> FilterPlan:
        record, limits = index.record, self.limits
        total = index.vectors.live
        if total <= limits.exact_limit:  # nothing to estimate: the whole index is a small set
            share, enumerable = 1.0, True
        else:
            share, enumerable = self.matching_share(index, where), record.enumerable(where)
        path = plan_filter(share * total, share, enumerable, limits)
        if path == "exact":
            # An estimate from a sample can be far off: list at most 4x what was expected, and if there are more,
            # go the way a filter of that size would (with every candidate, never the truncated list). All listed:
            # their count decides, not the estimate; past the exact limit, FAISS goes over them (1,000 of 100k sq8
            # HNSW, in-process: scoring all from SQLite p50 2.75 ms, FAISS with their ID selector 0.83 ms).
            limit = 4 * max(limits.exact_limit, int(share * total))
            candidates = record.matching_chunks(where, limit)
            share = len(candidates) / max(total, 1)  # the truth if all were listed, else a lower bound
            if len(candidates) <= limit:
                exact = plan_filter(len(candidates), share, True, limits) == "exact"
                return FilterPlan("exact" if exact else "selector", share, np.array(candidates, dtype=np.int64))
            path = "selector" if enumerable else "overfetch"
        if path == "overfetch":
            return FilterPlan("overfetch", share, np.empty(0, np.int64))
        return FilterPlan("selector", share, np.array(record.matching_chunks(where, None), dtype=np.int64))

    def matching_share(self, index: OpenIndex, where: SqlFilter) -> float:
        """The filter's selectivity, estimated on a random sample of the index's chunks (each looked up by id)."""
        tested = index.record.passing(index.vectors.sample_ids(self.limits.sample_size).tolist(), where)
        return (sum(tested.values()) + 0.5) / (len(tested) + 1)  # never 0: nothing passing a sample is rare, not none
