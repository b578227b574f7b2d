"""Hostile WARCs through the extract stage: no exception, every record exactly one row, unique row ids,
the good records beside the bad ones kept (issue 19).

Most cases call :func:`pipelines.spark_extract.process_files` (the body of the Spark task) directly,
without Spark; one test runs the whole stage through Spark on every hostile file together.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from curation.config import PipelineConfig
from pipelines.spark_extract import KIND_DOC, KIND_REJECT, KIND_STATS, process_files
from tests.support.hostile_warcs import matches, write_cases


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("hostile-warcs")
    return folder, write_cases(folder)


def _run_task(folder: Path, names: list[str], **overrides) -> list[dict]:
    cfg = PipelineConfig.load(overrides=overrides)
    batch = pa.RecordBatch.from_pydict({"path": [str(folder / n) for n in names], "name": names})
    out = process_files(iter([batch]), cfg.extract, cfg.paragraph_filters, cfg.document_filters, "hostile")
    return pa.Table.from_batches(list(out)).to_pylist()


def _rows_by_file(rows: list[dict]) -> tuple[dict[str, Counter], dict[str, dict[int, str | None]], dict[str, dict]]:
    """file -> Counter of row offsets, file -> {offset: reason (None: kept)}, file -> its stats."""
    seen: dict[str, Counter] = {}
    outcome: dict[str, dict[int, str | None]] = {}
    stats: dict[str, dict] = {}
    for row in rows:
        if row["kind"] == KIND_DOC:
            gm = json.loads(row["general_metadata"])
            name, offset, reason = gm["warc_filename"], gm["warc_record_offset"], None
        elif row["kind"] == KIND_REJECT:
            name, _, off = row["row_id"].rpartition("@")
            offset, reason = int(off), row["reason"]
        elif row["kind"] == KIND_STATS:
            fs = json.loads(row["stats_json"])
            stats[fs["file"]] = fs
            continue
        else:
            continue
        seen.setdefault(name, Counter())[offset] += 1
        outcome.setdefault(name, {})[offset] = reason
    return seen, outcome, stats


def _check(expected: dict[str, dict], rows: list[dict]) -> None:
    seen, outcome, stats = _rows_by_file(rows)
    row_ids = [r["row_id"] for r in rows if r["kind"] == KIND_REJECT]
    assert len(row_ids) == len(set(row_ids)), "reject row ids are unique"
    for name, want in expected.items():
        got = outcome.get(name, {})
        assert all(n == 1 for n in seen.get(name, Counter()).values()), (name, seen[name])
        assert set(got) == set(want), (name, sorted(got.items()), sorted(want))
        for offset, reasons in want.items():
            assert matches(got[offset], reasons), (name, offset, got[offset], reasons and sorted(map(str, reasons)))
        assert stats[name]["records"] == len(got), (name, stats[name]["records"], len(got))


def test_every_hostile_warc_record_is_exactly_one_row(hostile_dir):
    folder, expected = hostile_dir
    rows = _run_task(folder, sorted(expected))
    _check(expected, rows)
    seen, outcome, _ = _rows_by_file(rows)
    reasons = Counter(r for per in outcome.values() for r in per.values())
    # the cases really exercise what they name
    for reason in ("truncated_record", "warc_read_error", "payload_too_large", "html_too_deep", "empty_warc_file"):
        assert reasons[reason] >= 1, (reason, reasons)
    assert reasons[None] >= 30


def test_a_record_that_raises_is_a_record_error_row_and_the_task_goes_on(hostile_dir, monkeypatch):
    """Issue 19.1 generalised: an exception in any per-record step is that record's reject."""
    import curation.extract as extract_mod

    folder, expected = hostile_dir
    real = extract_mod.decode_html

    def flaky(payload, charset):
        if b"number 3," in payload:
            raise KeyError("boom")
        return real(payload, charset)

    monkeypatch.setattr(extract_mod, "decode_html", flaky)
    names = ["lie-past-eof.warc.gz", "corrupt-member.warc.gz"]
    rows = _run_task(folder, names)
    _, outcome, _ = _rows_by_file(rows)
    for name in names:
        assert set(outcome[name]) == set(expected[name])
    errors = [r for r in rows if r["kind"] == KIND_REJECT and r["reason"] == "record_error"]
    assert len(errors) == 2 and all(r["detail"].startswith("KeyError") for r in errors)


def test_an_unwritable_value_is_a_record_error_row(hostile_dir, monkeypatch):
    """A document Arrow cannot hold (a lone surrogate) must not fail the task's batch."""
    import curation.extract as extract_mod

    folder, expected = hostile_dir
    real = extract_mod.RecordProcessor._build

    def surrogate(self, rec, page, encoding, out):
        res = real(self, rec, page, encoding, out)
        if res.document is not None and "number 3," in (res.document["texts"][0] or ""):
            res.document["texts"][0] += "\ud800"
        return res

    monkeypatch.setattr(extract_mod.RecordProcessor, "_build", surrogate)
    rows = _run_task(folder, ["lie-past-eof.warc.gz"])
    _, outcome, _ = _rows_by_file(rows)
    assert set(outcome["lie-past-eof.warc.gz"]) == set(expected["lie-past-eof.warc.gz"])
    assert list(outcome["lie-past-eof.warc.gz"].values()).count("record_error") == 1


@pytest.mark.spark
def test_curate_extract_on_every_hostile_warc_together(spark, hostile_dir, tmp_path):
    """The one Spark run, through the CLI: rc 0 (row conservation is checked by curation/stage.py before
    the stage is marked complete), every record of every hostile file one row, unique reject row ids."""
    import pyarrow.parquet as pq

    from curation.cli import main
    from curation.stage import read_stats

    folder, expected = hostile_dir
    out = tmp_path / "run"
    assert main(["extract", "--input", str(folder), "--out", str(out), "--master", "local[2]"]) == 0
    stats = read_stats(str(out / "extract"))
    rejects = pq.read_table(out / "extract" / "rejects").to_pylist()
    docs = pq.read_table(out / "extract" / "documents").to_pylist()
    ids = [r["row_id"] for r in rejects]
    assert len(ids) == len(set(ids))
    n_expected = sum(len(rows) for rows in expected.values())
    assert len(ids) + len(docs) == n_expected == stats.rows_in
    kept = sum(1 for rows in expected.values() for want in rows.values() if want is None)
    assert len(docs) >= kept
    assert stats.rejected.get("empty_warc_file") == 1
    assert stats.counters["warc_length_overruns"] >= 2
