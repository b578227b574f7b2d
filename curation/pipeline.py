"""``curate run``: the registry's stages in order on one run root, and where the raw input comes from.

Every stage reads the outputs of earlier stages from the same run root, so a run directory
is self-describing: ``<out>/<stage>/{<outputs>, rejects, stats.json, _STAGE_COMPLETE}``.
Which stages exist, in which order, and what each reads is the registry's
(:mod:`curation.registry`); this module resolves the run's source (``--input`` or the
snapshot, or the generated sample) and hands each stage to the :class:`StageRunner`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from curation.config import PipelineConfig
from curation.registry import STAGES, spec, stage_order
from curation.snapshot import RunSource, WarcInput, resolve_inputs
from curation.stage import StageRunner, StageStats

log = logging.getLogger(__name__)

__all__ = ["STAGES", "prepare_inputs", "run_all", "run_stage", "stage_order", "spec"]


def prepare_inputs(cfg: PipelineConfig, input_spec: str | None = None) -> RunSource:
    """Resolve ``--input`` or ``snapshot`` to WARC files; ``sample`` generates the offline mini-crawl."""
    if input_spec:
        warcs = resolve_inputs(input_spec, cfg.cc_base, cfg.limit)
        return RunSource(tuple(warcs), cfg.snapshot if cfg.snapshot != "sample" else "local")
    if cfg.snapshot == "sample":
        from curation.sample import generate_sample

        sample_dir = sample_dir_of(cfg.out)
        manifest = generate_sample(str(sample_dir), n_pages=cfg.sample_pages, seed=cfg.sample_seed,
                                   image_base_url=sample_image_base_url(cfg))
        log.info("sample mini-crawl at %s (%s pages)", sample_dir, manifest.get("n_pages"))
        warcs = resolve_inputs(str(sample_dir / "warc"), cfg.cc_base, cfg.limit)
        return RunSource(tuple(WarcInput(w.path, "sample/" + Path(w.path).name) for w in warcs), "sample")
    return RunSource(tuple(resolve_inputs(cfg.snapshot, cfg.cc_base, cfg.limit)), cfg.snapshot)


def sample_image_base_url(cfg: PipelineConfig) -> str:
    """Where the sample's image URLs point: the loopback server the images stage starts."""
    return f"http://127.0.0.1:{cfg.sample_image_port}/"


def sample_dir_of(out_root: str) -> Path:
    """Where ``SNAPSHOT=sample`` writes its generated mini-crawl inside a run directory."""
    return Path(out_root) / "_sample"


def run_stage(runner: StageRunner, name: str, source_root: str, source: RunSource | None = None) -> StageStats:
    """Run one stage, reading earlier stages' outputs from ``source_root`` (a first stage: ``source``)."""
    s = spec(name)
    if s.reads_source and source is None:
        raise ValueError(f"stage {name} reads the run's WARC files: pass source=prepare_inputs(cfg, ...)")
    return runner.run(s.build(), s.resolve_inputs(source_root), source=source if s.reads_source else None,
                      upstream=s.required_upstream(runner.config))


def run_all(cfg: PipelineConfig, input_spec: str | None = None, force: set[str] | None = None,
            stages: tuple[str, ...] | None = None) -> dict[str, StageStats]:
    """Run every applicable stage in order on one run root, skipping completed ones."""
    stages = stages or stage_order()
    runner = StageRunner(cfg.out, cfg, force)
    results: dict[str, StageStats] = {}
    source: RunSource | None = None
    for s in STAGES:
        if s.name not in stages or not s.when(cfg):
            continue
        if s.reads_source and source is None:
            source = prepare_inputs(cfg, input_spec)
        results[s.name] = run_stage(runner, s.name, cfg.out, source)
    # Every finished run describes itself: counts, thresholds, schemas, how to load (curation/card.py).
    from curation.card import write_card

    write_card(cfg.out, cfg, input_spec=input_spec)
    return results
