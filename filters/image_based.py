"""DataComp's image-based filter: keep pairs whose image falls in a cluster some target image falls in.

DataComp (Gadre et al. 2023, ``baselines/apply_filter.py``, ``load_uids_with_image_filter``):
k-means centroids of the pool's image embeddings (100k clusters at the small scale, precomputed
per scale), the ImageNet-1k training images' embeddings assigned to their nearest centroid, the
set of those centroid ids is the *target set*; a pool image is kept when its nearest centroid
(argmax of the dot product) is in the target set. DataComp runs its own low-level caption filter
(English, > 1 word, > 5 characters) first; here that is the recipe's ``basic`` step.

How it runs here (pipelines/dask_score.py): the centroids are fitted on the Dask client over a
bounded, seeded sample of the pool's image embeddings (drawn by a hash of the pair key,
:func:`models.kmeans.sample_mask`, so the same rows whatever the file layout; about
``sample_size`` rows), the target
ids are computed once, and :class:`ImageBasedFilter` assigns each shard's embeddings on the
workers. Target set: a ``.npy`` of unit target-image embeddings from the run's CLIP, or a
directory / Parquet of images encoded with the run's CLIP (``models.semantic_dedup.load_eval_embeddings``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REASON = "image_based"


def target_cluster_ids(target_emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Sorted unique nearest-centroid ids of the target images (DataComp's ``target_centroid_ids``)."""
    from models.kmeans import assign

    if target_emb.shape[0] == 0:
        raise ValueError("image_based: the target set holds no decodable image")
    ids, _ = assign(target_emb, centroids)
    return np.unique(ids).astype(np.int32)


@dataclass
class ImageBasedFilter:
    """Pool centroids and the target centroid ids; :meth:`keep` runs per shard on a worker."""

    centroids: np.ndarray  # (k, dim) float32 unit vectors
    target_ids: np.ndarray  # sorted int32 ids of centroids some target image is nearest to

    def clusters(self, emb: np.ndarray) -> np.ndarray:
        from models.kmeans import assign

        if emb.shape[0] == 0:
            return np.zeros(0, dtype=np.int32)
        return assign(emb, self.centroids)[0]

    def keep(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keep, nearest centroid id) per row of ``emb``."""
        ids = self.clusters(emb)
        return np.isin(ids, self.target_ids), ids
