"""Fusion, grouping by document and diversity (MMR): pure functions, then through the live server."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexes.ranking import (
    convex_fusion,
    maximal_marginal_relevance,
    normalized,
    ranks_by_id,
    reciprocal_rank_fusion,
)
from indexes.values import Fusion
from tests.conftest import STORES, each_store
from tests.helpers import LiveServer
from tests.test_indexes_api import add, new_index, query


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest) -> LiveServer:
    """Every test here runs against the embedded store and against PostgreSQL."""
    return each_store(request)


def lists(dense: dict[int, float], lexical: dict[int, float]) -> dict:
    def ranked(scores: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
        order = sorted(scores, key=lambda i: -scores[i])
        return np.array([scores[i] for i in order]), np.array(order)

    return {"dense": ranked(dense), "lexical": ranked(lexical)}


def test_convex_fusion_keeps_a_dense_hit_that_is_far_ahead():
    """Dense puts 1 far ahead of everything; lexical has 2 and 1 in a near-tie. Ranks alone cannot tell the two
    apart (RRF ties them); normalised scores can, and 1 wins."""
    candidates = lists({1: 0.90, 2: 0.21, 3: 0.20, 4: 0.19}, {2: 10.0, 1: 9.9, 3: 1.0, 4: 0.5})
    _, fused = convex_fusion(candidates, Fusion(method="convex", alpha=0.5))
    assert fused[0] == 1
    rrf_scores, _ = reciprocal_rank_fusion(candidates, Fusion(method="rrf"))
    assert rrf_scores[0] == pytest.approx(rrf_scores[1])  # RRF: a tie between 1 and 2


@pytest.mark.parametrize("normalization", ["minmax", "zscore"])
def test_convex_fusion_alpha_picks_a_side(normalization: str):
    candidates = lists({1: 0.9, 2: 0.5, 3: 0.1}, {3: 12.0, 2: 6.0, 1: 1.0})
    _, dense_only = convex_fusion(candidates, Fusion(method="convex", alpha=1.0, normalization=normalization))
    _, lexical_only = convex_fusion(candidates, Fusion(method="convex", alpha=0.0, normalization=normalization))
    assert dense_only.tolist() == [1, 2, 3] and lexical_only.tolist() == [3, 2, 1]


def test_a_candidate_missing_from_a_list_scores_that_lists_lowest():
    candidates = lists({1: 0.9, 2: 0.8}, {3: 5.0, 1: 1.0})
    scores, ids = convex_fusion(candidates, Fusion(method="convex", alpha=0.5))
    by_id = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    assert by_id == pytest.approx({1: 0.5, 2: 0.0, 3: 0.5})
    lone = lists({1: 0.9, 2: 0.8, 3: 0.7}, {3: 4.2})  # a lexical list of one hit: it is that list's best
    _, ids = convex_fusion(lone, Fusion(method="convex", alpha=0.4))
    assert ids[0] == 3


def plain_fusion(lists: dict, fusion: Fusion) -> list[tuple[int, float]]:
    """Each fusion as its definition reads, one candidate at a time: the oracle for the vectorised ones."""
    ranks = ranks_by_id(lists)
    if fusion.method == "rrf":
        weight = {"dense": fusion.dense_weight, "lexical": fusion.lexical_weight}
        fused = {i: sum(weight[name] / (fusion.k + rank) for name, rank in by.items()) for i, by in ranks.items()}
    else:
        weight = {"dense": fusion.alpha, "lexical": 1.0 - fusion.alpha}
        fused = dict.fromkeys(ranks, 0.0)
        for name, (scores, ids) in lists.items():
            values, floor = normalized(scores, fusion.normalization)
            by_id = dict(zip(ids.tolist(), values.tolist(), strict=True))
            for i in fused:
                fused[i] += weight[name] * by_id.get(i, floor)
    return sorted(fused.items(), key=lambda item: -item[1])  # stable: ties in first-seen order


ranked_scores = st.dictionaries(st.integers(0, 40), st.floats(-5, 5, allow_nan=False), max_size=25)


@given(ranked_scores, ranked_scores, st.sampled_from(["rrf", "convex"]), st.sampled_from(["minmax", "zscore"]),
       st.floats(0, 1))  # fmt: skip
def test_fusion_equals_its_definition(dense: dict, lexical: dict, method: str, normalization: str, alpha: float):
    candidates = lists(dense, lexical)
    fusion = Fusion(method=method, alpha=alpha, normalization=normalization)
    function = reciprocal_rank_fusion if method == "rrf" else convex_fusion
    scores, ids = function(candidates, fusion)
    expected = plain_fusion(candidates, fusion)
    assert ids.tolist() == [i for i, _ in expected]
    assert scores.tolist() == pytest.approx([score for _, score in expected])


def test_mmr_with_lambda_one_is_relevance_order():
    rng = np.random.default_rng(0)
    relevance = np.sort(rng.random(20))[::-1]
    assert maximal_marginal_relevance(relevance, rng.normal(size=(20, 8)), 1.0, 10) == list(range(10))


def test_mmr_removes_an_exact_duplicate_from_the_top_two():
    vectors = np.array([[1, 0, 0], [1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]], dtype="f4")
    relevance = np.array([0.95, 0.95, 0.80, 0.30])
    assert maximal_marginal_relevance(relevance, vectors, 1.0, 2) == [0, 1]
    assert maximal_marginal_relevance(relevance, vectors, 0.5, 2) == [0, 2]


# --- through the server ------------------------------------------------------------------------------------------

LONG = " ".join(f"Paragraph {n} of the field guide describes the habits of the red fox in winter." for n in range(40))


@pytest.fixture(scope="module")
def library(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as http:
        name = new_index(http)
        documents = [
            {"id": "guide", "text": LONG, "metadata": {"shelf": "a"}},
            {"id": "fox", "text": "The red fox hunts small rodents in the snow.", "metadata": {"shelf": "a"}},
            {"id": "wolf", "text": "Grey wolves hunt in packs across the tundra.", "metadata": {"shelf": "b"}},
            {"id": "bread", "text": "Knead the dough and let it rise overnight.", "metadata": {"shelf": "a"}},
        ]
        add(http, name, documents, chunking={"max_tokens": 32, "overlap_tokens": 0})
    return name


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
@pytest.mark.parametrize("where", [None, {"shelf": "a"}])
def test_group_by_document_returns_each_document_once_with_its_best_chunk(http, library, mode, where):
    body = {"query": "red fox winter habits", "mode": mode, **({"filter": where} if where else {})}
    chunks = query(http, library, top_k=100, include=["metadata"], **body)
    assert sum(1 for h in chunks if h.get("parent_id") == "guide") > 3  # the guide alone fills the chunk list
    grouped = query(http, library, top_k=3, group_by="document", include=["metadata", "chunks"], **body)
    documents = [h.get("parent_id") or h["id"] for h in grouped]
    assert len(documents) == len(set(documents))
    expected = list(dict.fromkeys(h.get("parent_id") or h["id"] for h in chunks))[:3]
    assert documents == expected  # top_k counts documents, in the order of their best chunk
    best = {}
    for hit in chunks:
        best.setdefault(hit.get("parent_id") or hit["id"], hit)
    for hit in grouped:
        document = hit.get("parent_id") or hit["id"]
        assert hit["id"] == best[document]["id"] and hit["score"] == pytest.approx(best[document]["score"])
        if where:
            assert hit["metadata"]["shelf"] == "a"
        others = [h["id"] for h in chunks if (h.get("parent_id") or h["id"]) == document][1:]
        assert [c["id"] for c in hit.get("chunks", [])] == others  # its other matching chunks, best first


def test_diversity_through_the_api(http):
    name = new_index(http)
    axis = np.eye(384, dtype="f4")
    vectors = {"a": axis[0], "a-copy": axis[0], "b": axis[0] + axis[1], "c": axis[2]}
    add(http, name, [{"id": i, "vector": v.tolist()} for i, v in vectors.items()])
    base = axis[0] + 0.3 * axis[1] + 0.3 * axis[3]  # closest to a (and its copy), then b
    plain = query(http, name, vector=base.tolist(), top_k=3, include=[])
    same = query(http, name, vector=base.tolist(), top_k=3, include=[], diversity=1.0)
    diverse = query(http, name, vector=base.tolist(), top_k=2, include=[], diversity=0.5)
    assert [h["id"] for h in same] == [h["id"] for h in plain]
    assert {plain[0]["id"], plain[1]["id"]} == {"a", "a-copy"}
    assert [h["id"] for h in diverse][1] == "b"
    response = http.post(f"/v1/indexes/{name}/query", json={"vector": base.tolist(), "diversity": 1.5})
    assert response.status_code == 400 and response.json()["error"]["param"] == "diversity"
