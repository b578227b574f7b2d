"""Semantic dedup (faiss range search + components) and eval-set decontamination."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.semantic_dedup import EvalIndex, load_eval_embeddings, semantic_dedup, similar_pairs


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted(n_base: int = 60, dim: int = 32, seed: int = 0):
    """Random base vectors plus near copies (cosine ~0.99) of some of them."""
    rng = np.random.default_rng(seed)
    base = unit(rng.normal(size=(n_base, dim)))
    copies_of = [3, 3, 10, 41]
    copies = unit(base[copies_of] + 0.02 * rng.normal(size=(len(copies_of), dim)))
    return np.concatenate([base, copies]).astype(np.float32), copies_of


def test_similar_pairs_matches_brute_force():
    emb, _ = planted()
    sims = emb @ emb.T
    for threshold in (0.9, 0.5, 0.3):
        a, b = similar_pairs(emb, threshold)
        got = set(zip(a.tolist(), b.tolist()))
        want = {(i, j) for i, j in itertools.combinations(range(len(emb)), 2) if sims[i, j] >= threshold - 1e-6}
        assert got == want


def test_dedup_keeps_highest_priority_per_component():
    emb, copies_of = planted()
    n = len(emb)
    priority = np.zeros(n)
    priority[61] = 1.0  # the second copy of base 3 has the best score: it is kept, base 3 goes
    res = semantic_dedup(emb, 0.95, priority)
    assert res.keep.sum() == n - 4
    assert not res.keep[3] and res.duplicate_of[3] == 61
    assert res.duplicate_of[60] == 61 and res.keep[61]
    assert res.keep[10] and res.duplicate_of[62] == 10  # ties on priority: lowest index
    assert res.keep[41] and res.duplicate_of[63] == 41
    assert res.n_components_with_duplicates == 3
    assert (res.duplicate_of[res.keep] == -1).all()


def test_dedup_handles_float16_and_the_exact_threshold():
    emb, _ = planted()
    res = semantic_dedup(emb.astype(np.float16), 0.95)  # renormalised: identical copies still link
    assert res.keep.sum() == len(emb) - 4
    two = unit(np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32))  # cosine exactly 0.6
    assert not semantic_dedup(two, 0.6).keep.all()
    assert semantic_dedup(two, 0.6001).keep.all()
    assert semantic_dedup(np.zeros((0, 4), np.float32), 0.9).keep.size == 0


def test_ivf_index_above_exact_max_finds_planted_duplicates():
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=(3000, 16))).astype(np.float32)
    dups = unit(base[:20] + 0.01 * rng.normal(size=(20, 16))).astype(np.float32)
    emb = np.concatenate([base, dups])
    res = semantic_dedup(emb, 0.995, exact_max=1000)  # IVF path
    exact = semantic_dedup(emb, 0.995)
    assert (~res.keep).sum() <= (~exact.keep).sum()  # may miss a link, never invents one
    assert (~res.keep[:20] | ~res.keep[3000:]).sum() >= 18


def test_eval_index_decontamination(tmp_path):
    emb, _ = planted()
    index = EvalIndex(emb[:10])
    train = np.concatenate([emb[[2, 5]], emb[20:25]])
    hit, sims, ids = index.contaminated(train, 0.95)
    assert hit.tolist() == [True, True] + [False] * 5
    assert ids[:2].tolist() == [2, 5] and sims[:2] == pytest.approx([1.0, 1.0], abs=1e-5)
    empty = EvalIndex(np.zeros((0, emb.shape[1]), np.float32))
    assert not empty.contaminated(train, 0.5)[0].any()
    np.save(tmp_path / "eval.npy", emb[:10])
    assert load_eval_embeddings(str(tmp_path / "eval.npy"), scorer=None).shape == (10, emb.shape[1])
    with pytest.raises(FileNotFoundError):
        load_eval_embeddings(str(tmp_path / "nope"), scorer=None)
