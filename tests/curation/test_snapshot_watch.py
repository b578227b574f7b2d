"""curation/snapshot_watch.py: newest uncurated snapshot from a local mirror's crawl-data/ or a collinfo file."""
from __future__ import annotations

import gzip
import json

import pytest

from curation.errors import InputError
from curation.snapshot_watch import list_snapshots, main, newest_uncurated


@pytest.fixture
def mirror(tmp_path):
    base = tmp_path / "cc"
    for sid in ("CC-MAIN-2023-50", "CC-MAIN-2024-10", "CC-MAIN-2024-18"):
        d = base / "crawl-data" / sid
        d.mkdir(parents=True)
        (d / "warc.paths.gz").write_bytes(gzip.compress(f"crawl-data/{sid}/segments/x.warc.gz\n".encode()))
    (base / "crawl-data" / "CC-MAIN-2024-22").mkdir()  # being mirrored: no listing yet
    (base / "crawl-data" / "CC-NEWS").mkdir()  # not a main crawl
    return base


def test_crawl_data_listing_newest_first_skipping_incomplete(mirror):
    assert list_snapshots(str(mirror)) == ["CC-MAIN-2024-18", "CC-MAIN-2024-10", "CC-MAIN-2023-50"]


def test_newest_uncurated_with_lookback(mirror, tmp_path):
    out = tmp_path / "runs"
    assert newest_uncurated(str(mirror), str(out)) == "CC-MAIN-2024-18"
    (out / "CC-MAIN-2024-18").mkdir(parents=True)
    assert newest_uncurated(str(mirror), str(out)) == "CC-MAIN-2024-18"  # started, not finished
    (out / "CC-MAIN-2024-18" / "DATASET_CARD.md").write_text("# card")
    assert newest_uncurated(str(mirror), str(out)) is None  # the newest is done
    assert newest_uncurated(str(mirror), str(out), lookback=3) == "CC-MAIN-2024-10"


def test_collinfo_file(tmp_path, mirror, capsys):
    info = tmp_path / "collinfo.json"
    info.write_text(json.dumps([{"id": "CC-MAIN-2025-05", "name": "January 2025"}, {"id": "CC-MAIN-2024-51"},
                                {"id": "not-a-crawl"}]))
    assert list_snapshots("https://data.commoncrawl.org/", str(info)) == ["CC-MAIN-2025-05", "CC-MAIN-2024-51"]
    assert main(["--cc-base", str(mirror), "--collinfo", str(info), "--out-root", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "snapshot": "CC-MAIN-2025-05", "output": f"{tmp_path / 'o'}/CC-MAIN-2025-05"}


def test_clear_errors(tmp_path, capsys):
    with pytest.raises(InputError, match="crawl-data"):
        list_snapshots(str(tmp_path / "nothing"))
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    assert main(["--collinfo", str(bad), "--out-root", str(tmp_path)]) == 2
    assert "not JSON" in capsys.readouterr().err
