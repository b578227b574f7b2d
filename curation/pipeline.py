"""The ordered stages ``curate run`` executes, and where each finds its inputs.

Every stage reads the outputs of earlier stages from the same run root, so a
run directory is self-describing: ``<out>/<stage>/{<outputs>, rejects, stats.json,
_STAGE_COMPLETE}``. ``extract`` is special (its input is WARC files, resolved
from ``--input`` or the snapshot); every later stage is one :class:`StageSpec`
in :data:`STAGES`: how to build it and which upstream outputs it reads. The CLI
makes one subcommand per spec (``curate dedup --input RUN --out RUN``) and
``curate run`` runs them all in order.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from curation.config import PipelineConfig, uses_bootstrap_models
from curation.snapshot import WarcInput, resolve_inputs
from curation.stage import Stage, StageRunner, StageStats

log = logging.getLogger(__name__)


@dataclass
class RunInputs:
    warcs: list[WarcInput]
    snapshot: str


@dataclass(frozen=True)
class StageSpec:
    """One stage after extract.

    ``target`` is ``"module:Class"``, imported only when the stage runs (so ``curate dedup``
    never imports torch); the class takes no arguments (it reads ``ctx.config``). ``inputs`` maps an input
    name to ``"<stage>/<output>"`` relative to the source run root. ``when`` lets a stage
    apply only to some runs (e.g. model bootstrapping only where no pretrained model is set).
    """

    name: str
    target: str
    inputs: dict[str, str]
    help: str
    when: Callable[[PipelineConfig], bool] = lambda cfg: True

    def build(self) -> Stage:
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)()

    def resolve_inputs(self, source_root: str) -> dict[str, str]:
        root = source_root.rstrip("/")
        return {key: f"{root}/{rel}" for key, rel in self.inputs.items()}


# Stages after extract, in run order. Each stage's module owns its logic; this table only wires.
STAGES: list[StageSpec] = [
    StageSpec(
        "dedup", "pipelines.spark_dedup:DedupStage",
        {"documents": "extract/documents", "pairs": "extract/pairs"},
        "URL, exact, MinHash, paragraph and image dedup (Spark)",
    ),
    StageSpec(
        "images", "pipelines.images:ImageStage", {"documents": "dedup/documents", "pairs": "dedup/pairs"},
        "fetch images with img2dataset, safety checks, image filters, shards with bytes",
    ),
    # Only where a model is "bootstrap" (the sample): BLIP's round 0, the models score and capfilt load.
    StageSpec(
        "bootstrap", "pipelines.bootstrap:BootstrapStage", {"pairs": "images/pairs"},
        "train the run's own CLIP + BLIP captioner/filter (round 0 of BLIP's bootstrapping; --rounds N: the loop)",
        when=uses_bootstrap_models,
    ),
    StageSpec(
        "score", "pipelines.dask_score:ScoreStage",
        {"pairs": "images/pairs", "documents": "images/documents", "images": "images/images",
         "models": "bootstrap/models"},
        "CLIP scores and embeddings, pair filters, MMC4 documents, semantic dedup (Dask)",
    ),
    StageSpec(
        "capfilt", "pipelines.dask_capfilt:CapFiltStage", {"pairs": "score/pairs", "models": "bootstrap/models"},
        "BLIP captioner + filter bootstrapping (Dask)",
    ),
]


def stage_order() -> tuple[str, ...]:
    return ("extract", *(s.name for s in STAGES))


def spec(name: str) -> StageSpec:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage named {name!r}; stages: {', '.join(stage_order())}")


def prepare_inputs(cfg: PipelineConfig, input_spec: str | None = None) -> RunInputs:
    """Resolve ``--input`` or ``snapshot`` to WARC files; ``sample`` generates the offline mini-crawl."""
    if input_spec:
        return RunInputs(resolve_inputs(input_spec, cfg.cc_base, cfg.limit), cfg.snapshot if cfg.snapshot != "sample" else "local")
    if cfg.snapshot == "sample":
        from curation.sample import generate_sample

        sample_dir = sample_dir_of(cfg.out)
        manifest = generate_sample(str(sample_dir), n_pages=cfg.sample_pages, seed=cfg.sample_seed,
                                   image_base_url=sample_image_base_url(cfg))
        log.info("sample mini-crawl at %s (%s pages)", sample_dir, manifest.get("n_pages"))
        warcs = resolve_inputs(str(sample_dir / "warc"), cfg.cc_base, cfg.limit)
        return RunInputs([WarcInput(w.path, "sample/" + Path(w.path).name) for w in warcs], "sample")
    return RunInputs(resolve_inputs(cfg.snapshot, cfg.cc_base, cfg.limit), cfg.snapshot)


def sample_image_base_url(cfg: PipelineConfig) -> str:
    """Where the sample's image URLs point: the loopback server the images stage starts."""
    return f"http://127.0.0.1:{cfg.sample_image_port}/"


def sample_dir_of(out_root: str) -> Path:
    """Where ``SNAPSHOT=sample`` writes its generated mini-crawl inside a run directory."""
    return Path(out_root) / "_sample"


def run_extract(runner: StageRunner, inputs: RunInputs) -> StageStats:
    from pipelines.spark_extract import ExtractStage

    return runner.run(ExtractStage(inputs.warcs, inputs.snapshot), {"warcs": ",".join(w.path for w in inputs.warcs)})


def run_stage(runner: StageRunner, name: str, source_root: str) -> StageStats:
    """Run one stage after extract, reading its inputs from ``source_root``."""
    s = spec(name)
    return runner.run(s.build(), s.resolve_inputs(source_root))


def run_all(cfg: PipelineConfig, input_spec: str | None = None, force: set[str] | None = None,
            stages: tuple[str, ...] | None = None) -> dict[str, StageStats]:
    """Run every stage in order on one run root, skipping completed ones."""
    stages = stages or stage_order()
    runner = StageRunner(cfg.out, cfg, force)
    results: dict[str, StageStats] = {}
    if "extract" in stages:
        results["extract"] = run_extract(runner, prepare_inputs(cfg, input_spec))
    for s in STAGES:
        if s.name in stages and s.when(cfg):
            results[s.name] = run_stage(runner, s.name, cfg.out)
    # Every finished run describes itself: counts, thresholds, schemas, how to load (curation/card.py).
    from curation.card import write_card

    write_card(cfg.out, cfg, input_spec=input_spec)
    return results
