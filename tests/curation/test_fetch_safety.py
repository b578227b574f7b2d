"""The fetch path's safety refusals: ``tdm-reservation: 1`` (tdm_reserved) and images on the hash list
(hash_listed, refused on the worker: their bytes are in no file of the fetch cache)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from curation.fetch import FetchSettings, classify_error, read_shards, run_img2dataset
from curation.safe_http import FetchPolicy
from filters.blocklists import HashList
from filters.config import ImageFilterConfig
from tests.support.image_payloads import Route, ScriptedServer, jpeg, png

pytestmark = pytest.mark.slow

FAST = dict(timeout=3.0, threads_per_process=4, processes=1)


def test_classify_safety_reasons():
    assert classify_error("<urlopen error tdm_reserved: tdm-reservation: 1 on http://x/a.jpg>")[0] == "tdm_reserved"
    assert classify_error("hash_listed: sha256 ab12")[0] == "hash_listed"


@pytest.mark.parametrize("honour_tdm", [True, False])
def test_tdm_header_and_hash_list_refused_on_the_worker(tmp_path, honour_tdm):
    listed_sha, listed_md5 = jpeg(seed=31), png(seed=32)
    routes = {
        "/ok.jpg": Route(jpeg(seed=30)),
        "/tdm.jpg": Route(jpeg(seed=33), headers={"tdm-reservation": "1", "tdm-policy": "https://example.org/policy.json"}),
        "/tdm0.jpg": Route(jpeg(seed=34), headers={"tdm-reservation": "0"}),
        "/listed.jpg": Route(listed_sha),
        "/listed.png": Route(listed_md5, content_type="image/png"),
    }
    hashes = tmp_path / "hashes.txt"
    hashes.write_text(f"{hashlib.sha256(listed_sha).hexdigest()}\n{hashlib.md5(listed_md5).hexdigest()}\n")
    work = tmp_path / "work"
    with ScriptedServer(routes) as server:
        urls = sorted(server.url(p) for p in routes)
        policy = FetchPolicy(allow=(server.allow,), max_bytes=1_000_000, max_seconds=10, honour_tdm=honour_tdm)
        run_img2dataset(urls, str(work), policy, ImageFilterConfig(), FetchSettings(urls_per_shard=10, **FAST),
                        HashList.load(hashes))
        table, _ = read_shards(str(work))
    rows = {r["url"].rsplit("/", 1)[1]: r for r in table.to_pylist()}
    assert rows["ok.jpg"]["image"] == routes["/ok.jpg"].body and rows["tdm0.jpg"]["image"] is not None
    assert rows["listed.jpg"]["reason"] == rows["listed.png"]["reason"] == "hash_listed"
    assert rows["listed.jpg"]["image"] is None and rows["listed.png"]["image"] is None
    if honour_tdm:
        assert rows["tdm.jpg"]["image"] is None and rows["tdm.jpg"]["reason"] == "tdm_reserved"
    else:
        assert rows["tdm.jpg"]["image"] == routes["/tdm.jpg"].body
    for f in Path(work).rglob("*"):  # the listed bytes were written nowhere, not even in the fetch cache
        if f.is_file():
            data = f.read_bytes()
            assert listed_sha not in data and listed_md5 not in data, f
