"""The ordered list of stages ``curate run`` executes, and how each finds its inputs.

Every stage reads the outputs of earlier stages from the same run root, so a
run directory is self-describing: ``<out>/<stage>/{<outputs>, rejects, stats.json,
_STAGE_COMPLETE}``. Stages that are not built yet are simply absent here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from curation.config import PipelineConfig
from curation.snapshot import WarcInput, resolve_inputs
from curation.stage import StageRunner, StageStats

log = logging.getLogger(__name__)

STAGE_ORDER = ("extract",)


@dataclass
class RunInputs:
    warcs: list[WarcInput]
    snapshot: str


def prepare_inputs(cfg: PipelineConfig, input_spec: str | None = None) -> RunInputs:
    """Resolve ``--input`` or ``snapshot`` to WARC files; ``sample`` generates the offline mini-crawl."""
    if input_spec:
        return RunInputs(resolve_inputs(input_spec, cfg.cc_base, cfg.limit), cfg.snapshot if cfg.snapshot != "sample" else "local")
    if cfg.snapshot == "sample":
        from curation.sample import generate_sample

        sample_dir = Path(cfg.out) / "_sample"
        manifest = generate_sample(str(sample_dir), n_pages=cfg.sample_pages, seed=cfg.sample_seed)
        log.info("sample mini-crawl at %s (%s pages)", sample_dir, manifest.get("n_pages"))
        warcs = resolve_inputs(str(sample_dir / "warc"), cfg.cc_base, cfg.limit)
        return RunInputs([WarcInput(w.path, "sample/" + Path(w.path).name) for w in warcs], "sample")
    return RunInputs(resolve_inputs(cfg.snapshot, cfg.cc_base, cfg.limit), cfg.snapshot)


def stage_input(out_root: str, stage: str, output: str) -> str:
    return f"{out_root.rstrip('/')}/{stage}/{output}"


def run_extract(runner: StageRunner, inputs: RunInputs) -> StageStats:
    from pipelines.spark_extract import ExtractStage

    return runner.run(ExtractStage(inputs.warcs, inputs.snapshot), {"warcs": ",".join(w.path for w in inputs.warcs)})


def run_dedup(runner: StageRunner, source_root: str) -> StageStats:
    from pipelines.spark_dedup import DedupStage

    return runner.run(
        DedupStage(),
        {
            "documents": stage_input(source_root, "extract", "documents"),
            "pairs": stage_input(source_root, "extract", "pairs"),
        },
    )


def run_all(cfg: PipelineConfig, input_spec: str | None = None, force: set[str] | None = None,
            stages: tuple[str, ...] = STAGE_ORDER) -> dict[str, StageStats]:
    """Run every stage in order on one run root, skipping completed ones."""
    runner = StageRunner(cfg.out, cfg, force)
    results: dict[str, StageStats] = {}
    if "extract" in stages:
        results["extract"] = run_extract(runner, prepare_inputs(cfg, input_spec))
    if "dedup" in stages:
        results["dedup"] = run_dedup(runner, cfg.out)
    return results
