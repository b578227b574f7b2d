"""Page-URL normalisation (what counts as "the same URL" for dedup) and the paragraph domain."""
from __future__ import annotations

import pytest

from curation.urls import normalize_url, url_domain


@pytest.mark.parametrize("raw, expected", [
    ("HTTP://Example.COM/a/b/", "http://example.com/a/b"),
    ("https://example.com:443/x", "https://example.com/x"),
    ("http://example.com:80", "http://example.com/"),
    ("http://example.com:8080/x", "http://example.com:8080/x"),
    ("http://user:pw@example.com/x#frag", "http://example.com/x"),
    ("http://example.com/x?", "http://example.com/x"),
    ("http://example.com/x?b=1&a=2", "http://example.com/x?b=1&a=2"),
    ("<http://example.com/Path>", "http://example.com/Path"),
    ("http://example.com./x", "http://example.com/x"),
    ("  http://example.com/x  ", "http://example.com/x"),
])
def test_normalize_url(raw, expected):
    assert normalize_url(raw) == expected


def test_http_and_https_stay_distinct():
    assert normalize_url("http://example.com/a") != normalize_url("https://example.com/a")


@pytest.mark.parametrize("raw", [None, "", "<>", "   "])
def test_empty_urls_are_none(raw):
    assert normalize_url(raw) is None


def test_unparseable_urls_are_kept_as_given():
    assert normalize_url("http://[::1/x") == "http://[::1/x"  # bad IPv6 literal: no guess
    assert normalize_url("not a url") == "not a url"


@pytest.mark.parametrize("raw, expected", [
    ("https://www.Example.com/a", "example.com"),
    ("http://a.example.co.uk/", "a.example.co.uk"),
    ("<http://www.x.org>", "x.org"),
    ("mailto:someone", None),
    (None, None),
    ("http://[::1/x", None),
])
def test_url_domain(raw, expected):
    assert url_domain(raw) == expected
