"""The score stage's image table (``score/images``, SCORED_IMAGES): one row per decodable unique image
with the NSFW / aesthetic head scores and faces, equal to what the pairs of that image carry."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from curation.schemas import SCORED_IMAGES
from tests.pipelines.test_dask_score import coco_dir, config, run_stage, tiny_ckpt  # noqa: F401  (fixtures)
from tests.pipelines.test_dask_score_safety import _head, _inputs


def test_image_table_has_head_scores_and_faces_of_each_image(tmp_path, coco_dir, tiny_ckpt):  # noqa: F811
    from models.clip import load_clip

    dim = int(load_clip("vlc-tiny-clip", tiny_ckpt, "cpu").encode_texts(["a"]).shape[1])
    _inputs(tmp_path, coco_dir)
    cfg = config(tmp_path, model="vlc-tiny-clip", pretrained=tiny_ckpt, filter_mode="none", semantic_dedup=False,
                 mmc4_min_sim=-1.0, **{"filters.enabled": False})
    cfg.safety.nsfw_head, cfg.safety.max_nsfw = _head(tmp_path / "nsfw.pth", dim), None
    stats = run_stage(tmp_path, cfg)
    images = pq.read_table(tmp_path / "score" / "images")
    assert images.schema == SCORED_IMAGES
    assert images.num_rows == 80 == stats.outputs["images"] == stats.tables["images"]["rows_out"]
    src = pq.read_table(tmp_path / "images" / "images", columns=["url", "sha256", "width", "height"])
    assert sorted(images.select(["url", "sha256"]).to_pylist(), key=str) == \
        sorted(src.select(["url", "sha256"]).to_pylist(), key=str)
    assert images.column("nsfw_score").null_count == 0 and images.column("aesthetic_score").null_count == 80
    # Every pair of an image carries the image's scores and faces (the heads run on the same embedding).
    pairs = pq.read_table(tmp_path / "score" / "pairs").to_pylist()
    by_url = {r["url"]: r for r in images.to_pylist()}
    for p in pairs:
        im = by_url[p["url"]]
        assert np.isclose(p["nsfw_score"], im["nsfw_score"], atol=2e-2)
        assert (p["face_count"], p["face_detections"], p["is_fewer_faces"]) == \
            (im["face_count"], im["face_detections"], im["is_fewer_faces"])
    assert sum(1 for r in by_url.values() if r["face_count"]) == stats.counters["images_with_faces"] > 0
