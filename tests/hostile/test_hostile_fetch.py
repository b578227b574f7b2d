"""Hostile image servers (on 127.0.0.1 only) through img2dataset with the checked opener: every URL is
exactly one row, kept or rejected for the expected reason, the good images beside the bad kept, no
connection to a refused address, and a slow body ends by the fetch deadline (issue 19).

The images issue's cases (decompression bombs, truncated/CMYK/16-bit/animated/SVG images, stalls,
redirects to private/metadata/file targets) come from tests/curation/image_payloads.py; this file
adds slow drips, oversized and lying bodies, redirect loops and refused addresses in the forms a
probe tries (decimal, octal, hex, IPv6-mapped, userinfo, another port of the allowed host).
"""
from __future__ import annotations

import time

import pytest

from curation.fetch import FetchSettings, read_shards, run_img2dataset
from curation.safe_http import FetchPolicy
from filters.config import ImageFilterConfig
from tests.support.image_payloads import HOSTILE_EXPECTED, Route, ScriptedServer, hostile_routes, jpeg

pytestmark = pytest.mark.slow  # img2dataset spawns worker processes: a few seconds

DEADLINE = 3.0


def _more_routes(server: ScriptedServer) -> dict[str, tuple[Route, str | None]]:
    """path -> (route, expected reason) beyond the images issue's set."""
    body = jpeg(seed=40)
    port = server.port
    return {
        "/trickle.jpg": (Route(body, drip=0.5, drip_bytes=1), "fetch_error:timeout"),  # 1 byte every 0.5 s
        "/drip-fast.jpg": (Route(jpeg(seed=41), drip=0.01, drip_bytes=4096), None),  # slow but within the deadline
        "/big-body.jpg": (Route(b"\xff\xd8" + b"x" * 2_000_000), "too_large"),  # honest length over max_bytes
        "/lying-short.jpg": (Route(body, headers={"Content-Length": "100"}), "undecodable"),
        "/lying-long.jpg": (Route(body, headers={"Content-Length": str(len(body) * 3)}), "fetch_error:protocol"),
        "/loop": (Route(status=302, headers={"Location": f"http://127.0.0.1:{port}/loop"}), "fetch_error:302"),
        "/loop-a": (Route(status=302, headers={"Location": f"http://127.0.0.1:{port}/loop-b"}), "fetch_error:302"),
        "/loop-b": (Route(status=302, headers={"Location": f"http://127.0.0.1:{port}/loop-a"}), "fetch_error:302"),
        "/to-decimal": (Route(status=302, headers={"Location": "http://2852039166/latest/"}), "unsafe_address"),
        "/to-octal": (Route(status=302, headers={"Location": "http://0251.0376.0251.0376/"}), "unsafe_address"),
        "/to-hex": (Route(status=302, headers={"Location": "http://0x7f000001:80/"}), "unsafe_address"),
        "/to-mapped": (Route(status=302, headers={"Location": "http://[::ffff:169.254.169.254]/"}), "unsafe_address"),
        # http.client refuses the URL itself ("nonnumeric port"): never connected anywhere
        "/to-userinfo": (Route(status=302, headers={"Location": f"http://127.0.0.1:{port}@10.0.0.1/"}), "bad_url"),
        # urllib keeps the userinfo in the host name, which does not resolve: no connection either
        "/to-userinfo2": (Route(status=302, headers={"Location": "http://user@169.254.169.254/"}), "fetch_error:dns"),
        "/to-other-port": (Route(status=302, headers={"Location": f"http://127.0.0.1:{port + 1}/ok.jpg"}),
                           "unsafe_address"),
        "/to-ok": (Route(status=302, headers={"Location": f"http://127.0.0.1:{port}/ok.jpg"}), None),
    }


def test_every_hostile_url_is_exactly_one_row(tmp_path):
    with ScriptedServer() as server:
        server.routes.update(hostile_routes())
        more = _more_routes(server)
        server.routes.update({p: route for p, (route, _) in more.items()})
        expected = {server.url(p): reason for p, reason in HOSTILE_EXPECTED.items()}
        expected |= {server.url(p): reason for p, (_, reason) in more.items() if p != "/loop-b"}
        expected |= {  # refused without a request
            "http://169.254.169.254/latest/meta-data/": "unsafe_address",
            f"http://[::1]:{server.port}/ok.jpg": "unsafe_address",
            f"http://localhost:{server.port + 1}/ok.jpg": "unsafe_address",
            "ftp://127.0.0.1/x.jpg": "unsafe_scheme",
        }
        urls = sorted(expected)
        policy = FetchPolicy(allow=(server.allow,), max_bytes=1_000_000, max_seconds=DEADLINE, max_redirects=5)
        start = time.monotonic()
        run_img2dataset(urls, str(tmp_path), policy, ImageFilterConfig(),
                        FetchSettings(urls_per_shard=len(urls), timeout=3.0, threads_per_process=64, processes=1,
                                      retries=0))
        elapsed = time.monotonic() - start
        table, summary = read_shards(str(tmp_path))
    rows = table.to_pylist()
    got_urls = [r["url"] for r in rows]
    assert len(got_urls) == len(set(got_urls)) == len(urls) == summary["count"]  # one row per URL
    assert set(got_urls) == set(urls)
    by_url = {r["url"]: r for r in rows}
    wrong = {u: (by_url[u]["reason"], want, (by_url[u]["detail"] or by_url[u]["error_message"] or "")[:120])
             for u, want in expected.items() if by_url[u]["reason"] != want}
    assert not wrong, wrong
    for url, want in expected.items():
        assert (by_url[url]["image"] is not None) == (want is None), url
    # never a request anywhere but the allowed server, and the trickle ended by the deadline: the whole
    # set (threads in parallel) within deadline + one socket timeout + img2dataset's start-up
    assert all(p.startswith("/") for p in server.requests)
    assert elapsed < DEADLINE + 3.0 + 30.0, elapsed
