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
``score`` and ``capfilt`` resolve ``bootstrap`` to those directories (:func:`models.resolve.resolve_model`,
so neither imports this module).

``curate bootstrap --input RUN --out OUT --rounds R`` is the loop (pipelines/bootstrap_loop.py, the
one module that imports both this stage and CapFilt): CapFilt pass 1 is the run's
``capfilt`` stage (round-0 models); for r = 1 .. R-1 a new BLIP is pretrained on pass r's
bootstrapped pairs, fine-tuned on the clean set again, and CapFilt pass r+1 rewrites the web pairs
(``score/pairs``) with it, into ``OUT/rounds/round-<r>/{models,capfilt}/``. BLIP ran one round and
left more as future work; ``make experiment`` measures the second.

Training runs as Dask tasks on the stage's workers (a GPU worker on a cluster), CLIP and BLIP
pretraining side by side, then the two fine-tunings side by side, each in a directory under
``<out>/_work/bootstrap-<hash>/`` so a crashed run resumes from the trainer's checkpoints. Budget:
``bootstrap.epochs`` passes over the web pairs (``finetune_epochs`` over the clean set), at most
``bootstrap.max_steps`` steps per model (``captioner_epochs`` for the captioner, when set).

Run directories go through fsspec (``OUT=s3://...``): the web pairs are read and the models
published there. Training itself writes checkpoints with torch to local files, so for a remote
run directory a round trains in a local directory of the same name (:func:`training_dir`), and
resumes from it on the same machine.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from curation.config import BOOTSTRAP_MODELS, DaskConfig, PipelineConfig, uses_bootstrap_models
from curation.dask_cluster import cpu_threads_per_worker, dask_client, list_parquet_files, work_dir_for
from curation.errors import StageError
from curation.schemas import REJECTS
from curation.stage import REJECTS_DIR, Stage, StageContext, StageStats
from models.resolve import MANIFEST, MODELS, STAGE, cache_root, is_remote, source_root_of

log = logging.getLogger(__name__)

ROLES = ("clip", "captioner", "filter")


# --------------------------------------------------------------------------- one round of training


def _read_parquet(url: str, columns: list[str] | None = None):
    fs, p = url_to_fs(url)
    with fs.open(p, "rb") as fh:
        return pq.read_table(fh, columns=columns)


def count_rows(path: str) -> int:
    """Rows of a Parquet dataset (local or remote), from the files' footers."""
    total = 0
    for f in list_parquet_files(path):
        fs, p = url_to_fs(f)
        with fs.open(p, "rb") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def clean_data_of(cfg: PipelineConfig, run_root: str) -> str | None:
    """The clean human-annotated set: ``bootstrap.clean_data``, else a sample run's own clean split."""
    if cfg.bootstrap.clean_data:
        return cfg.bootstrap.clean_data
    sample_clean = f"{run_root.rstrip('/')}/_sample/clean"
    fs, p = url_to_fs(f"{sample_clean}/captions.json")
    if fs.isfile(p):
        return sample_clean
    return None


def training_dir(work_dir: str) -> str:
    """Where a round trains: ``work_dir`` itself, or for a remote run directory (``s3://...``) a
    local directory of the same name under the model cache (torch writes its checkpoints to
    local files; the name keeps the fingerprint, so a crashed run resumes on the same machine)."""
    if not is_remote(work_dir):
        return work_dir
    return str(cache_root().parent / "work" / work_dir.rstrip("/").rsplit("/", 1)[-1])


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
    runs small enough to have no pretrained models. ``src`` may be remote; ``dst`` is local
    (the training directory).
    """
    import os

    import pyarrow as pa

    from curation.schemas import IMAGE_PAIRS

    out = Path(dst)
    target = out / "part-00000.parquet"
    if target.is_file():
        return str(out)
    files = list_parquet_files(src)
    tables = [_read_parquet(f, IMAGE_PAIRS.names).cast(IMAGE_PAIRS) for f in files]
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


def training_dask_config(dc: DaskConfig) -> DaskConfig:
    """The Dask cluster shape for the bootstrap trainings: two workers on a CPU host with an automatic shape.

    A round is two pairs of independent trainings (CLIP beside BLIP pretraining, then the filter
    beside the captioner). The default shape (one worker per 8 cores) gives a 2-core host one
    worker, which ran them one after the other with 2 torch threads each; but a tiny CPU model's
    ops are mostly below torch's parallel grain, so each training used about one core (measured:
    one thread at ~97%, the other idle) and the bootstrap stage was the longest of ``make curate``.
    Two workers of one core each train both models of a pair at once. A set ``n_workers``, a
    scheduler or a GPU host keeps its shape.
    """
    from curation.dask_cluster import gpu_count

    if dc.scheduler or dc.n_workers or gpu_count():
        return dc
    return replace(dc, n_workers=min(2, os.cpu_count() or 1))


def train_round(client, cfg: PipelineConfig, web_data: str, clean_data: str | None, work_dir: str, *,
                train_clip: bool, round_index: int = 0) -> dict[str, dict]:
    """Train one round's models as Dask tasks; returns ``{role: summary}`` (``exported`` paths inside).

    ``work_dir`` is a local directory (:func:`training_dir`); ``web_data`` may be remote.

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
    """Copy the exported (local) model directories to ``target/<role>/`` (local or remote) and write
    ``target/manifest.json``. Each model is copied beside its place and then moved there, so a
    reader never finds half a model under the role's name."""
    fs, dest = url_to_fs(target)
    dest = dest.rstrip("/")
    fs.makedirs(dest, exist_ok=True)
    for role, info in trained.items():
        tmp = f"{dest}/.tmp-{role}"
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)
        files = [f for f in sorted(Path(info["path"]).rglob("*")) if f.is_file()]
        trained_by = Path(info["path"]).parent / "train_manifest.json"  # what curate eval decontaminates against
        copies = [(f, f"{tmp}/{f.relative_to(info['path']).as_posix()}") for f in files]
        if trained_by.is_file():
            copies.append((trained_by, f"{tmp}/{trained_by.name}"))
        fs.makedirs(tmp, exist_ok=True)
        for src, dst in copies:
            fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(src), dst)
        if fs.exists(f"{dest}/{role}"):
            fs.rm(f"{dest}/{role}", recursive=True)
        fs.mv(tmp, f"{dest}/{role}", recursive=True)
    manifest = {"round": round_index, **sources,
                "models": {role: {**_brief(info), "pretraining": info.get("pretraining")} for role, info in trained.items()}}
    with fs.open(f"{dest}/{MANIFEST}", "w") as fh:
        fh.write(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
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
        ctx.write_empty_outputs({REJECTS_DIR: REJECTS})  # every row goes to training: no rejects
        if not uses_bootstrap_models(cfg):
            stats.counters["skipped"] = "no model is set to 'bootstrap': nothing to train"
            return stats
        clean = clean_data_of(cfg, root)
        key = {"bootstrap": ctx.config.section("bootstrap"), "train": ctx.config.section("train"),
               "clip_model": cfg.score.model, "clean": clean, "inputs": ctx.input_run_ids}
        work_dir = work_dir_for(ctx.run_root, STAGE, key)
        train_clip = cfg.score.pretrained == BOOTSTRAP_MODELS
        log.info("bootstrap: training %s on %d web pairs (%s), fine-tuning on %s; work dir %s",
                 "CLIP + BLIP" if train_clip else "BLIP", rows, pairs, clean, work_dir)
        with dask_client(training_dask_config(cfg.dask)) as client:
            trained = train_round(client, cfg, pairs, clean, f"{training_dir(work_dir)}/round-0", train_clip=train_clip)
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
