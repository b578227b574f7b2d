"""Release blocklists: pages by domain or URL (checked at extract) and images by hash (checked in images).

- Pages: a UT1-style list (Université Toulouse 1 Capitole's categories: ``domains`` files with one
  host per line, ``urls`` files with ``host/path`` lines) or any user list in the syntax of
  :class:`filters.image.UrlListFilter` (a domain and its subdomains, a URL prefix with a scheme,
  ``re:<regex>``). ``host/path`` lines become URL prefixes for http and https, with and without
  ``www.``. A page that matches is the extract reject ``blocked_domain``: never parsed, never written.
- Images: one hex digest per line, SHA-256 (64 hex digits) or MD5 (32), the mechanism LAION used
  to remove known abusive images from LAION-5B. A match is ``hash_listed`` in the images stage: its
  bytes are written nowhere (not in Parquet, not in tars, not in the fetch cache kept after the run).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from curation.errors import ConfigError
from filters.image import UrlListFilter, load_url_list

BLOCKED_DOMAIN = "blocked_domain"
HASH_LISTED = "hash_listed"


def _read(path: str | Path, key: str) -> list[str]:
    try:
        return load_url_list(path)
    except FileNotFoundError:
        raise ConfigError(f"{key}: file not found: {path}") from None


def page_blocklist(path: str | Path) -> UrlListFilter:
    """The page blocklist of ``safety.blocked_domains_file`` (reason ``blocked_domain``)."""
    entries: list[str] = []
    for e in _read(path, "safety.blocked_domains_file"):
        if "/" in e and "://" not in e and not e.startswith("re:"):  # UT1 ``urls``: host/path
            host, rest = e.split("/", 1)
            host = host.lower().removeprefix("www.")
            entries += [f"{scheme}://{www}{host}/{rest}" for scheme in ("http", "https") for www in ("", "www.")]
        else:
            entries.append(e)
    return UrlListFilter(entries, BLOCKED_DOMAIN)


@dataclass(frozen=True)
class HashList:
    """SHA-256 and MD5 digests (lower-case hex) of images that must never be written."""

    sha256: frozenset[str]
    md5: frozenset[str]

    @classmethod
    def load(cls, path: str | Path) -> "HashList":
        sha, md5 = set(), set()
        for i, line in enumerate(_read(path, "safety.image_hash_blocklist_file"), 1):
            h = line.split()[0].lower()
            if len(h) == 64 and all(c in "0123456789abcdef" for c in h):
                sha.add(h)
            elif len(h) == 32 and all(c in "0123456789abcdef" for c in h):
                md5.add(h)
            else:
                raise ConfigError(f"safety.image_hash_blocklist_file {path} line {i}: {line[:80]!r} is not a "
                                  "SHA-256 (64 hex digits) or MD5 (32 hex digits) digest")
        return cls(frozenset(sha), frozenset(md5))

    def __len__(self) -> int:
        return len(self.sha256) + len(self.md5)

    def match(self, data: bytes | None, sha256: str | None = None) -> str | None:
        """The listed digest that ``data`` has (``sha256`` given saves hashing again), else None."""
        if data is None:
            return None
        s = (sha256 or hashlib.sha256(data).hexdigest()).lower()
        if s in self.sha256:
            return f"sha256 {s}"
        if self.md5:
            m = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if m in self.md5:
                return f"md5 {m}"
        return None
