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
import re
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


# --------------------------------------------------------------------------- takedowns honoured by reruns

TAKEDOWN = "takedown"
TAKEDOWN_LISTS = ("takedowns", "lists")  # under the run directory: urls.txt, domains.txt, sha256.txt


def _lists_dir(run_root: str) -> Path | None:
    """The run's takedown lists folder (local run directories only; None for a remote one)."""
    return None if "://" in run_root else Path(run_root).joinpath(*TAKEDOWN_LISTS)


def record_takedown(run_root: str, urls: set[str], domains: list[str], sha256: set[str]) -> None:
    """Merge one takedown's lists into the run's (``curate takedown`` calls this; reruns read them)."""
    d = _lists_dir(run_root)
    if d is None:
        return
    d.mkdir(parents=True, exist_ok=True)
    for name, new in (("urls.txt", urls), ("domains.txt", set(domains)), ("sha256.txt", sha256)):
        f = d / name
        old = set(load_url_list(f)) if f.exists() else set()
        f.write_text("".join(f"{x}\n" for x in sorted(old | set(new))), encoding="utf-8")


def takedown_filter(run_root: str) -> UrlListFilter | None:
    """Pages and image URLs taken down from this run (exact URLs and domains), reason ``takedown``."""
    d = _lists_dir(run_root)
    if d is None or not d.is_dir():
        return None
    entries = [f"re:^{re.escape(u)}$" for u in (load_url_list(d / "urls.txt") if (d / "urls.txt").exists() else [])]
    entries += load_url_list(d / "domains.txt") if (d / "domains.txt").exists() else []
    return UrlListFilter(entries, TAKEDOWN) if entries else None


def with_takedown_hashes(hash_list: "HashList | None", run_root: str) -> "HashList | None":
    """``hash_list`` plus the SHA-256 digests taken down from this run (their images are ``hash_listed``)."""
    d = _lists_dir(run_root)
    f = d / "sha256.txt" if d is not None else None
    shas = frozenset(x.lower() for x in load_url_list(f)) if f is not None and f.exists() else frozenset()
    if not shas:
        return hash_list
    if hash_list is None:
        return HashList(shas, frozenset())
    return HashList(hash_list.sha256 | shas, hash_list.md5)
