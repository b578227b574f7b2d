"""The stage runner: completion markers, skipping, partial output, forcing, conservation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.config import PipelineConfig
from curation.errors import InputError
from curation.errors import StageError
from curation.stage import MARKER, Stage, StageContext, StageRunner, StageStats, is_complete


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


# --------------------------------------------------------------------------- markers with file lists, input checks
class ParquetStage(Stage):
    """Writes ``documents/`` as Parquet parts (plus a ``_SUCCESS`` file, not an output) under a real stage name."""

    outputs = ("documents",)
    config_sections = ("dedup",)

    def __init__(self, name="dedup", parts=(3, 2), fail=False):
        self.name, self.parts, self.fail, self.calls = name, parts, fail, 0

    def run(self, ctx: StageContext) -> StageStats:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.calls += 1
        out = Path(ctx.output_path("documents"))
        out.mkdir(parents=True)
        for i, n in enumerate(self.parts):
            pq.write_table(pa.table({"doc_id": [f"{i}-{j}" for j in range(n)]}), out / f"part-{i:05d}.parquet")
        (out / "_SUCCESS").write_text("")
        if self.fail:
            raise RuntimeError("boom")
        total = sum(self.parts)
        return StageStats(self.name, rows_in=total, rows_out=total)


class ReaderStage(ParquetStage):
    """Reads nothing itself: what matters is whether the runner lets it start."""

    def __init__(self, name="images"):
        super().__init__(name=name)


def _finished_upstream(root: Path, name: str = "dedup") -> Path:
    StageRunner(str(root), PipelineConfig()).run(ParquetStage(name))
    return root / name


def test_marker_lists_every_output_file_with_its_size_and_footer_rows(tmp_path):
    sdir = _finished_upstream(tmp_path)
    marker = json.loads((sdir / MARKER).read_text())
    assert marker["version"] == 2
    files = marker["files"]["documents"]
    assert set(files) == {"documents/part-00000.parquet", "documents/part-00001.parquet"}  # no _SUCCESS
    assert files["documents/part-00000.parquet"] == {"bytes": (sdir / "documents/part-00000.parquet").stat().st_size,
                                                      "rows": 3}
    assert files["documents/part-00001.parquet"]["rows"] == 2


def test_an_input_stage_that_never_ran_or_did_not_finish_is_refused_with_the_fix(tmp_path):
    reader = ReaderStage()
    runner = StageRunner(str(tmp_path / "out"), PipelineConfig())
    need = {"documents": "dedup"}
    with pytest.raises(InputError, match=r"does not exist; run the dedup stage there first"):
        runner.run(reader, {"documents": str(tmp_path / "nowhere" / "dedup" / "documents")}, upstream=need)
    (tmp_path / "run").mkdir()
    with pytest.raises(InputError, match=rf"dedup stage has not run there.*`curate run --out {tmp_path / 'run'}`"):
        runner.run(reader, {"documents": str(tmp_path / "run" / "dedup" / "documents")}, upstream=need)
    (tmp_path / "run" / "dedup" / "documents").mkdir(parents=True)
    with pytest.raises(InputError, match=f"no {MARKER}: the dedup stage did not finish"):
        runner.run(reader, {"documents": str(tmp_path / "run" / "dedup" / "documents")}, upstream=need)
    assert reader.calls == 0 and not (tmp_path / "out" / "images").exists()


def test_a_deleted_or_truncated_input_file_fails_the_next_stage_naming_the_file(tmp_path):
    sdir = _finished_upstream(tmp_path)
    inputs = {"documents": str(sdir / "documents")}
    part0, part1 = sdir / "documents/part-00000.parquet", sdir / "documents/part-00001.parquet"
    data = part1.read_bytes()
    part1.unlink()
    reader = ReaderStage()
    with pytest.raises(InputError, match=r"part-00001\.parquet: missing.*--force dedup"):
        StageRunner(str(tmp_path), PipelineConfig()).run(reader, inputs)
    part1.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"part-00001\.parquet: \d+ bytes, the stage wrote \d+ \(truncated"):
        StageRunner(str(tmp_path), PipelineConfig()).run(reader, inputs)
    part1.write_bytes(data[:-8] + b"\0" * 8)  # same size, footer gone
    with pytest.raises(InputError, match=r"part-00001\.parquet: Parquet footer unreadable"):
        StageRunner(str(tmp_path), PipelineConfig()).run(reader, inputs)
    part1.write_bytes(data)
    assert part0.exists() and reader.calls == 0
    StageRunner(str(tmp_path), PipelineConfig()).run(reader, inputs)  # whole again: it runs
    assert reader.calls == 1


def test_old_markers_without_a_file_list_are_read_with_a_warning(tmp_path, caplog):
    sdir = _finished_upstream(tmp_path)
    marker = json.loads((sdir / MARKER).read_text())
    del marker["files"], marker["version"]
    (sdir / MARKER).write_text(json.dumps(marker))
    (sdir / "documents/part-00001.parquet").unlink()  # not detectable without the list
    reader = ReaderStage()
    StageRunner(str(tmp_path), PipelineConfig()).run(reader, {"documents": str(sdir / "documents")})
    assert reader.calls == 1 and "without a file list" in caplog.text


def test_inputs_not_named_upstream_and_without_a_marker_are_read_as_given(tmp_path):
    (tmp_path / "handmade" / "documents").mkdir(parents=True)
    reader = ReaderStage("score")
    # bootstrap/models: not upstream where the bootstrap stage does not apply (downloaded models).
    StageRunner(str(tmp_path), PipelineConfig()).run(reader, {
        "documents": str(tmp_path / "handmade" / "documents"), "models": str(tmp_path / "bootstrap" / "models")})
    assert reader.calls == 1


# --------------------------------------------------------------------------- check first, delete last
def test_a_stale_stage_is_kept_when_its_inputs_fail_the_check(tmp_path):
    sdir = _finished_upstream(tmp_path)
    reader = ReaderStage()
    StageRunner(str(tmp_path), PipelineConfig()).run(reader, {"documents": str(sdir / "documents")})
    before = (tmp_path / "images" / MARKER).read_text()
    (sdir / "documents/part-00000.parquet").unlink()
    changed = PipelineConfig.load(overrides={"snapshot": "x", "dedup.num_bands": 20})  # stale fingerprint
    with pytest.raises(InputError):
        StageRunner(str(tmp_path), changed).run(reader, {"documents": str(sdir / "documents")})
    assert (tmp_path / "images" / MARKER).read_text() == before and reader.calls == 1


def test_a_failed_rerun_puts_the_previous_complete_output_back(tmp_path):
    _finished_upstream(tmp_path, "images")
    before = (tmp_path / "images" / MARKER).read_text()
    with pytest.raises(RuntimeError, match="boom"):
        StageRunner(str(tmp_path), PipelineConfig(), force={"images"}).run(ParquetStage("images", parts=(1,), fail=True))
    assert (tmp_path / "images" / MARKER).read_text() == before
    assert len(list((tmp_path / "images" / "documents").glob("*.parquet"))) == 2
    assert not (tmp_path / "_previous").exists() or not any((tmp_path / "_previous").iterdir())
    # A rerun that succeeds leaves nothing aside.
    StageRunner(str(tmp_path), PipelineConfig(), force={"images"}).run(ParquetStage("images", parts=(1,)))
    assert json.loads((tmp_path / "images" / MARKER).read_text())["rows_out"] == 1
    assert not (tmp_path / "_previous" / "images").exists()


def test_a_rerun_killed_while_the_previous_output_was_aside_is_undone_next_time(tmp_path):
    sdir = _finished_upstream(tmp_path, "images")
    # What kill -9 leaves: the complete output moved aside, a partial new one without a marker.
    (tmp_path / "_previous").mkdir()
    sdir.rename(tmp_path / "_previous" / "images")
    (sdir / "documents").mkdir(parents=True)
    (sdir / "documents" / "part-00000.parquet").write_bytes(b"partial")
    stage = ParquetStage("images")
    StageRunner(str(tmp_path), PipelineConfig()).run(stage)
    assert stage.calls == 0  # the restored output is complete and current: skipped
    assert len(list((sdir / "documents").glob("*.parquet"))) == 2 and not (tmp_path / "_previous" / "images").exists()
