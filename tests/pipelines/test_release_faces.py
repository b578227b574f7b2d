"""``safety.blur_faces``: the release stage blurs the face boxes the score stage stored, in the pair tars,
the HF shards and the interleaved documents, keeps ``original_sha256`` and publishes the boxes."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.config import PipelineConfig
from curation.registry import spec
from curation.schemas import SCORED_IMAGES
from curation.stage import StageRunner
from pipelines.release import ReleaseStage
from tests.support.realdata import realdata_path
from tests.support.synthetic_run import make_run

PHOTO = "000000551757.jpg"  # a real COCO photo (a large frontal face)
BOX = [121, 80, 389, 349]  # planted: x0, y0, x1, y1 in the photo's pixels
DOC_BOX = [40, 60, 200, 220]


def _grey(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("L"), dtype=np.float64)


def _inside_outside(before: bytes, after: bytes, box) -> tuple[float, float]:
    a, b = _grey(before), _grey(after)
    assert a.shape == b.shape
    mask = np.zeros(a.shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    diff = np.abs(a - b)
    return float(diff[mask].mean()), float(diff[~mask].mean())


def _plant(root: Path) -> tuple[str, str, str, bytes]:
    """One pair image (web + synthetic caption rows) and one document image become the COCO photo with boxes."""
    photo = (realdata_path("coco_mini", "images") / PHOTO).read_bytes()
    sha = hashlib.sha256(photo).hexdigest()
    path = root / "capfilt" / "pairs" / "part-00000.parquet"
    pairs = pq.read_table(path)
    rows = pairs.to_pylist()
    image_key = rows[0]["image_key"]
    for r in rows:
        if r["image_key"] == image_key:
            r.update(image=photo, sha256=sha, face_count=1, face_detections=[BOX], is_fewer_faces=False,
                     width=640, height=427)
    pq.write_table(pa.Table.from_pylist(rows, schema=pairs.schema), path)
    dpath = root / "images" / "documents" / "part-00000.parquet"
    docs = pq.read_table(dpath)
    drows = docs.to_pylist()
    d = next(x for x in drows if any(u is not None for u in x["images"]))
    i = next(k for k, u in enumerate(d["images"]) if u is not None)
    d["image_bytes"] = [photo if k == i else b for k, b in enumerate(d["image_bytes"])]
    pq.write_table(pa.Table.from_pylist(drows, schema=docs.schema), dpath)
    # The score stage's image table: boxes per image URL (what the documents look theirs up in).
    (root / "score" / "images").mkdir()
    pq.write_table(pa.Table.from_pylist([{"url": d["images"][i], "width": 640, "height": 427, "sha256": sha,
                                          "face_count": 1, "face_detections": [DOC_BOX], "is_fewer_faces": False}],
                                        schema=SCORED_IMAGES), root / "score" / "images" / "part-0.parquet")
    return image_key, d["doc_id"], d["images"][i], photo


def _release(root: Path, **extra):
    cfg = PipelineConfig.load(overrides={"out": str(root), "dask.processes": False, "dask.n_workers": 1,
                                         "release.samples_per_shard": 6, "release.shard_rows": 10,
                                         "release.documents_per_shard": 3, **extra})
    return StageRunner(str(root), cfg).run(ReleaseStage(), spec("release").resolve_inputs(str(root)))


def _tar_samples(folder: Path) -> dict[str, dict]:
    """{pair key: {"json": ..., "image": bytes}} of every pair tar."""
    out: dict[str, dict] = {}
    for t in sorted(folder.glob("*.tar")):
        with tarfile.open(t) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf}
        for name, payload in members.items():
            if name.endswith(".json"):
                meta = json.loads(payload)
                stem = name[: -len(".json")]
                img = next(v for k, v in members.items() if k.startswith(stem + ".") and k.rsplit(".", 1)[1] in ("jpg", "png", "webp"))
                out[meta["key"]] = {"json": meta, "image": img}
    return out


def test_release_blurs_planted_face_boxes_and_nothing_else(tmp_path):
    root = tmp_path / "run"
    truth = make_run(root)
    image_key, doc_id, doc_url, photo = _plant(root)
    stats = _release(root, **{"safety.blur_faces": True})
    original = {r["key"]: r["image"] for r in pq.read_table(root / "capfilt" / "pairs").to_pylist()}

    samples = _tar_samples(root / "release" / "pairs_wds")
    planted = [k for k, s in samples.items() if s["json"]["image_key"] == image_key]
    assert len(planted) >= 1 and stats.counters["faces_blurred"]["pairs"] == len(planted)
    for k in planted:
        s = samples[k]
        inside, outside = _inside_outside(photo, s["image"], BOX)
        assert inside > 10 and outside < 1.5, (inside, outside)  # blurred box; elsewhere a q95 re-encode
        assert s["json"]["original_sha256"] == hashlib.sha256(photo).hexdigest()
        assert s["json"]["sha256"] == hashlib.sha256(s["image"]).hexdigest() != s["json"]["original_sha256"]
        assert s["json"]["face_detections"] == [BOX] and s["json"]["face_count"] == 1
    for k, s in samples.items():  # every other picture: the same bytes
        if k not in planted:
            assert s["image"] == original[k] and s["json"]["face_detections"] is None
    hf = pq.read_table(root / "release" / "hf" / "data").to_pylist()
    assert {r["key"]: r["image"]["bytes"] for r in hf} == {k: s["image"] for k, s in samples.items()}
    import datasets  # the README types the boxes as a sequence of int32 sequences

    ds = datasets.load_dataset(str(root / "release" / "hf"), split="train", cache_dir=str(tmp_path / "hf-cache"))
    boxes = dict(zip(ds["key"], ds["face_detections"]))
    assert all(boxes[k] == [BOX] for k in planted) and sum(1 for b in boxes.values() if b) == len(planted)

    # The document image: blurred in the Parquet and the tar, its metadata entry names the box and the original.
    docs = {d["doc_id"]: d for d in pq.read_table(root / "release" / "interleaved").to_pylist()}
    d = docs[doc_id]
    i = d["images"].index(doc_url)
    inside, outside = _inside_outside(photo, d["image_bytes"][i], DOC_BOX)
    assert inside > 10 and outside < 1.5, (inside, outside)
    meta = json.loads(d["metadata"])[i]
    assert meta["face_detections"] == [DOC_BOX] and meta["original_sha256"] == hashlib.sha256(photo).hexdigest()
    assert stats.counters["faces_blurred"]["document_images"] == 1
    src = {x["doc_id"]: x for x in pq.read_table(root / "images" / "documents").to_pylist()}
    for other, x in docs.items():
        if other != doc_id:
            assert x["image_bytes"] == src[other]["image_bytes"] and x["metadata"] == src[other]["metadata"]
    tar_images = {}
    for t in sorted((root / "release" / "interleaved_wds").glob("*.tar")):
        with tarfile.open(t) as tf:
            tar_images.update({m.name: tf.extractfile(m).read() for m in tf})
    assert d["image_bytes"][i] in tar_images.values() and photo not in tar_images.values()
    assert stats.rows_out == len(samples) and stats.rejected == {"undecodable": len(truth["bootstrapped"]) - len(samples)}


def test_blur_off_releases_the_original_bytes(tmp_path):
    root = tmp_path / "run"
    make_run(root)
    image_key, doc_id, doc_url, photo = _plant(root)
    stats = _release(root, **{"safety.blur_faces": False, "release.formats": ["pairs_wds", "interleaved"]})
    samples = _tar_samples(root / "release" / "pairs_wds")
    planted = [s for s in samples.values() if s["json"]["image_key"] == image_key]
    assert planted and all(s["image"] == photo for s in planted)
    assert all(s["json"]["original_sha256"] == s["json"]["sha256"] for s in planted)
    d = next(x for x in pq.read_table(root / "release" / "interleaved").to_pylist() if x["doc_id"] == doc_id)
    assert photo in d["image_bytes"]
    assert stats.counters["faces_blurred"] == {**stats.counters["faces_blurred"], "enabled": False, "pairs": 0,
                                               "document_images": 0}
