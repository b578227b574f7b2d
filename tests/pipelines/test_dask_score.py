"""``curate score`` end to end: real COCO images and captions, the sample's images, corrupt bytes,
filters, semantic dedup, decontamination, a killed worker, resume, and the offline hint."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curation.config import PairFilterConfig, PipelineConfig
from curation.schemas import IMAGE_PAIRS, IMAGES, INTERLEAVED, REJECTS, SCORED_PAIRS
from curation.stage import StageRunner
from filters.pairs import PairView, basic_filters, run_filters, top_fraction_cutoff
from models.assignment import assign
from models.clip import load_clip
from models.mmc4 import split_sentences
from pipelines.dask_score import MMC4_DOCUMENTS, ScoreStage, load_embeddings

from tests.support.realdata import ROOT, realdata_path
from tests.support.stages import mark_complete
from tests.support.models import tiny_clip_checkpoint

INPUTS = ("pairs", "documents", "images")


# ------------------------------------------------------------------------- fixtures in the image stage's schemas


def write_inputs(run: Path, pairs: list[dict], images: list[dict] | None, docs: list[dict],
                 n_files: int = 2, row_group_size: int = 100) -> None:
    """Parquet as the image stage writes it: <run>/images/{pairs,documents,images}/, marked complete."""
    tables = [("pairs", pairs, IMAGE_PAIRS), ("documents", docs, INTERLEAVED)]
    if images is not None:
        tables.append(("images", images, IMAGES))
    for name, rows, schema in tables:
        d = run / "images" / name
        d.mkdir(parents=True, exist_ok=True)
        t = pa.Table.from_pylist(rows, schema=schema)
        k = -(-t.num_rows // n_files)
        for i in range(n_files):
            pq.write_table(t.slice(i * k, k), d / f"part-{i:05d}.parquet", row_group_size=row_group_size)
    mark_complete(run / "images")


def coco_inputs(run: Path, coco: Path, row_group_size: int = 100) -> dict:
    """80 COCO images: 400 pairs (one per caption), the images table, 10 documents of captions + images."""
    caps = json.loads((coco / "captions_train2017.json").read_text())
    images = sorted(caps["images"], key=lambda r: r["id"])
    by_img: dict[int, list[dict]] = {}
    for a in sorted(caps["annotations"], key=lambda a: a["id"]):
        by_img.setdefault(a["image_id"], []).append(a)
    pairs, table, docs = [], [], []
    for im in images:
        data = (coco / "images" / im["file_name"]).read_bytes()
        row = dict(url=f"http://images.cocodataset.org/train2017/{im['file_name']}", image=data,
                   width=im["width"], height=im["height"], sha256=hashlib.sha256(data).hexdigest())
        table.append(dict(row, format="jpeg", phash=None))
        for a in by_img[im["id"]]:
            pairs.append(dict(row, key=f"{im['id']}-{a['id']}", caption=a["caption"], caption_source="alt",
                              page_url=f"http://page/{im['id']}", doc_id=f"d{im['id'] % 10}"))
    for d in range(10):
        texts, urls, blobs = [], [], []
        for im in (im for im in images if im["id"] % 10 == d):
            texts += [" ".join(a["caption"].strip().rstrip(".") + "." for a in by_img[im["id"]][:2]), None]
            urls += [None, f"http://images.cocodataset.org/train2017/{im['file_name']}"]
            blobs += [None, (coco / "images" / im["file_name"]).read_bytes()]
        docs.append(dict(doc_id=f"d{d}", url=f"http://doc/{d}", texts=texts, images=urls, metadata="[]",
                         general_metadata="{}", lang="en", lang_score=0.9, image_bytes=blobs))
    write_inputs(run, pairs, table, docs, row_group_size=row_group_size)
    return {"pairs": pairs, "images": images, "docs": docs, "by_img": by_img}


def config(out: Path, **score) -> PipelineConfig:
    overrides = {"out": str(out), "dask.processes": False, "dask.n_workers": 1, "score.shard_rows": 100}
    overrides.update({f"score.{k}": v for k, v in score.items()})
    return PipelineConfig.load(overrides=overrides)


def run_stage(run: Path, cfg: PipelineConfig):
    return StageRunner(str(run), cfg).run(ScoreStage(), {k: str(run / "images" / k) for k in INPUTS})


def all_rows(run: Path) -> tuple[pa.Table, pa.Table]:
    return pq.read_table(run / "score" / "pairs"), pq.read_table(run / "score" / "rejects")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return tiny_clip_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=321)


@pytest.fixture(scope="module")
def coco_dir():
    return realdata_path("coco_mini")


@pytest.fixture(scope="module")
def coco_plain(tmp_path_factory, coco_dir, tiny_ckpt):
    """The score stage on COCO with no filter of any kind: every pair kept with its score."""
    run = tmp_path_factory.mktemp("coco_plain")
    data = coco_inputs(run, coco_dir)
    cfg = config(run, model="vlc-tiny-clip", pretrained=tiny_ckpt, filter_mode="none", semantic_dedup=False,
                 mmc4_min_sim=-1.0, **{"filters.enabled": False})
    stats = run_stage(run, cfg)
    return run, data, stats


# ------------------------------------------------------------------------- COCO: scores equal direct open_clip calls


def test_coco_scores_match_direct_open_clip_and_are_computed_once(coco_plain, coco_dir, tiny_ckpt):
    run, data, stats = coco_plain
    pairs, rejects = all_rows(run)
    assert pairs.schema == SCORED_PAIRS and rejects.num_rows == 0  # no filter: nothing rejected anywhere
    keys = pairs.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 400 and set(keys) == {p["key"] for p in data["pairs"]}
    assert stats.rows_in == stats.rows_out == 400 and stats.conserved()
    # Each of the 80 images went through the image tower exactly once (pairs and documents reuse it).
    c = stats.counters
    assert c["images_encoded"] == 80 and c["pair_images_encoded_from_pair_bytes"] == 0
    assert c["images_looked_up"] == 400 + 80 and "warning" not in c

    clip = load_clip("vlc-tiny-clip", tiny_ckpt, "cpu")
    by_key = {p["key"]: p for p in data["pairs"]}
    got = dict(zip(keys, pairs.column("clip_score").to_pylist()))
    with torch.inference_mode():
        files = [(im["id"], coco_dir / "images" / im["file_name"]) for im in data["images"]]
        img = {i: torch.nn.functional.normalize(clip.model.encode_image(clip.preprocess(Image.open(f)).unsqueeze(0)), dim=-1)[0]
               for i, f in files}
        caps = [by_key[k]["caption"] for k in keys]
        txt = torch.nn.functional.normalize(clip.model.encode_text(clip.tokenizer(caps)), dim=-1)
    direct = np.array([float(img[int(k.split("-")[0])] @ txt[i]) for i, k in enumerate(keys)])
    np.testing.assert_allclose([got[k] for k in keys], direct, atol=1e-3)
    assert np.abs(np.array([got[k] for k in keys]) - direct).max() < 1e-4  # in fact much closer

    # float16 embeddings found through embedding_row reproduce the score.
    rows = pairs.column("embedding_row").to_numpy()
    ie = load_embeddings(str(run / "score"), rows, "image").astype(np.float32)
    te = load_embeddings(str(run / "score"), rows, "text").astype(np.float32)
    assert ie.dtype == np.float32 and load_embeddings(str(run / "score"), rows[:3]).dtype == np.float16
    np.testing.assert_allclose(np.einsum("ij,ij->i", ie, te), direct, atol=3e-3)
    np.testing.assert_allclose(np.linalg.norm(ie, axis=1), 1.0, atol=2e-3)
    assert load_embeddings(str(run / "score")).shape == (400, ie.shape[1])


def test_coco_mmc4_documents(coco_plain, tiny_ckpt):
    run, data, stats = coco_plain
    docs = pq.read_table(run / "score" / "mmc4")
    assert docs.schema == MMC4_DOCUMENTS and docs.num_rows == 10
    assert stats.tables["documents"] == {"rows_in": 10, "rows_out": 10, "rejected": {}}
    assert stats.tables["document_images"]["rows_in"] == stats.tables["document_images"]["rows_out"] == 80
    from models.scoring import ClipScorer

    sc = ClipScorer(load_clip("vlc-tiny-clip", tiny_ckpt, "cpu"))
    src = {d["doc_id"]: d for d in data["docs"]}
    for doc in docs.to_pylist():
        ref = src[doc["doc_id"]]
        sents = split_sentences("\n".join(t for t in ref["texts"] if t))
        assert doc["text_list"] == sents and doc["url"] == ref["url"]
        blobs = [b for b in ref["image_bytes"] if b is not None]
        sim = sc.encode_images(blobs).embeddings @ sc.encode_texts(sents).T
        np.testing.assert_allclose(np.array(doc["similarity_matrix"]), sim, atol=1e-3)
        assert [im["matched_text_index"] for im in doc["image_info"]] == assign(sim, min_sim=-1.0)
        assert len(doc["image_info"]) <= len(sents)  # images <= sentences: one to one
        assert len({im["matched_text_index"] for im in doc["image_info"]}) == len(doc["image_info"])


# ------------------------------------------------------------------------- filters, semantic dedup, decontamination


def test_coco_top_fraction_semantic_dedup_and_decontamination(coco_plain, coco_dir, tiny_ckpt, tmp_path):
    plain_run, data, _ = coco_plain
    plain = pq.read_table(plain_run / "score" / "pairs").to_pylist()
    score = {p["key"]: p["clip_score"] for p in plain}
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    eval_ids = [im["id"] for im in data["images"][:5]]
    for im in data["images"][:5]:
        shutil.copy(coco_dir / "images" / im["file_name"], eval_dir / im["file_name"])
    run = tmp_path / "run"
    coco_inputs(run, coco_dir)
    # 0.9995: identical images only (distinct COCO photos stay below 0.998 with this model).
    cfg = config(run, model="vlc-tiny-clip", pretrained=tiny_ckpt, filter_mode="top_fraction", top_fraction=0.5,
                 semantic_dedup=True, semantic_dedup_threshold=0.9995, decontaminate_eval=str(eval_dir),
                 decontaminate_threshold=0.9995, mmc4=False)
    stats = run_stage(run, cfg)

    # Expected verdicts, in the stage's order of precedence.
    rules = basic_filters(PairFilterConfig())
    cutoff = top_fraction_cutoff(np.array(list(score.values())), 0.5)
    expected: dict[str, str | None] = {}
    for p in data["pairs"]:
        image_id = int(p["key"].split("-")[0])
        if image_id in eval_ids:
            expected[p["key"]] = "decontaminated"
        else:
            expected[p["key"]] = run_filters(rules, PairView(p["caption"], p["width"], p["height"])) or (
                "not_in_top_fraction" if score[p["key"]] < cutoff else None)
    survivors: dict[int, list[str]] = {}
    for k, r in expected.items():
        if r is None:
            survivors.setdefault(int(k.split("-")[0]), []).append(k)
    winner = {}
    for image_id, ks in survivors.items():
        best = max(ks, key=lambda k: score[k])
        for k in ks:
            winner[k] = best
            if k != best:
                expected[k] = "semantic_duplicate"

    pairs, rejects = all_rows(run)
    got = {k: None for k in pairs.column("key").to_pylist()}
    dup_of = {}
    for r in rejects.to_pylist():
        assert r["row_id"] not in got and r["table"] == "pairs" and r["stage"] == "score"
        got[r["row_id"]] = r["reason"]
        dup_of[r["row_id"]] = r["duplicate_of"]
    assert len(got) == 400 == len(pairs) + len(rejects)
    assert got == expected
    assert all(dup_of[k] == winner[k] for k, r in got.items() if r == "semantic_duplicate")
    assert Counter(got.values())["decontaminated"] == 25
    assert stats.rejected == dict(Counter(r for r in expected.values() if r))
    assert stats.counters["clip_score_cutoff"] == pytest.approx(cutoff, abs=1e-6)
    assert rejects.schema == REJECTS


# ------------------------------------------------------------------------- the sample's images, corrupt bytes


@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory):
    """Pairs and documents from the sample generator's images and alt texts, plus corrupt images."""
    from curation.sample import generate_sample

    base = tmp_path_factory.mktemp("sample")
    generate_sample(str(base / "s"), n_pages=20)
    truth = base / "s" / "ground_truth"
    files = {r["url"]: r for r in map(json.loads, (truth / "images.jsonl").open())}
    alts = [r for r in map(json.loads, (truth / "alt_texts.jsonl").open()) if r["alt"] and r["image_url"] in files]
    pages = {r["url"]: r for r in map(json.loads, (truth / "pages.jsonl").open()) if r.get("article_text")}

    def blob(url):
        return (base / "s" / files[url]["file"]).read_bytes()

    pairs = []
    for i, a in enumerate(alts):
        f = files[a["image_url"]]
        pairs.append(dict(key=f"p{i}", url=a["image_url"], caption=a["alt"], caption_source="alt", page_url=a["page_url"],
                          doc_id=a["page_url"], image=blob(a["image_url"]), width=f["width"], height=f["height"], sha256=None))
    good = pairs[0]["image"]
    corrupt = [("bad-truncated", good[: len(good) // 3]), ("bad-garbage", b"\x00garbage" * 10), ("bad-null", None)]
    for key, data in corrupt:
        pairs.append(dict(pairs[0], key=key, url=f"http://x/{key}.jpg", image=data))
    docs = []
    with_images = [u for u in pages if any(a["page_url"] == u and a["role"] == "content" for a in alts)]
    for url in with_images[:6]:
        page = pages[url]
        imgs = [a for a in alts if a["page_url"] == url and a["role"] == "content"]
        texts, urls, blobs = [page["article_text"]], [None], [None]
        for a in imgs:
            texts.append(None), urls.append(a["image_url"]), blobs.append(blob(a["image_url"]))
        docs.append(dict(doc_id=f"doc{len(docs)}", url=url, texts=texts, images=urls, metadata="[]",
                         general_metadata="{}", lang="en", lang_score=1.0, image_bytes=blobs))
    docs[0]["texts"].append(None), docs[0]["images"].append("http://x/broken.png"), docs[0]["image_bytes"].append(b"PNG?")
    docs.append(dict(docs[1], doc_id="doc-no-text", texts=[None] * len(docs[1]["texts"])))
    return base, pairs, docs, corrupt


def test_sample_defaults_corrupt_images_counted_not_fatal(sample_inputs, tmp_path):
    _, pairs, docs, corrupt = sample_inputs
    run = tmp_path / "run"
    write_inputs(run, pairs, None, docs, n_files=1)  # no images table: pairs decode their own bytes
    # Random weights (the sample's default is the CLIP its bootstrap stage trains; none here).
    cfg = PipelineConfig.load(overrides={"out": str(run), "dask.processes": False, "dask.n_workers": 1,
                                         "score.pretrained": None})
    # The sample's documented defaults: tiny CLIP, no score filter, no semantic dedup.
    assert (cfg.score.model, cfg.score.pretrained, cfg.score.filter_mode, cfg.score.semantic_dedup) == (
        "vlc-tiny-clip", None, "none", False)
    stats = run_stage(run, cfg)
    assert "RANDOM weights" in stats.counters["warning"] and "meaningless" in stats.counters["warning"]
    assert json.loads((run / "score" / "stats.json").read_text())["counters"]["warning"] == stats.counters["warning"]
    out, rejects = all_rows(run)
    reasons = {r["row_id"]: r["reason"] for r in rejects.to_pylist() if r["table"] == "pairs"}
    assert reasons["bad-truncated"] == reasons["bad-garbage"] == "undecodable"
    assert reasons["bad-null"] == "no_image_bytes"
    assert not any(r in ("clip_score_below_threshold", "not_in_top_fraction") for r in reasons.values())
    assert stats.rows_in == len(pairs) == len(out) + len(reasons) and stats.conserved()
    assert stats.counters["pair_images_encoded_from_pair_bytes"] == len(pairs)
    doc_rej = {(r["table"], r["row_id"]): r["reason"] for r in rejects.to_pylist() if r["table"] != "pairs"}
    assert doc_rej[("document_images", f"doc0-{len(docs[0]['images']) - 1}")] == "undecodable"
    assert doc_rej[("documents", "doc-no-text")] == "no_sentences"
    t = stats.tables
    assert t["documents"]["rows_in"] == len(docs) and t["documents"]["rejected"] == {"no_sentences": 1}
    n_imgs = sum(u is not None for d in docs for u in d["images"])
    assert t["document_images"]["rows_in"] == n_imgs
    assert t["document_images"]["rejected"]["undecodable"] == 1
    # mmc4_min_sim is -1 on the sample: with random weights no image is dropped for its similarity.
    assert "below_min_sim" not in t["document_images"]["rejected"]
    assert t["images"] == {"rows_in": 0, "rows_out": 0, "rejected": {}}
    mm = pq.read_table(run / "score" / "mmc4").to_pylist()
    assert len(mm) == len(docs) - 1 and all(d["image_info"] for d in mm)
    assert not (run / "_work").exists() or not list((run / "_work").iterdir())  # work dir cleaned up


def test_resume_skips_finished_shards_after_a_crash(sample_inputs, tmp_path, monkeypatch):
    _, pairs, docs, _ = sample_inputs
    run = tmp_path / "run"
    write_inputs(run, pairs, None, docs, n_files=2, row_group_size=10)
    cfg = PipelineConfig.load(overrides={"out": str(run), "dask.processes": False, "dask.n_workers": 1,
                                         "score.shard_rows": 10, "score.pretrained": None})
    import pipelines.dask_score as ds

    def crash(*args, **kwargs):
        raise RuntimeError("driver died before the global decisions")

    monkeypatch.setattr(ds.ScoreStage, "_decide", crash)
    with pytest.raises(RuntimeError, match="driver died"):
        run_stage(run, cfg)
    monkeypatch.undo()
    assert not (run / "score" / "_STAGE_COMPLETE").exists()
    done = {p: p.stat().st_mtime_ns for p in run.glob("_work/score-*/_done/*.json")}
    assert len(done) >= 4
    stats = run_stage(run, cfg)  # the runner deletes score/ (no marker); the work dir survives
    assert stats.conserved() and stats.rows_in == len(pairs)
    assert not list(run.glob("_work/score-*/_done/*.json"))  # cleaned after success
    # Nothing was recomputed: the done markers had not been rewritten when the rerun finished them.
    assert stats.counters["shards_skipped"] == len(done)


# ------------------------------------------------------------------------- a killed worker process


@pytest.mark.slow
def test_killed_worker_loses_and_duplicates_no_row(coco_plain, coco_dir, tiny_ckpt, tmp_path):
    from distributed import Client, LocalCluster

    plain_run, data, _ = coco_plain
    want = {p["key"]: p["clip_score"] for p in pq.read_table(plain_run / "score" / "pairs").to_pylist()}
    run = tmp_path / "run"
    coco_inputs(run, coco_dir, row_group_size=20)
    killed: list[int] = []
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, memory_limit="3GiB",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        cfg = config(run, model="vlc-tiny-clip", pretrained=tiny_ckpt, filter_mode="none", semantic_dedup=False,
                     shard_rows=20, mmc4=False, **{"filters.enabled": False})
        cfg.dask.scheduler = cluster.scheduler_address

        def killer():
            deadline = time.time() + 120
            while time.time() < deadline:
                done = glob.glob(str(run / "_work" / "score-*" / "_done" / "*.json"))
                if done:  # the first shard finished, 30 are left: kill a worker mid-run
                    victim = sorted(pids.values())[0]
                    os.kill(victim, signal.SIGKILL)
                    killed.append((victim, len(done)))
                    return
                time.sleep(0.05)

        t = threading.Thread(target=killer)
        t.start()
        stats = run_stage(run, cfg)
        t.join()
        after = set(client.run(os.getpid).values())
    assert killed, "no worker was killed"
    victim, n_done = killed[0]
    assert victim not in after and n_done < 4 + 20  # killed while most shards were still to do
    pairs, rejects = all_rows(run)
    keys = pairs.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 400 and rejects.num_rows == 0 and stats.conserved()
    got = dict(zip(keys, pairs.column("clip_score").to_pylist()))
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), atol=1e-5)
    assert stats.counters["images_encoded"] >= 80


# ------------------------------------------------------------------------- offline with a remote tag


@pytest.mark.slow
def test_offline_remote_tag_fails_with_the_local_checkpoint_hint(sample_inputs, tmp_path):
    _, pairs, docs, _ = sample_inputs
    run = tmp_path / "run"
    write_inputs(run, pairs[:4], None, docs[:1], n_files=1)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "curation", "score", "--input", str(run), "--out", str(run),
         "--set", "score.model=ViT-B-32", "--set", "score.pretrained=laion2b_s34b_b79k",
         "--set", "dask.processes=false", "--set", "dask.n_workers=1"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "curate: error: could not fetch pretrained weights ViT-B-32/laion2b_s34b_b79k" in proc.stderr
    assert "score.pretrained=/models/ViT-B-32/open_clip_model.safetensors" in proc.stderr
    assert not (run / "score" / "_STAGE_COMPLETE").exists()


# ------------------------------------------------------------------------- configuration


def test_score_config_defaults_and_validation():
    from curation.errors import ConfigError

    real = PipelineConfig.load(overrides={"snapshot": "CC-MAIN-2024-10"}).score
    assert (real.model, real.pretrained, real.filter_mode, real.min_clip_score) == ("ViT-B-32", "laion2b_s34b_b79k", "threshold", 0.28)
    assert real.semantic_dedup and real.mmc4_min_sim == 0.15
    # Sample defaults fill only what the user left unset.
    sample = PipelineConfig.load(overrides={"score.filter_mode": "top_fraction", "score.pretrained": "/ckpt.pt"}).score
    assert (sample.model, sample.pretrained, sample.filter_mode) == ("vlc-tiny-clip", "/ckpt.pt", "top_fraction")
    for key, value, message in [("score.filter_mode", "top", "filter_mode"), ("score.device", "tpu", "device"),
                                ("score.top_fraction", 0.0, "top_fraction"), ("dask.n_workers", 0, "n_workers"),
                                ("score.semantic_dedup_threshold", 1.5, "semantic_dedup_threshold")]:
        with pytest.raises(ConfigError, match=message):
            PipelineConfig.load(overrides={key: value})


def test_worker_scorer_loads_once_per_spec(tiny_ckpt):
    """The Dask glue lives in the stage: one ClipScorer per worker process and model spec."""
    from curation.dask_cluster import SETUP_COUNTS, clear_setup_cache
    from models.scoring import ModelSpec
    from pipelines.dask_score import WorkerSpec

    clear_setup_cache()
    spec = WorkerSpec(ModelSpec("vlc-tiny-clip", tiny_ckpt, "cpu"), 8, 1, PairFilterConfig(), 0.15, None, 0.9)
    assert spec.scorer() is spec.scorer()
    assert spec.scorer().clip.device == "cpu" and spec.scorer().batch_size == 8
    assert sum(SETUP_COUNTS.values()) == 1


# ------------------------------------------------------------------------- the stage toolkit (curation/dask_stage.py)


def _ctx(tmp_path: Path, **score) -> "StageContext":
    from curation.stage import StageContext

    cfg = config(tmp_path / "run", **score)
    return StageContext(str(tmp_path / "run" / "score"), {k: str(tmp_path / "run" / "images" / k) for k in INPUTS},
                        cfg, "run-1")


def test_score_is_a_dask_stage_with_declared_resources(tmp_path):
    from curation.dask_stage import DaskStage, Resources

    stage = ScoreStage()
    assert isinstance(stage, DaskStage) and "run" not in vars(ScoreStage)  # the base's run
    assert stage.resources_for(_ctx(tmp_path, device="cpu")) == Resources(cpus=1.0, memory_gb=2.0)
    assert stage.resources_for(_ctx(tmp_path, device="cuda")).gpus == 1.0
    assert set(stage.output_schemas) == {"pairs", "mmc4", "images"}  # + rejects, filled empty by the base


def test_score_work_key_is_the_one_before_the_toolkit(tmp_path):
    """A ``_work/score-*`` written before ScoreStage moved onto DaskStage must still be found and resumed
    (and pipelines/experiment.py's score_variant copies it): the key is exactly the old inline one."""
    from dataclasses import asdict

    from curation.dask_cluster import work_dir_for
    from models.safety_heads import HeadPaths
    from pipelines.dask_score import ScorePlan

    ctx = _ctx(tmp_path, pretrained="/ckpt.pt", recipe=["basic", "clip_top_fraction"])
    cfg = ctx.config.score
    heads = HeadPaths(None, None, "no head")
    filters = PairFilterConfig(enabled=True)
    key = ScoreStage().work_key(ctx, ScorePlan(cfg, filters, heads, {}))
    safety = ctx.config.safety
    old = {"model": [cfg.model, cfg.pretrained, cfg.seed], "filters": asdict(filters), "mmc4_min_sim": cfg.mmc4_min_sim,
           "decontaminate": [cfg.decontaminate_eval, cfg.decontaminate_threshold], "shard_rows": cfg.shard_rows,
           "inputs": ctx.input_run_ids,
           "safety": [None, None, safety.max_nsfw, safety.min_aesthetic, safety.faces], "images_table": 1}
    assert key == old
    assert work_dir_for(ctx.run_root, "score", key) == work_dir_for(str(tmp_path / "run"), "score", old)


def test_setup_loads_the_scorer_once_and_the_spec_is_a_cache_key(tiny_ckpt):
    from curation.dask_cluster import SETUP_COUNTS, clear_setup_cache
    from curation.dask_stage import worker_models
    from models.scoring import ModelSpec
    from pipelines.dask_score import WorkerSpec

    clear_setup_cache()
    spec = WorkerSpec(ModelSpec("vlc-tiny-clip", tiny_ckpt, "cpu"), 8, 1, PairFilterConfig(), 0.15, None, 0.9)
    same = WorkerSpec(ModelSpec("vlc-tiny-clip", tiny_ckpt, "cpu"), 8, 1, PairFilterConfig(), 0.15, None, 0.9)
    assert hash(spec) == hash(same) and spec == same
    stage = ScoreStage()
    models = worker_models(stage, spec)
    assert worker_models(stage, same) is models and models.scorer is spec.scorer()
    assert stage.preflight_info(spec, models) == {"embedding_dim": spec.scorer().dim}
    assert SETUP_COUNTS[("dask-stage", "score", spec)] == 1
