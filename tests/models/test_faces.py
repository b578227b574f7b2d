"""models/faces.py: OpenCV's bundled cascade against faces labelled by eye on real COCO photos."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from models.faces import FaceSettings, detect_faces, document_is_fewer_faces, face_counts
from tests.support.realdata import realdata_path

LABELS = Path(__file__).parent / "fixtures" / "face_labels.json"


def _split_scores(items, dets) -> dict:
    truth = np.array([it["has_face"] for it in items])
    pred = face_counts(dets) > 0
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    return {"photos": len(items), "with_faces": int(truth.sum()), "found": tp, "false_faces": fp,
            "recall": round(tp / max(1, int(truth.sum())), 3), "precision": round(tp / max(1, tp + fp), 3),
            "agreement": round(float((pred == truth).mean()), 3)}


def test_recall_and_precision_per_split_on_real_coco_photos():
    """Settings were chosen on ``tune``; ``report`` is the held-out split docs/safety.md quotes."""
    labels = json.loads(LABELS.read_text())
    folder = realdata_path("coco_mini", "images")
    assert labels["labelled_by"] and labels["how"] and labels["split"]
    scores = {}
    for split in ("tune", "report"):
        items = [it for it in labels["images"] if it["split"] == split]
        dets = detect_faces([(folder / it["file"]).read_bytes() for it in items])
        scores[split] = _split_scores(items, dets)
        for d, it in zip(dets, items):  # boxes inside the original picture, MMC4's null when none
            if d is None:
                continue
            w, h = Image.open(folder / it["file"]).size
            assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in d)
    print(json.dumps(scores))
    assert scores["tune"]["photos"] == 48 and scores["report"]["photos"] == 32
    # Measured 2026-12-02 with the defaults (docs/safety.md): tune 6 of 14 found, 0 false faces in 34;
    # report 1 of 5 found, 3 false faces in 27. A Haar cascade: most profiles and small faces are missed.
    assert scores["tune"]["found"] >= 6 and scores["tune"]["false_faces"] == 0
    assert scores["report"]["found"] >= 1 and scores["report"]["false_faces"] <= 3


def test_undecodable_and_missing_bytes_have_no_faces_and_threads_agree():
    folder = realdata_path("coco_mini", "images")
    blobs = [(folder / "000000551757.jpg").read_bytes(), None, b"garbage", (folder / "000000054718.jpg").read_bytes()]
    one = detect_faces(blobs, FaceSettings(threads=1))
    assert one == detect_faces(blobs, FaceSettings(threads=2))
    assert one[0] and one[1] is None and one[2] is None and one[3] is None
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, "PNG")
    assert detect_faces([buf.getvalue()]) == [None]


def test_mmc4_fewer_faces_rule():
    assert document_is_fewer_faces([0, 2]) and document_is_fewer_faces([0])
    assert not document_is_fewer_faces([1, 3]) and not document_is_fewer_faces([])
