"""Evaluation metrics: retrieval recall@k, zero-shot accuracy, BLEU-4, CIDEr-D, ROC-AUC.

Pure numpy on precomputed similarities and token lists, so they are tested against known
values without a model. BLEU and CIDEr-D reproduce the COCO caption evaluation
(``pycocoevalcap``: corpus BLEU with the closest reference length and its 1e-15/1e-9 smoothing;
CIDEr-D with sigma 6, clipped n-gram counts, document frequencies over the reference sets and
the x10 scale); captions are lower-cased and split into alphanumeric words (COCO's PTB
tokenizer also drops punctuation).
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize_caption(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# --------------------------------------------------------------------------- retrieval


def retrieval_ranks(sim: np.ndarray, text_image: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, the rank of its best true caption (image->text), and per caption, the rank of its
    own image (text->image), from an ``images x texts`` similarity matrix; plus which images have a
    caption. Rank = the number of candidates scoring strictly higher (0 = first).

    Kept per item, not only as recall@k, so two models evaluated on the same pictures can be
    compared picture by picture (a paired test: pipelines/experiment_stats.py).
    """
    sim = np.asarray(sim, dtype=np.float64)
    owner = np.asarray(text_image, dtype=np.int64)
    n_img, n_txt = sim.shape
    if owner.shape != (n_txt,):
        raise ValueError(f"text_image has {owner.shape} entries for {n_txt} texts")
    # image -> text: rank of the best true caption = number of captions scoring strictly higher.
    true_mask = owner[None, :] == np.arange(n_img)[:, None]
    best_true = np.where(true_mask, sim, -np.inf).max(axis=1) if n_txt else np.full(n_img, -np.inf)
    has_caption = true_mask.any(axis=1)
    i2t_rank = (sim > best_true[:, None]).sum(axis=1)
    # text -> image: rank of the caption's own image among all images.
    own = sim[owner, np.arange(n_txt)]
    t2i_rank = (sim > own[None, :]).sum(axis=0)
    return i2t_rank, t2i_rank, has_caption


def retrieval_recall(sim: np.ndarray, text_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k both ways from an ``images x texts`` similarity matrix.

    ``text_image[j]`` is the image index caption ``j`` belongs to, so an image may have several
    captions: image->text counts a hit when ANY of the image's captions ranks in the top k (as in
    the COCO/Flickr retrieval protocol); text->image ranks the images for each caption.
    """
    i2t_rank, t2i_rank, has_caption = retrieval_ranks(sim, text_image)
    owner = np.asarray(text_image, dtype=np.int64)
    n_img, n_txt = np.shape(sim)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r@{k}"] = float((i2t_rank[has_caption] < k).mean()) if has_caption.any() else 0.0
        out[f"t2i_r@{k}"] = float((t2i_rank < k).mean()) if n_txt else 0.0
    per_image = np.bincount(owner, minlength=n_img) if n_txt else np.zeros(n_img)
    out["i2t_chance_r@1"] = float(np.mean([per_image[i] / n_txt for i in range(n_img) if has_caption[i]])) if n_txt else 0.0
    out["t2i_chance_r@1"] = 1.0 / n_img if n_img else 0.0
    return out


def per_picture_r1(sim: np.ndarray, text_image: Sequence[int]) -> np.ndarray:
    """Each picture's mean R@1 of the two directions: (its image->text hit + the mean text->image hit
    of its captions) / 2; NaN for a picture without a caption. Averaging this over pictures gives
    the mean R@1 the experiment reports when every picture has one caption."""
    i2t_rank, t2i_rank, has_caption = retrieval_ranks(sim, text_image)
    owner = np.asarray(text_image, dtype=np.int64)
    n_img = np.shape(sim)[0]
    counts = np.bincount(owner, minlength=n_img).astype(np.float64)
    t2i_hits = np.bincount(owner, weights=(t2i_rank < 1).astype(np.float64), minlength=n_img)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((i2t_rank < 1).astype(np.float64) + t2i_hits / counts) / 2
    out[~has_caption] = np.nan
    return out


# --------------------------------------------------------------------------- zero-shot


def _class_pattern(name: str) -> re.Pattern:
    word = re.escape(name.lower())
    return re.compile(rf"\b{word}(?:s|es)?\b")


def labels_from_captions(captions: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """The class each image's captions name (majority over its captions), -1 when none or a tie."""
    pats = [_class_pattern(c) for c in classes]
    labels = np.full(len(captions), -1, dtype=np.int64)
    for i, caps in enumerate(captions):
        votes = Counter()
        for cap in caps:
            low = cap.lower()
            hits = [c for c, p in enumerate(pats) if p.search(low)]
            if len(hits) == 1:
                votes[hits[0]] += 1
        if votes:
            (top, n), *rest = votes.most_common()
            if not rest or rest[0][1] < n:
                labels[i] = top
    return labels


def zero_shot_accuracy(image_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy of ``argmax(image_emb @ class_emb.T)`` over labelled images (label >= 0)."""
    keep = labels >= 0
    n = int(keep.sum())
    if n == 0:
        return {"accuracy": float("nan"), "n": 0, "chance": 1.0 / max(1, len(class_emb))}
    pred = (image_emb[keep] @ class_emb.T).argmax(axis=1)
    return {"accuracy": float((pred == labels[keep]).mean()), "n": n, "chance": 1.0 / len(class_emb)}


# --------------------------------------------------------------------------- ROC-AUC


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# --------------------------------------------------------------------------- BLEU


def _ngrams(words: Sequence[str], n: int) -> Counter:
    c: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            c[tuple(words[i:i + k])] += 1
    return c


def _tokens(text: str | Sequence[str]) -> list[str]:
    return list(text) if not isinstance(text, str) else tokenize_caption(text)


def bleu(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n as the COCO caption evaluation computes it (closest reference length)."""
    if set(hypotheses) != set(references):
        raise ValueError("hypotheses and references must have the same ids")
    small, tiny = 1e-9, 1e-15
    guess, correct = [0] * n, [0] * n
    testlen_total, reflen_total = 0, 0
    for key in hypotheses:
        hyp = _tokens(hypotheses[key])
        refs = [_tokens(r) for r in references[key]]
        maxcounts: dict[tuple, int] = {}
        for r in refs:
            for g, c in _ngrams(r, n).items():
                maxcounts[g] = max(maxcounts.get(g, 0), c)
        testlen = len(hyp)
        reflen = min((abs(len(r) - testlen), len(r)) for r in refs)[1]
        testlen_total += testlen
        reflen_total += reflen
        for k in range(n):
            guess[k] += max(0, testlen - k)
        for g, c in _ngrams(hyp, n).items():
            correct[len(g) - 1] += min(maxcounts.get(g, 0), c)
    out, prod = [], 1.0
    for k in range(n):
        prod *= (correct[k] + tiny) / (guess[k] + small)
        out.append(prod ** (1.0 / (k + 1)))
    ratio = (testlen_total + tiny) / (reflen_total + small)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


# --------------------------------------------------------------------------- CIDEr-D


def cider_d(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], n: int = 4,
            sigma: float = 6.0) -> tuple[float, dict[str, float]]:
    """CIDEr-D (Vedantam et al. 2015) as pycocoevalcap's ``Cider`` computes it: corpus mean and per id."""
    if set(hypotheses) != set(references):
        raise ValueError("hypotheses and references must have the same ids")
    keys = list(hypotheses)
    crefs = [[_ngrams(_tokens(r), n) for r in references[k]] for k in keys]
    ctest = [_ngrams(_tokens(hypotheses[k]), n) for k in keys]
    df: dict[tuple, float] = defaultdict(float)
    for refs in crefs:
        for g in {g for r in refs for g in r}:
            df[g] += 1
    ref_len = np.log(float(len(crefs)))

    def vec(cnts: Counter):
        v = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in cnts.items():
            k = len(g) - 1
            v[k][g] = float(tf) * (ref_len - np.log(max(1.0, df[g])))
            norm[k] += v[k][g] ** 2
            if k == 1:  # pycocoevalcap counts bigrams as the length (kept for comparable numbers)
                length += tf
        return v, [np.sqrt(x) for x in norm], length

    def sim(vh, vr, nh, nr, lh, lr) -> np.ndarray:
        delta = float(lh - lr)
        val = np.zeros(n)
        for k in range(n):
            for g in vh[k]:
                val[k] += min(vh[k][g], vr[k][g]) * vr[k][g]
            if nh[k] != 0 and nr[k] != 0:
                val[k] /= nh[k] * nr[k]
            val[k] *= np.e ** (-(delta ** 2) / (2 * sigma ** 2))
        return val

    per: dict[str, float] = {}
    for key, test, refs in zip(keys, ctest, crefs):
        vh, nh, lh = vec(test)
        score = np.zeros(n)
        for r in refs:
            vr, nr, lr = vec(r)
            score += sim(vh, vr, nh, nr, lh, lr)
        per[key] = float(np.mean(score) / len(refs) * 10.0)
    return (float(np.mean(list(per.values()))) if per else 0.0), per
