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


def test_agreement_with_labels_on_real_coco_photos():
    labels = json.loads(LABELS.read_text())
    folder = realdata_path("coco_mini", "images")
    items = labels["images"]
    assert len(items) >= 12 and labels["labelled_by"] and labels["how"]
    dets = detect_faces([(folder / it["file"]).read_bytes() for it in items])
    truth = np.array([it["has_face"] for it in items])
    pred = face_counts(dets) > 0
    agree = float((pred == truth).mean())
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    print(f"face agreement {agree:.3f} ({int((pred == truth).sum())}/{len(items)}), "
          f"recall {tp}/{int(truth.sum())}, false faces {fp}/{int((~truth).sum())}")
    # Measured 2026-12-02 with the defaults: 12/16 agree, 5 of 9 photos with faces found (profiles,
    # a face looking down and occluded close-ups missed), no face found in the 7 photos without one.
    assert agree >= 0.75 and fp == 0 and tp >= 5
    for d, it in zip(dets, items):  # boxes inside the original picture, MMC4's null when none
        if d is None:
            continue
        w, h = Image.open(folder / it["file"]).size
        assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in d)


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
