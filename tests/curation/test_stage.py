"""The stage runner: completion markers, skipping, partial output, forcing, conservation."""
from __future__ import annotations

import json

import pytest

from curation.config import PipelineConfig
from curation.stage import MARKER, Stage, StageContext, StageError, StageRunner, StageStats, is_complete


class CountingStage(Stage):
    name = "toy"
    outputs = ("things",)
    config_sections = ("dedup",)

    def __init__(self, rows_out=3, rejected=None, fail=False):
        self.calls = 0
        self.rows_out, self.rejected, self.fail = rows_out, rejected or {"bad": 1}, fail

    def run(self, ctx: StageContext) -> StageStats:
        self.calls += 1
        with open(ctx.output_path("things.txt"), "w") as fh:
            fh.write("x")
        if self.fail:
            raise RuntimeError("boom")
        return StageStats(self.name, rows_in=4, rows_out=self.rows_out, rejected=self.rejected)


def test_finished_stage_is_skipped_and_forced_stage_reruns(tmp_path):
    cfg = PipelineConfig()
    stage = CountingStage()
    first = StageRunner(str(tmp_path), cfg).run(stage)
    assert stage.calls == 1 and is_complete(str(tmp_path / "toy"))
    stats = json.loads((tmp_path / "toy" / "stats.json").read_text())
    assert stats["rows_in"] == 4 and stats["rejected"] == {"bad": 1}
    again = StageRunner(str(tmp_path), cfg).run(stage)
    assert stage.calls == 1 and again.rows_out == first.rows_out
    StageRunner(str(tmp_path), cfg, force={"toy"}).run(stage)
    assert stage.calls == 2


def test_changed_config_makes_a_finished_stage_stale(tmp_path):
    stage = CountingStage()
    StageRunner(str(tmp_path), PipelineConfig()).run(stage)
    StageRunner(str(tmp_path), PipelineConfig.load(overrides={"dedup.num_bands": 20})).run(stage)
    assert stage.calls == 2


def test_partial_output_is_never_mistaken_for_finished(tmp_path):
    cfg = PipelineConfig()
    with pytest.raises(RuntimeError):
        StageRunner(str(tmp_path), cfg).run(CountingStage(fail=True))
    assert (tmp_path / "toy" / "things.txt").exists() and not (tmp_path / "toy" / MARKER).exists()
    stage = CountingStage()
    StageRunner(str(tmp_path), cfg).run(stage)  # partial dir is cleared and the stage runs
    assert stage.calls == 1 and is_complete(str(tmp_path / "toy"))


def test_lost_rows_fail_the_stage(tmp_path):
    with pytest.raises(StageError, match="lost rows"):
        StageRunner(str(tmp_path), PipelineConfig()).run(CountingStage(rows_out=2))
    assert not is_complete(str(tmp_path / "toy"))
    st = StageStats("x", rows_in=2, rows_out=2, tables={"pairs": {"rows_in": 3, "rows_out": 1, "rejected": {"a": 1}}})
    assert not st.conserved()
