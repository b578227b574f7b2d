"""``curate capfilt`` and the bootstrap stage: models trained here on the sample, CapFilt on the sample
(filter precision/recall against the planted noise, synthetic share), on the real COCO images, with
undecodable images, after a crash, with a killed worker; the bootstrap loop's second round."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation.config import BOOTSTRAP_MODELS, PipelineConfig, uses_bootstrap_models
from curation.errors import ConfigError
from curation.schemas import BOOTSTRAPPED_PAIRS, IMAGE_PAIRS, REJECTS, SCORED_PAIRS
from curation.stage import StageRunner
from pipelines.sample_truth import SampleTruth, filter_quality

from tests.support.realdata import realdata_path
from tests.support.stages import mark_complete

# Very small budgets: these tests check the plumbing and the accounting; make experiment measures quality.
BUDGET = {"bootstrap.max_steps": 12, "bootstrap.batch_size": 32, "bootstrap.blip_image_size": 32,
          "bootstrap.threads": 1}


def _overrides(**extra) -> dict:
    return {"dask.processes": False, "dask.n_workers": 1, "capfilt.shard_rows": 40, "capfilt.batch_size": 16,
            "capfilt.threads": 1, "capfilt.itm_threshold": THRESHOLD.get("itm", 0.5), **BUDGET, **extra}


def _config(run: Path, **extra) -> PipelineConfig:
    return PipelineConfig.load(overrides=_overrides(out=str(run), **extra))


def scored_pairs(web: pa.Table) -> pa.Table:
    """The sample's web pairs as the score stage writes them (SCORED_PAIRS)."""
    rng = np.random.default_rng(0)
    t = web.select([n for n in SCORED_PAIRS.names if n in web.column_names])
    t = t.append_column("clip_score", pa.array(rng.uniform(0.1, 0.4, t.num_rows).astype(np.float32)))
    t = t.append_column("embedding_row", pa.array(np.arange(t.num_rows, dtype=np.int64)))
    for f in SCORED_PAIRS:  # nsfw_score/aesthetic_score: null, as for a CLIP without a released safety head
        if f.name not in t.column_names:
            t = t.append_column(f.name, pa.nulls(t.num_rows, f.type))
    return t.cast(SCORED_PAIRS)


# 12-step models sit near ITM's training prior (1 match : 2 non-matches, p ~ 1/3) and would keep
# nothing at 0.5: the fixture sets the threshold to the median p(match) of the web captions (computed
# here with models.blip.itm_scores), so about half pass and both outcomes are exercised and checked.
THRESHOLD: dict[str, float] = {}

CORRUPT = {"bad-truncated": "undecodable", "bad-garbage": "undecodable", "bad-null": "no_image_bytes"}


def with_corrupt(t: pa.Table) -> pa.Table:
    first = t.slice(0, 1).to_pylist()[0]
    rows = []
    for key, data in (("bad-truncated", first["image"][: len(first["image"]) // 3]), ("bad-garbage", b"\x00garbage" * 9),
                      ("bad-null", None)):
        rows.append(dict(first, key=key, url=f"http://x/{key}.jpg", image=data,
                         sha256=hashlib.sha256(data).hexdigest() if data else None))
    return pa.concat_tables([t, pa.Table.from_pylist(rows, schema=SCORED_PAIRS)])


def write(path: Path, t: pa.Table, files: int = 2, row_group_size: int = 40) -> None:
    """``t`` as ``<run>/<stage>/<output>``, the stage marked complete as the runner would (the runner
    refuses an input stage without a marker)."""
    path.mkdir(parents=True, exist_ok=True)
    k = -(-t.num_rows // files)
    for i in range(files):
        pq.write_table(t.slice(i * k, k), path / f"part-{i:05d}.parquet", row_group_size=row_group_size)
    mark_complete(path.parent)


@pytest.fixture(scope="session")
def boot(tmp_path_factory):
    """A sample run directory (images/pairs, score/pairs with corrupt rows) and its bootstrap stage's models."""
    from curation.sample import generate_sample
    from models.sample_pairs import web_pairs
    from pipelines.bootstrap import BootstrapStage

    run = tmp_path_factory.mktemp("capfilt") / "run"
    generate_sample(str(run / "_sample"), n_pages=60, seed=0)
    web = web_pairs(run / "_sample")
    # A page crawled twice gives the same pair keys twice (dedup removes it before score does): keep one.
    first = sorted({k: i for i, k in reversed(list(enumerate(web.column("key").to_pylist())))}.values())
    web = web.take(pa.array(first))
    write(run / "images" / "pairs", web.select(IMAGE_PAIRS.names))
    write(run / "score" / "pairs", with_corrupt(scored_pairs(web)))
    stats = StageRunner(str(run), _config(run)).run(BootstrapStage(), {"pairs": str(run / "images" / "pairs")})
    p = direct_itm(run / "bootstrap" / "models" / "filter", web)
    THRESHOLD["itm"] = float(np.median(p))
    return {"run": run, "web": web, "stats": stats, "cfg": _config(run), "itm": dict(zip(web.column("key").to_pylist(), p))}


def direct_itm(filter_dir: Path, t: pa.Table) -> np.ndarray:
    """p(match) of each row's caption with its picture, straight from models.blip (decoded as the stage does)."""
    from models.blip import itm_scores, load_filter
    from models.data import decode_image

    filt = load_filter(str(filter_dir), "cpu")
    size = filt.pixel_transform().size
    return itm_scores(filt, [decode_image(b, draft_size=size) for b in t.column("image").to_pylist()],
                      t.column("caption").to_pylist(), batch_size=64)


def run_capfilt(run: Path, source: Path, cfg: PipelineConfig):
    from pipelines.dask_capfilt import CapFiltStage

    return StageRunner(str(run), cfg).run(
        CapFiltStage(), {"pairs": str(source / "score" / "pairs"), "models": str(source / "bootstrap" / "models")})


@pytest.fixture(scope="session")
def sample_capfilt(boot):
    stats = run_capfilt(boot["run"], boot["run"], boot["cfg"])
    out = pq.read_table(boot["run"] / "capfilt" / "pairs")
    rejects = pq.read_table(boot["run"] / "capfilt" / "rejects")
    return stats, out, rejects


# ------------------------------------------------------------------------- the bootstrap stage


def test_bootstrap_stage_trains_clip_captioner_and_filter_that_score_and_capfilt_load(boot):
    from models.blip import load_captioner, load_filter
    from curation.errors import ModelLoadError
    from models.clip import load_clip
    from models.resolve import resolve_model

    models = boot["run"] / "bootstrap" / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["round"] == 0 and set(manifest["models"]) == {"clip", "captioner", "filter"}
    # Budget: 10 epochs of the web pairs, capped at max_steps; the clean set fine-tunes both BLIP halves.
    assert all(m["steps"] == 12 for m in manifest["models"].values())
    assert manifest["clean_data"].endswith("_sample/clean")
    assert manifest["models"]["filter"]["pretraining"]["task"] == "blip"
    st = boot["stats"]
    assert st.rows_in == st.rows_out == boot["web"].num_rows and st.conserved()
    clip_ckpt = resolve_model(BOOTSTRAP_MODELS, "clip", str(models))
    assert clip_ckpt.endswith("clip/open_clip_model.safetensors")
    assert load_clip("vlc-tiny-clip", clip_ckpt, "cpu").encode_texts(["a red circle"]).shape == (1, 64)
    assert load_captioner(resolve_model(BOOTSTRAP_MODELS, "captioner", str(models)), "cpu").role == "captioner"
    assert load_filter(resolve_model(BOOTSTRAP_MODELS, "filter", str(models)), "cpu").itm_first_token == "cls"
    assert resolve_model("Salesforce/blip-itm-base-coco", "filter", None) == "Salesforce/blip-itm-base-coco"
    with pytest.raises(ModelLoadError, match="run the bootstrap stage first"):
        resolve_model(BOOTSTRAP_MODELS, "captioner", str(boot["run"] / "nowhere"))


def test_score_stage_loads_the_bootstrapped_clip(boot, tmp_path):
    from pipelines.dask_score import ScoreStage

    run = tmp_path / "run"
    write(run / "images" / "pairs", boot["web"].select(IMAGE_PAIRS.names).slice(0, 30), files=1)
    cfg = _config(run, **{"score.filters.enabled": False, "score.mmc4": False})
    assert cfg.score.pretrained == BOOTSTRAP_MODELS  # the sample's default
    stats = StageRunner(str(run), cfg).run(ScoreStage(), {"pairs": str(run / "images" / "pairs"),
                                                         "models": str(boot["run"] / "bootstrap" / "models")})
    assert stats.rows_out == 30 and "warning" not in stats.counters
    assert stats.counters["pretrained"].endswith("bootstrap/models/clip/open_clip_model.safetensors")


# ------------------------------------------------------------------------- CapFilt on the sample


def test_every_pair_picture_and_synthetic_caption_is_accounted_for(boot, sample_capfilt):
    stats, out, rejects = sample_capfilt
    inp = pq.read_table(boot["run"] / "score" / "pairs")
    assert out.schema == BOOTSTRAPPED_PAIRS and rejects.schema == REJECTS and stats.conserved()
    web = out.filter(pc.not_equal(out.column("caption_source"), "synthetic"))
    syn = out.filter(pc.equal(out.column("caption_source"), "synthetic"))
    pair_rej = {r["row_id"]: r["reason"] for r in rejects.to_pylist() if r["table"] == "pairs"}
    in_keys = inp.column("key").to_pylist()
    # Every input pair: kept once, or rejected once with a reason.
    assert sorted(web.column("key").to_pylist() + list(pair_rej)) == sorted(in_keys)
    assert stats.rows_in == len(in_keys) and stats.rows_out == web.num_rows
    assert stats.rejected == dict(Counter(pair_rej.values()))
    for key, reason in CORRUPT.items():
        assert pair_rej[key] == reason
    # Web captions keep what extract found; synthetic ones are keyed <image_key>-syn<k>.
    assert set(web.column("caption_source").to_pylist()) <= {"alt", "figcaption", "title"}
    assert set(web.column("caption_model").to_pylist()) <= {"web"}
    assert all(k == f"{ik}-syn0" for k, ik in zip(syn.column("key").to_pylist(), syn.column("image_key").to_pylist()))
    assert set(syn.column("caption_model").to_pylist()) <= {"bootstrap-round0/captioner"}
    thr = boot["cfg"].capfilt.itm_threshold
    assert all(p >= thr for p in out.column("itm_score").to_pylist())
    # The kept web captions are those whose p(match), computed directly, reaches the threshold.
    direct = boot["itm"]
    kept = set(web.column("key").to_pylist())
    clear = [k for k, p in direct.items() if abs(p - thr) > 1e-4]
    assert {k for k in clear if direct[k] >= thr} == kept & set(clear)
    assert 0.3 * len(direct) < len(kept) < 0.7 * len(direct)
    assert {k: pair_rej[k] for k in clear if k not in kept} == {k: "itm_below_threshold" for k in clear if k not in kept}
    # Pictures: one per sha256, each kept or dropped with a reason; synthetic captions conserved on their own.
    pictures = {r["sha256"] or r["url"] for r in inp.select(["sha256", "url"]).to_pylist()}
    img = stats.tables["images"]
    assert img["rows_in"] == len(pictures)
    assert img["rejected"].get("undecodable") == 2 and img["rejected"].get("no_image_bytes") == 1
    img_rej = [r for r in rejects.to_pylist() if r["table"] == "images"]
    assert len(img_rej) == sum(img["rejected"].values())
    dropped = {r["row_id"] for r in img_rej if r["reason"] == "no_surviving_caption"}
    assert not dropped & set(out.column("image_key").to_pylist())
    assert img["rows_out"] == len(set(out.column("image_key").to_pylist()))
    synt = stats.tables["synthetic_captions"]
    decodable = len(pictures) - 3
    assert synt["rows_in"] == decodable  # K = 1 per decodable picture
    assert synt["rows_out"] == syn.num_rows
    syn_rej = [r for r in rejects.to_pylist() if r["table"] == "synthetic_captions"]
    assert len(syn_rej) == sum(synt["rejected"].values()) and all("p(match)" in (r["detail"] or "") or
                                                                   r["reason"] == "empty_caption" for r in syn_rej)


def test_filter_precision_recall_and_synthetic_share_against_the_planted_noise(boot, sample_capfilt):
    stats, out, rejects = sample_capfilt
    c = stats.counters
    truth = SampleTruth(boot["run"] / "_sample")
    inp = pq.read_table(boot["run"] / "score" / "pairs").to_pylist()
    removed = {r["row_id"] for r in rejects.to_pylist() if r["reason"] == "itm_below_threshold" and r["table"] == "pairs"}
    judged = [r for r in inp if r["key"] not in CORRUPT]
    labels = [truth.web_label(r["page_url"], r["url"], r["caption_source"]) for r in judged]
    want = filter_quality(labels, [r["key"] in removed for r in judged])
    got = c["filter_vs_ground_truth"]
    for k in ("web_captions_judged", "noisy", "removed", "removed_noisy", "precision", "recall"):
        assert got[k] == want[k], k
    assert got["noisy"] > 0.2 * got["web_captions_judged"]  # the sample plants ~25% wrong/boilerplate captions
    kinds = {(r["alt_kind"]) for r in boot["web"].to_pylist()}
    assert {"wrong", "boilerplate", "correct"} <= kinds
    n_syn = sum(1 for s in out.column("caption_source").to_pylist() if s == "synthetic")
    assert c["synthetic_share"] == (round(n_syn / out.num_rows, 4) if out.num_rows else None)
    sv = c["synthetic_vs_ground_truth"]
    assert sv["judged"] == stats.tables["synthetic_captions"]["rows_in"]
    print("filter vs ground truth:", {k: got[k] for k in ("precision", "recall", "removed_share_by_kind")},
          "synthetic share", c["synthetic_share"], sv)


def subset_source(boot, dst: Path, rows: np.ndarray, files: int = 1, row_group_size: int = 40) -> Path:
    """A run directory holding some of the fixture's scored pairs (in the given order) and its models."""
    t = pq.read_table(boot["run"] / "score" / "pairs")
    write(dst / "score" / "pairs", t.take(pa.array(rows)), files=files, row_group_size=row_group_size)
    (dst / "bootstrap").symlink_to(boot["run"] / "bootstrap")
    return dst


def test_synthetic_captions_are_the_same_whatever_the_shards(boot, sample_capfilt, tmp_path):
    """Sampling noise is seeded per picture: other shards, batches and row order give the same captions."""
    _, out, _ = sample_capfilt
    src = subset_source(boot, tmp_path / "src", np.arange(60)[::-1], files=3, row_group_size=9)
    cfg = _config(tmp_path / "other", **{"capfilt.shard_rows": 9, "capfilt.batch_size": 7})
    run_capfilt(tmp_path / "other", src, cfg)
    sha_of = {r["key"]: r["sha256"] for r in pq.read_table(boot["run"] / "score" / "pairs").to_pylist()}

    def generated(run: Path) -> dict[str, str]:
        """Every synthetic caption (kept, or removed: its text is in the reject's detail) by picture sha256."""
        caps = {sha_of[r["image_key"]]: r["caption"] for r in pq.read_table(run / "capfilt" / "pairs").to_pylist()
                if r["caption_source"] == "synthetic"}
        for r in pq.read_table(run / "capfilt" / "rejects").to_pylist():
            if r["table"] == "synthetic_captions" and r["reason"] == "itm_below_threshold":
                caps[sha_of[r["row_id"].rsplit("-syn", 1)[0]]] = r["detail"].split(": ", 1)[1]
        return caps

    mine, theirs = generated(tmp_path / "other"), generated(boot["run"])
    assert len(mine) > 20 and mine == {sha: theirs[sha] for sha in mine}
    # p(match) of the web captions: the same up to float noise (other batches).
    a = {r["key"]: r["itm_score"] for r in out.to_pylist() if r["caption_source"] != "synthetic"}
    b = {r["key"]: r["itm_score"] for r in pq.read_table(tmp_path / "other" / "capfilt" / "pairs").to_pylist()
         if r["caption_source"] != "synthetic"}
    assert b and all(abs(a[k] - b[k]) < 1e-4 for k in b if k in a)


def test_capfilt_variants_filter_only_and_captioner_only(boot, tmp_path):
    total = pq.read_table(boot["run"] / "score" / "pairs").num_rows
    src = subset_source(boot, tmp_path / "src", np.arange(total - 30, total))  # the last 30 hold the corrupt rows
    cfg = _config(tmp_path / "f", **{"capfilt.num_captions": 0})
    st = run_capfilt(tmp_path / "f", src, cfg)
    assert st.outputs["synthetic"] == 0 and st.tables["synthetic_captions"]["rows_in"] == 0 and st.conserved()
    assert st.rejected.get("itm_below_threshold", 0) + st.rows_out + 3 == 30
    cfg = _config(tmp_path / "c", **{"capfilt.filter_web": False, "capfilt.filter_synthetic": False,
                                     "capfilt.num_captions": 2})
    st = run_capfilt(tmp_path / "c", src, cfg)
    assert st.rejected == {"undecodable": 2, "no_image_bytes": 1}  # nothing filtered, bad images still counted
    assert st.tables["synthetic_captions"]["rows_in"] == 2 * st.tables["images"]["rows_out"]
    keys = pq.read_table(tmp_path / "c" / "capfilt" / "pairs").column("key").to_pylist()
    assert any(k.endswith("-syn1") for k in keys)


def test_resume_after_a_crash_recomputes_no_finished_shard(boot, tmp_path, monkeypatch):
    import pipelines.dask_capfilt as dc

    run = tmp_path / "run"
    cfg = _config(run)

    def crash(*args, **kwargs):
        raise RuntimeError("driver died after phase 1")

    monkeypatch.setattr(dc.CapFiltStage, "_pictures", crash)
    with pytest.raises(RuntimeError, match="driver died"):
        run_capfilt(run, boot["run"], cfg)
    monkeypatch.undo()
    done = list(run.glob("_work/capfilt-*/_done/*.json"))
    assert len(done) >= 4
    stats = run_capfilt(run, boot["run"], cfg)
    assert stats.counters["shards_skipped"] == len(done) and stats.conserved()
    assert not list(run.glob("_work/capfilt-*"))  # cleaned after success


@pytest.mark.slow
def test_killed_worker_loses_and_duplicates_nothing(boot, sample_capfilt, tmp_path):
    from distributed import Client, LocalCluster

    _, want, _ = sample_capfilt
    run = tmp_path / "run"
    killed: list[int] = []
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, memory_limit="3GiB",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        cfg = _config(run, **{"capfilt.shard_rows": 20})
        cfg.dask.scheduler = cluster.scheduler_address

        def killer():
            deadline = time.time() + 300
            while time.time() < deadline:
                if glob.glob(str(run / "_work" / "capfilt-*" / "_done" / "*.json")):
                    victim = sorted(pids.values())[0]
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                    return
                time.sleep(0.05)

        t = threading.Thread(target=killer)
        t.start()
        stats = run_capfilt(run, boot["run"], cfg)
        t.join()
        assert killed and killed[0] not in set(client.run(os.getpid).values())
    got = pq.read_table(run / "capfilt" / "pairs")
    keys = got.column("key").to_pylist()
    assert len(keys) == len(set(keys)) and stats.conserved()
    a = {r["key"]: (r["caption"], r["itm_score"]) for r in want.to_pylist()}
    b = {r["key"]: (r["caption"], r["itm_score"]) for r in got.to_pylist()}
    # The same rows as the in-process run (other shards, other threads: ITM within float noise).
    assert a.keys() == b.keys()
    assert all(a[k][0] == b[k][0] and abs(a[k][1] - b[k][1]) < 1e-4 for k in a)


def test_capfilt_on_a_remote_run_directory(boot, sample_capfilt, tmp_path, monkeypatch):
    """``OUT=s3://...``: fsspec's memory:// filesystem stands in. The models are resolved in the
    remote run and copied to the local model cache to be loaded; the rows are those of the local run."""
    import fsspec

    from pipelines.dask_capfilt import CapFiltStage

    monkeypatch.setenv("CURATE_MODEL_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    root = f"/capfilt-remote-{tmp_path.name}"
    for stage in ("score", "bootstrap"):
        for f in (boot["run"] / stage).rglob("*"):
            if f.is_file():
                fs.pipe(f"{root}/{f.relative_to(boot['run'])}", f.read_bytes())
    run = f"memory://{root}"
    cfg = PipelineConfig.load(overrides=_overrides(out=run))
    stats = StageRunner(run, cfg).run(CapFiltStage(), {"pairs": f"{run}/score/pairs", "models": f"{run}/bootstrap/models"})
    assert stats.conserved() and stats.counters["caption_model"] == "bootstrap-round0/captioner"
    assert sorted(p.name for p in (tmp_path / "cache").glob("*/*")) == ["captioner", "filter"]
    tables = []
    for f in sorted(fs.find(f"{root}/capfilt/pairs")):
        with fs.open(f, "rb") as fh:
            tables.append(pq.read_table(fh))
    got = pa.concat_tables(tables).sort_by("key")
    want = sample_capfilt[1].sort_by("key")
    assert got.column("key").to_pylist() == want.column("key").to_pylist()
    assert got.column("caption").to_pylist() == want.column("caption").to_pylist()
    fs.rm(root, recursive=True)


# ------------------------------------------------------------------------- real COCO images


def test_coco_images_every_input_image_accounted_for(boot, tmp_path):
    coco = realdata_path("coco_mini")
    caps = json.loads((coco / "captions_train2017.json").read_text())
    by_img: dict[int, list[dict]] = {}
    for a in sorted(caps["annotations"], key=lambda a: a["id"]):
        by_img.setdefault(a["image_id"], []).append(a)
    rows = []
    for im in sorted(caps["images"], key=lambda r: r["id"]):
        data = (coco / "images" / im["file_name"]).read_bytes()
        for a in by_img[im["id"]]:
            rows.append(dict(key=f"{im['id']}-{a['id']}", url=f"http://images.cocodataset.org/train2017/{im['file_name']}",
                             caption=a["caption"], caption_source="alt", page_url=f"http://page/{im['id']}",
                             doc_id=str(im["id"]), image=data, width=im["width"], height=im["height"],
                             sha256=hashlib.sha256(data).hexdigest(), clip_score=0.3, embedding_row=len(rows)))
    src = tmp_path / "coco"
    write(src / "score" / "pairs", pa.Table.from_pylist(rows, schema=SCORED_PAIRS), files=2, row_group_size=100)
    (src / "bootstrap").symlink_to(boot["run"] / "bootstrap")
    stats = run_capfilt(src, src, _config(src, **{"capfilt.shard_rows": 200}))
    n_images = len(caps["images"])
    img = stats.tables["images"]
    assert n_images == 80 and img["rows_in"] == n_images
    assert img["rows_out"] + sum(img["rejected"].values()) == n_images and stats.conserved()
    out = pq.read_table(src / "capfilt" / "pairs")
    rej = pq.read_table(src / "capfilt" / "rejects").to_pylist()
    dropped = {r["row_id"] for r in rej if r["table"] == "images"}
    assert set(out.column("image_key").to_pylist()) | dropped == {min(f"{i}-{a['id']}" for a in by_img[i]) for i in by_img}
    assert stats.rows_in == len(rows) == stats.rows_out + sum(stats.rejected.values())
    assert stats.tables["synthetic_captions"]["rows_in"] == n_images
    assert "filter_vs_ground_truth" not in stats.counters  # not a sample run: no planted truth


# ------------------------------------------------------------------------- picture shards (no models)


def test_picture_shards_hold_every_row_once_and_every_picture_whole(tmp_path):
    """Phase 0 repartitions by picture: each row lands in one picture shard, each picture (sha256,
    else URL, else key) in one shard, rows in input order, and the image keys computed inside a
    shard are the smallest key of the picture over the whole input."""
    from curation import dask_cluster as cluster
    from pipelines.dask_capfilt import (
        by_picture_shard, image_keys_in, picture_id, plan_picture_shards, read_rows)

    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        pic = int(rng.integers(60))
        sha = None if pic % 7 == 0 else f"h{pic}"
        url = None if pic % 21 == 0 else f"http://x/{pic}.jpg"
        rows.append(dict(key=f"k{rng.integers(10**6):06d}-{i}", url=url, sha256=sha, caption=f"c{i}", image=b"x"))
    t = pa.Table.from_pylist(rows).select(["key", "url", "sha256", "caption", "image"])
    src = tmp_path / "pairs"
    src.mkdir()
    for j in range(3):
        part = t.slice(j * 100, 100)
        full = pa.table({f.name: part.column(f.name).cast(f.type) if f.name in part.column_names
                         else pa.nulls(part.num_rows, f.type) for f in SCORED_PAIRS}, schema=SCORED_PAIRS)
        pq.write_table(full, src / f"part-{j}.parquet", row_group_size=30)
    shards = cluster.plan_shards(str(src), 60, prefix="pairs-")
    n = len(shards)
    scattered = cluster.run_shards(None, lambda s, p, out: by_picture_shard(n, s, p, out), shards,
                                   str(tmp_path / "work"), progress=False)
    pshards = plan_picture_shards(shards, scattered, n)
    assert sum(p.rows for p in pshards) == 300 and len(pshards) > 1
    seen_keys, pic_home = [], {}
    want_ik = dict(zip(t.column("key").to_pylist(), image_keys_in(t.column("key").to_pylist(), t.column("url").to_pylist(),
                                                                  t.column("sha256").to_pylist())))
    order = {k: i for i, k in enumerate(t.column("key").to_pylist())}
    for p in pshards:
        got = read_rows(p, ["key", "url", "sha256"], SCORED_PAIRS)
        keys = got.column("key").to_pylist()
        assert [order[k] for k in keys] == sorted(order[k] for k in keys)  # input order inside a shard
        for k, u, h in zip(keys, got.column("url").to_pylist(), got.column("sha256").to_pylist()):
            assert pic_home.setdefault(picture_id(k, u, h), p.id) == p.id
        assert image_keys_in(keys, got.column("url").to_pylist(), got.column("sha256").to_pylist()) == \
            [want_ik[k] for k in keys]
        seen_keys += keys
    assert sorted(seen_keys) == sorted(t.column("key").to_pylist())


# ------------------------------------------------------------------------- the loop


@pytest.mark.slow
def test_bootstrap_loop_second_round_trains_on_capfilt_pairs(boot, sample_capfilt, tmp_path, capsys):
    from curation.cli import main

    run = boot["run"]
    overrides = [f"{k}={v}" for k, v in _overrides().items()]
    args = ["bootstrap", "--input", str(run), "--out", str(run), "--rounds", "2"]
    for o in overrides:
        args += ["--set", o]
    marker = (run / "capfilt" / "_STAGE_COMPLETE").read_text()
    assert main(args) == 0
    assert (run / "capfilt" / "_STAGE_COMPLETE").read_text() == marker  # pass 1 is the run's own capfilt
    summary = json.loads((run / "rounds" / "summary.json").read_text())
    assert [p["pass"] for p in summary["passes"]] == [1, 2]
    m1 = json.loads((run / "rounds" / "round-1" / "models" / "manifest.json").read_text())
    assert m1["round"] == 1 and m1["web_pairs"] == str(run / "capfilt" / "pairs") and "clip" not in m1["models"]
    st = json.loads((run / "rounds" / "round-1" / "capfilt" / "stats.json").read_text())
    assert st["rows_in"] == pq.read_table(run / "score" / "pairs").num_rows
    assert st["counters"]["caption_model"] == "bootstrap-round1/captioner"
    assert "CapFilt pass 2" in capsys.readouterr().out


# ------------------------------------------------------------------------- configuration


def test_capfilt_and_bootstrap_config_defaults_and_validation():
    real = PipelineConfig.load(overrides={"snapshot": "CC-MAIN-2024-10"})
    c = real.capfilt
    assert (c.captioner, c.filter) == ("Salesforce/blip-image-captioning-base", "Salesforce/blip-itm-base-coco")
    assert (c.num_captions, c.top_p, c.max_length, c.min_length, c.repetition_penalty, c.itm_threshold) == (
        1, 0.9, 30, 10, 1.1, 0.5)
    assert not uses_bootstrap_models(real)
    sample = PipelineConfig.load()
    assert (sample.score.pretrained, sample.capfilt.captioner, sample.capfilt.filter) == (BOOTSTRAP_MODELS,) * 3
    assert uses_bootstrap_models(sample) and sample.bootstrap.max_steps > 0
    from curation.registry import spec, stage_order

    assert stage_order().index("images") < stage_order().index("bootstrap") < stage_order().index("score") \
        < stage_order().index("capfilt")
    assert spec("bootstrap").when(sample) and not spec("bootstrap").when(real)
    for key, value, message in [("capfilt.itm_first_token", "sep", "itm_first_token"), ("capfilt.top_p", 0.0, "top_p"),
                                ("capfilt.min_length", 40, "min_length"), ("capfilt.itm_threshold", 1.5, "itm_threshold"),
                                ("capfilt.num_captions", -1, "num_captions"), ("bootstrap.rounds", 0, "rounds"),
                                ("capfilt.device", "tpu", "device"), ("bootstrap.epochs", 0, "epochs")]:
        with pytest.raises(ConfigError, match=message):
            PipelineConfig.load(overrides={key: value})


# ------------------------------------------------------------------------- Hugging Face ids offline


def test_offline_hugging_face_ids_fail_with_a_clear_error(boot, tmp_path):
    import subprocess
    import sys

    from tests.support.realdata import ROOT

    src = subset_source(boot, tmp_path / "src", np.arange(5))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "curation", "capfilt", "--input", str(src), "--out", str(src),
         "--set", "snapshot=CC-MAIN-2024-10", "--set", "dask.processes=false", "--set", "dask.n_workers=1"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "curate: error: could not load BlipForConditionalGeneration 'Salesforce/blip-image-captioning-base'" in proc.stderr
    assert "pass its path" in proc.stderr and not (src / "capfilt" / "_STAGE_COMPLETE").exists()


def test_loop_rounds_come_from_the_flag_or_from_bootstrap_rounds():
    import argparse

    from curation.errors import StageError
    from pipelines.bootstrap_loop import add_cli_arguments, loop_rounds

    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    cfg = PipelineConfig.load(overrides={"bootstrap.rounds": 3})
    assert loop_rounds(parser.parse_args([]), cfg) is None  # the bootstrap stage only
    assert loop_rounds(parser.parse_args(["--rounds"]), cfg) == 3  # the config's number
    assert loop_rounds(parser.parse_args(["--rounds", "2"]), cfg) == 2  # the flag wins
    for bad in ("0", "-1"):
        with pytest.raises(StageError, match="--rounds"):
            loop_rounds(parser.parse_args(["--rounds", bad]), cfg)
