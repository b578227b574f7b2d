"""The Spark extract stage on real WARCs plus damaged copies: every record accounted for."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.config import PipelineConfig
from curation.schemas import DOCUMENTS, PAIRS, REJECTS
from curation.snapshot import RunSource, resolve_inputs
from curation.stage import StageRunner
from curation.warc_reader import ResponseRecord, iter_warc
from pipelines.spark_extract import ExtractStage
from tests.support.realdata import realdata_path

pytestmark = pytest.mark.spark


GOOD_PAGE = (
    b"<html><body><p>The small village sits at the edge of a quiet river, and in the summer the children of the "
    b"town walk down to the water to watch the boats go by in the late afternoon light.</p>"
    b"<p>Most of the houses were built of local stone more than two hundred years ago, and many of them have "
    b"been restored by families who have lived there for several generations.</p>"
    b"<img src='/a.jpg' alt='boats on the quiet river'></body></html>"
)
# uri -> (content type, body, the reasons the record may get)
HOSTILE = {
    "http://hostile.test/huge.html": ("text/html", b"<html><body>" + b"<p>word word word</p>" * 1_000_000
                                      + b"</body></html>", {"payload_too_large"}),  # ~21 MB
    "http://hostile.test/deep.html": ("text/html", b"<html><body>" + b"<div>" * 100_000 + b"deep"
                                      + b"</div>" * 100_000 + b"</body></html>", {"html_too_deep"}),
    "http://hostile.test/pic.png": ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, {"not_html"}),
    "http://hostile.test/bytes.html": ("text/html; charset=utf-8", bytes(range(256)) * 64,
                                       {"binary_payload", "undecodable"}),
    "http://hostile.test/good.html": ("text/html", GOOD_PAGE, {None}),
}


def _write_hostile_warc(path):
    """A WARC of records that must each become one counted outcome: a 21 MB page, 100,000 nested divs,
    an image, bytes that are no text, then a good page (reading goes on after all of them)."""
    import uuid

    from curation.sample.warc_writer import WarcWriter, http_response, record_id

    with open(path, "wb") as fh:
        w = WarcWriter(fh)
        for uri, (ctype, body, _) in HOSTILE.items():
            resp = http_response(200, "OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))], body)
            w.write_record("response", [("WARC-Date", "2024-01-01T00:00:00Z"), ("WARC-Record-ID", record_id(uuid.uuid4())),
                                        ("WARC-Target-URI", uri)], resp, "application/http; msgtype=response",
                           payload=body)


@pytest.fixture(scope="module")
def extracted(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extract")
    warcs = tmp / "warcs"
    warcs.mkdir()
    for src in realdata_path("warc").glob("*.warc.gz"):
        shutil.copy(src, warcs / src.name)
    data = (warcs / "dolma_wget_sample-0000.warc.gz").read_bytes()
    bad = bytearray(data)
    bad[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64
    (warcs / "z-corrupt.warc.gz").write_bytes(bytes(bad))
    (warcs / "z-cut.warc").write_bytes(gzip.decompress(data)[:250_000])
    (warcs / "z-garbage.warc.gz").write_bytes(b"\x1f\x8b\x08 definitely not gzip")
    _write_hostile_warc(warcs / "z-hostile.warc.gz")
    cfg = PipelineConfig.load(overrides={"out": str(tmp / "run"), "spark.master": "local[2]"})
    stage = ExtractStage()
    source = RunSource(tuple(resolve_inputs(str(warcs))), "test")
    stats = StageRunner(cfg.out, cfg).run(stage, source=source)
    return cfg, stats, warcs, stage


def test_every_record_is_a_document_or_a_reject(extracted):
    cfg, stats, warcs, _ = extracted
    docs = pq.read_table(f"{cfg.out}/extract/documents")
    rejects = pq.read_table(f"{cfg.out}/extract/rejects")
    # Count what a plain reader sees: responses plus unreadable regions.
    expected = sum(1 for w in sorted(warcs.iterdir()) for _ in iter_warc(str(w)))
    assert stats.rows_in == expected == docs.num_rows + rejects.num_rows
    assert stats.rows_out == docs.num_rows
    assert sum(stats.rejected.values()) == rejects.num_rows
    reasons = set(rejects.column("reason").to_pylist())
    assert {"not_html", "warc_read_error", "truncated_record"} <= reasons
    assert stats.counters["gzip_resyncs"] >= 1
    assert len(set(docs.column("doc_id").to_pylist())) == docs.num_rows


def test_outputs_have_the_declared_schemas_and_load_in_hf_datasets(extracted):
    cfg, *_ = extracted
    for name, schema in (("documents", DOCUMENTS), ("pairs", PAIRS), ("rejects", REJECTS)):
        table = pq.read_table(f"{cfg.out}/extract/{name}")
        assert table.schema.names == schema.names, name
    docs = pq.read_table(f"{cfg.out}/extract/documents").to_pylist()
    for doc in docs:
        meta = json.loads(doc["metadata"])
        assert len(doc["texts"]) == len(doc["images"]) == len(meta)
        assert all((t is None) != (i is None) for t, i in zip(doc["texts"], doc["images"]))
        gm = json.loads(doc["general_metadata"])
        assert gm["warc_record_offset"] >= 0 and gm["url"] == doc["url"]
    import datasets

    ds = datasets.load_dataset("parquet", data_files=f"{cfg.out}/extract/documents/*.parquet", split="train")
    assert ds.num_rows == len(docs) and set(ds.column_names) == set(DOCUMENTS.names)


def test_record_offsets_point_at_the_record(extracted):
    cfg, _, warcs, _ = extracted
    docs = pq.read_table(f"{cfg.out}/extract/documents").to_pylist()
    for doc in docs[:5]:
        gm = json.loads(doc["general_metadata"])
        path = gm["warc_filename"]
        recs = [r for r in iter_warc(path) if isinstance(r, ResponseRecord) and r.offset == gm["warc_record_offset"]]
        assert recs and recs[0].target_uri == doc["url"]


def test_rerun_skips_the_finished_stage(extracted):
    cfg, stats, warcs, stage = extracted
    again = StageRunner(cfg.out, cfg).run(stage, source=RunSource(tuple(resolve_inputs(str(warcs))), "test"))
    assert again.seconds == stats.seconds  # read back from stats.json, not recomputed


def test_hostile_records_are_counted_not_fatal(extracted):
    """20 MB page, deep nesting, non-HTML, undecodable bytes: each one counted reject; the good page after them kept."""
    cfg, stats, warcs, _ = extracted
    name = str(warcs / "z-hostile.warc.gz")
    recs = [r for r in iter_warc(name) if isinstance(r, ResponseRecord)]
    assert [r.target_uri for r in recs] == list(HOSTILE)
    rejects = {r["row_id"]: r["reason"] for r in pq.read_table(f"{cfg.out}/extract/rejects").to_pylist()}
    kept = {json.loads(d["general_metadata"])["url"] for d in pq.read_table(f"{cfg.out}/extract/documents").to_pylist()}
    for rec in recs:
        got = rejects.get(f"{name}@{rec.offset}")
        assert got in HOSTILE[rec.target_uri][2], (rec.target_uri, got)
        assert (got is None) == (rec.target_uri in kept)
    for reason in ("payload_too_large", "html_too_deep", "not_html"):
        assert stats.rejected.get(reason, 0) >= 1


def _sorted_rows(path) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in pq.read_table(path).to_pylist())


def test_a_rerun_after_some_files_finished_runs_only_the_others(extracted, tmp_path, caplog):
    """Two WARC files finished (their task outputs and done-markers in the work dir, as a killed run
    leaves them) -> the rerun says so, runs only the other tasks and gives the uninterrupted outputs."""
    from curation.stage import StageContext
    from pipelines.spark_extract import extract_task

    cfg, stats, warcs, stage = extracted
    out = tmp_path / "run"
    cfg2 = PipelineConfig.load(overrides={"out": str(out), "spark.master": "local[2]"})
    source = RunSource(tuple(resolve_inputs(str(warcs))), "test")
    ctx = StageContext(f"{out}/extract", source.fingerprint_inputs(), cfg2, "killed", source)
    spec, tasks = stage.plan(ctx)
    assert spec.work_dir.startswith(f"{out}/_work/extract-")  # outside the stage dir the runner deletes
    for task in tasks[:2]:
        extract_task(spec, task)  # here, not on Spark: what the killed run had finished
    (out / "extract" / "documents").mkdir(parents=True)  # the killed run's partial stage dir
    (out / "extract" / "documents" / "part-00000.parquet").write_bytes(b"half")
    with caplog.at_level("INFO", logger="pipelines.spark_extract"):
        again = StageRunner(str(out), cfg2).run(stage, source=source)
    assert f"extract: 2 of {len(tasks)} WARC files already finished, resuming" in caplog.text
    assert again.counters["warc_files_resumed"] == 2
    assert (again.rows_in, again.rows_out, again.rejected, again.outputs) == \
        (stats.rows_in, stats.rows_out, stats.rejected, stats.outputs)
    for name in ("documents", "pairs", "rejects"):
        assert _sorted_rows(out / "extract" / name) == _sorted_rows(f"{cfg.out}/extract/{name}"), name
    assert not (out / "_work").exists() or not any((out / "_work").iterdir())  # work copy removed once marked


def test_one_output_file_per_task_named_in_input_order(extracted):
    """``<output>/<task position>-<WARC name>.parquet``, none empty; every file has a row somewhere
    (a document or at least one reject)."""
    cfg, stats, warcs, _ = extracted
    stems = set()
    for name in ("documents", "pairs", "rejects"):
        files = sorted((Path(cfg.out) / "extract" / name).glob("*.parquet"))
        assert all(pq.read_metadata(f).num_rows > 0 for f in files), name
        stems |= {f.name.removesuffix(".parquet") for f in files}
    assert len(stems) == stats.counters["warc_files"] == len(list(warcs.iterdir()))
    assert [s.split("-", 1)[1] for s in sorted(stems)] == sorted(p.name for p in warcs.iterdir())


def test_every_stage_of_a_run_gets_the_one_session(spark):
    """get_spark for the same master returns the session already running (no new builder, master
    check or project zip); the stage's runtime SQL settings are applied to it."""
    from curation.config import SparkConfig
    from curation.spark import get_spark

    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        again = get_spark(SparkConfig(master="local[2]", shuffle_partitions=3, show_progress=False,
                                      conf={"spark.sql.files.maxRecordsPerFile": "1000"}))
        assert again is spark
        assert spark.conf.get("spark.sql.shuffle.partitions") == "3"
        assert spark.conf.get("spark.sql.files.maxRecordsPerFile") == "1000"
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
        spark.conf.unset("spark.sql.files.maxRecordsPerFile")


def test_the_driver_jvm_uses_the_class_data_archive_once_built(tmp_path, monkeypatch):
    from curation.config import SparkConfig
    from curation.spark import CDS_ENV, _driver_java_options, cds_archive

    cfg = SparkConfig(conf={"spark.driver.extraJavaOptions": "-Dmine=1"})
    monkeypatch.setenv(CDS_ENV, str(tmp_path))
    assert _driver_java_options(cfg) == "-Dmine=1"  # not built yet: the user's options only
    cds_archive().write_bytes(b"x")
    opts = _driver_java_options(cfg)
    assert opts.startswith(f"-XX:SharedArchiveFile={cds_archive()} -Xshare:auto") and opts.endswith("-Dmine=1")
    monkeypatch.setenv(CDS_ENV, "off")
    assert cds_archive() is None and _driver_java_options(SparkConfig()) is None
