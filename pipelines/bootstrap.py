"""Models a run trains itself, and BLIP's bootstrap loop, offline.

Where no pretrained weights can be downloaded (the sample, an air-gapped cluster), a run names its
models ``bootstrap`` (``score.pretrained``, ``capfilt.captioner``, ``capfilt.filter``; the sample's
defaults do) and trains them itself, as BLIP's round 0 does with the thin trainer (models/):

1. a CLIP (``score.model``, InfoNCE) and a BLIP (captioner + filter pretrained jointly with
   ITC + ITM + LM, MED-style sharing) on the run's web pairs (``images/pairs``);
2. the captioner and the filter fine-tuned *separately* from that BLIP on a clean
   human-annotated set (``bootstrap.clean_data``, COCO format; the sample's ``_sample/clean``).

The ``bootstrap`` stage (after ``images``, before ``score``; only when a model is ``bootstrap``)
does this and writes ``<run>/bootstrap/models/{clip,captioner,filter}/`` plus ``manifest.json``;
``score`` and ``capfilt`` resolve ``bootstrap`` to those directories (:func:`resolve_model`).

``curate bootstrap --input RUN --out OUT --rounds R`` is the loop: CapFilt pass 1 is the run's
``capfilt`` stage (round-0 models); for r = 1 .. R-1 a new BLIP is pretrained on pass r's
bootstrapped pairs, fine-tuned on the clean set again, and CapFilt pass r+1 rewrites the web pairs
(``score/pairs``) with it, into ``OUT/rounds/round-<r>/{models,capfilt}/``. BLIP ran one round and
left more as future work; ``make experiment`` measures the second.

Training runs as Dask tasks on the stage's workers (a GPU worker on a cluster), CLIP and BLIP
pretraining side by side, then the two fine-tunings side by side, each in a directory under
``<out>/_work/bootstrap-<hash>/`` so a crashed run resumes from the trainer's checkpoints. Budget:
``bootstrap.epochs`` passes over the web pairs (``finetune_epochs`` over the clean set), at most
``bootstrap.max_steps`` steps per model (``captioner_epochs`` for the captioner, when set).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation.config import BOOTSTRAP_MODELS, PipelineConfig, uses_bootstrap_models
from curation.dask_cluster import cpu_threads_per_worker, dask_client, list_parquet_files, work_dir_for
from curation.schemas import REJECTS
from curation.stage import Stage, StageContext, StageError, StageRunner, StageStats, is_complete, read_marker

log = logging.getLogger(__name__)

STAGE = "bootstrap"
MODELS = "models"
MANIFEST = "manifest.json"
ROLES = ("clip", "captioner", "filter")
ROUNDS_DIR = "rounds"


# --------------------------------------------------------------------------- where the models are


def source_root_of(input_path: str) -> str:
    """The run directory an input like ``RUN/images/pairs`` belongs to."""
    return input_path.rstrip("/").rsplit("/", 2)[0]


def models_dir_of(run_root: str) -> str:
    return f"{run_root.rstrip('/')}/{STAGE}/{MODELS}"


def resolve_model(value: str | None, role: str, models_dir: str | None) -> str | None:
    """``value`` itself, or for ``bootstrap`` the self-trained model: the captioner/filter directory,
    or the CLIP's open_clip checkpoint file (``score.pretrained`` takes a checkpoint path)."""
    if value != BOOTSTRAP_MODELS:
        return value
    if not models_dir or not Path(models_dir, role).is_dir():
        from models.clip import ModelLoadError

        raise ModelLoadError(
            f"the {role} is set to '{BOOTSTRAP_MODELS}' (trained by this run) but {models_dir}/{role} does not exist: "
            "run the bootstrap stage first (curate run does; or curate bootstrap --input RUN --out RUN), or name a "
            "model (a Hugging Face id, a local directory or checkpoint)"
        )
    path = Path(models_dir, role)
    return str(path / "open_clip_model.safetensors") if role == "clip" else str(path)


def model_label(value: str, role: str, models_dir: str | None) -> str:
    """A run-independent name of a model for the data it writes (``caption_model``)."""
    if value != BOOTSTRAP_MODELS:
        return value
    manifest = Path(models_dir or "", MANIFEST)
    rnd = json.loads(manifest.read_text()).get("round", 0) if manifest.is_file() else 0
    return f"bootstrap-round{rnd}/{role}"


# --------------------------------------------------------------------------- one round of training


def count_rows(path: str) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in list_parquet_files(path))


def clean_data_of(cfg: PipelineConfig, run_root: str) -> str | None:
    """The clean human-annotated set: ``bootstrap.clean_data``, else a sample run's own clean split."""
    if cfg.bootstrap.clean_data:
        return cfg.bootstrap.clean_data
    sample_clean = Path(run_root) / "_sample" / "clean"
    if (sample_clean / "captions.json").is_file():
        return str(sample_clean)
    return None


def train_config(cfg: PipelineConfig, task: str, rows: int, epochs: float, threads: int, seed_offset: int = 0):
    """The ``train`` section with the bootstrap budget: ``epochs`` passes, at most ``max_steps`` steps."""
    b = cfg.bootstrap
    steps = max(1, math.ceil(epochs * rows / b.batch_size))
    if b.max_steps:
        steps = min(steps, b.max_steps)
    blip = replace(cfg.train.blip, preset=b.blip_preset or cfg.train.blip.preset,
                   image_size=b.blip_image_size or cfg.train.blip.image_size,
                   itm_easy_negatives=cfg.train.blip.itm_easy_negatives if b.itm_easy_negatives is None
                   else b.itm_easy_negatives)
    return replace(cfg.train, task=task, model=cfg.score.model if task == "clip" else cfg.train.model,
                   pretrained=None, steps=steps, batch_size=b.batch_size, lr=b.lr or cfg.train.lr,
                   warmup_steps=min(cfg.train.warmup_steps, max(1, steps // 10)),
                   # Dask worker processes are daemonic: no DataLoader worker processes inside them.
                   num_workers=0, threads=threads, device=b.device, seed=b.seed + seed_offset, blip=blip)


def _train_task(task: str, data: str, out: str, tcfg, init: Any = None) -> dict:
    """One training run on a Dask worker (resumes from ``out``'s checkpoints); returns its summary."""
    from models.blip_train import make_task
    from models.trainer import MANIFEST as TRAIN_MANIFEST
    from models.trainer import train

    if isinstance(init, dict):  # the result of the pretraining task this fine-tuning depends on
        init = init["exported"]["captioner" if task == "blip-captioner" else "filter"]
    done = Path(out) / TRAIN_MANIFEST
    if done.is_file():
        m = json.loads(done.read_text())
        if all(Path(p).is_dir() for p in m["exported"].values()):
            return {**m, "resumed": "finished earlier"}
    r = train(make_task(tcfg, init), data, out, tcfg, resume=True, progress=False)
    return {"task": task, "exported": r.exported, "steps": r.steps, "rows_seen": r.rows_seen,
            "skipped": r.skipped, "final_loss": r.final_loss, "seconds": r.seconds, "resumed_from": r.resumed_from}


def canonical_pairs(src: str, dst: str, row_group_size: int = 256) -> str:
    """``src``'s pairs (IMAGE_PAIRS columns) sorted by key, written once to ``dst``: the training data.

    Upstream row order depends on how a cluster partitioned the work; sorted, the same pairs give
    the same batches and the same models on any cluster. Read into memory: bootstrapping is for
    runs small enough to have no pretrained models.
    """
    import os

    import pyarrow as pa

    from curation.schemas import IMAGE_PAIRS

    out = Path(dst)
    target = out / "part-00000.parquet"
    if target.is_file():
        return str(out)
    files = list_parquet_files(src)
    tables = [pq.read_table(f, columns=IMAGE_PAIRS.names).cast(IMAGE_PAIRS) for f in files]
    t = pa.concat_tables(tables) if tables else IMAGE_PAIRS.empty_table()
    t = t.sort_by([("key", "ascending")])
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".part-00000.parquet.tmp"
    pq.write_table(t, tmp, row_group_size=row_group_size)
    os.replace(tmp, target)
    return str(out)


def _prepare_clean(clean: str, out_dir: str) -> str:
    from pipelines.train import resolve_data

    return resolve_data(clean, out_dir)


def train_round(client, cfg: PipelineConfig, web_data: str, clean_data: str | None, work_dir: str, *,
                train_clip: bool, round_index: int = 0) -> dict[str, dict]:
    """Train one round's models as Dask tasks; returns ``{role: summary}`` (``exported`` paths inside).

    CLIP and BLIP pretraining run side by side (two workers) or one after the other (one), then
    the captioner and filter fine-tunings likewise, each depending on the pretraining's result.
    """
    b = cfg.bootstrap
    threads = b.threads or cpu_threads_per_worker(client)
    wd = Path(work_dir)
    wd.mkdir(parents=True, exist_ok=True)
    web_data = canonical_pairs(web_data, str(wd / "web_pairs"))
    rows = count_rows(web_data)
    if rows == 0:
        raise StageError(f"bootstrap: no training pairs in {web_data}")
    futures: dict[str, Any] = {}
    seed = 1000 * round_index
    if train_clip:
        futures["clip"] = client.submit(_train_task, "clip", web_data, str(wd / "clip"),
                                        train_config(cfg, "clip", rows, b.epochs, threads, seed), pure=False)
    futures["blip"] = client.submit(_train_task, "blip", web_data, str(wd / "blip"),
                                    train_config(cfg, "blip", rows, b.epochs, threads, seed), pure=False)
    if b.finetune_epochs > 0:
        if not clean_data:
            raise StageError(
                "bootstrap: fine-tuning the captioner and the filter needs a clean human-annotated caption set: set "
                "bootstrap.clean_data to a COCO-format directory (captions*.json + images/), or bootstrap.finetune_epochs=0"
            )
        clean = client.submit(_prepare_clean, clean_data, str(wd), pure=False).result()
        crows = count_rows(clean)
        epochs = {"filter": b.finetune_epochs, "captioner": b.captioner_epochs or b.finetune_epochs}
        for task, role in (("blip-filter", "filter"), ("blip-captioner", "captioner")):
            futures[role] = client.submit(_train_task, task, clean, str(wd / role),
                                          train_config(cfg, task, crows, epochs[role], threads, seed + 1),
                                          futures["blip"], pure=False)
    results = {name: f.result() for name, f in futures.items()}
    out: dict[str, dict] = {}
    if "clip" in results:
        out["clip"] = {**results["clip"], "path": results["clip"]["exported"]["clip"]}
    for role in ("captioner", "filter"):
        src = results.get(role) or results["blip"]
        out[role] = {**src, "path": src["exported"][role], "pretraining": _brief(results["blip"])}
    return out


def _brief(summary: dict) -> dict:
    return {k: summary.get(k) for k in ("task", "steps", "rows_seen", "skipped", "final_loss", "seconds")}


def publish_models(trained: dict[str, dict], target: str, round_index: int, sources: dict[str, Any]) -> dict:
    """Copy the exported model directories to ``target/<role>/`` and write ``target/manifest.json``."""
    dest = Path(target)
    dest.mkdir(parents=True, exist_ok=True)
    for role, info in trained.items():
        tmp = dest / f".tmp-{role}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(info["path"], tmp)
        trained_by = Path(info["path"]).parent / "train_manifest.json"  # what curate eval decontaminates against
        if trained_by.is_file():
            shutil.copy(trained_by, tmp / trained_by.name)
        shutil.rmtree(dest / role, ignore_errors=True)
        tmp.rename(dest / role)
    manifest = {"round": round_index, **sources,
                "models": {role: {**_brief(info), "pretraining": info.get("pretraining")} for role, info in trained.items()}}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
    return manifest


# --------------------------------------------------------------------------- the stage


class BootstrapStage(Stage):
    """``curate bootstrap``: round 0 of BLIP's bootstrapping (input ``pairs`` = ``images/pairs``).

    The main table is the web pairs: all are handed to training (``rows_out == rows_in``; the
    trainer skips undecodable images and empty captions itself, counted per read in
    ``counters.trainer_skipped``). Output: ``models/`` (not Parquet).
    """

    name = STAGE
    outputs = (MODELS,)
    config_sections = ("bootstrap", "train")

    def run(self, ctx: StageContext) -> StageStats:
        cfg = ctx.config
        pairs = ctx.inputs["pairs"]
        root = source_root_of(pairs)
        rows = count_rows(pairs)
        stats = StageStats(stage=STAGE, rows_in=rows, rows_out=rows)
        _empty_rejects(ctx.rejects_path)
        if not uses_bootstrap_models(cfg):
            stats.counters["skipped"] = "no model is set to 'bootstrap': nothing to train"
            return stats
        clean = clean_data_of(cfg, root)
        out_root = ctx.stage_dir.rstrip("/").rsplit("/", 1)[0]
        key = {"bootstrap": ctx.config.section("bootstrap"), "train": ctx.config.section("train"),
               "clip_model": cfg.score.model, "clean": clean, "inputs": _run_ids(ctx.inputs)}
        work_dir = work_dir_for(out_root, STAGE, key)
        train_clip = cfg.score.pretrained == BOOTSTRAP_MODELS
        log.info("bootstrap: training %s on %d web pairs (%s), fine-tuning on %s; work dir %s",
                 "CLIP + BLIP" if train_clip else "BLIP", rows, pairs, clean, work_dir)
        with dask_client(cfg.dask) as client:
            trained = train_round(client, cfg, pairs, clean, f"{work_dir}/round-0", train_clip=train_clip)
        manifest = publish_models(trained, ctx.output_path(MODELS), 0,
                                  {"web_pairs": pairs, "clean_data": clean, "score_model": cfg.score.model})
        stats.outputs = {MODELS: len(trained)}
        stats.counters = {
            "models": {role: m["steps"] for role, m in manifest["models"].items()},
            "final_loss": {role: m["final_loss"] for role, m in manifest["models"].items()},
            "trainer_skipped": {role: m["skipped"] for role, m in manifest["models"].items()},
            "clean_data": clean, "work_dir": work_dir,
        }
        return stats


def _empty_rejects(path: str) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    pq.write_table(REJECTS.empty_table(), Path(path) / "empty.parquet")


def _run_ids(inputs: dict[str, str]) -> dict[str, str]:
    ids = {}
    for key, path in sorted(inputs.items()):
        marker = read_marker(path.rstrip("/").rsplit("/", 1)[0])
        ids[key] = marker.get("run_id") if marker else path
    return ids


# --------------------------------------------------------------------------- the loop


def run_loop(cfg: PipelineConfig, source_root: str, out_root: str, rounds: int,
             force: set[str] | None = None) -> dict[str, Any]:
    """BLIP's bootstrap loop: ``rounds`` CapFilt passes, a new BLIP trained on each pass's pairs.

    Pass 1 is the ``capfilt`` stage of ``out_root`` (skipped when complete and unchanged) with the
    round-0 models (``bootstrap`` stage, or the configured ones). Writes
    ``out_root/rounds/summary.json`` and returns it.
    """
    from pipelines.dask_capfilt import CapFiltStage

    source_root, out_root = source_root.rstrip("/"), out_root.rstrip("/")
    if not Path(f"{source_root}/score/pairs").exists():
        raise StageError(f"curate bootstrap --rounds needs a scored run: no {source_root}/score/pairs (curate run first)")
    runner = StageRunner(out_root, cfg, force)
    models0 = models_dir_of(source_root)
    if uses_bootstrap_models(cfg) and not is_complete(f"{source_root}/{STAGE}"):
        runner.run(BootstrapStage(), {"pairs": f"{source_root}/images/pairs"})
        models0 = models_dir_of(out_root)
    web = f"{source_root}/score/pairs"
    passes: list[dict] = []
    stats = runner.run(CapFiltStage(), {"pairs": web, "models": models0})
    passes.append(_pass_summary(1, f"{out_root}/capfilt", models0, stats))
    data = f"{out_root}/capfilt/pairs"
    clean = clean_data_of(cfg, source_root)
    later = replace(cfg, capfilt=replace(cfg.capfilt, captioner=BOOTSTRAP_MODELS, filter=BOOTSTRAP_MODELS))
    for r in range(1, rounds):
        rdir = f"{out_root}/{ROUNDS_DIR}/round-{r}"
        mdir = f"{rdir}/{MODELS}"
        key = {"bootstrap": cfg.section("bootstrap"), "train": cfg.section("train"), "data": data,
               "data_run": (read_marker(data.rsplit("/", 1)[0]) or {}).get("run_id"), "clean": clean, "round": r}
        work = work_dir_for(out_root, f"{STAGE}-round{r}", key)
        published = Path(mdir) / MANIFEST
        if not published.is_file() or json.loads(published.read_text()).get("work_dir") != work:
            log.info("bootstrap round %d: BLIP pretrained on %s (%d pairs), fine-tuned on %s", r, data, count_rows(data), clean)
            with dask_client(cfg.dask) as client:
                trained = train_round(client, cfg, data, clean, work, train_clip=False, round_index=r)
            publish_models(trained, mdir, r, {"web_pairs": data, "clean_data": clean, "work_dir": work})
        stats = StageRunner(rdir, later, force).run(CapFiltStage(), {"pairs": web, "models": mdir})
        passes.append(_pass_summary(r + 1, f"{rdir}/capfilt", mdir, stats))
        data = f"{rdir}/capfilt/pairs"
    summary = {"source": source_root, "rounds": rounds, "passes": passes, "final_pairs": data}
    target = Path(out_root, ROUNDS_DIR, "summary.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def _pass_summary(n: int, stage_dir: str, models: str, stats: StageStats) -> dict:
    c = stats.counters
    return {"pass": n, "capfilt": stage_dir, "models": models, "pairs_in": stats.rows_in,
            "pairs_out": stats.outputs.get("pairs"), "web_kept": stats.rows_out,
            "synthetic_kept": stats.outputs.get("synthetic"), "synthetic_share": c.get("synthetic_share"),
            "filter_vs_ground_truth": c.get("filter_vs_ground_truth"), "synthetic_vs_ground_truth": c.get("synthetic_vs_ground_truth")}


# --------------------------------------------------------------------------- command line (curate bootstrap --rounds)


# --rounds given without a number: not a string, since argparse converts a string const with type=int.
ROUNDS_FROM_CONFIG = object()


def add_cli_arguments(parser) -> None:
    parser.add_argument("--rounds", type=int, nargs="?", const=ROUNDS_FROM_CONFIG, default=None,
                        help="run the bootstrap loop: this many CapFilt passes, a new BLIP trained on each pass's pairs; "
                             "--rounds alone takes bootstrap.rounds from the config "
                             "(without --rounds: only the bootstrap stage, round 0's models)")


def loop_rounds(args, cfg: PipelineConfig) -> int | None:
    """How many CapFilt passes ``curate bootstrap`` runs: ``--rounds N``, ``--rounds`` alone =
    ``bootstrap.rounds``, no ``--rounds`` = None (the bootstrap stage only)."""
    rounds = getattr(args, "rounds", None)
    if rounds is None:
        return None
    if rounds is ROUNDS_FROM_CONFIG:
        return cfg.bootstrap.rounds
    if rounds < 1:
        raise StageError(f"--rounds must be >= 1, got {rounds}")
    return rounds


def cli_loop(args, cfg: PipelineConfig, source_root: str) -> int:
    summary = run_loop(cfg, source_root, cfg.out, loop_rounds(args, cfg), set(args.force))
    for p in summary["passes"]:
        fq = p.get("filter_vs_ground_truth") or {}
        extra = f", filter precision {fq.get('precision')} recall {fq.get('recall')}" if fq else ""
        print(f"CapFilt pass {p['pass']}: {p['pairs_in']} web pairs -> {p['pairs_out']} pairs "
              f"({p['web_kept']} web, {p['synthetic_kept']} synthetic){extra}  [{p['capfilt']}]")
    print(f"bootstrapped pairs: {summary['final_pairs']}")
    return 0

