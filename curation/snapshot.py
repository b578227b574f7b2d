"""Where the WARC files come from: a Common Crawl snapshot, a directory, a glob or a list.

``CC-MAIN-YYYY-WW`` reads ``crawl-data/<snapshot>/warc.paths.gz`` under a base
that is ``https://data.commoncrawl.org/`` by default, ``s3://commoncrawl/``, or a
local mirror directory with the same layout. All three go through fsspec, so
the listing code is the same and the offline tests exercise the real path.
"""
from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs
from curation.errors import InputError

SNAPSHOT_RE = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
WARC_SUFFIXES = (".warc.gz", ".warc", ".warc.zst", ".warc.lz4", ".arc.gz")


@dataclass(frozen=True)
class WarcInput:
    """One WARC file: where to read it and the name recorded in ``general_metadata``."""

    path: str
    name: str


@dataclass(frozen=True)
class RunSource:
    """What a run's first stage reads: the WARC files and the snapshot name recorded in each document."""

    warcs: tuple[WarcInput, ...]
    snapshot: str

    def fingerprint_inputs(self) -> dict[str, str]:
        """The WARC list as the stage runner's ``inputs`` (part of extract's fingerprint)."""
        return {"warcs": ",".join(w.path for w in self.warcs)}


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel.lstrip("/")


def _read_lines(path: str) -> list[str]:
    with fsspec.open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return [ln.strip() for ln in io.StringIO(raw.decode("utf-8")).read().splitlines() if ln.strip() and not ln.startswith("#")]


def _is_absolute(p: str) -> bool:
    return "://" in p or p.startswith("/")


def snapshot_listing(snapshot: str, cc_base: str) -> str:
    return _join(cc_base, f"crawl-data/{snapshot}/warc.paths.gz")


def list_snapshot(snapshot: str, cc_base: str, limit: int | None = None) -> list[WarcInput]:
    """The WARC files of a Common Crawl snapshot, in listing order (first ``limit``)."""
    if not SNAPSHOT_RE.match(snapshot):
        raise InputError(f"{snapshot!r} is not a Common Crawl snapshot id like CC-MAIN-2024-10")
    listing = snapshot_listing(snapshot, cc_base)
    try:
        rels = _read_lines(listing)
    except FileNotFoundError:
        raise InputError(f"no WARC listing at {listing}: is the snapshot id right, and CC_BASE reachable?") from None
    if limit is not None:
        rels = rels[:limit]
    return [WarcInput(_join(cc_base, rel), rel) for rel in rels]


def resolve_inputs(spec: str, cc_base: str = "https://data.commoncrawl.org/", limit: int | None = None) -> list[WarcInput]:
    """Turn ``--input``/``SNAPSHOT`` into WARC files.

    Accepts a snapshot id, a directory (every WARC file below it), a glob, a text
    file of paths (``.txt``, ``.paths``, ``.paths.gz``; relative lines resolve
    against ``cc_base``), or a single WARC file. Sorted, then the first ``limit``.
    """
    if SNAPSHOT_RE.match(spec):
        return list_snapshot(spec, cc_base, limit)
    fs, path = url_to_fs(spec)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"

    def full(p: str) -> str:
        return p if "://" in p else prefix + p

    found: list[WarcInput]
    if any(ch in spec for ch in "*?["):
        found = [WarcInput(full(p), full(p)) for p in sorted(fs.glob(path)) if p.endswith(WARC_SUFFIXES)]
    elif fs.isdir(path):
        found = [
            WarcInput(full(p), full(p))
            for p in sorted(fs.find(path))
            if p.endswith(WARC_SUFFIXES)
        ]
    elif path.endswith(WARC_SUFFIXES):
        if not fs.exists(path):
            raise InputError(f"WARC file not found: {spec}")
        found = [WarcInput(full(path), full(path))]
    elif path.endswith((".txt", ".paths", ".paths.gz", ".lst")):
        lines = _read_lines(spec)
        found = [WarcInput(ln, ln) if _is_absolute(ln) else WarcInput(_join(cc_base, ln), ln) for ln in lines]
    elif not fs.exists(path):
        raise InputError(f"input not found: {spec}")
    else:
        raise InputError(f"don't know how to read {spec}: expected a snapshot id, directory, glob, path list or WARC file")
    if not found:
        raise InputError(f"no WARC files found in {spec}")
    return found[:limit] if limit is not None else found


def local_path(p: str) -> Path | None:
    """The local filesystem path of ``p`` if it is local, else None."""
    if "://" in p and not p.startswith("file://"):
        return None
    return Path(p.replace("file://", "", 1))
