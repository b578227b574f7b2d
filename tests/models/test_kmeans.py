"""models/kmeans.py: spherical k-means fitted on a sample, deterministic for a seed; exact assignment."""
from __future__ import annotations

import numpy as np
import pytest

from models.kmeans import assign, fit_kmeans


def clustered(n_per: int = 50, k: int = 5, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = np.concatenate([c + 0.05 * rng.normal(size=(n_per, dim)) for c in centres])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_fit_is_deterministic_for_a_seed():
    emb, _ = clustered()
    a = fit_kmeans(emb, 5, seed=7)
    b = fit_kmeans(emb, 5, seed=7)
    assert a.dtype == np.float32 and a.shape == (5, 16)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)  # spherical


def test_recovers_planted_clusters():
    emb, truth = clustered()
    ids, cos = assign(emb, fit_kmeans(emb, 5, seed=0))
    assert ids.dtype == np.int32 and cos.dtype == np.float32
    # each planted cluster maps to exactly one found cluster, and vice versa
    pairs = set(zip(truth.tolist(), ids.tolist()))
    assert len(pairs) == 5 and len({p[1] for p in pairs}) == 5
    assert (cos > 0.9).all()


def test_assign_is_exact_argmax_lowest_on_ties():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(200, 8)).astype(np.float32)
    cent = rng.normal(size=(7, 8)).astype(np.float32)
    ids, cos = assign(emb, cent)
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    c = cent / np.linalg.norm(cent, axis=1, keepdims=True)
    np.testing.assert_array_equal(ids, np.argmax(u @ c.T, axis=1))
    tied = np.stack([c[0], c[0], c[1]])  # centroids 0 and 1 identical: row goes to 0
    ids2, _ = assign(c[:1], tied)
    assert ids2.tolist() == [0]


def test_small_samples():
    emb, _ = clustered(n_per=1, k=3)
    assert fit_kmeans(emb, 10, seed=0).shape == (3, 16)  # k cut to n
    one = fit_kmeans(emb[:1], 4, seed=0)
    np.testing.assert_allclose(one[0], emb[0], atol=1e-6)
    with pytest.raises(ValueError):
        fit_kmeans(emb[:0], 2, seed=0)


def test_key_sample_is_the_same_for_any_file_layout_and_row_order():
    """The same rows in other part files and another order (a Spark write's layout varies run to run)
    give the same sample, row for row, and so the same centroids."""
    from models.kmeans import fit_kmeans, in_hash_order, key_hashes, sample_mask

    rng = np.random.default_rng(0)
    keys = [f"pair-{i:05d}" for i in range(3000)]
    emb = rng.normal(size=(3000, 8)).astype(np.float32)

    def sample(layout):
        parts = []
        for rows in layout:
            h = key_hashes([keys[r] for r in rows], seed=7)
            m = sample_mask(h, 0.1)
            parts.append((h[m], emb[rows][m]))
        return in_hash_order(parts)

    a = sample([np.arange(0, 1790), np.arange(1790, 3000)])
    perm = rng.permutation(3000)
    b = sample([perm[:1201], perm[1201:2500], perm[2500:]])
    assert np.array_equal(a, b)
    assert 240 < a.shape[0] < 360  # about 10%
    assert np.array_equal(fit_kmeans(a, 5, seed=0), fit_kmeans(b, 5, seed=0))
    assert sample_mask(key_hashes(keys[:10], 7), 1.0).all()
    assert not np.array_equal(key_hashes(keys[:10], 7), key_hashes(keys[:10], 8))
