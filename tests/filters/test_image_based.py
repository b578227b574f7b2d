"""DataComp's image-based filter: pool clusters, target clusters, keep what falls in one (filters/image_based.py)."""
from __future__ import annotations

import numpy as np
import pytest

from filters.image_based import ImageBasedFilter, target_cluster_ids
from models.kmeans import fit_kmeans


def _blobs(rng, centers, n_per, noise=0.05):
    x = np.concatenate([c + noise * rng.standard_normal((n_per, c.size)) for c in centers])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_keeps_the_clusters_of_the_targets_only():
    rng = np.random.default_rng(0)
    centers = np.eye(8, dtype=np.float32)[:4] * 1.0  # four well-separated directions
    pool = _blobs(rng, centers, 50)
    centroids = fit_kmeans(pool, 4, seed=0)
    targets = _blobs(rng, centers[[1, 3]], 5)  # target images near clusters 1 and 3 only
    ids = target_cluster_ids(targets, centroids)
    assert ids.dtype == np.int32 and len(ids) == 2
    keep, cluster = ImageBasedFilter(centroids, ids).keep(pool)
    truth = np.repeat(np.arange(4), 50)
    assert keep.tolist() == np.isin(truth, [1, 3]).tolist()
    # DataComp's rule exactly: kept iff argmax(pool @ centroids.T) is the argmax of some target.
    want = np.isin(np.argmax(pool @ centroids.T, axis=1), np.unique(np.argmax(targets @ centroids.T, axis=1)))
    assert keep.tolist() == want.tolist()
    assert np.array_equal(cluster, np.argmax(pool @ centroids.T, axis=1))


def test_empty_inputs():
    c = np.eye(3, dtype=np.float32)
    f = ImageBasedFilter(c, np.array([0], np.int32))
    keep, cl = f.keep(np.zeros((0, 3), np.float32))
    assert keep.shape == cl.shape == (0,)
    with pytest.raises(ValueError):
        target_cluster_ids(np.zeros((0, 3), np.float32), c)
