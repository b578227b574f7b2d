"""curation/robots.py: robots.txt once per host through the checked opener, RFC 9309's status rules."""
from __future__ import annotations

from curation.robots import RobotsCache, origin_of
from curation.safe_http import FetchPolicy
from tests.support.image_payloads import Route, ScriptedServer

ROBOTS = "User-agent: img2dataset\nDisallow: /private/\n\nUser-agent: *\nDisallow: /\n"


def test_rules_for_our_user_agent_fetched_once_and_cached(tmp_path):
    with ScriptedServer({"/robots.txt": Route(ROBOTS.encode(), content_type="text/plain")}) as server:
        policy = FetchPolicy(allow=(server.allow,))
        cache = RobotsCache(policy, "img2dataset", 3.0, tmp_path / "robots.json")
        urls = [server.url("/a.jpg"), server.url("/private/b.jpg"), server.url("/c/d.png")]
        assert cache.prefetch(urls) == 1 and cache.prefetch(urls) == 0
        assert server.requests.count("/robots.txt") == 1
        assert cache.verdict(urls[0]) is None and cache.verdict(urls[2]) is None  # only /private/ is ours to avoid
        reason, detail = cache.verdict(urls[1])
        assert reason == "robots_disallowed" and "img2dataset" in detail
        # Another agent token falls under "*": everything disallowed.
        assert RobotsCache(policy, "otherbot", 3.0).verdict(urls[0]) is None  # nothing fetched for it yet
        other = RobotsCache(policy, "otherbot", 3.0, tmp_path / "robots.json")  # the run's cache, reused
        assert other.prefetch(urls) == 0 and other.verdict(urls[0])[0] == "robots_disallowed"
    assert server.requests.count("/robots.txt") == 1


def test_status_rules_and_refusals():
    with ScriptedServer({"/robots.txt": Route(b"oops", status=503)}) as down, ScriptedServer() as missing:
        cache = RobotsCache(FetchPolicy(allow=(down.allow, missing.allow)), "img2dataset", 3.0)
        cache.prefetch([down.url("/x.jpg"), missing.url("/y.jpg")])
        assert cache.verdict(down.url("/x.jpg"))[0] == "robots_disallowed"  # 5xx: complete disallow
        assert cache.verdict(missing.url("/y.jpg")) is None  # 404: no rules
    # A host the policy refuses (loopback without an allowlist entry): no request, the image fetch decides.
    with ScriptedServer({"/robots.txt": Route(ROBOTS.encode())}) as server:
        cache = RobotsCache(FetchPolicy(), "img2dataset", 3.0)
        cache.prefetch([server.url("/private/z.jpg")])
        assert cache.verdict(server.url("/private/z.jpg")) is None and not server.requests
    assert origin_of("ftp://x/y") is None and origin_of("http://u:p@h.test:8080/a") == "http://h.test:8080"
