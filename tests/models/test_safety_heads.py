"""LAION's NSFW and aesthetic heads loaded from the released files (models/safety_heads.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from curation.errors import ModelLoadError
from models.safety_heads import (
    AESTHETIC_FILES,
    NSFW_FILES,
    HeadPaths,
    SafetyHeads,
    load_aesthetic_head,
    load_nsfw_head,
    resolve_heads,
    safety_reasons,
)
from tests.support.realdata import realdata_path


@pytest.mark.parametrize("model,folder", [("ViT-B-32", "vit_b_32"), ("ViT-L-14", "vit_l_14")])
def test_aesthetic_head_orders_the_rating_means(model, folder):
    heads = realdata_path("clip_heads")
    head = load_aesthetic_head(heads / AESTHETIC_FILES[model])
    emb = np.concatenate([np.load(heads / "aesthetic" / f"{folder}_rating_means" / f"rating{r}.npy") for r in range(10)])
    scores = head(emb)
    assert scores.shape == (10,)
    assert np.all(np.diff(scores) > 0), scores  # rating 0 < rating 1 < ... < rating 9
    if model == "ViT-B-32":  # the value PROVENANCE.md records for the released head
        assert scores[0] == pytest.approx(-1.47, abs=0.01) and scores[9] == pytest.approx(11.0, abs=0.05)


def _reference_nsfw(path, vectors: np.ndarray) -> np.ndarray:
    """The head's layers written out one vector at a time in float64 from the raw state dict."""
    import torch

    sd = {k: v.double().numpy() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
    n_layers = sum(1 for k in sd if k.startswith("linear_") and k.endswith(".weight"))
    out = []
    for v in vectors.astype(np.float64):
        x = (v - sd["norm.mean"]) / (np.sqrt(sd["norm.variance"]) + 1e-10)
        for i in range(1, n_layers + 1):
            x = sd[f"linear_{i}.weight"] @ x + sd[f"linear_{i}.bias"]
            if i < n_layers:
                x = np.where(x > 0, x, 0.0)
        out.append(1.0 / (1.0 + math.exp(-x[0])))
    return np.array(out)


@pytest.mark.parametrize("model", ["ViT-B-32", "ViT-L-14"])
def test_nsfw_head_equals_reference_computation(model):
    path = realdata_path("clip_heads") / NSFW_FILES[model]
    head = load_nsfw_head(path)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(16, head.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    folder = "vit_b_32" if model == "ViT-B-32" else "vit_l_14"
    means = np.concatenate([np.load(path.parents[1] / "aesthetic" / f"{folder}_rating_means" / f"rating{r}.npy")
                            for r in range(10)])
    vecs = np.concatenate([vecs, means, np.zeros((1, head.dim), np.float32)])
    got = head(vecs)
    ref = _reference_nsfw(path, vecs)
    assert got.dtype == np.float32 and got.shape == (len(vecs),)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    assert np.all((got >= 0) & (got <= 1))
    assert len(head.layers) == (3 if model == "ViT-B-32" else 4)


def test_resolve_heads_by_score_model(tmp_path):
    p = resolve_heads("ViT-B-32", "openai", "/h")
    assert p.nsfw == "/h/" + NSFW_FILES["ViT-B-32"] and p.aesthetic == "/h/" + AESTHETIC_FILES["ViT-B-32"]
    # LAION-2B weights are another embedding space: no released head applies.
    p = resolve_heads("ViT-B-32", "laion2b_s34b_b79k", "/h")
    assert p.nsfw is None and p.aesthetic is None and "openai" in p.note
    p = resolve_heads("vlc-tiny-clip", "/run/bootstrap/models/clip", "/h")
    assert p.nsfw is None and p.aesthetic is None and "vlc-tiny-clip" in p.note
    assert resolve_heads("ViT-B-32", "openai", None).nsfw is None  # no heads_dir: null columns, said why
    p = resolve_heads("vlc-tiny-clip", None, None, nsfw_head="/x/my_head.pth", aesthetic_head=None)
    assert p.nsfw == "/x/my_head.pth" and p.aesthetic is None and "null" in p.note


def test_missing_head_names_the_fix(tmp_path):
    with pytest.raises(ModelLoadError, match="safety.heads_dir"):
        load_nsfw_head(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="could not be read"):
        load_aesthetic_head(bad)


def test_width_mismatch_is_refused_and_scores_are_null_where_off():
    heads_dir = realdata_path("clip_heads")
    paths = resolve_heads("ViT-B-32", "openai", str(heads_dir))
    with pytest.raises(ModelLoadError, match="512-d"):
        SafetyHeads.load(paths, dim=64)
    heads = SafetyHeads.load(HeadPaths(paths.nsfw, None, ""), dim=512)
    emb = np.random.default_rng(1).normal(size=(4, 512)).astype(np.float32)
    nsfw, aes = heads.score(emb, ok=np.array([True, False, True, True]))
    assert np.isnan(nsfw[1]) and not np.isnan(nsfw[[0, 2, 3]]).any() and np.isnan(aes).all()


def test_safety_reasons():
    nsfw = np.array([0.1, 0.9, np.nan, 0.2], np.float32)
    aes = np.array([5.0, 5.0, 1.0, np.nan], np.float32)
    r = safety_reasons(nsfw, aes, max_nsfw=0.5, min_aesthetic=None)
    assert [x and x[0] for x in r] == [None, "nsfw", None, None]
    r = safety_reasons(nsfw, aes, max_nsfw=0.5, min_aesthetic=4.0)
    assert [x and x[0] for x in r] == [None, "nsfw", "low_aesthetic", None]
