"""The trainer loop: exact resume after a crash, refused incompatible checkpoints, schedule, bad rows."""
from __future__ import annotations

import hashlib
import io
import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from curation.schemas import IMAGE_PAIRS
from models.blip_train import make_task
from models.train_config import BlipTrainConfig, TrainConfig
from models.trainer import TrainError, list_checkpoints, lr_lambda, train

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 40), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ["circle", "square"]


def _scene(colour: str, shape: str, rng: random.Random) -> bytes:
    im = Image.new("RGB", (48, 48), (245, 245, 245))
    d = ImageDraw.Draw(im)
    x, y = rng.randint(2, 14), rng.randint(2, 14)
    box = (x, y, x + 30, y + 30)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def scene_pairs(n: int, seed: int = 0, bad: bool = False) -> pa.Table:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c, s = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        blob = _scene(c, s, rng)
        rows.append({"key": f"s{seed}-{i}", "url": None, "caption": f"a {c} {s}", "caption_source": "alt",
                     "page_url": None, "doc_id": None, "image": blob, "width": 48, "height": 48,
                     "sha256": hashlib.sha256(blob).hexdigest()})
    if bad:
        rows[1]["image"], rows[1]["sha256"] = b"GIF89a-truncated", None
        rows[2]["caption"] = ""
    return pa.Table.from_pylist(rows, schema=IMAGE_PAIRS)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("scenes")
    pq.write_table(scene_pairs(96, bad=True), d / "part-0.parquet", row_group_size=32)
    return d


def _cfg(task: str, **kw) -> TrainConfig:
    base = dict(task=task, model="vlc-micro-clip", steps=10, batch_size=16, lr=1e-3, warmup_steps=3,
                checkpoint_every=4, log_every=1, num_workers=2, threads=1, shuffle_buffer=32, rows_per_unit=16,
                seed=7, blip=BlipTrainConfig(image_size=32, vocab_size=200))
    base.update(kw)
    return TrainConfig(**base)


class Crash(RuntimeError):
    pass


def _crash_at(n):
    def hook(step, logs):
        if step == n:
            raise Crash(f"simulated crash after step {n}")
    return hook


def _weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["clip", "blip-filter"])
def test_resume_after_crash_ends_where_an_uninterrupted_run_ends(task, data_dir, tmp_path):
    cfg = _cfg(task)
    ref = train(make_task(cfg), str(data_dir), tmp_path / "ref", cfg, progress=False)
    with pytest.raises(Crash):
        train(make_task(cfg), str(data_dir), tmp_path / "run", cfg, on_step=_crash_at(7), progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000004.pt"]
    res = train(make_task(cfg), str(data_dir), tmp_path / "run", cfg, progress=False)
    assert res.resumed_from == 4 and res.steps == ref.steps == 10
    # Same loss at every step (the log of the crashed run was cut back to the checkpoint) ...
    log_ref = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    log_run = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_run] == list(range(1, 11))
    assert [r["loss"] for r in log_run] == pytest.approx([r["loss"] for r in log_ref], abs=1e-6)
    # ... the same rows seen and skipped, and the same final weights.
    assert res.rows_seen == ref.rows_seen and res.skipped == ref.skipped
    name = {"clip": "clip/open_clip_model.safetensors", "blip-filter": "filter/model.safetensors"}[task]
    wa, wb = _weights(tmp_path / "ref" / name), _weights(tmp_path / "run" / name)
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6


def test_checkpoint_of_another_config_is_refused_and_no_resume_starts_over(data_dir, tmp_path):
    cfg = _cfg("clip", steps=4, checkpoint_every=2, num_workers=0)
    train(make_task(cfg), str(data_dir), tmp_path, cfg, progress=False)
    other = _cfg("clip", steps=4, checkpoint_every=2, num_workers=0, lr=5e-4)
    with pytest.raises(TrainError, match="lr"):
        train(make_task(other), str(data_dir), tmp_path, other, progress=False)
    res = train(make_task(other), str(data_dir), tmp_path, other, resume=False, progress=False)
    assert res.resumed_from is None and res.steps == 4
    # Logging or checkpoint frequency may change between a run and its resumption.
    again = _cfg("clip", steps=4, checkpoint_every=3, log_every=2, num_workers=0, lr=5e-4)
    assert train(make_task(again), str(data_dir), tmp_path, again, progress=False).resumed_from == 4


def test_bad_rows_are_skipped_and_counted(data_dir, tmp_path):
    cfg = _cfg("clip", steps=8, num_workers=0, shuffle_buffer=0)  # 8 x 16 rows: more than one epoch of 94
    res = train(make_task(cfg), str(data_dir), tmp_path, cfg, progress=False)
    assert res.rows_seen == 8 * 16
    assert res.skipped == {"undecodable": 1, "empty_caption": 1}  # met once: epoch 0 only
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["skipped"] == res.skipped and summary["data_rows"] == 96


def test_siglip_loss_trains_and_exports_a_loadable_model(data_dir, tmp_path):
    from models.clip import load_clip

    from models.clip_train import train_clip

    cfg = _cfg("clip", steps=3, num_workers=0, loss="siglip")
    path = train_clip(str(data_dir), tmp_path, cfg, progress=False)
    assert math.isfinite(json.loads((tmp_path / "train_summary.json").read_text())["final_loss"])
    clip = load_clip("local-dir:" + path, device="cpu")
    assert clip.model.logit_bias is not None
    emb = clip.encode_texts(["a red circle", "a blue square"])
    assert emb.shape == (2, 64) and np.allclose(emb.norm(dim=-1).numpy(), 1, atol=1e-5)


def test_warmup_then_cosine_schedule():
    lrs = [lr_lambda(s, total=10, warmup=2, lr=1.0, min_lr=0.1) for s in range(12)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)  # cosine starts at the peak
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[10] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.1)
    assert lrs[6] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay


def test_capfilt_entry_points_pretrain_then_finetune_separately(data_dir, tmp_path):
    """The calls CapFilt's bootstrap loop makes: pretrain on web pairs, fine-tune each model on a clean
    set given as an Arrow table (as models.coco.read_coco_captions returns it)."""
    from models.blip import generate_captions, itm_scores, load_captioner, load_filter
    from models.blip_train import finetune_captioner, finetune_filter, pretrain_blip

    cfg = _cfg("blip", steps=2, num_workers=0)
    pre = pretrain_blip(str(data_dir), tmp_path / "pre", cfg, progress=False)
    clean = scene_pairs(40, seed=1)
    cap = finetune_captioner(pre["captioner"], clean, tmp_path / "cap", cfg, progress=False)
    fil = finetune_filter(pre["filter"], clean, tmp_path / "fil", cfg, progress=False)
    manifest = json.loads((tmp_path / "fil" / "train_manifest.json").read_text())
    assert manifest["task"] == "blip-filter" and manifest["init"] == pre["filter"]
    assert manifest["data"] == [] and manifest["in_memory_sources"] == 1
    blobs = clean.column("image").to_pylist()[:3]
    caps = generate_captions(load_captioner(cap, "cpu"), blobs, num_captions=2, max_length=8, min_length=2, seed=0)
    assert [len(c) for c in caps] == [2, 2, 2]
    p = itm_scores(load_filter(fil, "cpu"), blobs, [c[0] for c in caps])
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()
