"""filters/blocklists.py: UT1-style page lists and image hash lists."""
from __future__ import annotations

import hashlib

import pytest

from curation.errors import ConfigError
from filters.blocklists import HashList, page_blocklist


def test_page_blocklist_domains_subdomains_ut1_urls_and_regex(tmp_path):
    f = tmp_path / "blocked.txt"
    f.write_text("# UT1 adult/domains style\nbad.example\nwww.worse.test\nforum.example/private\nre:/casino-\n")
    bl = page_blocklist(f)
    for url in ("http://bad.example/", "https://sub.bad.example/x", "http://worse.test/a",
                "https://www.forum.example/private/thread", "http://forum.example/private", "https://ok.org/casino-1"):
        assert bl.match(url), url
    for url in ("http://notbad.example/", "https://forum.example/public", "http://example.com/bad.example"):
        assert not bl.match(url), url
    with pytest.raises(ConfigError, match="not found"):
        page_blocklist(tmp_path / "missing.txt")


def test_hash_list_sha256_and_md5(tmp_path):
    a, b, c = b"image a", b"image b", b"image c"
    f = tmp_path / "hashes.txt"
    f.write_text(f"{hashlib.sha256(a).hexdigest().upper()}\n{hashlib.md5(b).hexdigest()}  known-bad.jpg\n")
    hl = HashList.load(f)
    assert len(hl) == 2
    assert hl.match(a).startswith("sha256 ") and hl.match(b).startswith("md5 ") and hl.match(c) is None
    assert hl.match(a, sha256=hashlib.sha256(a).hexdigest()) and hl.match(None) is None
    f.write_text("not-a-hash\n")
    with pytest.raises(ConfigError, match="line 1"):
        HashList.load(f)
