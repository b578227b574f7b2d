"""The stage registry: one entry per stage, each input an earlier stage's declared output."""
from __future__ import annotations

import pytest

from curation import registry
from curation.config import PipelineConfig
from curation.stage import Stage


def test_stage_names_are_unique_and_extract_comes_first():
    names = registry.stage_order()
    assert len(names) == len(set(names))
    assert names[0] == "extract" and registry.spec("extract").reads_source
    assert [s for s in registry.STAGES if s.reads_source] == [registry.spec("extract")]


def test_every_stage_class_matches_its_spec():
    for s in registry.STAGES:
        cls = s.stage_class()
        assert issubclass(cls, Stage), s.target
        assert cls.name == s.name, f"{s.target}.name is {cls.name!r}, registered as {s.name!r}"
        assert cls.outputs, s.name
        cfg = PipelineConfig()
        for section in cls.config_sections:
            cfg.section(section)  # every fingerprinted section exists


def test_every_input_is_an_earlier_stages_declared_output():
    seen: dict[str, tuple[str, ...]] = {}
    for s in registry.STAGES:
        for key, rel in s.inputs.items():
            stage, _, output = rel.partition("/")
            assert stage in seen, f"{s.name}.{key} reads {rel}: {stage} is not an earlier stage"
            assert output in seen[stage], f"{s.name}.{key} reads {rel}: {stage} declares {seen[stage]}"
        seen[s.name] = tuple(s.stage_class().outputs)


def test_cli_hooks_and_jobs_resolve():
    for s in registry.STAGES:
        for target in (s.cli_arguments, s.cli_main):
            if target:
                assert callable(registry.load_target(target)), target
    for job in registry.JOBS:
        assert callable(registry.load_target(job.cli_arguments))
        assert callable(registry.load_target(job.cli_main))
        assert registry.job_for(job.commands[0]) is job
    assert registry.job_for("dedup") is None


def test_unknown_names_are_clear_errors():
    with pytest.raises(KeyError, match="no stage named 'nope'"):
        registry.spec("nope")
    with pytest.raises(ValueError, match="module:name"):
        registry.load_target("curation.registry")


def test_resolve_inputs_and_upstream():
    dedup = registry.spec("dedup")
    assert dedup.resolve_inputs("s3://b/run/") == {"documents": "s3://b/run/extract/documents",
                                                    "pairs": "s3://b/run/extract/pairs"}
    assert dedup.upstream() == ["extract"]
    assert registry.spec("extract").resolve_inputs("/r") == {}


def test_bootstrap_applies_only_to_bootstrap_models():
    boot = registry.spec("bootstrap")
    assert boot.when(PipelineConfig.load(overrides={"snapshot": "sample"}))
    cfg = PipelineConfig.load(overrides={"snapshot": "CC-MAIN-2024-10"})
    assert not boot.when(cfg)


def test_optional_inputs_are_needed_only_by_the_configurations_that_read_them():
    sample = PipelineConfig.load(overrides={"snapshot": "sample"})
    score = registry.spec("score")
    assert score.needs_input("models", sample) and score.needs_input("pairs", sample)
    own_clip = PipelineConfig.load(overrides={"snapshot": "sample", "score.model": "ViT-B-32",
                                              "score.pretrained": "/models/vit-b-32.pt"})
    assert not score.needs_input("models", own_clip)
    assert registry.spec("capfilt").needs_input("models", own_clip)  # its BLIP is still the run's own


def test_source_root_accepts_a_stage_directory():
    assert registry.source_root("/r/run/dedup/") == "/r/run"
    assert registry.source_root("/r/run") == "/r/run"
    assert registry.source_root("s3://b/run/score") == "s3://b/run"
