"""Rank fusion: pure functions on ranked lists of chunk ids (each list: scores and ids, best first)."""

from __future__ import annotations

import numpy as np

from indexes.values import Fusion

RankedList = tuple[np.ndarray, np.ndarray]  # (scores, ids), best first


def ranks_by_id(lists: dict[str, RankedList]) -> dict[int, dict[str, int]]:
    """For each id, its 1-based rank in every list that holds it."""
    ranks: dict[int, dict[str, int]] = {}
    for name, (_, ids) in lists.items():
        for rank, chunk_id in enumerate(ids, start=1):
            ranks.setdefault(int(chunk_id), {})[name] = rank
    return ranks


def reciprocal_rank_fusion(ranks: dict[int, dict[str, int]], fusion: Fusion, top_k: int) -> RankedList:
    """score(id) = sum over lists of weight / (k + rank); the `top_k` best, ties in first-seen order."""
    weight = {"dense": fusion.dense_weight, "lexical": fusion.lexical_weight}
    fused = {i: sum(weight[name] / (fusion.k + rank) for name, rank in by_list.items()) for i, by_list in ranks.items()}
    best = sorted(fused, key=lambda i: -fused[i])[:top_k]
    return np.array([fused[i] for i in best], dtype=np.float64), np.array(best, dtype=np.int64)
