"""The stage registry: every stage and job the pipeline has, in run order, as import strings.

This module is the one place that names ``pipelines/`` code. It imports nothing from
``pipelines/`` (only strings like ``"pipelines.spark_dedup:DedupStage"``, resolved when a
stage runs), so ``curate dedup`` never imports torch and ``curation/`` never depends on the
engines. ``curation.pipeline`` runs what is listed here, ``curation.cli`` builds one
subcommand per entry, and ``curation.report`` / ``curation.card`` read the order.

To add a stage: write ``pipelines/<name>.py`` with a :class:`curation.stage.Stage` subclass
and add one :class:`StageSpec` below, at its place in the run order (see
docs/architecture.md, "How to add a stage").
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from curation.config import BOOTSTRAP_MODELS, PipelineConfig, uses_bootstrap_models

if TYPE_CHECKING:
    from curation.stage import Stage


def load_target(target: str) -> Any:
    """``"package.module:name"`` -> the object, importing the module only now."""
    module, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"import string {target!r} is not 'module:name'")
    return getattr(importlib.import_module(module), attr)


def _always(cfg: PipelineConfig) -> bool:
    return True


@dataclass(frozen=True)
class StageSpec:
    """One stage: how to build it, what it reads, when it applies, and its CLI extras.

    ``target`` is ``"module:Class"``; the class takes no arguments (it reads ``ctx.config``,
    and a first stage reads ``ctx.source``). ``inputs`` maps an input name to
    ``"<stage>/<output>"`` relative to the source run root; a stage with ``reads_source``
    reads the run's raw input (WARC files) instead. ``when`` lets a stage apply only to some
    runs (model bootstrapping only where a model is ``bootstrap``). ``cli_arguments``
    (``"module:fn"``, ``fn(subparser)``) adds stage-specific flags to its subcommand;
    ``cli_main`` (``fn(args, cfg, source_root) -> int | None``) may take the subcommand over
    (returning an exit code) or return None to run the stage as usual.
    """

    name: str
    target: str
    inputs: dict[str, str]
    help: str
    when: Callable[[PipelineConfig], bool] = _always
    # Inputs read only in some configurations: key -> whether this configuration needs it (the
    # preflight then requires its stage's marker); an input not listed is needed whenever its
    # stage applies.
    needs: dict[str, Callable[[PipelineConfig], bool]] = field(default_factory=dict)
    reads_source: bool = False
    cli_arguments: str | None = None
    cli_main: str | None = None

    def build(self) -> "Stage":
        return load_target(self.target)()

    def stage_class(self) -> type:
        return load_target(self.target)

    def resolve_inputs(self, source_root: str) -> dict[str, str]:
        root = source_root.rstrip("/")
        return {key: f"{root}/{rel}" for key, rel in self.inputs.items()}

    def needs_input(self, key: str, cfg: PipelineConfig) -> bool:
        """Whether this configuration reads input ``key`` (``needs``, else whether its stage applies)."""
        if key in self.needs:
            return self.needs[key](cfg)
        return spec(self.inputs[key].split("/", 1)[0]).when(cfg)

    def required_upstream(self, cfg: PipelineConfig) -> dict[str, str]:
        """``{input key: stage}`` for the inputs this configuration reads: each must be a finished
        stage's output (the runner's ``upstream``: a missing marker is refused, not read as empty)."""
        return {key: rel.split("/", 1)[0] for key, rel in self.inputs.items() if self.needs_input(key, cfg)}

    def upstream(self) -> list[str]:
        """The stages whose outputs this one reads."""
        return sorted({rel.split("/", 1)[0] for rel in self.inputs.values()})


@dataclass(frozen=True)
class JobSpec:
    """A command that is not a stage (``curate train``, ``curate eval``): no marker, no run order.

    ``cli_arguments`` (``fn(subparsers)``) adds its subcommands; ``cli_main``
    (``fn(args, load_config) -> int``) runs them.
    """

    commands: tuple[str, ...]
    cli_arguments: str
    cli_main: str
    help: str = ""


# Every stage, in run order. Each stage's module owns its logic; this table only wires.
STAGES: list[StageSpec] = [
    StageSpec(
        "extract", "pipelines.spark_extract:ExtractStage", {},
        "WARC -> interleaved documents + pair candidates (Spark)",
        reads_source=True,
    ),
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
        cli_arguments="pipelines.bootstrap_loop:add_cli_arguments",
        cli_main="pipelines.bootstrap_loop:cli_main",
    ),
    StageSpec(
        "score", "pipelines.dask_score:ScoreStage",
        {"pairs": "images/pairs", "documents": "images/documents", "images": "images/images",
         "models": "bootstrap/models"},
        "CLIP scores and embeddings, pair filters, MMC4 documents, semantic dedup (Dask)",
        needs={"models": lambda cfg: cfg.score.pretrained == BOOTSTRAP_MODELS},
    ),
    StageSpec(
        "capfilt", "pipelines.dask_capfilt:CapFiltStage", {"pairs": "score/pairs", "models": "bootstrap/models"},
        "BLIP captioner + filter bootstrapping (Dask)",
        needs={"models": lambda cfg: BOOTSTRAP_MODELS in (cfg.capfilt.captioner, cfg.capfilt.filter)},
    ),
    # Final pairs: capfilt's (checked like every input when capfilt applies); score's where it does not.
    StageSpec(
        "release", "pipelines.release:ReleaseStage",
        {"pairs": "capfilt/pairs", "scored_pairs": "score/pairs", "documents": "images/documents"},
        "the curated result for its consumers: open_clip tars, interleaved tars + Parquet, HF datasets layout (Dask)",
    ),
]

# Jobs beside the stages: they read any run's outputs and write models, not stage directories.
JOBS: list[JobSpec] = [
    JobSpec(("train", "eval"), "pipelines.train:add_cli_arguments", "pipelines.train:cli_main",
            "train a small CLIP / BLIP on pair shards; evaluate a model on held-out pairs"),
    JobSpec(("takedown",), "pipelines.takedown:add_cli_arguments", "pipelines.takedown:cli_main",
            "remove listed pages, images and pairs from every output of a finished run (docs/safety.md)"),
]


def stage_order() -> tuple[str, ...]:
    return tuple(s.name for s in STAGES)


def spec(name: str) -> StageSpec:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage named {name!r}; stages: {', '.join(stage_order())}")


def source_root(path: str) -> str:
    """A stage's ``--input``: a run directory, or one of its stage directories (meaning its run directory)."""
    p = path.rstrip("/")
    if "/" in p and p.rsplit("/", 1)[-1] in stage_order():
        return p.rsplit("/", 1)[0]
    return p


def job_for(command: str) -> JobSpec | None:
    return next((j for j in JOBS if command in j.commands), None)
