"""MMC4-style assignment of a document's images to its sentences (numpy + scipy, no torch).

MMC4 (Zhu et al., 2023, "Multimodal C4") places each image of a document next to one of
the document's sentences by solving a bipartite linear-assignment problem over the CLIP
ViT-L/14 image x sentence cosine-similarity matrix, after discarding images whose best
similarity to any sentence is below a threshold (0.15).  :func:`assign` reproduces that
step exactly, as an optimisation problem with a stated objective:

* **#images <= #sentences** (after dropping weak images): a one-to-one matching — every
  kept image goes to a *distinct* sentence — of maximum total similarity.  This is
  ``scipy.optimize.linear_sum_assignment(sim, maximize=True)`` on the rectangular matrix.

* **#images > #sentences**: a one-to-one matching is impossible, so every sentence gets at
  least one image and the remaining images go to their best sentence, choosing the
  sentence-saturating matching ``M`` that maximises the document's total similarity.
  With ``best_i = max_s sim[i, s]`` that total is::

      sum_i best_i + sum_{(s, i) in M} (sim[i, s] - best_i)

  so the exact optimum is a maximum-weight matching of the (sentences x images) matrix
  ``sim[i, s] - best_i`` (``linear_sum_assignment`` saturates the smaller side, the
  sentences); matched images go to their matched sentence, all others to their argmax.
  (Once an unmatched image sits on its argmax sentence it cannot improve, and every
  assignment covering all sentences contains such a matching, so this is optimal — the
  brute-force tests in ``tests/models/test_assignment.py`` check it.)

Note on the published data: MMC4's released ``matched_text_index`` is *not* always such an
assignment — in shard 151 some documents put several images on one sentence even though
there are no more images than sentences (1 of the 20 stored docs: 5 images, 5 sentences,
two sentences with two images each; see the real-data test).  A plausible, unverified
explanation is that the "fewer faces" release removed face images *after* assignment, when
the document still had more images than sentences.  On the 19 docs whose published
assignment is one-to-one, ours is never lower and is strictly higher on 8 (by up to 0.163).

Missing scores: NaN and +-inf entries are treated as "no edge" (-inf).  An image whose
finite scores are all below ``min_sim`` (or that has none) is dropped.  The matching first
maximises the number of real (finite) edges and then their weight; an image that could only
be matched over a missing edge in the one-to-one branch is dropped (``None``), and in the
many-images branch a sentence that cannot be given an image over a real edge is simply left
without a guaranteed image.  Ties are broken deterministically (scipy's solver is
deterministic; argmax takes the lowest sentence index).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["assign", "total_similarity", "DEFAULT_MIN_SIM"]

DEFAULT_MIN_SIM = 0.15  # MMC4: images whose best sentence similarity is below this are discarded


def _as_matrix(similarity) -> np.ndarray:
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2:
        if sim.size == 0:  # e.g. [] -> no images
            return np.zeros((0, 0), dtype=np.float64)
        raise ValueError(f"similarity must be a 2-D (images x sentences) matrix, got shape {sim.shape}")
    return sim


def _solve(weights: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max-weight matching saturating the smaller side; missing edges get a penalty so large
    that the solver maximises the count of valid edges first.  Returns only valid pairs."""
    finite = weights[valid]
    if finite.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    lo, hi = float(finite.min()), float(finite.max())
    k = min(weights.shape)
    penalty = lo - (k + 1) * (hi - lo + 1.0)
    w = np.where(valid, weights, penalty)
    rows, cols = linear_sum_assignment(w, maximize=True)
    ok = valid[rows, cols]
    return rows[ok], cols[ok]


def assign(similarity: np.ndarray, min_sim: float = DEFAULT_MIN_SIM) -> list[int | None]:
    """Assign each image (row) to a sentence (column) index, or ``None`` when dropped.

    Images whose best finite similarity is ``< min_sim`` are dropped.  Among the rest: if
    there are no more images than sentences, a one-to-one maximum-total-similarity matching;
    otherwise every sentence gets at least one image, the other images go to their best
    sentence, maximising total similarity.  See the module docstring for the derivation.
    """
    sim = _as_matrix(similarity)
    n_img, n_sent = sim.shape
    result: list[int | None] = [None] * n_img
    if n_img == 0 or n_sent == 0:
        return result

    valid = np.isfinite(sim)
    masked = np.where(valid, sim, -np.inf)
    best = masked.max(axis=1)
    kept = np.flatnonzero(best >= min_sim)  # -inf (no finite score) is never >= min_sim
    if kept.size == 0:
        return result

    sub, sub_valid = masked[kept], valid[kept]
    if kept.size <= n_sent:
        rows, cols = _solve(np.where(sub_valid, sub, 0.0), sub_valid)
        for r, c in zip(rows.tolist(), cols.tolist()):
            result[int(kept[r])] = int(c)
        return result

    # More images than sentences: sentence-saturating matching on the loss vs. argmax.
    argbest = np.argmax(masked[kept], axis=1)  # first maximum: deterministic ties
    loss = (sub - best[kept][:, None]).T  # sentences x images, <= 0 on valid edges
    loss_valid = sub_valid.T
    rows, cols = _solve(np.where(loss_valid, loss, 0.0), loss_valid)
    for j, i in enumerate(kept.tolist()):
        result[i] = int(argbest[j])
    for s, j in zip(rows.tolist(), cols.tolist()):
        result[int(kept[j])] = int(s)
    return result


def total_similarity(similarity: np.ndarray, assignment: Sequence[int | None]) -> float:
    """Sum of ``similarity[i, assignment[i]]`` over assigned (non-``None``) images."""
    sim = _as_matrix(similarity)
    if len(assignment) != sim.shape[0]:
        raise ValueError(f"assignment has {len(assignment)} entries for {sim.shape[0]} images")
    total = 0.0
    for i, s in enumerate(assignment):
        if s is not None:
            total += float(sim[i, int(s)])
    return total
