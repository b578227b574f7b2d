"""``score.recipe`` on a small Dask run with a tiny CLIP: DataComp-1B's intersection, the text-based
filter and MetaCLIP's two passes each equal the single-process computation on the same scores,
embeddings and captions; every row conserved, reasons and per-step counts counted."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curation.config import PairFilterConfig, PipelineConfig
from curation.errors import ConfigError
from filters.image_based import target_cluster_ids
from filters.metaclip import MetadataMatcher, balance_decisions, entry_counts
from filters.pairs import PairView, basic_filters, run_filters, top_fraction_cutoff
from filters.text_based import SynsetWordMatcher, load_synset_words
from models.clip import load_clip
from models.kmeans import fit_kmeans, key_hashes
from pipelines.dask_score import load_embeddings

# The score tests' fixtures (the same tiny CLIP checkpoint and coco_mini), not a second copy of them.
from tests.pipelines.test_dask_score import all_rows, coco_dir, coco_inputs, config, run_stage, tiny_ckpt  # noqa: F401


def _verdicts(run: Path) -> dict[str, str | None]:
    pairs, rejects = all_rows(run)
    got: dict[str, str | None] = {k: None for k in pairs.column("key").to_pylist()}
    for r in rejects.to_pylist():
        assert r["table"] == "pairs" and r["row_id"] not in got
        got[r["row_id"]] = r["reason"]
    return got


def _pool(work_dir: str) -> tuple[list[str], np.ndarray]:
    """Every pair's key and clip_score, in stage row order, from the scoring pass's work files."""
    files = sorted(Path(work_dir, "pairs_scores").glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f, columns=["key", "clip_score"]) for f in files])
    return t.column("key").to_pylist(), t.column("clip_score").to_numpy().astype(np.float64)


def _check_counts(stats, got: dict, steps: list[str]) -> None:
    assert stats.conserved() and stats.rows_in == len(got) == 400
    assert stats.rejected == dict(Counter(r for r in got.values() if r))
    c = stats.counters["steps"]
    assert list(c) == steps
    for a, b in zip(steps, steps[1:]):
        assert c[b]["in"] == c[a]["in"] - c[a]["rejected"]
    assert c[steps[-1]]["in"] - c[steps[-1]]["rejected"] == stats.rows_out


def test_datacomp_1b_recipe_is_the_intersection(coco_dir, tiny_ckpt, tmp_path):
    """[basic, image_based, clip_top_fraction]: kept = basic ∩ image-based ∩ top 30% of the pool."""
    run = tmp_path / "run"
    data = coco_inputs(run, coco_dir)
    # Target images: 6 COCO photos encoded with the run's CLIP, as a .npy (what a user passes for ImageNet).
    clip = load_clip("vlc-tiny-clip", tiny_ckpt, "cpu")
    with torch.inference_mode():
        ims = [clip.preprocess(Image.open(coco_dir / "images" / im["file_name"])) for im in data["images"][::13]]
        targets = torch.nn.functional.normalize(clip.model.encode_image(torch.stack(ims)), dim=-1).numpy()
    np.save(tmp_path / "targets.npy", targets.astype(np.float32))
    cfg = config(run, model="vlc-tiny-clip", pretrained=tiny_ckpt, semantic_dedup=False, mmc4=False, keep_work=True,
                 recipe=["basic", "image_based", "clip_top_fraction"], top_fraction=0.3,
                 **{"image_based.targets": str(tmp_path / "targets.npy"), "image_based.clusters": 8,
                    "image_based.rows_per_cluster": 40})  # k = min(8, 400 / 40)
    stats = run_stage(run, cfg)
    got = _verdicts(run)

    # Single process, on the same scores and embeddings.
    keys, scores = _pool(stats.counters["work_dir"])
    emb = load_embeddings(str(run / "score")).astype(np.float32)  # the float16 vectors the workers read
    fin = np.isfinite(scores)  # the sample: every scored pair (400 < sample_size), in key-hash order
    order = np.argsort(key_hashes([k for k, f in zip(keys, fin) if f], 0), kind="stable")
    centroids = fit_kmeans(emb[fin][order], 8, seed=0, niter=20)
    in_target = np.isin(np.argmax(emb @ centroids.T, axis=1), target_cluster_ids(targets, centroids))
    cutoff = top_fraction_cutoff(scores, 0.3)  # over the pool: every scored pair, before any filter
    rules = basic_filters(PairFilterConfig())
    by_key = {p["key"]: p for p in data["pairs"]}
    expected = {}
    for i, k in enumerate(keys):
        p = by_key[k]
        expected[k] = (run_filters(rules, PairView(p["caption"], p["width"], p["height"]))
                       or (None if in_target[i] else "image_based")
                       or (None if scores[i] >= cutoff else "not_in_top_fraction"))
    assert got == expected
    kept = {k for k, r in got.items() if r is None}
    basic_ok = {k for k in keys if run_filters(rules, PairView(by_key[k]["caption"], by_key[k]["width"], by_key[k]["height"])) is None}
    assert kept == basic_ok & {k for i, k in enumerate(keys) if in_target[i]} & {k for i, k in enumerate(keys) if scores[i] >= cutoff}
    assert 0 < len(kept) < len(basic_ok)  # the test means something: both steps bite
    assert Counter(got.values())["image_based"] > 0 and Counter(got.values())["not_in_top_fraction"] > 0
    _check_counts(stats, got, ["image_based", "clip_top_fraction"])
    assert stats.counters["clip_score_cutoff"] == pytest.approx(cutoff, abs=1e-6)
    ib = stats.counters["image_based"]
    assert ib["clusters"] == 8 and ib["target_images"] == len(targets) and ib["sample_rows"] == ib["pool"] == 400
    assert stats.counters["recipe"] == ["basic", "image_based", "clip_top_fraction"]


def test_text_based_then_metaclip_without_basic(coco_dir, tiny_ckpt, tmp_path):
    """[text_based, metaclip]: no basic filter; MetaCLIP counts over the text-based survivors, two passes."""
    run = tmp_path / "run"
    data = coco_inputs(run, coco_dir)
    meta = ["man", "woman", "table", "street", "dog", "cat", "a ", "bus", "train", "pizza", "sitting", "people"]
    (tmp_path / "meta.txt").write_text("\n".join(meta) + "\n")
    cfg = config(run, model="vlc-tiny-clip", pretrained=tiny_ckpt, semantic_dedup=False, mmc4=False, keep_work=True,
                 recipe=["text_based", "metaclip"],
                 **{"metaclip.metadata": str(tmp_path / "meta.txt"), "metaclip.t": 5, "metaclip.seed": 7})
    stats = run_stage(run, cfg)
    got = _verdicts(run)

    keys, _ = _pool(stats.counters["work_dir"])
    by_key = {p["key"]: p for p in data["pairs"]}
    caps = [by_key[k]["caption"] for k in keys]
    text_ok = SynsetWordMatcher(load_synset_words(None)).matches(caps)
    survivors = [k for k, ok in zip(keys, text_ok) if ok]
    matcher = MetadataMatcher(meta)
    m = matcher.match([by_key[k]["caption"] for k in survivors])
    counts = entry_counts(m, len(meta))
    keep, why = balance_decisions(pa.array(survivors), m, counts, 5, 7)
    expected = {k: "text_based" for k, ok in zip(keys, text_ok) if not ok}
    expected.update({k: (None if keep[j] else why[j]) for j, k in enumerate(survivors)})
    assert got == expected
    assert not any(r and r.startswith("basic_filter") for r in got.values())  # basic is not in the recipe
    reasons = Counter(got.values())
    assert reasons["text_based"] > 0 and reasons["metaclip_balanced_out"] > 0
    _check_counts(stats, got, ["text_based", "metaclip"])
    mc = stats.counters["metaclip"]
    assert mc["candidates"] == len(survivors) and mc["entries"] == len(meta) and mc["t"] == 5
    assert mc["head_entries"] == int((counts > 5).sum())


def test_recipe_config_validation():
    base = {"out": "/tmp/x"}
    ok = PipelineConfig.load(overrides={**base, "score.recipe": ["basic", "image_based", "clip_top_fraction"],
                                        "score.image_based.targets": "t.npy"})
    assert ok.score.recipe == ["basic", "image_based", "clip_top_fraction"]
    assert PipelineConfig.load(overrides=base).score.recipe is None  # default: filter_mode as before
    # metaclip.metadata null: the shipped WordNet list (filters.metaclip.load_metadata(None)).
    assert PipelineConfig.load(overrides={**base, "score.recipe": ["metaclip"]}).score.metaclip.metadata is None
    for bad, msg in [
        (["text_based", "basic"], "first"),
        (["clip_threshold", "clip_top_fraction"], "pick one"),
        (["text_based", "text_based"], "twice"),
        (["laion"], "unknown"),
        (["image_based"], "image_based.targets"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            PipelineConfig.load(overrides={**base, "score.recipe": bad})


def test_image_based_targets_clean_is_the_runs_clean_set(tmp_path, coco_dir):
    """``image_based.targets: clean``: bootstrap.clean_data, else a sample run's _sample/clean; none is an error."""
    from curation.errors import StageError
    from curation.stage import StageContext
    from pipelines.dask_score import _clean_targets

    def context(config, stage_dir, inputs):  # the run root comes from the context (ctx.run_root)
        return StageContext(stage_dir, inputs, config, "run-1")

    run = tmp_path / "run"
    cfg = PipelineConfig.load(overrides={"out": str(run)})
    ctx = context(cfg, str(run / "score"), {})
    with pytest.raises(StageError, match="no clean set"):
        _clean_targets(ctx)
    (run / "_sample" / "clean").mkdir(parents=True)
    (run / "_sample" / "clean" / "captions.json").write_text("{}")
    assert _clean_targets(ctx) == str(run / "_sample" / "clean")
    # A score run into another folder (the experiment's recipe variants) uses its inputs' run.
    variant = context(cfg, str(tmp_path / "variant" / "score"), {"pairs": str(run / "images" / "pairs")})
    assert _clean_targets(variant) == str(run / "_sample" / "clean")
    cfg = PipelineConfig.load(overrides={"out": str(run), "bootstrap.clean_data": str(coco_dir / "captions_train2017.json")})
    assert _clean_targets(context(cfg, str(run / "score"), {})) == str(coco_dir)


def test_score_summary_from_shard_histograms_matches_numpy():
    """stats' clip_score mean (exact) and p10/p50/p90 (to the 0.001 bin) from per-shard sparse histograms."""
    from pipelines.dask_score import _score_summary, _scores_from_histograms

    rng = np.random.default_rng(3)
    shards = [np.clip(rng.normal(0.2, 0.1, n), -1, 1) for n in (500, 1, 0, 2000)]
    shards[1][0] = np.nan  # undecodable: not counted
    got = _scores_from_histograms([_score_summary(s) for s in shards])
    allv = np.concatenate(shards)
    allv = allv[np.isfinite(allv)]
    assert got["mean"] == pytest.approx(allv.mean(), abs=1e-4)
    for q in (10, 50, 90):
        assert got[f"p{q}"] == pytest.approx(np.percentile(allv, q), abs=2e-3)
    assert _scores_from_histograms([_score_summary(np.array([np.nan]))]) is None
