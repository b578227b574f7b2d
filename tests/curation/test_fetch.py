"""img2dataset with the checked opener and the worker-side checks: hostile inputs are counted rows, and
an interrupted fetch resumes without refetching finished shards."""
from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pytest

from curation.fetch import FetchSettings, classify_error, done_shards, read_shards, run_img2dataset, work_dir_for
from curation.safe_http import FetchPolicy
from filters.config import ImageFilterConfig
from tests.support.image_payloads import HOSTILE_EXPECTED, Route, ScriptedServer, hostile_routes, jpeg

pytestmark = pytest.mark.slow

FAST = dict(timeout=3.0, threads_per_process=8, processes=2)


@pytest.mark.parametrize(
    "message,reason",
    [
        ("HTTP Error 404: Not Found", "fetch_error:404"),
        ("HTTP Error 503: Service Unavailable", "fetch_error:503"),
        ("<urlopen error unsafe_address: 10.0.0.1 resolves to 10.0.0.1 (private)>", "unsafe_address"),
        ("unsafe_scheme: redirect to file: file:///etc/passwd", "unsafe_scheme"),
        ("too_large: Content-Length 1000000000 over 20000000 bytes", "too_large"),
        ("Use of image disallowed by X-Robots-Tag directive", "robots_noai"),
        ("timed out", "fetch_error:timeout"),
        ("The read operation timed out", "fetch_error:timeout"),
        ("<urlopen error [Errno -2] Name or service not known>", "fetch_error:dns"),
        ("<urlopen error [Errno 111] Connection refused>", "fetch_error:connection"),
        ("Remote end closed connection without response", "fetch_error:protocol"),
        ("<urlopen error unknown url type: gopher>", "unsafe_scheme"),
        ("nonnumeric port: '8080@10.0.0.1'", "bad_url"),
        ("URL can't contain control characters. '/a b' (found at least ' ')", "bad_url"),
        ("decompression_bomb: Image size (2500000000 pixels) exceeds limit", "decompression_bomb"),
        ("image format is odd", "fetch_error:other"),
        (None, "fetch_error:other"),
    ],
)
def test_classify_error(message, reason):
    assert classify_error(message)[0] == reason


def test_hostile_inputs_are_counted_not_fatal(tmp_path):
    with ScriptedServer() as server:
        server.routes.update(hostile_routes())
        urls = sorted(server.url(p) for p in HOSTILE_EXPECTED)
        policy = FetchPolicy(allow=(server.allow,), max_bytes=1_000_000, max_seconds=10)
        counters = run_img2dataset(urls, str(tmp_path), policy, ImageFilterConfig(),
                                   FetchSettings(urls_per_shard=8, **FAST))
        table, summary = read_shards(str(tmp_path))
    assert counters["shards"] == 3 and counters["shards_fetched"] == 3
    assert summary["count"] == len(urls)
    rows = {r["url"]: r for r in table.to_pylist()}
    assert set(rows) == set(urls)
    for path, reason in HOSTILE_EXPECTED.items():
        row = rows[server.url(path)]
        if reason is None:
            assert row["image"] is not None, (path, row["reason"], row["detail"])
            assert row["sha256"] == hashlib.sha256(row["image"]).hexdigest()
            assert row["format"] in ("jpeg", "png", "webp") and len(row["phash"]) == 16
        else:
            assert row["image"] is None and row["reason"] == reason, (path, row["reason"], row["detail"])
    assert rows[server.url("/ok.jpg")]["image"] == hostile_routes()["/ok.jpg"].body
    assert rows[server.url("/16bit.png")]["reencoded"] == "I;16->L"
    # the private/metadata redirect targets were never requested (they are not on this server either)
    assert not any("10.0.0.1" in r or "169.254" in r for r in server.requests)


def test_unsafe_literal_addresses_are_refused_by_the_worker_too(tmp_path):
    # The stage prechecks literal addresses, but the worker must refuse on its own.
    urls = ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a.jpg", "http://127.0.0.1:9/x.jpg"]
    run_img2dataset(urls, str(tmp_path), FetchPolicy(), ImageFilterConfig(),
                    FetchSettings(urls_per_shard=10, timeout=1.0, threads_per_process=4, processes=1))
    table, _ = read_shards(str(tmp_path))
    assert {r["url"]: r["reason"] for r in table.to_pylist()} == {u: "unsafe_address" for u in urls}


def test_interrupted_fetch_resumes_only_unfinished_shards(tmp_path):
    routes = {f"/img{i:02d}.jpg": Route(jpeg(seed=100 + i)) for i in range(12)}
    with ScriptedServer(routes) as server:
        urls = sorted(server.url(p) for p in routes)
        policy = FetchPolicy(allow=(server.allow,))
        settings = FetchSettings(urls_per_shard=4, **FAST)
        work = work_dir_for(str(tmp_path), urls, {"test": 1})
        run_img2dataset(urls, work, policy, ImageFilterConfig(), settings)
        assert done_shards(work + "/shards") == {0, 1, 2}
        assert len(server.requests) == 12
        # Interrupt shard 1: its Parquet is there but its stats file (written last) is not, and the
        # Parquet is cut in half, as after a kill mid-write.
        shard = f"{work}/shards/00001"
        os.remove(shard + "_stats.json")
        with open(shard + ".parquet", "r+b") as fh:
            fh.truncate(100)
        server.requests.clear()
        counters = run_img2dataset(urls, work, policy, ImageFilterConfig(), settings)
        assert counters["shards_resumed"] == 2 and counters["shards_fetched"] == 1
        assert sorted(server.requests) == sorted(u.split(str(server.port))[1] for u in urls[4:8])
        table, _ = read_shards(work)
        assert sorted(table.column("url").to_pylist()) == urls
        assert all(b is not None for b in table.column("image").to_pylist())
        server.requests.clear()
        assert run_img2dataset(urls, work, policy, ImageFilterConfig(), settings)["shards_fetched"] == 0
        assert server.requests == []


def test_work_dir_depends_on_urls_and_settings(tmp_path):
    a = work_dir_for(str(tmp_path), ["http://a/1", "http://a/2"], {"x": 1})
    assert a == work_dir_for(str(tmp_path), ["http://a/1", "http://a/2"], {"x": 1})
    assert a != work_dir_for(str(tmp_path), ["http://a/1"], {"x": 1})
    assert a != work_dir_for(str(tmp_path), ["http://a/1", "http://a/2"], {"x": 2})


@pytest.mark.spark
def test_pyspark_distributor(spark, tmp_path):
    routes = {f"/p{i}.jpg": Route(jpeg(seed=200 + i)) for i in range(6)}
    routes["/bad.png"] = Route(b"not an image", content_type="image/png")
    with ScriptedServer(routes) as server:
        urls = sorted(server.url(p) for p in routes)
        settings = FetchSettings(distributor="pyspark", urls_per_shard=3, timeout=2.0, threads_per_process=4)
        assert FetchSettings.from_config(_images_cfg(), "spark://cluster:7077").distributor == "pyspark"
        assert FetchSettings.from_config(_images_cfg(), "local[2]").distributor == "multiprocessing"
        run_img2dataset(urls, str(tmp_path), FetchPolicy(allow=(server.allow,)), ImageFilterConfig(), settings)
        table, summary = read_shards(str(tmp_path))
    assert summary["count"] == 7 and summary["successes"] == 6
    reasons = dict(zip(table.column("url").to_pylist(), table.column("reason").to_pylist()))
    assert reasons[server.url("/bad.png")] == "format"
    assert pa.types.is_binary(table.column("image").type)


def _images_cfg():
    from curation.config import ImagesConfig

    return ImagesConfig()


def test_checking_resizer_resizes_with_img2dataset_after_the_checks():
    import io

    from curation.fetch import CheckingResizer

    resize = dict(image_size=256, resize_mode="keep_ratio_largest", resize_only_if_bigger=True,
                  encode_format="jpg", encode_quality=90)
    out, w, h, ow, oh, err = CheckingResizer(ImageFilterConfig(), resize=resize)(io.BytesIO(jpeg(800, 600, seed=3)))
    assert err is None and (ow, oh) == (800, 600) and max(w, h) == 256
    assert out.format == "jpeg" and out.reencoded == "resized" and bytes(out)[:3] == b"\xff\xd8\xff"
    # the checks still run first: a tiny image is rejected, not upscaled
    _, _, _, _, _, err = CheckingResizer(ImageFilterConfig(), resize=resize)(io.BytesIO(jpeg(100, 80)))
    assert err.startswith("too_small")
