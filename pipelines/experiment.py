"""``make experiment``: what each curation step buys, measured on the embedded sample.

BLIP's Table 1 and DataComp's baseline table in miniature. The sample is curated once (``curate
run``: extract, dedup, images, the bootstrap stage's round-0 models, score, CapFilt), then one
dataset per row is made from it:

==================  ===========================================================================
raw                 ``images/pairs``: every web pair with a fetched image
basic filters       ``score/pairs``: DataComp's basic filter (English, > 2 words, > 5 characters,
                    shorter side >= 200, aspect <= 3); every row below starts from it
CLIP score top 30%  the basic-filtered pairs with the highest ``clip_score`` (round-0 CLIP), 30%
random 30%          as many basic-filtered pairs as the top 30%, drawn by a hash of the key: the
                    size control that separates "the CLIP score picks badly" from "30% is too few"
filter only         CapFilt with no synthetic captions (``capfilt.num_captions=0``)
captioner only      web + synthetic captions, nothing filtered (``filter_web/filter_synthetic=false``)
CapFilt             the run's ``capfilt`` stage: web + synthetic captions, both filtered
CapFilt round 2     ``curate bootstrap --rounds 2``: a new BLIP pretrained on CapFilt's pairs and
                    fine-tuned on the clean set again rewrites the basic-filtered pairs
text-based          ``score.recipe: [basic, text_based]``: captions naming an ImageNet-21k synset word
image-based         ``[basic, image_based]``: images in the k-means cluster of some target picture
                    (targets: the run's clean human-captioned pictures, the sample's ImageNet)
image ∩ CLIP 30%    ``[basic, image_based, clip_top_fraction]``: DataComp-1B's recipe
MetaCLIP            ``[basic, metaclip]``: WordNet metadata matched in captions, balanced with ``t``
MetaCLIP + CapFilt  the run's CapFilt on the MetaCLIP-balanced pairs
==================  ===========================================================================

The recipe rows rerun only the score stage's decision pass (``score_variant``) on the run's kept
per-shard CLIP work, so they cost seconds, not a second scoring.

Same model (``--model``, default ``vlc-micro-clip``), same budget (``--steps`` x ``--batch-size``
samples, whatever the dataset's size: DataComp's fixed compute), same held-out evaluation, three
training seeds. Held out: 20% of the sample's content pictures (by a hash of the picture's URL path; a
srcset variant follows its original), evaluated with their ground-truth captions; every row of a
training set showing a held-out picture is removed, and the evaluation drops any picture whose
sha256 occurs in that row's training data (models/evaluate.py). The round-0 curation models
(bootstrap stage) were trained on all web pairs, held-out pictures' noisy captions included; the
CLIPs evaluated here never see a held-out picture.

Columns: pairs (training pairs after the held-out split), estimated noise rate against the
planted ground truth (pipelines/sample_truth.py: a kept web caption is noise when its alt text was
planted wrong/boilerplate or its figcaption is a credit/generic one; a synthetic caption is noise
unless it names the picture's true colour and shape and no other), image->text and text->image
recall@1/5 on the held-out pictures, zero-shot accuracy (mean over the shape and colour groups,
"a photo of a {c}." templates). Mean and spread (sample standard deviation) over the seeds; the
spread covers the CLIP's training seed, not the curation's (the datasets are built once, seed 0).

Writes ``<out>/experiment.md`` and ``<out>/experiment.json`` and prints the table. Resumable: the
pipeline run, the variants and each trained CLIP are skipped when already complete.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("experiment")

ROWS = [
    ("raw", "raw pairs"),
    ("basic", "basic filters"),
    ("clip30", "CLIP score (top 30%)"),
    ("random30", "random 30% (size control)"),
    ("filter_only", "filter only"),
    ("captioner_only", "captioner only"),
    ("capfilt", "captioner + filter (CapFilt)"),
    ("capfilt_r2", "CapFilt, second round"),
    ("text_based", "text-based (DataComp)"),
    ("image_based", "image-based (DataComp)"),
    ("image_clip30", "image-based ∩ CLIP top 30% (DataComp-1B)"),
    ("metaclip", "MetaCLIP-balanced"),
    ("metaclip_capfilt", "MetaCLIP-balanced + CapFilt"),
]
# The recipe rows (issue 16), each a score-stage recipe on the same run (docs/recipes.md). The
# image-based targets are the run's clean human-captioned pictures (the sample's stand-in for
# ImageNet). Two settings are fixed here from the pool's size and counts alone, before any model
# is trained on a row (docs/benchmarks.md): DataComp's 128 pool rows per cluster gives the ~480
# sample pairs 4 clusters, which the clean pictures all hit (the step would keep everything), so
# the experiment uses 16 rows per cluster (~30 clusters); METACLIP_T sub-samples only the head
# entries of the sample's WordNet matches (function words and colour words).
IMAGE_BASED_ROWS_PER_CLUSTER = 16
METACLIP_T = 20
_IMAGE_BASED = {"score.image_based.targets": "clean", "score.image_based.rows_per_cluster": IMAGE_BASED_ROWS_PER_CLUSTER}
SCORE_RECIPES: dict[str, dict[str, Any]] = {
    "text_based": {"score.recipe": ["basic", "text_based"]},
    "image_based": {"score.recipe": ["basic", "image_based"], **_IMAGE_BASED},
    "image_clip30": {"score.recipe": ["basic", "image_based", "clip_top_fraction"], **_IMAGE_BASED,
                     "score.top_fraction": 0.3},
    "metaclip": {"score.recipe": ["basic", "metaclip"], "score.metaclip.t": METACLIP_T},
}
RECIPE_ROWS = (*SCORE_RECIPES, "metaclip_capfilt")
HELD_OUT_PERCENT = 20
CLIP_TOP_FRACTION = 0.3


def held_out(url: str) -> bool:
    """Whether a picture is held out: by a hash of its URL's path (not the sample server's port)."""
    from urllib.parse import urlsplit

    return int(hashlib.sha256(urlsplit(url).path.encode()).hexdigest()[:8], 16) % 100 < HELD_OUT_PERCENT


# The sample's image URLs (and so its pages' bytes, WARC offsets, pair keys and every hash-seeded
# decision downstream) contain the image server's port: a run on another port curates other
# datasets. A fixed default makes two fresh runs of ``make experiment`` curate the same data.
DEFAULT_PORT = 18417


def _check_port_free(port: int) -> None:
    from curation.errors import ConfigError

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(f"experiment: port {port} for the sample's images is busy ({exc}); stop the other run or "
                              "pass --port N (a different port curates different data: compare runs on one port)") from None


# --------------------------------------------------------------------------- the curated datasets


def curate(out: Path, pages: int, overrides: dict[str, Any], port: int = DEFAULT_PORT):
    """The sample curated by ``curate run`` (skipped stage by stage when complete), the two CapFilt
    variants and the second CapFilt round."""
    from curation.config import PipelineConfig
    from curation.pipeline import run_all
    from curation.stage import StageRunner
    from models.resolve import models_dir_of
    from pipelines.bootstrap_loop import run_loop
    from pipelines.dask_capfilt import CapFiltStage

    run = out / "run"
    port_file = out / "sample_image_port"
    out.mkdir(parents=True, exist_ok=True)
    if not port_file.is_file():  # the port is written into the sample's image URLs: keep it across reruns
        port_file.write_text(str(port))
    if not (run / "images" / "_STAGE_COMPLETE").exists():  # the fetch still needs the port
        _check_port_free(int(port_file.read_text()))
    # score keeps its per-shard work (embeddings, scores) so the recipe variants below redo only
    # their decision pass, not the CLIP.
    base = {"snapshot": "sample", "out": str(run), "sample_pages": pages,
            "sample_image_port": int(port_file.read_text()), "score.keep_work": True, **overrides}
    cfg = PipelineConfig.load(overrides=base)
    run_all(cfg)
    inputs = {"pairs": f"{run}/score/pairs", "models": models_dir_of(str(run))}
    variants = {
        "filter_only": replace(cfg.capfilt, num_captions=0),
        "captioner_only": replace(cfg.capfilt, filter_web=False, filter_synthetic=False),
    }
    paths = {"raw": run / "images" / "pairs", "basic": run / "score" / "pairs", "capfilt": run / "capfilt" / "pairs"}
    for name, cc in variants.items():
        StageRunner(str(out / "variants" / name), replace(cfg, capfilt=cc)).run(CapFiltStage(), inputs)
        paths[name] = out / "variants" / name / "capfilt" / "pairs"
    for name, recipe in SCORE_RECIPES.items():
        paths[name] = score_variant(out / "variants" / name, run, PipelineConfig.load(overrides={**base, **recipe}))
    # MetaCLIP's balanced pool, then the run's CapFilt on it (same models, same settings).
    mc = out / "variants" / "metaclip_capfilt"
    StageRunner(str(mc), cfg).run(CapFiltStage(), {**inputs, "pairs": str(paths["metaclip"])})
    paths["metaclip_capfilt"] = mc / "capfilt" / "pairs"
    summary = run_loop(cfg, str(run), str(run), rounds=2)
    paths["capfilt_r2"] = Path(summary["final_pairs"])
    return cfg, run, paths


def score_variant(variant: Path, run: Path, cfg) -> Path:
    """The score stage again with another recipe, on the run's images-stage outputs.

    The run's per-shard score work (``<run>/_work/score-*``: CLIP embeddings and scores, kept by
    ``score.keep_work``) is copied in first; its key does not depend on the recipe, so only the
    decision pass and the writes run again. Returns the variant's kept pairs.
    """
    import shutil

    from curation.registry import spec as stage_spec
    from curation.stage import StageRunner

    work = variant / "_work"
    for src in sorted((run / "_work").glob("score-*")):
        if not (work / src.name).exists():
            shutil.copytree(src, work / src.name)
    spec = stage_spec("score")
    StageRunner(str(variant), cfg).run(spec.build(), spec.resolve_inputs(str(run)))
    return variant / "score" / "pairs"


def _read(path: Path) -> pa.Table:
    from curation.dask_cluster import list_parquet_files

    files = list_parquet_files(str(path))
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default") if files else pa.table({})


def split_datasets(run: Path, paths: dict[str, Path], data_dir: Path) -> tuple[dict[str, dict], pa.Table]:
    """Each row's training set without held-out pictures (Parquet under ``data_dir``), and the held-out set."""
    from curation.schemas import IMAGE_PAIRS
    from models.sample_pairs import true_pairs
    from pipelines.sample_truth import SampleTruth

    truth = SampleTruth(run / "_sample")
    tables = {name: _read(p) for name, p in paths.items()}
    basic = tables["basic"]
    k = max(1, math.ceil(CLIP_TOP_FRACTION * basic.num_rows))
    order = np.lexsort((np.asarray(basic.column("key").to_pylist(), dtype=object).astype(str),
                        -np.nan_to_num(basic.column("clip_score").to_numpy(zero_copy_only=False), nan=-9.0)))
    tables["clip30"] = basic.take(pa.array(np.sort(order[:k])))
    tables["random30"] = basic.take(pa.array(np.sort(random_order(basic.column("key").to_pylist())[:k])))
    out: dict[str, dict] = {}
    for name, _ in ROWS:
        t = tables[name]
        urls = t.column("url").to_pylist()
        keep = [not held_out(truth.base_url.get(u, u)) for u in urls]
        train = t.filter(pa.array(keep)).sort_by("key")
        d = data_dir / name
        d.mkdir(parents=True, exist_ok=True)
        cols = [c for c in IMAGE_PAIRS.names]
        pq.write_table(train.select(cols).cast(IMAGE_PAIRS), d / "part-00000.parquet", row_group_size=256)
        out[name] = {"path": str(d), "pairs": train.num_rows, "pairs_before_split": t.num_rows,
                     "noise": noise_rate(train, truth), **coverage(train, truth)}
    gt = true_pairs(run / "_sample")
    held = gt.filter(pa.array([held_out(u) for u in gt.column("url").to_pylist()]))
    return out, held


def random_order(keys: list[str]) -> np.ndarray:
    """Row indices ordered by a hash of each key: a seeded, reproducible random draw that does not
    depend on the table's order or on any score."""
    h = [hashlib.sha256(f"random30:{k}".encode()).hexdigest() for k in keys]
    return np.argsort(np.asarray(h, dtype=object).astype(str), kind="stable")


def coverage(t: pa.Table, truth) -> dict:
    """How much of the sample's world a training set shows: distinct pictures (srcset variants count
    once) and distinct true (shape, colour) classes among them. A small clean subset can lose on
    the held-out pictures because it misses classes, not because its captions are worse."""
    pictures = {truth.base_url.get(u, u) for u in t.column("url").to_pylist()} if t.num_rows else set()
    scenes = {truth.scene_of(p) for p in pictures}
    return {"pictures": len(pictures), "classes": len({(s.shape, s.colour) for s in scenes if s is not None})}


def noise_rate(t: pa.Table, truth) -> dict:
    """Estimated noise against the planted ground truth (see the module docstring)."""
    src = t.column("caption_source").to_pylist()
    web = [(p, u, s) for p, u, s in zip(t.column("page_url").to_pylist(), t.column("url").to_pylist(), src)
           if s != "synthetic"]
    labels = [truth.web_label(p, u, s) for p, u, s in web]
    web_noisy = sum(lab == "noisy" for lab in labels)
    web_judged = sum(lab in ("noisy", "clean") for lab in labels)
    syn = [(c, u) for c, u, s in zip(t.column("caption").to_pylist(), t.column("url").to_pylist(), src) if s == "synthetic"]
    verdicts = [truth.synthetic_correct(c, u) for c, u in syn]
    syn_judged = sum(v is not None for v in verdicts)
    syn_noisy = sum(v is False for v in verdicts)
    judged = web_judged + syn_judged
    return {"rate": (web_noisy + syn_noisy) / judged if judged else float("nan"),
            "web_noisy": web_noisy, "web_judged": web_judged, "synthetic_noisy": syn_noisy, "synthetic_judged": syn_judged}


# --------------------------------------------------------------------------- training and evaluation


def common_eval_set(datasets: dict[str, dict], held: pa.Table):
    """One evaluation set for every row: the held-out pictures minus any whose sha256 occurs in ANY
    row's training data, so all rows are scored on the same pictures (a paired comparison needs it)."""
    from models.evaluate import build_eval_set, training_sha256

    exclude: set[str] = set()
    for d in datasets.values():
        exclude |= training_sha256(d["path"])
    return build_eval_set(held, exclude)


def _eval_digest(es) -> str:
    """Of an evaluation set's pictures and captions: cached metrics are reused only for the same set."""
    h = hashlib.sha256(";".join(es.sha256).encode())
    h.update("\n".join(f"{int(o)}:{c}" for o, c in zip(es.caption_image, es.captions)).encode())
    return h.hexdigest()[:12]


def train_and_eval(name: str, data: str, seed: int, es, model_root: Path, cfg) -> dict:
    from models.clip_train import train_clip
    from models.evaluate import evaluate_models
    from pipelines.train import sample_classes

    out = model_root / name / _digest(data) / f"seed-{seed}"
    metrics_file = out / f"eval_metrics-{_eval_digest(es)}.json"
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text())
    tcfg = replace(cfg.train, task="clip", seed=seed)
    t0 = time.perf_counter()
    path = train_clip(data, out, tcfg, resume=True, progress=False)
    seconds = time.perf_counter() - t0
    res = evaluate_models({"clip": path}, es, cfg.eval, sample_classes())  # held-out sample pictures
    res["train_seconds"] = round(seconds, 1)
    metrics_file.write_text(json.dumps(res, indent=1, default=float) + "\n")
    return res


def _digest(data: str) -> str:
    """Of a training set's files: a rerun on changed data trains again instead of reusing old metrics."""
    h = hashlib.sha256()
    for f in sorted(Path(data).glob("*.parquet")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _stat(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "values": a.tolist()}


def summarise(datasets: dict[str, dict], results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for name, label in ROWS:
        runs = results[name]
        ret = [r["clip"]["retrieval"] for r in runs]
        rows.append({
            "dataset": name, "label": label, "pairs": datasets[name]["pairs"], "noise": datasets[name]["noise"],
            "pictures": datasets[name].get("pictures"), "classes": datasets[name].get("classes"),
            "i2t_r@1": _stat([r["i2t_r@1"] for r in ret]), "i2t_r@5": _stat([r["i2t_r@5"] for r in ret]),
            "t2i_r@1": _stat([r["t2i_r@1"] for r in ret]), "t2i_r@5": _stat([r["t2i_r@5"] for r in ret]),
            "zero_shot": _stat([r["clip"].get("zero_shot_mean_accuracy", float("nan")) for r in runs]),
            "eval_images": runs[0]["eval_set"]["images"],
        })
    return rows


# The comparisons the report makes: every row against raw pairs, and CapFilt against the CLIP filter.
BASELINE = "raw"
EXTRA_COMPARISONS = [("capfilt", "clip30"), ("clip30", "random30"), ("capfilt_r2", "capfilt"), ("image_clip30", "clip30"),
                     ("metaclip_capfilt", "capfilt")]


def compare(results: dict[str, list[dict]]) -> list[dict]:
    """Paired effects (pipelines/experiment_stats.py) on the common held-out pictures, seed by seed."""
    from pipelines.experiment_stats import paired_effect

    def runs(name: str) -> list[dict]:
        return [r["clip"]["per_picture_r1"] for r in results[name]]

    pairs = [(name, BASELINE) for name, _ in ROWS if name != BASELINE and name in results]
    pairs += [(a, b) for a, b in EXTRA_COMPARISONS if a in results and b in results]
    return [paired_effect(a, b, runs(a), runs(b)).as_dict() for a, b in pairs]


def markdown(rows: list[dict], comparisons: list[dict], meta: dict) -> str:
    def pm(s: dict) -> str:
        return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"

    labels = {name: label for name, label in ROWS}
    lines = [
        f"Sample: {meta['pages']} pages; CLIP `{meta['model']}`, {meta['steps']} steps x batch {meta['batch_size']} "
        f"per dataset, seeds {meta['seeds']}; held-out: {rows[0]['eval_images']} pictures with their true captions, "
        f"the same pictures for every row (chance R@1 i2t {100 * meta['chance_i2t']:.1f}%, "
        f"t2i {100 * meta['chance_t2i']:.1f}%). Numbers in %, mean ± std over seeds.",
        "",
        "| dataset | pairs | pictures / classes | noise (web / synthetic) | i→t R@1 | i→t R@5 | t→i R@1 | t→i R@5 "
        "| zero-shot |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = r["noise"]
        web = f"{n['web_noisy']}/{n['web_judged']}"
        syn = f"{n['synthetic_noisy']}/{n['synthetic_judged']}" if n["synthetic_judged"] else "-"
        lines.append(f"| {r['label']} | {r['pairs']} | {r.get('pictures', '-')} / {r.get('classes', '-')} | "
                     f"{100 * n['rate']:.1f}% ({web} / {syn}) | {pm(r['i2t_r@1'])} | "
                     f"{pm(r['i2t_r@5'])} | {pm(r['t2i_r@1'])} | {pm(r['t2i_r@5'])} | {pm(r['zero_shot'])} |")
    lines += ["", "Paired comparisons (mean R@1 of both directions, picture by picture and seed by seed on the "
              "common held-out pictures; 95% interval from a bootstrap over seeds and pictures; separated = the "
              "interval excludes 0 and the effect exceeds twice the spread of the per-seed effects):", "",
              "| comparison | effect (points) | 95% CI | per-seed effects | seed spread | separated |",
              "|---|---:|---|---|---:|---|"]
    for c in comparisons:
        seeds = ", ".join(f"{100 * x:+.1f}" for x in c["per_seed"])
        lines.append(f"| {labels.get(c['a'], c['a'])} vs {labels.get(c['b'], c['b'])} | {100 * c['effect']:+.1f} | "
                     f"{100 * c['ci_low']:+.1f} to {100 * c['ci_high']:+.1f} | {seeds} | {100 * c['spread']:.1f} | "
                     f"{'yes' if c['separated'] else 'no'} |")
    lines += ["", verdict(comparisons), "",
              "Rules: every row after *raw* starts from the basic-filtered pairs. Noise: a kept web caption is noise "
              "when the sample planted it wrong/boilerplate (alt text) or credit/generic (figcaption), matched by page "
              "URL + image URL; a synthetic caption is noise unless it names the picture's true colour and shape "
              "(ground_truth/images.jsonl) and no other. Held out: 20% of the content pictures (hash of the URL path, "
              "srcset variants follow their original), removed from every training set, evaluated with their true "
              "captions; pictures whose sha256 occurs in any row's training data are dropped from the common set."]
    return "\n".join(lines) + "\n"


def verdict(comparisons: list[dict]) -> str:
    """Honest sentences for the comparisons that matter: CapFilt vs raw and vs the CLIP filter."""
    from pipelines.experiment_stats import PairedEffect, describe

    labels = {name: label for name, label in ROWS}
    out = []
    for c in comparisons:
        if c["a"] == "capfilt" and c["b"] in (BASELINE, "clip30"):
            out.append(describe(PairedEffect(**c), labels[c["a"]], labels[c["b"]]))
    recipes = [c for c in comparisons if c["a"] in RECIPE_ROWS and c["b"] == BASELINE and c["effect"] == c["effect"]]
    if recipes:
        best = max(recipes, key=lambda c: c["effect"])
        out.append("Best new recipe: " + describe(PairedEffect(**best), labels[best["a"]], labels[best["b"]]))
    return " ".join(out) if out else "No CapFilt comparison was made."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.experiment", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out/experiment")
    ap.add_argument("--pages", type=int, default=300, help="sample pages")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model", default="vlc-micro-clip", help="the CLIP trained on every dataset")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--port", type=int, default=DEFAULT_PORT,
                    help="the sample image server's port (part of every image URL: keep it fixed to compare runs)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for the curation run (e.g. --set bootstrap.max_steps=120)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from curation.config import parse_override

    start = time.perf_counter()
    out = Path(args.out)
    overrides = dict(parse_override(o) for o in args.overrides)
    cfg, run, paths = curate(out, args.pages, overrides, args.port)
    t_curate = time.perf_counter() - start
    datasets, held = split_datasets(run, paths, out / "data")
    es = common_eval_set(datasets, held)
    # Decoding in the training process from the decode cache (each dataset's pictures decoded once,
    # not once per epoch) with both cores for the model: 40% less wall time per CLIP here than a
    # decoding worker beside a one-thread model.
    cfg.train = replace(cfg.train, model=args.model, steps=args.steps, batch_size=args.batch_size, num_workers=0,
                        threads=0, log_every=50, checkpoint_every=max(args.steps, 1))
    results: dict[str, list[dict]] = {}
    for name, label in ROWS:
        results[name] = []
        for seed in args.seeds:
            log.info("experiment: %s, seed %d: CLIP on %d pairs", label, seed, datasets[name]["pairs"])
            results[name].append(train_and_eval(name, datasets[name]["path"], seed, es, out / "models", cfg))
    rows = summarise(datasets, results)
    comparisons = compare(results)
    ret0 = results["raw"][0]["clip"]["retrieval"]
    seconds = time.perf_counter() - start
    meta = {"pages": args.pages, "model": args.model, "steps": args.steps, "batch_size": args.batch_size,
            "seeds": args.seeds, "chance_i2t": ret0["i2t_chance_r@1"], "chance_t2i": ret0["t2i_chance_r@1"],
            "seconds_total": round(seconds, 1), "seconds_curation": round(t_curate, 1),
            "held_out_percent": HELD_OUT_PERCENT, "clip_top_fraction": CLIP_TOP_FRACTION,
            "bootstrap": cfg.section("bootstrap"), "capfilt": cfg.section("capfilt")}
    md = markdown(rows, comparisons, meta) + f"\nWall time: {seconds / 60:.1f} min ({t_curate / 60:.1f} min curating).\n"
    (out / "experiment.md").write_text(md)
    (out / "experiment.json").write_text(json.dumps({"meta": meta, "rows": rows, "comparisons": comparisons}, indent=1, default=float) + "\n")
    print(md)
    print(f"written: {out / 'experiment.md'}, {out / 'experiment.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
