"""``curate train`` / ``curate eval`` end to end: the sample (numbers) and real COCO (pipeline only).

On the sample, the web pairs (alt texts with their planted noise) of 80% of the content images
train the models; the other 20% (their ground-truth captions) and the clean COCO-format split
are the held-out sets. The trained models share a module fixture so each is trained once.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from tests.support.realdata import realdata_path

pytestmark = pytest.mark.slow

# Small and fast: 32-pixel models, one loader worker, one training thread (2-core machine).
FAST = ["--set", "train.threads=1", "--workers", "1", "--no-progress", "--set", "train.log_every=20"]
CLIP_STEPS = 100
BLIP_STEPS = {"blip": 80, "blip-filter": 60, "blip-captioner": 30}


def _held_out(sha: str) -> bool:
    return int(sha[:8], 16) % 100 < 20


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from curation.sample import generate_sample
    from models.sample_pairs import true_pairs, web_pairs

    root = tmp_path_factory.mktemp("train-sample")
    sdir = root / "sample"
    generate_sample(str(sdir), n_pages=300, seed=0)
    web = web_pairs(sdir)
    keep = pa.array([not _held_out(s) for s in web.column("sha256").to_pylist()])
    train = web.filter(keep)
    (root / "train").mkdir()
    half = train.num_rows // 2
    pq.write_table(train.slice(0, half), root / "train" / "part-00000.parquet", row_group_size=100)
    pq.write_table(train.slice(half), root / "train" / "part-00001.parquet", row_group_size=100)
    gt = true_pairs(sdir)
    held = gt.filter(pa.array([_held_out(s) for s in gt.column("sha256").to_pylist()]))
    (root / "heldout").mkdir()
    pq.write_table(held, root / "heldout" / "part-00000.parquet")
    return {"root": root, "sample": sdir, "train": root / "train", "heldout": root / "heldout",
            "clean": sdir / "clean", "train_images": len(set(train.column("sha256").to_pylist())),
            "heldout_images": held.num_rows}


def _run(*args: str) -> None:
    assert main(list(args)) == 0


@pytest.fixture(scope="module")
def clip_run(sample):
    out = sample["root"] / "clip"
    _run("train", "--data", str(sample["train"]), "--out", str(out), "--model", "vlc-micro-clip",
         "--steps", str(CLIP_STEPS), "--batch-size", "64", *FAST)
    return out


def test_clip_trained_on_the_sample_retrieves_held_out_pairs_far_above_chance(sample, clip_run, capsys):
    _run("eval", "--model", str(clip_run), "--data", str(sample["clean"]))
    table = capsys.readouterr().out
    res = json.loads((clip_run / "eval_metrics.json").read_text())
    r, es = res["clip"]["retrieval"], res["eval_set"]
    print(table)
    # The clean split: 150 unseen images with 5 captions each (several captions per image).
    assert es["images"] == 150 and es["captions"] == 750 and es["contaminated_images_dropped"] == 0
    assert r["i2t_r@1"] >= 3 * r["i2t_chance_r@1"]
    assert r["t2i_r@1"] >= 3 * r["t2i_chance_r@1"]
    assert r["i2t_r@10"] > r["i2t_r@1"]
    z = res["clip"]["zero_shot"]
    assert set(z) == {"shape", "colour"} and z["colour"]["n"] == 150
    assert z["colour"]["accuracy"] >= 2 * z["colour"]["chance"]
    assert res["clip"]["pair_auc_cosine"] > 0.7
    summary = json.loads((clip_run / "train_summary.json").read_text())
    assert summary["steps"] == CLIP_STEPS and summary["rows_seen"] == CLIP_STEPS * 64


def test_eval_drops_images_seen_in_training(sample, clip_run, tmp_path):
    # Held-out images plus training shards: the training pictures must not be scored.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in [*sample["heldout"].glob("*.parquet"), *sample["train"].glob("*.parquet")]:
        os.symlink(f, mixed / f"{f.parent.name}-{f.name}")
    es = _eval(clip_run, mixed, tmp_path / "m.json")["eval_set"]
    assert es["contaminated_images_dropped"] == sample["train_images"]
    assert es["images"] == sample["heldout_images"]
    assert es["skipped"]["in_training_data"] > 0
    # Evaluating on the training data itself leaves nothing to score: a clear error.
    assert main(["eval", "--model", str(clip_run), "--data", str(sample["train"])]) == 2


def _eval(model, data, out):
    _run("eval", "--model", str(model), "--data", str(data), "--out", str(out))
    return json.loads(Path(out).read_text())


@pytest.fixture(scope="module")
def blip_runs(sample):
    root = sample["root"]
    common = [*FAST, "--set", "train.blip.image_size=32", "--batch-size", "64"]
    _run("train", "--task", "blip", "--data", str(sample["train"]), "--out", str(root / "blip"),
         "--steps", str(BLIP_STEPS["blip"]), *common)
    # BLIP fine-tunes captioner and filter separately on a clean human-annotated (COCO-format) set.
    _run("train", "--task", "blip-filter", "--init", str(root / "blip" / "filter"), "--data", str(sample["clean"]),
         "--out", str(root / "blip-filter"), "--steps", str(BLIP_STEPS["blip-filter"]), *common)
    _run("train", "--task", "blip-captioner", "--init", str(root / "blip" / "captioner"),
         "--data", str(sample["clean"]), "--out", str(root / "blip-captioner"),
         "--steps", str(BLIP_STEPS["blip-captioner"]), *common)
    return root


def test_blip_filter_separates_true_from_mismatched_captions_of_held_out_images(sample, blip_runs, capsys):
    res = _eval(blip_runs / "blip-filter", sample["heldout"], blip_runs / "filter_eval.json")
    print(capsys.readouterr().out)
    f = res["filter"]
    # Fine-tuned from the pretrained filter: decontaminated against the pretraining pairs and the clean set.
    assert len(res["eval_set"]["decontaminated_against"]) == 3
    assert res["eval_set"]["images"] == sample["heldout_images"]
    assert f["n_true"] == sample["heldout_images"] and f["n_mismatched"] == sample["heldout_images"]
    assert f["itm_roc_auc"] > 0.65
    assert f["itm_mean_p_true"] > f["itm_mean_p_mismatched"]


def test_blip_captioner_is_scored_with_bleu_and_cider(sample, blip_runs):
    res = _eval(blip_runs / "blip-captioner", sample["heldout"], blip_runs / "captioner_eval.json")
    c = res["captioner"]
    assert 0 <= c["bleu_4"] <= 1 and np.isfinite(c["cider"]) and c["cider"] > 0
    assert c["examples"] and all(e["generated"] for e in c["examples"])
    print("captioner:", {k: round(c[k], 4) for k in ("bleu_1", "bleu_4", "cider")}, c["examples"][:2])


def test_blip_pretraining_exports_both_models_sharing_the_vision_encoder(blip_runs):
    from safetensors.torch import load_file

    cap = load_file(str(blip_runs / "blip" / "captioner" / "model.safetensors"))
    fil = load_file(str(blip_runs / "blip" / "filter" / "model.safetensors"))
    k = "vision_model.embeddings.patch_embedding.weight"
    assert (cap[k] == fil[k]).all()
    manifest = json.loads((blip_runs / "blip-filter" / "train_manifest.json").read_text())
    assert manifest["task"] == "blip-filter" and manifest["init"].endswith("blip/filter")
    assert manifest["data"][0].endswith(".parquet")  # the COCO-format set converted to IMAGE_PAIRS


def _coco_split(src: Path, dst: Path, images: list[dict], anns: list[dict]) -> Path:
    dst.mkdir(parents=True)
    ids = {im["id"] for im in images}
    doc = {"images": images, "annotations": [a for a in anns if a["image_id"] in ids]}
    (dst / "captions_train2017.json").write_text(json.dumps(doc))
    os.symlink(src / "images", dst / "images")
    return dst


@pytest.mark.realdata
def test_real_coco_mini_trains_and_evaluates_end_to_end(tmp_path, capsys):
    coco = realdata_path("coco_mini")
    doc = json.loads((coco / "captions_train2017.json").read_text())
    images = sorted(doc["images"], key=lambda im: im["id"])
    train = _coco_split(coco, tmp_path / "coco_train", images[:64], doc["annotations"])
    held = _coco_split(coco, tmp_path / "coco_held", images[64:], doc["annotations"])
    common = [*FAST, "--steps", "4", "--batch-size", "16"]
    _run("train", "--data", str(train), "--out", str(tmp_path / "clip"), "--model", "vlc-micro-clip", *common)
    _run("train", "--task", "blip", "--data", str(train), "--out", str(tmp_path / "blip"),
         "--set", "train.blip.image_size=32", *common)
    res_clip = _eval(tmp_path / "clip", held, tmp_path / "clip.json")
    res_blip = _eval(tmp_path / "blip", held, tmp_path / "blip.json")
    for res in (res_clip, res_blip):
        es = res["eval_set"]
        assert es["images"] == 16 and es["contaminated_images_dropped"] == 0
        assert es["captions"] == sum(1 for a in doc["annotations"] if a["image_id"] in {im["id"] for im in images[64:]})
    assert 0 <= res_clip["clip"]["retrieval"]["i2t_r@1"] <= 1
    assert np.isfinite(res_blip["filter"]["itm_roc_auc"]) and np.isfinite(res_blip["captioner"]["cider"])
    summary = json.loads((tmp_path / "clip" / "train_summary.json").read_text())
    assert summary["data_rows"] == sum(1 for a in doc["annotations"] if a["image_id"] in {im["id"] for im in images[:64]})
    assert summary["skipped"] == {}


def test_cli_reports_bad_inputs_clearly(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "no .parquet or .tar shards" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--model", str(tmp_path / "empty"), "--data", str(tmp_path)]) == 2
    assert "no model found" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "train.lossy=1"]) == 2
