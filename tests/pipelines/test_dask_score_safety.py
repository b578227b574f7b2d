"""The score stage's safety columns: LAION heads on the image embeddings it already has, ``nsfw`` rejects,
and null columns (with the reason in stats) when no head fits the CLIP."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from curation.errors import ModelLoadError
from curation.schemas import SCORED_PAIRS
from models.safety_heads import load_nsfw_head
from pipelines.dask_score import load_embeddings
from tests.pipelines.test_dask_score import coco_inputs, config, run_stage, tiny_ckpt  # noqa: F401  (fixture)
from tests.support.realdata import realdata_path


def _inputs(run, coco_dir) -> None:
    """COCO inputs in the image stage's schemas, the images stage marked complete (the runner checks it)."""
    import json

    from curation.stage import MARKER, MARKER_VERSION
    from curation.stage_files import list_files

    coco_inputs(run, coco_dir)
    stage_dir = run / "images"
    (stage_dir / MARKER).write_text(json.dumps({"version": MARKER_VERSION, "stage": "images",
                                                "run_id": "test-images", "files": list_files(str(stage_dir))}))


def _head(path, dim: int, seed: int = 0) -> str:
    """A NSFW head in the released layout (norm + linear_1..2) for the tiny CLIP's width."""
    g = torch.Generator().manual_seed(seed)
    sd = {"norm.mean": torch.zeros(dim), "norm.variance": torch.full((dim,), 1e-3),
          "linear_1.weight": torch.randn(8, dim, generator=g), "linear_1.bias": torch.zeros(8),
          "linear_2.weight": torch.randn(1, 8, generator=g), "linear_2.bias": torch.zeros(1)}
    torch.save(sd, path)
    return str(path)


@pytest.fixture(scope="module")
def coco_dir():
    return realdata_path("coco_mini")


def test_heads_on_stage_embeddings_and_nsfw_rejects(tmp_path, coco_dir, tiny_ckpt):  # noqa: F811
    from models.clip import load_clip

    dim = int(load_clip("vlc-tiny-clip", tiny_ckpt, "cpu").encode_texts(["a"]).shape[1])
    head_path = _head(tmp_path / "nsfw.pth", dim)
    _inputs(tmp_path, coco_dir)
    common = dict(model="vlc-tiny-clip", pretrained=tiny_ckpt, filter_mode="none", semantic_dedup=False,
                  mmc4_min_sim=-1.0, **{"filters.enabled": False})
    # First no threshold: every pair kept with its score, equal to the head on the stored image embedding.
    cfg = config(tmp_path, **common)
    cfg.safety.nsfw_head, cfg.safety.max_nsfw = head_path, None
    stats = run_stage(tmp_path, cfg)
    pairs = pq.read_table(tmp_path / "score" / "pairs")
    assert pairs.schema == SCORED_PAIRS and stats.rows_out == 400
    nsfw = pairs.column("nsfw_score").to_numpy(zero_copy_only=False)
    assert pairs.column("aesthetic_score").null_count == 400  # no aesthetic head for this CLIP
    emb = load_embeddings(str(tmp_path / "score"), pairs.column("embedding_row").to_numpy()).astype(np.float32)
    np.testing.assert_allclose(nsfw, load_nsfw_head(head_path)(emb), atol=2e-2)
    assert "aesthetic: no released head for vlc-tiny-clip" in stats.counters["safety_heads"]
    by_key = dict(zip(pairs.column("key").to_pylist(), nsfw.tolist()))

    # Faces: computed once per image on the workers, copied to every pair and MMC4 image of it.
    from models.faces import detect_faces

    images = {p["url"]: p["image"] for p in coco_inputs(tmp_path / "again", coco_dir)["pairs"]}
    urls = sorted(images)
    truth = dict(zip(urls, detect_faces([images[u] for u in urls])))
    rows = pairs.select(["url", "face_count", "face_detections", "is_fewer_faces"]).to_pylist()
    assert all(r["face_detections"] == truth[r["url"]] for r in rows)
    assert all(r["face_count"] == len(truth[r["url"]] or []) and r["is_fewer_faces"] == (not truth[r["url"]]) for r in rows)
    assert 0 < sum(1 for u in urls if truth[u]) < len(urls)
    assert stats.counters["images_with_faces"] == sum(1 for u in urls if truth[u])
    docs = pq.read_table(tmp_path / "score" / "mmc4").to_pylist()
    assert docs and all(i["face_detections"] == truth[i["raw_url"]] for d in docs for i in d["image_info"])
    assert all(d["is_fewer_faces"] == any(not i["face_detections"] for i in d["image_info"]) for d in docs)

    # Then max_nsfw at the median: the pairs above it are rejected as nsfw, nothing else lost.
    cut = float(np.median(nsfw))
    run2 = tmp_path / "run2"
    _inputs(run2, coco_dir)
    cfg = config(run2, **common)
    cfg.safety.nsfw_head, cfg.safety.max_nsfw = head_path, cut
    stats = run_stage(run2, cfg)
    rejects = pq.read_table(run2 / "score" / "rejects").to_pylist()
    pair_rejects = [r for r in rejects if r["table"] == "pairs"]
    expected = {k for k, v in by_key.items() if v > cut}
    assert {r["row_id"] for r in pair_rejects} == expected and 0 < len(expected) < 400
    assert {r["reason"] for r in pair_rejects} == {"nsfw"}
    assert stats.rejected == {"nsfw": len(expected)} and stats.rows_out == 400 - len(expected) and stats.conserved()


def test_auto_heads_on_a_self_trained_clip_give_null_columns(tmp_path, coco_dir, tiny_ckpt):  # noqa: F811
    _inputs(tmp_path, coco_dir)
    cfg = config(tmp_path, model="vlc-tiny-clip", pretrained=tiny_ckpt, filter_mode="none", semantic_dedup=False,
                 mmc4_min_sim=-1.0, **{"filters.enabled": False})
    cfg.safety.heads_dir = str(realdata_path("clip_heads"))
    stats = run_stage(tmp_path, cfg)
    pairs = pq.read_table(tmp_path / "score" / "pairs")
    assert pairs.column("nsfw_score").null_count == pairs.num_rows == 400
    assert pairs.column("aesthetic_score").null_count == 400
    assert "no released head for vlc-tiny-clip" in stats.counters["safety_heads"]


def test_a_head_of_another_width_fails_before_any_shard(tmp_path, coco_dir, tiny_ckpt):  # noqa: F811
    _inputs(tmp_path, coco_dir)
    cfg = config(tmp_path, model="vlc-tiny-clip", pretrained=tiny_ckpt)
    cfg.safety.nsfw_head = str(realdata_path("clip_heads") / "nsfw" / "clip_ViT-B-32_openai_binary_nsfw_head.pth")
    with pytest.raises(ModelLoadError, match="512-d"):
        run_stage(tmp_path, cfg)
    assert not (tmp_path / "_work").exists() or not list((tmp_path / "_work").glob("score-*/pairs_scores/*"))
