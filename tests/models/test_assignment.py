"""MMC4-style image-to-sentence assignment: brute-force optimality, edge cases, real MMC4 docs."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.assignment import assign, total_similarity

from tests.support.realdata import load_mmc4_docs


# ---------------------------------------------------------------- brute force -----------


def brute_force_best(sim: np.ndarray, min_sim: float) -> tuple[float, list[int]]:
    """Best total over every valid assignment of the kept images; returns (total, kept rows)."""
    kept = [i for i in range(sim.shape[0]) if sim[i].max() >= min_sim]
    n_sent = sim.shape[1]
    best = -np.inf
    if len(kept) <= n_sent:
        candidates = itertools.permutations(range(n_sent), len(kept))  # one-to-one
    else:
        candidates = (
            c for c in itertools.product(range(n_sent), repeat=len(kept)) if len(set(c)) == n_sent
        )  # every sentence covered
    for cand in candidates:
        best = max(best, sum(sim[i, s] for i, s in zip(kept, cand)))
    return (0.0 if best == -np.inf else float(best)), kept


def check_valid(result: list[int | None], sim: np.ndarray, kept: list[int]) -> None:
    n_img, n_sent = sim.shape
    assert len(result) == n_img
    assert [i for i, s in enumerate(result) if s is not None] == kept
    used = [s for s in result if s is not None]
    assert all(isinstance(s, int) and 0 <= s < n_sent for s in used)
    if len(kept) <= n_sent:
        assert len(set(used)) == len(used), "not one-to-one although images <= sentences"
    else:
        assert set(used) == set(range(n_sent)), "some sentence got no image although images > sentences"


@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (5, 2), (3, 3), (6, 3), (2, 4), (5, 4), (1, 1), (4, 1), (1, 4)])
@pytest.mark.parametrize("seed", range(6))
def test_assign_matches_brute_force(shape, seed):
    rng = np.random.default_rng(1000 * seed + 10 * shape[0] + shape[1])
    sim = rng.uniform(0.0, 0.4, size=shape)
    for min_sim in (0.0, 0.15, 0.3):
        result = assign(sim, min_sim=min_sim)
        best, kept = brute_force_best(sim, min_sim)
        check_valid(result, sim, kept)
        assert total_similarity(sim, result) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_many_images_branch_is_optimal_with_ties(seed):
    """Coarsely quantised scores make many ties; the optimum value must still be exact."""
    rng = np.random.default_rng(seed)
    sim = np.round(rng.uniform(0.15, 0.35, size=(5, 3)), 1)
    result = assign(sim, min_sim=0.15)
    best, kept = brute_force_best(sim, 0.15)
    check_valid(result, sim, kept)
    assert total_similarity(sim, result) == pytest.approx(best)
    assert assign(sim, min_sim=0.15) == result  # deterministic


def test_many_images_not_just_argmax():
    # Both images prefer sentence 0, but sentence 1 must get one: move the cheaper one.
    sim = np.array([[0.9, 0.1], [0.8, 0.7], [0.85, 0.2]])
    assert assign(sim, min_sim=0.0) == [0, 1, 0]


def test_one_to_one_beats_greedy():
    # Greedy (image 0 -> its best) would give 0.9 + 0.1; the matching gives 0.8 + 0.8.
    sim = np.array([[0.9, 0.8], [0.8, 0.1]])
    assert assign(sim, min_sim=0.0) == [1, 0]


# ---------------------------------------------------------------- edge cases ------------


def test_empty_inputs():
    assert assign(np.zeros((0, 0))) == []
    assert assign(np.zeros((0, 3))) == []
    assert assign(np.zeros((3, 0))) == [None, None, None]
    assert assign([]) == []
    assert total_similarity(np.zeros((0, 0)), []) == 0.0


def test_single_cell_and_threshold():
    assert assign(np.array([[0.2]])) == [0]
    assert assign(np.array([[0.1]])) == [None]
    assert assign(np.array([[0.15]]), min_sim=0.15) == [0]  # best >= min_sim is kept
    assert assign(np.array([[0.1]]), min_sim=0.0) == [0]


def test_weak_images_dropped_before_matching():
    sim = np.array([[0.05, 0.1], [0.3, 0.2], [0.2, 0.3]])
    assert assign(sim, min_sim=0.15) == [None, 0, 1]


def test_nan_and_inf_are_missing_edges():
    nan, inf = float("nan"), float("inf")
    assert assign(np.array([[nan, nan], [0.3, 0.2]])) == [None, 0]
    assert assign(np.array([[nan, 0.3], [inf, 0.2]])) == [1, None]  # +inf is not a score
    # Both images can only use sentence 0: the better one gets it, the other is dropped.
    assert assign(np.array([[0.5, nan], [0.4, nan]])) == [0, None]
    # More images than sentences, sentence 1 has no real edge: all go to sentence 0.
    assert assign(np.array([[0.5, nan], [0.4, nan], [0.3, nan]])) == [0, 0, 0]
    # A missing edge is never used even when it would "cover" a sentence.
    # Sentence 1 is reachable only from image 1, sentence 2 from images 0 and 2 (cheaper: 2).
    r = assign(np.array([[0.5, nan, 0.2], [0.4, 0.3, nan], [0.3, nan, 0.25], [0.6, nan, nan]]))
    assert r == [0, 1, 2, 0]


def test_all_equal_is_deterministic_and_valid():
    sim = np.full((3, 3), 0.2)
    r = assign(sim)
    assert sorted(r) == [0, 1, 2] and assign(sim) == r
    sim = np.full((4, 2), 0.2)
    r = assign(sim)
    assert set(r) == {0, 1} and assign(sim) == r


def test_bad_shapes():
    with pytest.raises(ValueError):
        assign(np.zeros(3) + 0.2)
    with pytest.raises(ValueError):
        total_similarity(np.zeros((2, 2)), [0])


# ---------------------------------------------------------------- real MMC4 docs --------


@pytest.mark.parametrize("min_sim", [0.15, 0.0])
def test_real_mmc4_docs(min_sim):
    """Compare with MMC4's published assignment on 20 real core-ff documents.

    The published documents were already filtered with MMC4's 0.15 threshold, so
    ``min_sim=0.15`` and ``min_sim=0.0`` must keep every image and give the same answer;
    both are run to show the threshold choice does not matter on published data.
    """
    docs = load_mmc4_docs()
    assert len(docs) == 20
    n_legal = n_violating = n_better = 0
    gains = []
    for doc in docs:
        sim = np.asarray(doc["similarity_matrix"], dtype=np.float64)
        n_img, n_sent = sim.shape
        assert n_img == len(doc["image_info"]) and n_sent == len(doc["text_list"])
        published = [int(im["matched_text_index"]) for im in doc["image_info"]]
        ours = assign(sim, min_sim=min_sim)
        assert None not in ours  # published images all pass the 0.15 threshold
        if n_img <= n_sent:
            assert len(set(ours)) == n_img, doc["url"]
        else:
            assert set(ours) == set(range(n_sent))
        pub_total, our_total = total_similarity(sim, published), total_similarity(sim, ours)
        legal = len(set(published)) == n_img if n_img <= n_sent else set(published) == set(range(n_sent))
        if legal:
            n_legal += 1
            assert our_total >= pub_total - 1e-9, doc["url"]
            gains.append(our_total - pub_total)
            n_better += our_total > pub_total + 1e-9
        elif n_img <= n_sent:
            n_violating += 1
    print(
        f"\nmin_sim={min_sim}: {len(docs)} docs, {n_legal} published assignments obey the rule, "
        f"{n_violating} put several images on one sentence with images <= sentences; "
        f"ours strictly better on {n_better}, total gain {sum(gains):.4f}, max gain {max(gains):.4f}"
    )
    assert n_legal + n_violating == len(docs)
    # What this fixed real shard holds (PROVENANCE.md's note): one published assignment stacks
    # images on a sentence although sentences outnumber images; ours is strictly better on 8 of 19.
    assert (n_legal, n_violating, n_better) == (19, 1, 8)
