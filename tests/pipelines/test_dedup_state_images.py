"""Images in the cross-snapshot dedup state (``dedup.state_dir``): what snapshot A kept, B does not re-admit.

A loopback server serves both snapshots' images; B holds exact copies of A's images under new URLs,
a resized re-encoded copy (pHash within the bound), and new images: B rejects exactly the shared ones
``seen_in:<A>`` (their pairs and document positions with them) and keeps the new ones; a rerun of A
after B changes nothing.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.config import PipelineConfig
from curation.stage import StageRunner
from pipelines.dedup_state import DedupState, phash_bands
from pipelines.images import ImageStage
from tests.pipelines.test_images import FAST, _doc, _write_inputs
from tests.support.image_payloads import Route, ScriptedServer, jpeg, scene

pytestmark = pytest.mark.slow

A, B = "CC-MAIN-2024-10", "CC-MAIN-2024-18"


def _enc(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _run(root: Path, snapshot: str, server, state: Path, docs, pairs, force=None):
    inputs = _write_inputs(root, docs, pairs) if not (root / "dedup").exists() else {
        "documents": str(root / "dedup" / "documents"), "pairs": str(root / "dedup" / "pairs")}
    cfg = PipelineConfig.load(None, {**FAST, "snapshot": snapshot, "out": str(root),
                                     "images.allow_addresses": [server.allow], "dedup.state_dir": str(state)})
    stats = StageRunner(str(root), cfg, force=force).run(ImageStage(), inputs)
    rejects = {r["row_id"]: r for r in pq.read_table(root / "images" / "rejects").to_pylist()}
    kept = sorted(r["url"] for r in pq.read_table(root / "images" / "images").to_pylist())
    return stats, kept, rejects, cfg, inputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("state-images")
    big = scene(400, 320, seed=60)
    routes = {
        "/a/one.jpg": Route(jpeg(seed=41)),
        "/a/two.jpg": Route(_enc(big)),
        "/a/three.jpg": Route(jpeg(seed=43)),
        "/b/one-copy.jpg": Route(jpeg(seed=41)),  # same bytes as A's one.jpg
        "/b/two-small.jpg": Route(_enc(big.resize((200, 160)))),  # re-encoded, resized: pHash near
        "/b/new1.jpg": Route(jpeg(seed=44)),
        "/b/new2.jpg": Route(jpeg(seed=45)),
    }
    state = tmp / "state"
    with ScriptedServer(routes) as server:
        u = server.url
        docs_a = [_doc("a1", ["intro", u("/a/one.jpg"), "mid", u("/a/two.jpg")]), _doc("a2", ["x", u("/a/three.jpg")])]
        pairs_a = [{"key": "pa1", "url": u("/a/one.jpg"), "caption": "c", "caption_source": "alt",
                    "page_url": "https://site.example/", "doc_id": "a1"}]
        docs_b = [_doc("b1", ["intro", u("/b/one-copy.jpg"), "mid", u("/b/new1.jpg")]),
                  _doc("b2", ["only seen", u("/b/two-small.jpg")]),
                  _doc("b3", ["also A's", u("/a/three.jpg"), u("/b/new2.jpg")])]
        pairs_b = [{"key": f"pb{i}", "url": u(p), "caption": "c", "caption_source": "alt",
                    "page_url": "https://site.example/", "doc_id": "b1"}
                   for i, p in enumerate(["/b/one-copy.jpg", "/b/new1.jpg", "/b/two-small.jpg"])]
        ra = _run(tmp / "A", A, server, state, docs_a, pairs_a)
        manifest_a = json.loads((state / "runs" / f"{A}.json").read_text())
        rb = _run(tmp / "B", B, server, state, docs_b, pairs_b)
        ra2 = _run(tmp / "A", A, server, state, docs_a, pairs_a, force={"images"})
    return server, state, ra, rb, ra2, manifest_a


def test_first_snapshot_records_its_kept_images(runs):
    server, state, (stats, kept, rejects, *_), _, _, manifest = runs
    assert kept == sorted(server.url(p) for p in ("/a/one.jpg", "/a/two.jpg", "/a/three.jpg"))
    assert not [r for r in rejects.values() if r["reason"].startswith("seen_in:")]
    assert manifest["order"] == 0 and manifest["counts"]["images"] == 3
    assert stats.counters["state_entries"] == {"images": 3, "image_bands": manifest["counts"]["image_bands"]}
    assert list((state / "images").glob(f"p=*/snapshot={A}/*.parquet"))
    assert list((state / "image_bands").glob(f"p=*/snapshot={A}/*.parquet"))


def test_second_snapshot_rejects_exactly_the_shared_images(runs):
    server, state, _, (stats, kept, rejects, *_), _, _ = runs
    u = server.url
    assert kept == sorted([u("/b/new1.jpg"), u("/b/new2.jpg")])
    seen = {k: r for k, r in rejects.items() if r["table"] == "images" and r["reason"].startswith("seen_in:")}
    assert {k: (r["reason"], r["duplicate_of"]) for k, r in seen.items()} == {
        u("/b/one-copy.jpg"): (f"seen_in:{A}", u("/a/one.jpg")),  # exact copy under a new URL
        u("/b/two-small.jpg"): (f"seen_in:{A}", u("/a/two.jpg")),  # resized, re-encoded
        u("/a/three.jpg"): (f"seen_in:{A}", u("/a/three.jpg")),  # the same URL again
    }
    assert "pHash distance" in seen[u("/b/two-small.jpg")]["detail"]
    assert stats.rejected == {f"seen_in:{A}": 3}
    assert stats.counters["seen_in_earlier_snapshots"] == 3
    # pairs and documents follow the image's fate, as an in-run duplicate's do
    assert rejects["pb0"]["reason"] == f"seen_in:{A}" and rejects["pb2"]["reason"] == f"seen_in:{A}"
    assert "pb1" not in rejects
    assert rejects["b2"]["reason"] == "no_images"
    docs = {r["doc_id"]: r for r in pq.read_table(state.parent / "B" / "images" / "documents").to_pylist()}
    assert [x for x in docs["b1"]["images"] if x] == [u("/b/new1.jpg")]
    assert [x for x in docs["b3"]["images"] if x] == [u("/b/new2.jpg")]
    assert len(docs["b1"]["image_bytes"]) == len(docs["b1"]["images"])
    m = json.loads((state / "runs" / f"{B}.json").read_text())
    assert m["order"] == 1 and m["counts"]["images"] == 2


def test_rerun_of_the_first_snapshot_changes_nothing(runs):
    _, state, (_, kept, rejects, *_), _, (stats2, kept2, rejects2, *_), manifest = runs
    assert stats2.counters.get("seen_in_earlier_snapshots") == 0
    assert kept2 == kept and rejects2 == rejects
    again = json.loads((state / "runs" / f"{A}.json").read_text())
    assert again["order"] == manifest["order"] and again["counts"] == manifest["counts"]


def test_fingerprint_includes_the_state_dir_only_when_set(runs, tmp_path):
    _, state, (_, _, _, cfg, inputs), *_ = runs
    with_state = StageRunner(str(tmp_path), cfg).fingerprint(ImageStage(), inputs)
    cfg.dedup.state_dir = None
    without = StageRunner(str(tmp_path), cfg).fingerprint(ImageStage(), inputs)
    cfg.dedup.state_dir = str(state)
    assert with_state != without
    assert "dedup.state_dir" not in json.dumps({s: 1 for s in ImageStage.config_sections})


def test_lookup_reads_only_the_partitions_of_this_runs_hashes(tmp_path):
    """A near match is found through the band index alone; a hash in no recorded partition reads nothing."""
    st = DedupState(str(tmp_path), "s1", partitions=8)
    h = np.array([0x0123456789ABCDEF, 0xFEDCBA9876543210], dtype=np.uint64)
    st.record_images(["aa" * 32, "bb" * 32], h, ["http://x/1", "http://x/2"], max_distance=4)
    nxt = DedupState(str(tmp_path), "s2")
    near = h[0] ^ np.uint64(0b10101)  # 3 bits off
    far = np.uint64(0x5555555555555555)
    got = nxt.image_matches(["cc" * 32, "bb" * 32, "dd" * 32], np.array([near, 7, far], dtype=np.uint64), 4)
    assert got[0][:2] == ("s1", "http://x/1") and "pHash distance 3" in got[0][2]
    assert got[1][:2] == ("s1", "http://x/2")
    assert got[2] is None
    band, hh = phash_bands(h, 5)
    assert band.shape == hh.shape == (2, 5)
    assert nxt.image_matches(["cc" * 32], np.array([near], dtype=np.uint64), -1) == [None]


def test_lookup_never_opens_other_partitions(tmp_path):
    """A corrupt file in a partition none of this run's hashes fall in is never read."""
    from pipelines.dedup_state import _band_partition, _sha_partition

    st = DedupState(str(tmp_path), "s1", partitions=16)
    h = np.array([0x0123456789ABCDEF], dtype=np.uint64)
    st.record_images(["aa" * 32], h, ["http://x/1"], max_distance=3)
    query = ["aa" * 32]
    used_sha = set(_sha_partition(query, 16).tolist())
    used_band = set(_band_partition(*phash_bands(h, 4), 16).ravel().tolist())
    for table, used in (("images", used_sha), ("image_bands", used_band)):
        p = min(set(range(16)) - used)
        bad = tmp_path / table / f"p={p}" / "snapshot=s1"
        bad.mkdir(parents=True, exist_ok=True)
        (bad / "corrupt.parquet").write_bytes(b"not parquet")
    got = DedupState(str(tmp_path), "s2").image_matches(query, h, 3)
    assert got[0][:2] == ("s1", "http://x/1")
