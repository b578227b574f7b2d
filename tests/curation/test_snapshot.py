"""Input resolution: a Common Crawl mirror, directories, globs and listing files."""
from __future__ import annotations

import gzip
import shutil

import pytest

from curation.errors import InputError
from curation.snapshot import list_snapshot, resolve_inputs
from tests.support.realdata import realdata_path


def _mirror(tmp_path):
    """A local mirror with Common Crawl's layout: crawl-data/<snap>/warc.paths.gz + the files it lists."""
    snap = "CC-MAIN-2024-10"
    rels = []
    for src in sorted(realdata_path("warc").glob("*.warc.gz")):
        rel = f"crawl-data/{snap}/segments/1700000000000.0/warc/{src.name}"
        dest = tmp_path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        rels.append(rel)
    listing = tmp_path / "crawl-data" / snap / "warc.paths.gz"
    listing.write_bytes(gzip.compress(("\n".join(rels) + "\n").encode()))
    return snap, rels


def test_snapshot_listing_through_a_local_mirror(tmp_path):
    snap, rels = _mirror(tmp_path)
    files = list_snapshot(snap, str(tmp_path), limit=2)
    assert [f.name for f in files] == rels[:2]
    assert all(f.path.startswith(str(tmp_path)) for f in files)
    assert resolve_inputs(snap, str(tmp_path)) == list_snapshot(snap, str(tmp_path))


def test_directory_glob_listing_and_single_file(tmp_path):
    snap, rels = _mirror(tmp_path)
    warc_dir = tmp_path / "crawl-data" / snap / "segments"
    assert len(resolve_inputs(str(warc_dir))) == len(rels)
    assert len(resolve_inputs(str(warc_dir) + "/*/warc/dolma*.warc.gz")) == 1
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(rels[:3]) + "\n")
    got = resolve_inputs(str(lst), cc_base=str(tmp_path))
    assert [g.name for g in got] == rels[:3]
    assert resolve_inputs(str(tmp_path / rels[0]))[0].path.endswith(rels[0])


def test_missing_inputs_fail_clearly(tmp_path):
    with pytest.raises(InputError, match="no WARC listing"):
        list_snapshot("CC-MAIN-1999-01", str(tmp_path))
    with pytest.raises(InputError, match="not found"):
        resolve_inputs(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no WARC files"):
        resolve_inputs(str(tmp_path / "empty"))
