"""The held-out set: dedup by picture, decontamination, bad rows; mismatched captions; model discovery."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
from PIL import Image

from curation.schemas import IMAGE_PAIRS
from models.evaluate import (build_eval_set, embedding_metrics, find_models, format_table, mismatched_captions,
                             model_kind)
from models.train_config import EvalConfig


def _png(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), rgb).save(buf, format="PNG")
    return buf.getvalue()


def _row(key, caption, blob):
    return {"key": key, "url": None, "caption": caption, "caption_source": "alt", "page_url": None, "doc_id": None,
            "image": blob, "width": 20, "height": 20, "sha256": hashlib.sha256(blob).hexdigest() if blob else None}


RED, GREEN, BLUE, GREY = _png((255, 0, 0)), _png((0, 255, 0)), _png((0, 0, 255)), _png((128, 128, 128))


def _table():
    rows = [
        _row("a1", "a red square", RED),
        _row("a2", "a red box", RED),  # same picture again: one image, two captions
        _row("a3", "a red square", RED),  # same picture, same caption: dropped as a duplicate caption
        _row("b1", "a green square", GREEN),
        _row("c1", "a blue square", BLUE),  # in the training data: decontaminated
        _row("d1", "", GREY),  # empty caption
        _row("e1", "broken", b"\x89PNG\r\n\x1a\n broken"),  # undecodable
        _row("f1", "no bytes", None),
    ]
    return pa.Table.from_pylist(rows, schema=IMAGE_PAIRS)


def test_eval_set_merges_pictures_and_drops_training_images_and_bad_rows():
    es = build_eval_set(_table(), exclude_sha256={hashlib.sha256(BLUE).hexdigest()})
    assert es.images == [RED, GREEN]
    assert es.captions == ["a red square", "a red box", "a green square"]
    assert es.caption_image.tolist() == [0, 0, 1]
    assert es.captions_of() == [["a red square", "a red box"], ["a green square"]]
    r = es.report
    assert r["rows_in"] == 8 and r["images"] == 2 and r["captions"] == 3
    assert r["duplicate_image_rows_merged"] == 1 and r["contaminated_images_dropped"] == 1
    assert r["skipped"] == {"duplicate_caption": 1, "in_training_data": 1, "empty_caption": 1,
                            "undecodable": 1, "no_image_bytes": 1}
    # every row is accounted for: a caption of an image, or skipped with a reason
    assert r["captions"] + sum(r["skipped"].values()) == r["rows_in"]


def test_mismatched_captions_never_describe_their_image():
    rows = [_row(f"k{i}", f"caption {i % 3}", _png((i * 20, 0, 0))) for i in range(9)]
    es = build_eval_set(pa.Table.from_pylist(rows, schema=IMAGE_PAIRS))
    idx, caps = mismatched_captions(es, seed=1)
    assert idx.tolist() == list(range(9))
    own = es.captions_of()
    assert all(c not in own[i] for i, c in zip(idx, caps))


class _Oracle:
    """Embeds red/green pictures and the words red/green on two axes (a perfect toy model)."""

    def images(self, blobs):
        out = []
        for b in blobs:
            r, g, _ = Image.open(io.BytesIO(b)).convert("RGB").getpixel((0, 0))
            out.append([1.0, 0.0] if r > g else [0.0, 1.0])
        return np.asarray(out, dtype=np.float32)

    def texts(self, texts):
        return np.asarray([[1.0, 0.0] if "red" in t else [0.0, 1.0] for t in texts], dtype=np.float32)


def test_embedding_metrics_of_a_perfect_model():
    es = build_eval_set(_table(), exclude_sha256={hashlib.sha256(BLUE).hexdigest()})
    res = embedding_metrics(_Oracle(), es, EvalConfig(ks=[1]), {"colour": ["red", "green"]})
    assert res["retrieval"]["t2i_r@1"] == 1.0
    assert res["zero_shot"]["colour"]["n"] == 2 and res["zero_shot"]["colour"]["accuracy"] == 1.0
    assert res["pair_auc_cosine"] == 1.0
    text = format_table({"eval_set": es.report, "clip": res})
    assert "zero-shot colour" in text and "text->image" in text


def test_model_discovery(tmp_path):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "open_clip_config.json").write_text("{}")
    (tmp_path / "filter").mkdir()
    (tmp_path / "filter" / "config.json").write_text('{"architectures": ["BlipForImageTextRetrieval"]}')
    (tmp_path / "checkpoints").mkdir()
    assert model_kind(tmp_path / "filter") == "filter" and model_kind(tmp_path) is None
    assert find_models(tmp_path) == {"clip": str(tmp_path / "clip"), "filter": str(tmp_path / "filter")}
    assert find_models(tmp_path / "clip") == {"clip": str(tmp_path / "clip")}


def test_class_list_comes_from_the_caller_not_the_sample():
    """models/evaluate.py knows no dataset's vocabulary: no classes, no zero-shot; the caller's, scored."""
    import ast
    from pathlib import Path

    import models.evaluate as E

    tree = ast.parse(Path(E.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.startswith("curation.sample") for m in imported)
    es = build_eval_set(_table(), exclude_sha256={hashlib.sha256(BLUE).hexdigest()})
    assert "zero_shot" not in embedding_metrics(_Oracle(), es, EvalConfig(ks=[1]), None)
    assert "zero_shot" not in embedding_metrics(_Oracle(), es, EvalConfig(ks=[1]), {})
    res = embedding_metrics(_Oracle(), es, EvalConfig(ks=[1]), {"hue": ["red", "green"]})
    assert set(res["zero_shot"]) == {"hue"}


def test_curate_eval_defaults_to_the_sample_classes():
    from curation.sample.text import COLOURS, SHAPES
    from pipelines.train import sample_classes

    assert sample_classes() == {"shape": list(SHAPES), "colour": list(COLOURS)}
