"""WARC reading: every record or problem is reported, nothing raises for bad bytes."""
from __future__ import annotations

import gzip
from collections import Counter

from curation.warc_reader import ReadProblem, ResponseRecord, iter_warc, strip_target_uri, FileReadStats
from tests.support.realdata import realdata_path


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
    # Issue 19.4: the problem is filed at the corrupt member's own offset, not at a good record's.
    items = list(iter_warc(str(path)))
    offsets = [i.offset for i in items]
    assert len(offsets) == len(set(offsets)) == 22 + kinds["problem:warc_read_error"] - 1
    for problem in (i for i in items if isinstance(i, ReadProblem)):
        assert problem.offset <= mid < problem.offset + 20_000  # the member that holds the damage


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
    assert [(p.reason, p.offset) for p in iter_warc(str(empty))] == [("empty_warc_file", 0)]
    assert [p.reason for p in iter_warc(str(tmp_path / "missing.warc.gz"))] == ["warc_open_error"]


def test_oversized_payload_is_not_read(tmp_path):
    path = realdata_path("warc", "dolma_wget_sample-0000.warc.gz")
    recs = [r for r in iter_warc(str(path), max_payload_bytes=10_000)]
    big = [r for r in recs if r.payload is None]
    assert big and all(r.payload_length > 10_000 for r in big)


def _outcomes(path) -> dict[int, str]:
    out = {}
    for item in iter_warc(str(path)):
        assert item.offset not in out, f"two rows at {item.offset}"
        out[item.offset] = item.reason if isinstance(item, ReadProblem) else (
            "truncated" if item.truncated else "too_large" if item.payload is None else "ok")
    return out


def test_a_record_swallowed_by_its_neighbours_lying_length_is_read_on_its_own(tmp_path):
    """Issue 19.3: a Content-Length past the end of its gzip member ran into the next member(s),
    whose records then had no row at all. Each is read on its own; the liar is cut."""
    from tests.support.hostile_warcs import build, gz, http_response, other, rec, warc_record

    swallowed = gz(warc_record("https://example.org/s", http_response(b"<html>s</html>"), n=9))
    for gzipped in (True, False):
        data, rows = build([
            rec(None, n=1, gzipped=gzipped),
            rec("truncated_record", n=2, gzipped=gzipped, length_delta=len(swallowed) * 3 + 50),
            rec(None, n=3, gzipped=gzipped),
            other("request", n=4, gzipped=gzipped),
            rec(None, n=5, gzipped=gzipped),
            rec("truncated_record", n=6, gzipped=gzipped, length_delta=10_000),  # past the end of the file
            rec(None, n=7, gzipped=gzipped),
        ])
        path = tmp_path / ("lie.warc.gz" if gzipped else "lie.warc")
        path.write_bytes(data)
        stats = FileReadStats()
        got = _outcomes(path)
        assert got == {off: ("truncated" if want else "ok") for off, want in rows.items()}, gzipped
        assert sum(1 for _ in iter_warc(str(path), stats=stats)) == 6
        assert stats.records_by_type == Counter(response=6, request=1) and stats.overruns >= 1


def test_every_hostile_warc_gives_unique_offsets(tmp_path):
    """Issue 19.4 over every hostile file: no two items (records or problems) share an offset."""
    from tests.support.hostile_warcs import write_cases

    expected = write_cases(tmp_path)
    for name, rows in expected.items():
        got = _outcomes(tmp_path / name)
        assert set(got) == set(rows), name


def test_a_warc_gz_inside_a_payload_is_not_taken_for_swallowed_records(tmp_path):
    """Deflate keeps an incompressible payload in stored blocks, so a crawled .warc.gz shows its members'
    magic inside the outer member; only starts after the record's own member end count as swallowed."""
    from curation.warc_reader import GZIP_MAGIC
    from tests.support.hostile_warcs import build, embedded_warc, rec

    data, rows = build([rec(None, n=1), rec("not_html", body=embedded_warc(), ctype="application/warc", n=2),
                        rec(None, n=3)])
    assert data.count(GZIP_MAGIC) > 3  # the inner members' magic is there to be mistaken
    path = tmp_path / "embedded.warc.gz"
    path.write_bytes(data)
    stats = FileReadStats()
    assert set(_outcomes(path)) == set(rows)
    assert sum(1 for _ in iter_warc(str(path), stats=stats)) == 3 and stats.overruns == 0


def test_giving_up_after_max_resyncs_leaves_a_row_for_the_unread_rest(tmp_path):
    from tests.support.hostile_warcs import READ_ERROR, build, corrupt_member, raw, rec

    data, rows = build([rec(None, n=1)] + [raw(corrupt_member(10 + i), READ_ERROR) for i in range(5)]
                       + [rec(None, n=2)])
    path = tmp_path / "many-bad.warc.gz"
    path.write_bytes(data)
    items = list(iter_warc(str(path), max_resyncs=2))
    offsets = [i.offset for i in items]
    assert len(offsets) == len(set(offsets))
    assert offsets == sorted(rows)[: len(offsets)]  # problems at their own members, in file order
    assert "gave up after 2 resyncs" in items[-1].detail  # the rest of the file is one row, not silence
