"""``curate train`` and ``curate eval``: the thin trainer and its evaluation as jobs.

Not pipeline stages (they produce models, not curated rows): they read a stage's pair shards
(``<run>/images/pairs``, ``<run>/score/...``, ``<run>/capfilt/...``), any IMAGE_PAIRS Parquet or
WebDataset directory, or a COCO-format caption set (``captions*.json`` + ``images/``, converted
once to IMAGE_PAIRS Parquet under ``<out>/_data/``), and write under ``--out``:

- ``clip/`` (open_clip local-dir) or ``captioner/`` + ``filter/`` (HF BLIP directories);
- ``checkpoints/`` (resumable), ``metrics.jsonl``, ``train_summary.json`` (rows seen, rows skipped
  per reason, throughput) and ``train_manifest.json`` (task, data, init: what evaluation
  decontaminates against).

``curate eval --model DIR --data DIR`` evaluates every model found in DIR (or DIR itself) on
the held-out data, after dropping images that occur in the model's training data (following
``--init`` chains, so a fine-tuned model is decontaminated against its pretraining data too),
writes ``eval_metrics.json`` and prints a table.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from curation.config import PipelineConfig

log = logging.getLogger(__name__)

EVAL_METRICS = "eval_metrics.json"


def resolve_data(data: str, out_dir: str | Path) -> str:
    """``data`` itself, or for a COCO-format set the IMAGE_PAIRS Parquet made from it under ``out_dir/_data``."""
    from models.coco import coco_to_parquet, find_coco_captions
    from models.data import _shard_files

    p = Path(data)
    if p.is_dir() and _shard_files(str(p)):
        return str(p)
    captions = find_coco_captions(p)
    if captions is None:
        return str(data)
    target = Path(out_dir) / "_data" / (p.name if p.is_dir() else p.stem)
    done = target / "_COMPLETE"
    if not done.is_file():
        log.info("converting COCO-format set %s to IMAGE_PAIRS Parquet in %s", captions, target)
        coco_to_parquet(captions, target, image_dir=captions.parent / "images")
        done.write_text(str(captions) + "\n")
    return str(target)


def run_train(cfg: PipelineConfig, data: str, out: str, *, init: str | None = None, eval_data: str | None = None,
              resume: bool = True, progress: bool = True, on_step=None) -> dict[str, Any]:
    """Train ``cfg.train.task`` on ``data`` into ``out``; optionally evaluate on ``eval_data``."""
    from models.blip_train import make_task
    from models.trainer import MANIFEST, train

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolve_data(data, out_dir)
    task = make_task(cfg.train, init)
    result = train(task, resolved, out_dir, cfg.train, resume=resume, on_step=on_step, progress=progress)
    manifest = json.loads((out_dir / MANIFEST).read_text())
    summary: dict[str, Any] = {"train": manifest,
                               "final_loss": result.final_loss, "seconds": result.seconds,
                               "samples_per_s": result.samples_per_s, "resumed_from": result.resumed_from}
    if eval_data:
        summary["eval"] = run_eval(cfg, str(out_dir), eval_data)
    return summary


def _manifest_of(model_dir: Path) -> dict | None:
    from models.trainer import MANIFEST

    for d in (model_dir, model_dir.parent):
        f = d / MANIFEST
        if f.is_file():
            return json.loads(f.read_text())
    return None


def training_data_of(model_dir: str | Path, _depth: int = 0) -> list[str]:
    """Every data path the model at ``model_dir`` was trained on, through its ``--init`` chain."""
    m = _manifest_of(Path(model_dir))
    if m is None:
        return []
    paths = list(m.get("data", []))
    init = m.get("init")
    if init and Path(init).exists() and _depth < 10:
        paths += training_data_of(init, _depth + 1)
    return sorted(set(paths))


def sample_classes() -> dict[str, list[str]]:
    """The sample's zero-shot class groups: its shapes and colours (curation/sample/text.py), what
    ``curate eval`` scores when neither ``--classes`` nor ``eval.classes`` names any."""
    from curation.sample.text import COLOURS, SHAPES

    return {"shape": list(SHAPES), "colour": list(COLOURS)}


def run_eval(cfg: PipelineConfig, model_dir: str, data: str, *, out_json: str | None = None,
             classes: dict[str, list[str]] | None = None, print_table: bool = True) -> dict[str, Any]:
    """Evaluate the model(s) in ``model_dir`` on ``data`` (see the module docstring)."""
    from models.data import DataError
    from models.evaluate import build_eval_set, evaluate_models, find_models, format_table, training_sha256

    models = find_models(model_dir)
    if not models:
        raise DataError(f"no model found in {model_dir} (expected clip/, captioner/ or filter/ from curate train)")
    resolved = resolve_data(data, Path(model_dir))
    exclude: set[str] = set()
    train_paths: list[str] = []
    if cfg.eval.decontaminate:
        for path in models.values():
            train_paths += training_data_of(path)
        train_paths = sorted(set(train_paths))
        if train_paths:
            exclude = training_sha256([p for p in train_paths if Path(p).exists()])
        else:
            log.warning("no training manifest beside %s: the eval set is deduplicated but not decontaminated", model_dir)
    es = build_eval_set(resolved, exclude)
    if not es.images:
        raise DataError(f"no usable held-out image in {data} after dedup/decontamination ({es.report})")
    results = evaluate_models(models, es, cfg.eval, classes or cfg.eval.classes or sample_classes())
    results["eval_set"]["decontaminated_against"] = train_paths
    target = Path(out_json) if out_json else Path(model_dir) / EVAL_METRICS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=1, default=float) + "\n")
    if print_table:
        print(format_table(results))
        print(f"metrics: {target}")
    return results


# --------------------------------------------------------------------------- command line


def add_cli_arguments(sub) -> None:
    """The ``train`` and ``eval`` subcommands (added to ``curate``'s parser by curation/cli.py)."""
    tr = sub.add_parser("train", help="train a small CLIP, or BLIP's captioner + filter, on pair shards (torch)")
    tr.add_argument("--data", required=True, help="pair shards (Parquet/WebDataset dir, glob or file) or a COCO-format dir")
    tr.add_argument("--out", required=True, help="output directory (models, checkpoints, metrics.jsonl)")
    tr.add_argument("--task", choices=["clip", "blip", "blip-captioner", "blip-filter"], help="default: train.task (clip)")
    tr.add_argument("--model", help="open_clip model name (clip); BLIP preset (blip*) is train.blip.preset")
    tr.add_argument("--init", help="blip-captioner/blip-filter: start from this directory or HF id")
    tr.add_argument("--steps", type=int)
    tr.add_argument("--epochs", type=float)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--loss", choices=["infonce", "siglip"])
    tr.add_argument("--seed", type=int)
    tr.add_argument("--device", help="auto | cpu | cuda[:N]")
    tr.add_argument("--workers", type=int, help="DataLoader worker processes decoding images")
    tr.add_argument("--eval-data", help="evaluate on this held-out data when training ends")
    tr.add_argument("--no-resume", action="store_true", help="start over even if OUT holds checkpoints")
    tr.add_argument("--no-progress", action="store_true")
    _config_args(tr)

    ev = sub.add_parser("eval", help="evaluate trained models on held-out pairs (recall@k, zero-shot, BLEU/CIDEr, ROC-AUC)")
    ev.add_argument("--model", required=True, help="a curate train output dir, or one model dir in it")
    ev.add_argument("--data", required=True, help="held-out pair shards or a COCO-format dir")
    ev.add_argument("--out", help="metrics JSON (default MODEL/eval_metrics.json)")
    ev.add_argument("--classes", action="append", default=[], metavar="GROUP=a,b,c",
                    help="zero-shot class group (repeatable; default: the sample's shapes and colours)")
    ev.add_argument("--no-decontaminate", action="store_true", help="keep held-out images that occur in training data")
    ev.add_argument("--device", help="auto | cpu | cuda[:N]")
    _config_args(ev)


def _config_args(p) -> None:
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true")


def _flag_overrides(args) -> list[str]:
    pairs = []
    if args.command == "train":
        for attr, key in (("task", "train.task"), ("model", "train.model"), ("steps", "train.steps"),
                          ("epochs", "train.epochs"), ("batch_size", "train.batch_size"), ("lr", "train.lr"),
                          ("loss", "train.loss"), ("seed", "train.seed"), ("device", "train.device"),
                          ("workers", "train.num_workers")):
            v = getattr(args, attr, None)
            if v is not None:
                pairs.append(f"{key}={v}")
    else:
        if args.no_decontaminate:
            pairs.append("eval.decontaminate=false")
        if args.device:
            pairs.append(f"eval.device={args.device}")
    return pairs


def cli_main(args, load_config) -> int:
    """Run ``curate train`` / ``curate eval`` (``load_config`` is curation.cli's, so flags and --set agree)."""
    import sys

    from curation.errors import ModelLoadError
    from models.data import DataError
    from models.trainer import TrainError

    # Flags come after --set values so an explicit flag wins.
    args.overrides = list(args.overrides) + _flag_overrides(args)
    cfg = load_config(args)
    try:
        if args.command == "train":
            summary = run_train(cfg, args.data, args.out, init=args.init, eval_data=args.eval_data,
                                resume=not args.no_resume, progress=not args.no_progress)
            t = summary["train"]
            print(f"trained {t['task']} for {t['steps']} steps on {t['rows_seen']} rows "
                  f"(skipped {t['skipped'] or 'none'}) in {summary['seconds']:.1f}s -> "
                  + ", ".join(f"{k}: {v}" for k, v in t["exported"].items()))
            return 0
        classes = {}
        for spec in args.classes:
            if "=" not in spec:
                print(f"curate: error: --classes {spec!r} must look like group=a,b,c", file=sys.stderr)
                return 2
            group, names = spec.split("=", 1)
            classes[group.strip()] = [n.strip() for n in names.split(",") if n.strip()]
        run_eval(cfg, args.model, args.data, out_json=args.out, classes=classes or None)
        return 0
    except (DataError, TrainError, ModelLoadError, ValueError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
