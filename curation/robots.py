"""robots.txt of image hosts: fetched once per host through the checked opener, cached for the run.

img2dataset honours ``X-Robots-Tag`` on each image response but never reads robots.txt; a host
that disallows our user agent's path in robots.txt has not consented either. Before the fetch, the
images stage asks :class:`RobotsCache` about every URL: each distinct ``scheme://host[:port]`` gets
one ``GET /robots.txt`` through :func:`curation.safe_http.build_safe_opener` (the same address
checks, redirect limits, size and time bounds as the images), in a thread pool; the verdicts are
kept in ``<work dir>/robots.json`` so a resumed run does not ask again.

Rules (RFC 9309): a 2xx body is parsed (Python's ``urllib.robotparser``, matched for the
``images.user_agent_token``, e.g. ``img2dataset``; at most 512 KiB read); a 4xx means there are no
rules (allowed); a 5xx means "unreachable", which the RFC says to treat as complete disallow
(``robots_disallowed``); a network error or refusal leaves the decision to the image fetch itself
(it fails there with its own reason, not a consent reason). Disallowed URLs are the images-stage
reject ``robots_disallowed``; the image is never requested.
"""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
import urllib.robotparser
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from curation.safe_http import FetchPolicy, build_safe_opener

log = logging.getLogger(__name__)

ROBOTS_DISALLOWED = "robots_disallowed"
MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309: crawlers must parse at least 500 KiB


def origin_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


@dataclass
class HostRules:
    """One host's robots.txt outcome: ``status`` (HTTP code, or 0 for a network error) and its text."""

    status: int
    body: str = ""

    def parser(self) -> urllib.robotparser.RobotFileParser | None:
        if not 200 <= self.status < 300:
            return None
        rp = urllib.robotparser.RobotFileParser()
        rp.parse(self.body.splitlines())
        return rp


def fetch_rules(origin: str, policy: FetchPolicy, timeout: float, user_agent: str,
                opener: urllib.request.OpenerDirector | None = None) -> HostRules:
    """One host's robots.txt. Pass ``opener`` to reuse one: building an opener makes a new SSL
    context, about 40 ms of CPU, which per host was most of robots.txt's cost in the images bench."""
    opener = opener or build_safe_opener(policy)
    req = urllib.request.Request(f"{origin}/robots.txt", headers={"User-Agent": user_agent})
    try:
        with opener.open(req, timeout=timeout) as resp:
            return HostRules(resp.status, resp.read(MAX_ROBOTS_BYTES).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return HostRules(exc.code)
    except Exception as exc:  # noqa: BLE001  refused, unreachable, slow: the image fetch will say why
        log.debug("robots.txt of %s: %s", origin, exc)
        return HostRules(0)


class RobotsCache:
    """Verdicts for URLs, one robots.txt per origin, persisted in ``path`` (JSON) when given."""

    def __init__(self, policy: FetchPolicy, user_agent_token: str, timeout: float = 10.0,
                 path: str | Path | None = None, threads: int = 16):
        self.policy, self.token, self.timeout, self.threads = policy, user_agent_token, timeout, threads
        self.path = Path(path) if path else None
        self.rules: dict[str, HostRules] = {}
        if self.path is not None and self.path.exists():
            self.rules = {o: HostRules(**r) for o, r in json.loads(self.path.read_text()).items()}
        self._parsers: dict[str, urllib.robotparser.RobotFileParser | None] = {}

    def prefetch(self, urls: list[str]) -> int:
        """Fetch robots.txt of every origin of ``urls`` not known yet; returns how many were fetched."""
        todo = sorted({o for o in map(origin_of, urls) if o} - set(self.rules))
        if todo:
            ua = f"Mozilla/5.0 (compatible; {self.token}; +https://github.com/rom1504/img2dataset)"
            opener = build_safe_opener(self.policy)  # one for all hosts: its handlers keep no per-request state
            with ThreadPoolExecutor(min(self.threads, len(todo))) as pool:
                for origin, rules in zip(todo, pool.map(lambda o: fetch_rules(o, self.policy, self.timeout, ua, opener),
                                                        todo)):
                    self.rules[origin] = rules
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps({o: r.__dict__ for o, r in sorted(self.rules.items())}))
        return len(todo)

    def verdict(self, url: str) -> tuple[str, str] | None:
        """``(robots_disallowed, detail)`` or None (allowed, or nothing known)."""
        origin = origin_of(url)
        rules = self.rules.get(origin) if origin else None
        if rules is None:
            return None
        if rules.status >= 500:
            return ROBOTS_DISALLOWED, f"{origin}/robots.txt answered {rules.status} (RFC 9309: complete disallow)"
        if origin not in self._parsers:
            self._parsers[origin] = rules.parser()
        rp = self._parsers[origin]
        if rp is not None and not rp.can_fetch(self.token, url):
            return ROBOTS_DISALLOWED, f"{origin}/robots.txt disallows it for {self.token}"
        return None
