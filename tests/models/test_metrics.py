"""Metrics against known values: BLEU/CIDEr-D from the COCO caption evaluation, recall, AUC, zero-shot."""
from __future__ import annotations

import numpy as np
import pytest

from models import metrics as M

# Reference values computed with pycocoevalcap 1.2 (Bleu(4) and Cider() of the COCO caption
# evaluation) on exactly these pre-tokenised captions.
REFS = {
    "1": ["two red circles on a white background", "a white background with two red circles",
          "2 red circles against a white backdrop"],
    "2": ["one blue square on a grey background", "a single blue square on grey", "an image of one blue square on grey"],
    "3": ["four green stars on a black background", "four stars all of them green on a black background"],
    "4": ["three yellow hexagons on a beige background", "there are three yellow hexagons on a beige background"],
}
HYPS = {"1": "two red circles on a white background", "2": "a blue square on a grey background",
        "3": "four green triangles on black", "4": "three yellow hexagons on a background"}
PYCOCO_BLEU = [0.8159668017145075, 0.7425555009867317, 0.7014955850912599, 0.6785231371815991]
PYCOCO_CIDER = 4.600518138233665
PYCOCO_CIDER_PER = {"1": 5.835203951421702, "2": 4.901525360976085, "3": 1.6812269200477705, "4": 5.984116320489101}


def test_bleu_matches_coco_caption_evaluation():
    assert M.bleu(HYPS, REFS) == pytest.approx(PYCOCO_BLEU, rel=1e-12)


def test_cider_d_matches_coco_caption_evaluation():
    mean, per = M.cider_d(HYPS, REFS)
    assert mean == pytest.approx(PYCOCO_CIDER, rel=1e-12)
    assert per == pytest.approx(PYCOCO_CIDER_PER, rel=1e-12)


def test_caption_metrics_basic_properties():
    refs = {"a": ["a red circle on white"], "b": ["two blue squares"]}
    assert M.bleu({"a": "a red circle on white", "b": "two blue squares"}, refs)[3] == pytest.approx(1.0)
    # Punctuation and case do not matter; a short hypothesis is penalised for brevity.
    assert M.bleu({"a": "A red circle, on white.", "b": "Two blue squares!"}, refs)[3] == pytest.approx(1.0)
    assert M.bleu({"a": "a red", "b": "two"}, refs)[0] < 0.5
    assert M.cider_d({"a": "nothing alike", "b": "at all"}, refs)[0] == 0.0
    with pytest.raises(ValueError):
        M.bleu({"a": "x"}, refs)


def test_retrieval_recall_with_several_captions_per_image():
    # 3 images; captions 0,1 -> image 0; 2 -> image 1; 3,4 -> image 2.
    owner = [0, 0, 1, 2, 2]
    sim = np.array([
        [0.1, 0.9, 0.2, 0.95, 0.0],  # image 0: best caption is #3 (image 2) -> its own #1 ranks 2nd
        [0.0, 0.1, 0.8, 0.3, 0.2],  # image 1: own caption first
        [0.5, 0.4, 0.3, 0.2, 0.6],  # image 2: own #4 first
    ])
    r = M.retrieval_recall(sim, owner, ks=(1, 2, 3))
    assert r["i2t_r@1"] == pytest.approx(2 / 3)
    assert r["i2t_r@2"] == pytest.approx(1.0)
    # text->image: caption 0 -> images ranked [2 (0.5), 0 (0.1), 1 (0.0)] -> rank 1 (miss at k=1)
    # caption 1 -> image 0 first; caption 2 -> image 1 first; caption 3 -> its image 2 (0.2) ranks third;
    # caption 4 -> image 2 first.
    assert r["t2i_r@1"] == pytest.approx(3 / 5)
    assert r["t2i_r@2"] == pytest.approx(4 / 5)
    assert r["t2i_r@3"] == pytest.approx(1.0)
    assert r["t2i_chance_r@1"] == pytest.approx(1 / 3)
    assert r["i2t_chance_r@1"] == pytest.approx(np.mean([2 / 5, 1 / 5, 2 / 5]))


def test_roc_auc_known_values_and_ties():
    assert M.roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert M.roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert M.roc_auc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    # pos {0.8, 0.4}, neg {0.6, 0.4, 0.2}: pairs won 0.8>all (3), 0.4>0.2 (1), 0.4=0.4 (0.5) -> 4.5/6
    assert M.roc_auc([0.8, 0.4, 0.6, 0.4, 0.2], [1, 1, 0, 0, 0]) == pytest.approx(4.5 / 6)
    assert np.isnan(M.roc_auc([0.1, 0.2], [1, 1]))


def test_labels_from_captions_and_zero_shot():
    classes = ["circle", "cross", "star"]
    caps = [["two red circles on white", "circles"], ["a cross and a star"], ["three crosses"], ["nothing here"],
            ["a star", "one star", "a circle"]]
    labels = M.labels_from_captions(caps, classes)
    assert labels.tolist() == [0, -1, 1, -1, 2]
    img = np.eye(3)[[0, 0, 1, 2, 2]].astype(np.float32)
    cls = np.eye(3, dtype=np.float32)
    z = M.zero_shot_accuracy(img, cls, labels)
    assert z == {"accuracy": 1.0, "n": 3, "chance": pytest.approx(1 / 3)}
    z = M.zero_shot_accuracy(np.eye(3)[[1, 1, 1, 1, 1]].astype(np.float32), cls, labels)
    assert z["accuracy"] == pytest.approx(1 / 3)


def test_per_picture_r1_averages_to_the_reported_mean_r1():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(6, 6)) + 3 * np.eye(6)
    sim[2, 2] = -5  # picture 2 misses both ways
    owner = np.arange(6)
    r = M.retrieval_recall(sim, owner, (1,))
    per = M.per_picture_r1(sim, owner)
    assert per[2] == 0.0
    assert per.mean() == pytest.approx((r["i2t_r@1"] + r["t2i_r@1"]) / 2)


def test_per_picture_r1_with_two_captions_and_a_captionless_picture():
    # image 0 has captions 0 and 1 (caption 1 ranks image 1 first); image 2 has none.
    sim = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.7], [0.0, 0.0, 0.0]])
    per = M.per_picture_r1(sim, [0, 0, 1])
    assert per[0] == pytest.approx((1 + 0.5) / 2)  # i2t hit; one of two captions finds it
    assert per[1] == pytest.approx((0 + 1) / 2)  # caption 1 (of image 0) outranks image 1's own for i2t
    assert np.isnan(per[2])
