"""Rank fusion and diversity: pure functions on ranked lists of chunk ids (each list: scores and ids, best first)."""

from __future__ import annotations

import numpy as np

from indexes.values import Fusion, Normalization

RankedList = tuple[np.ndarray, np.ndarray]  # (scores, ids), best first


def ranks_by_id(lists: dict[str, RankedList]) -> dict[int, dict[str, int]]:
    """For each id, its 1-based rank in every list that holds it."""
    ranks: dict[int, dict[str, int]] = {}
    for name, (_, ids) in lists.items():
        for rank, chunk_id in enumerate(ids, start=1):
            ranks.setdefault(int(chunk_id), {})[name] = rank
    return ranks


def fuse(lists: dict[str, RankedList], fusion: Fusion) -> RankedList:
    """Every candidate of the lists, fused and best first (ties in first-seen order)."""
    if fusion.method == "rrf":
        return reciprocal_rank_fusion(lists, fusion)
    return convex_fusion(lists, fusion)


def reciprocal_rank_fusion(lists: dict[str, RankedList], fusion: Fusion) -> RankedList:
    """score(id) = sum over the lists that hold it of weight / (k + rank)."""
    weight = {"dense": fusion.dense_weight, "lexical": fusion.lexical_weight}
    candidates = _candidates(lists)
    fused = np.zeros(len(candidates))
    for name, (_, ids) in lists.items():
        contribution = weight[name] / (fusion.k + np.arange(1, len(ids) + 1, dtype=np.float64))
        fused += _on_candidates(candidates, ids, contribution, 0.0)
    return _best_first(fused, candidates)


def normalized(scores: np.ndarray, method: Normalization) -> tuple[np.ndarray, float]:
    """One list's scores on a common scale, and the value a candidate missing from the list gets (it scored below
    everything the list returned). minmax: [0, 1], missing 0; zscore: standard scores, missing the lowest. A list
    whose scores are all equal (one hit, say) puts them at the top of the scale: 1, or 0 with missing -1."""
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        return scores, 0.0
    if method == "minmax":
        spread = scores.max() - scores.min()
        return ((scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)), 0.0
    deviation = scores.std()
    if deviation == 0:
        return np.zeros_like(scores), -1.0
    values = (scores - scores.mean()) / deviation
    return values, float(values.min())


def convex_fusion(lists: dict[str, RankedList], fusion: Fusion) -> RankedList:
    """alpha * dense + (1 - alpha) * lexical over normalised scores (see normalized())."""
    weight = {"dense": fusion.alpha, "lexical": 1.0 - fusion.alpha}
    candidates = _candidates(lists)
    fused = np.zeros(len(candidates))
    for name, (scores, ids) in lists.items():
        values, floor = normalized(scores, fusion.normalization)
        fused += weight[name] * _on_candidates(candidates, ids, values, floor)
    return _best_first(fused, candidates)


def _candidates(lists: dict[str, RankedList]) -> np.ndarray:
    """The ids of all lists, each once, in first-seen order (numpy: a hybrid query fuses ~200 of them)."""
    every = np.concatenate([np.asarray(ids, dtype=np.int64) for _, ids in lists.values()])
    _, first = np.unique(every, return_index=True)
    return every[np.sort(first)]


def _on_candidates(candidates: np.ndarray, ids: np.ndarray, values: np.ndarray, missing: float) -> np.ndarray:
    """`values` (one per id of `ids`) for each candidate; `missing` for a candidate that is not in `ids`."""
    out = np.full(len(candidates), missing, dtype=np.float64)
    if len(ids):
        order = np.argsort(ids, kind="stable")
        sorted_ids = np.asarray(ids, dtype=np.int64)[order]
        at = np.minimum(np.searchsorted(sorted_ids, candidates), len(ids) - 1)
        found = sorted_ids[at] == candidates
        out[found] = np.asarray(values, dtype=np.float64)[order][at[found]]
    return out


def _best_first(fused: np.ndarray, candidates: np.ndarray) -> RankedList:
    order = np.argsort(-fused, kind="stable")  # stable: ties keep first-seen order
    return fused[order], candidates[order]


def maximal_marginal_relevance(relevance: np.ndarray, vectors: np.ndarray, lam: float, top_k: int) -> list[int]:
    """Positions of `top_k` candidates chosen greedily by lam * relevance - (1 - lam) * (highest cosine to one
    already chosen). Relevance is min-max normalised first, so that lam weighs two things on the same [0, 1]
    scale; lam 1 keeps the relevance order."""
    if not len(relevance):
        return []
    relevance, _ = normalized(relevance, "minmax")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    chosen: list[int] = []
    closest = np.full(len(relevance), -np.inf)  # each candidate's highest similarity to a chosen one
    remaining = np.ones(len(relevance), dtype=bool)
    for _ in range(min(top_k, len(relevance))):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        value = np.where(remaining, lam * relevance - (1 - lam) * penalty, -np.inf)
        pick = int(np.argmax(value))  # the first of equals: relevance order is kept on ties
        chosen.append(pick)
        remaining[pick] = False
        closest = np.maximum(closest, similarity[pick])
    return chosen
