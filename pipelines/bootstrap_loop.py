"""``curate bootstrap --rounds R``: BLIP's bootstrap loop, R CapFilt passes with a new BLIP trained on
each pass's pairs (see pipelines/bootstrap.py for round 0 and the training budget).

The one module that imports both the bootstrap stage (training) and CapFilt (pipelines/dask_capfilt.py):
those two do not import each other; CapFilt finds the models through models/resolve.py.

Pass 1 is the run's ``capfilt`` stage (round-0 models); for r = 1 .. R-1 a new BLIP is pretrained
on pass r's bootstrapped pairs, fine-tuned on the clean set again, and CapFilt pass r+1 rewrites
the web pairs (``score/pairs``) with it, into ``OUT/rounds/round-<r>/{models,capfilt}/``, and
``OUT/rounds/summary.json`` sums the passes up. Paths go through fsspec (``OUT=s3://...``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from fsspec.core import url_to_fs

from curation.config import BOOTSTRAP_MODELS, PipelineConfig, uses_bootstrap_models
from curation.dask_cluster import dask_client, work_dir_for
from curation.errors import StageError
from curation.stage import StageRunner, StageStats, is_complete, read_marker
from models.resolve import MANIFEST, MODELS, STAGE, models_dir_of
from pipelines.bootstrap import (BootstrapStage, clean_data_of, count_rows, publish_models, train_round, training_dask_config,
                                 training_dir)
from pipelines.dask_capfilt import CapFiltStage

log = logging.getLogger(__name__)

ROUNDS_DIR = "rounds"


def _read_json(url: str) -> dict | None:
    fs, p = url_to_fs(url)
    if not fs.isfile(p):
        return None
    with fs.open(p, "r") as fh:
        return json.load(fh)


def run_loop(cfg: PipelineConfig, source_root: str, out_root: str, rounds: int,
             force: set[str] | None = None) -> dict[str, Any]:
    """BLIP's bootstrap loop: ``rounds`` CapFilt passes, a new BLIP trained on each pass's pairs.

    Pass 1 is the ``capfilt`` stage of ``out_root`` (skipped when complete and unchanged) with the
    round-0 models (``bootstrap`` stage, or the configured ones). Writes
    ``out_root/rounds/summary.json`` and returns it.
    """
    source_root, out_root = source_root.rstrip("/"), out_root.rstrip("/")
    fs, scored = url_to_fs(f"{source_root}/score/pairs")
    if not fs.exists(scored):
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
        published = _read_json(f"{mdir}/{MANIFEST}")
        if published is None or published.get("work_dir") != work:
            log.info("bootstrap round %d: BLIP pretrained on %s (%d pairs), fine-tuned on %s", r, data, count_rows(data), clean)
            with dask_client(training_dask_config(cfg.dask)) as client:
                trained = train_round(client, cfg, data, clean, training_dir(work), train_clip=False, round_index=r)
            publish_models(trained, mdir, r, {"web_pairs": data, "clean_data": clean, "work_dir": work})
        stats = StageRunner(rdir, later, force).run(CapFiltStage(), {"pairs": web, "models": mdir})
        passes.append(_pass_summary(r + 1, f"{rdir}/capfilt", mdir, stats))
        data = f"{rdir}/capfilt/pairs"
    summary = {"source": source_root, "rounds": rounds, "passes": passes, "final_pairs": data}
    ofs, rounds_dir = url_to_fs(f"{out_root}/{ROUNDS_DIR}")
    ofs.makedirs(rounds_dir, exist_ok=True)
    with ofs.open(f"{rounds_dir}/summary.json", "w") as fh:
        fh.write(json.dumps(summary, indent=1, default=str) + "\n")
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
    """``--rounds [N]`` on ``curate bootstrap``'s subcommand."""
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
    """``curate bootstrap --rounds``: run the loop into ``cfg.out`` and print one line per pass."""
    summary = run_loop(cfg, source_root, cfg.out, loop_rounds(args, cfg), set(args.force))
    for p in summary["passes"]:
        fq = p.get("filter_vs_ground_truth") or {}
        extra = f", filter precision {fq.get('precision')} recall {fq.get('recall')}" if fq else ""
        print(f"CapFilt pass {p['pass']}: {p['pairs_in']} web pairs -> {p['pairs_out']} pairs "
              f"({p['web_kept']} web, {p['synthetic_kept']} synthetic){extra}  [{p['capfilt']}]")
    print(f"bootstrapped pairs: {summary['final_pairs']}")
    return 0


def cli_main(args, cfg: PipelineConfig, source_root: str) -> int | None:
    """The registry's hook for ``curate bootstrap``: with ``--rounds`` the loop takes the
    subcommand over (its exit code); without it, None, and the bootstrap stage runs as usual."""
    if getattr(args, "rounds", None) is None:
        return None
    return cli_loop(args, cfg, source_root)
