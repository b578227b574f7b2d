"""Page-URL normalisation and the domain used to group paragraphs.

Choices (documented because they decide which pages count as "the same URL"):

- scheme and host lower-cased; ``http`` and ``https`` are kept distinct
  (different records in Common Crawl; merging them would be a guess);
- default ports dropped (``:80`` for http, ``:443`` for https);
- userinfo dropped; IDNA hosts kept as given (lower-cased);
- fragment (``#...``) dropped: it never reaches the server;
- a trailing slash dropped from the path, an empty path becomes ``/``;
- query parameters kept in their order (order can matter to servers);
  an empty query (``?``) dropped;
- percent-escapes and path case kept as is (paths are case-sensitive).
- WARC/1.0 wget-style ``<...>`` wrapping is stripped.

The domain is the host without a leading ``www.`` (no public-suffix list is
shipped, so ``a.example.co.uk`` and ``b.example.co.uk`` are different domains).
"""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str | None) -> str | None:
    """Canonical form of a page URL, or None for an empty/unparseable one."""
    if not url:
        return None
    url = url.strip()
    if url.startswith("<") and url.endswith(">"):
        url = url[1:-1].strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port
    except ValueError:
        return url
    if not host:
        return url
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def url_domain(url: str | None) -> str | None:
    """Host of ``url`` lower-cased without a leading ``www.``; None when there is none."""
    if not url:
        return None
    url = url.strip().strip("<>")
    try:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return None
    if host.startswith("www."):
        host = host[4:]
    return host or None
