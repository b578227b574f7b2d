"""Batched CLIP encoding: decoding errors, overlap keeps order, equality with direct open_clip calls."""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from models.clip import load_clip
from models.scoring import ClipScorer, ModelSpec, clip_scores, load_scorer
from tests.support.models import tiny_clip_checkpoint


def jpeg(color=(200, 30, 30), size=(96, 72), fmt="JPEG", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return tiny_clip_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=123)


@pytest.fixture(scope="module")
def clip(tiny_ckpt):
    return load_clip("vlc-tiny-clip", tiny_ckpt, "cpu")


def test_encode_images_matches_direct_calls_and_keeps_order(clip, realdata):
    files = sorted((realdata / "coco_mini" / "images").glob("*.jpg"))[:7]
    blobs = [f.read_bytes() for f in files]
    blobs.insert(2, b"garbage")
    blobs.insert(5, None)
    direct = []
    with torch.inference_mode():
        for f in files:
            x = clip.preprocess(Image.open(f)).unsqueeze(0)
            direct.append(torch.nn.functional.normalize(clip.model.encode_image(x).float(), dim=-1)[0].numpy())
    direct = np.stack(direct)
    for batch, threads in ((3, 2), (4, 0), (64, 1)):
        res = ClipScorer(clip, batch_size=batch, loader_threads=threads).encode_images(blobs)
        assert res.ok.tolist() == [True, True, False, True, True, False, True, True, True]
        assert [e[0] if e else None for e in res.errors] == [None, None, "undecodable", None, None,
                                                               "no_image_bytes", None, None, None]
        np.testing.assert_allclose(res.embeddings[res.ok], direct, atol=1e-5)
        assert not res.embeddings[~res.ok].any()
        assert res.sizes[0].tolist() == list(Image.open(files[0]).size)
        assert res.seconds_model > 0


def test_encode_texts_and_scores(clip):
    scorer = ClipScorer(clip, batch_size=2)
    texts = ["a red square", "two dogs on a beach", None, "x " * 200]  # long text is truncated, not an error
    emb = scorer.encode_texts(texts)
    assert emb.shape == (4, scorer.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[:2], clip.encode_texts(texts[:2]).numpy(), atol=1e-5)
    assert scorer.encode_texts([]).shape == (0, scorer.dim)
    s = clip_scores(emb, emb[::-1].copy())
    assert s[0] == pytest.approx(float(emb[0] @ emb[3]), abs=1e-6)


def test_random_weights_are_seeded_and_loud(caplog):
    spec = ModelSpec("vlc-tiny-clip", None, "cpu", seed=7, threads=1)
    with caplog.at_level(logging.WARNING, logger="models.scoring"):
        a = load_scorer(spec).encode_texts(["a photo of a cat"])
    assert "RANDOM weights" in caplog.text and "meaningless" in caplog.text
    b = load_scorer(spec).encode_texts(["a photo of a cat"])
    np.testing.assert_array_equal(a, b)  # every worker builds the same random model

