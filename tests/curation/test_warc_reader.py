"""WARC reading: every record or problem is reported, nothing raises for bad bytes."""
from __future__ import annotations

import gzip
from collections import Counter

from curation.warc_reader import ReadProblem, ResponseRecord, iter_warc, strip_target_uri, FileReadStats
from tests.conftest import realdata_path


def _kinds(items):
    return Counter(
        ("problem:" + i.reason) if isinstance(i, ReadProblem) else ("truncated" if i.truncated else "response")
        for i in items
    )


def test_wget_target_uris_lose_their_angle_brackets():
    path = realdata_path("warc", "dolma_wget_sample-0000.warc.gz")
    records = list(iter_warc(str(path)))
    assert len(records) == 22
    assert all(r.target_uri.startswith("http") and not r.target_uri.startswith("<") for r in records)
    assert strip_target_uri("<https://a.b/c>") == "https://a.b/c"


def test_record_offsets_and_lengths_tile_the_file():
    path = realdata_path("warc", "resiliparse_CC-MAIN-2020-34_warcfile.warc.gz")
    records = [r for r in iter_warc(str(path)) if isinstance(r, ResponseRecord)]
    assert len(records) == 16
    data = path.read_bytes()
    for rec in records[:-1]:
        # Each record is its own gzip member: offset+length must decompress on its own.
        member = data[rec.offset: rec.offset + rec.length]
        assert gzip.decompress(member).startswith(b"WARC/1.")


def test_corrupt_gzip_member_is_reported_and_reading_resumes(tmp_path):
    data = realdata_path("warc", "dolma_wget_sample-0000.warc.gz").read_bytes()
    bad = bytearray(data)
    mid = len(data) // 2
    bad[mid: mid + 50] = b"\0" * 50
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(bytes(bad))
    stats = FileReadStats()
    kinds = _kinds(iter_warc(str(path), stats=stats))
    assert kinds["problem:warc_read_error"] >= 1
    assert stats.resyncs >= 1
    # Only the damaged record is lost: the rest of the file after it is read.
    assert kinds["response"] >= 20


def test_truncated_file_marks_the_cut_record(tmp_path):
    data = realdata_path("warc", "dolma_wget_sample-0000.warc.gz").read_bytes()
    for name, blob in (("cut.warc.gz", data[: len(data) // 2]), ("cut.warc", gzip.decompress(data)[:300_000])):
        path = tmp_path / name
        path.write_bytes(blob)
        kinds = _kinds(iter_warc(str(path)))
        assert kinds["truncated"] == 1, (name, kinds)
        assert kinds["response"] >= 9


def test_unreadable_inputs_become_problems(tmp_path):
    garbage = tmp_path / "garbage.warc.gz"
    garbage.write_bytes(b"this is not a warc file at all")
    empty = tmp_path / "empty.warc.gz"
    empty.write_bytes(b"")
    assert [p.reason for p in iter_warc(str(garbage))] == ["warc_read_error"]
    assert list(iter_warc(str(empty))) == []
    assert [p.reason for p in iter_warc(str(tmp_path / "missing.warc.gz"))] == ["warc_open_error"]


def test_oversized_payload_is_not_read(tmp_path):
    path = realdata_path("warc", "dolma_wget_sample-0000.warc.gz")
    recs = [r for r in iter_warc(str(path), max_payload_bytes=10_000)]
    big = [r for r in recs if r.payload is None]
    assert big and all(r.payload_length > 10_000 for r in big)
