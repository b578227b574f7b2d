"""Which Common Crawl snapshot to curate next: the newest one not curated yet.

Common Crawl publishes a snapshot every month or two. The scheduled Airflow DAG
(``pipelines/dags/vlc_cc_snapshot_watch.py``) runs ``python -m curation.snapshot_watch``
and triggers the curate DAG for the snapshot it prints. Snapshots are listed from

- ``collinfo.json`` (Common Crawl's index of crawls, newest first: a list of objects
  with ``"id": "CC-MAIN-YYYY-WW"``), read from a URL or file through fsspec; the
  default when the base is ``https://`` (an HTTP base has no directory listing), or
- the ``crawl-data/`` listing under the base (``s3://commoncrawl/``, a local mirror):
  every ``CC-MAIN-YYYY-WW`` folder that holds ``warc.paths.gz`` (a half-copied
  mirror folder without it is not a snapshot yet).

A snapshot counts as curated when ``<out_root>/<snapshot>/DATASET_CARD.md`` exists:
``curate run`` and the curate DAG write the card last, so a failed or running
run does not count (its DAG run, with the same run id, is skipped by the trigger and
resumed by clearing it in Airflow).
"""
from __future__ import annotations

import argparse
import json
import sys

import fsspec
from fsspec.core import url_to_fs

from curation.errors import InputError
from curation.snapshot import SNAPSHOT_RE, snapshot_listing

COLLINFO_URL = "https://index.commoncrawl.org/collinfo.json"
CARD = "DATASET_CARD.md"  # curation.card.CARD; not imported here to keep this module light


def _from_collinfo(collinfo: str) -> list[str]:
    try:
        with fsspec.open(collinfo, "r") as fh:
            entries = json.load(fh)
    except FileNotFoundError:
        raise InputError(f"collinfo listing not found: {collinfo}") from None
    except ValueError as exc:
        raise InputError(f"collinfo listing {collinfo} is not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise InputError(f"collinfo listing {collinfo} must be a JSON list of crawls")
    return [e["id"] for e in entries if isinstance(e, dict) and SNAPSHOT_RE.match(str(e.get("id", "")))]


def _from_crawl_data(cc_base: str) -> list[str]:
    fs, base = url_to_fs(cc_base.rstrip("/") + "/crawl-data")
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)]
    except FileNotFoundError:
        raise InputError(f"no crawl-data/ listing under {cc_base}; pass --collinfo for an HTTP base") from None
    return [n for n in names if SNAPSHOT_RE.match(n)]


def list_snapshots(cc_base: str, collinfo: str | None = None, verify: int = 3) -> list[str]:
    """Snapshot ids, newest first.

    From ``collinfo`` when given (or when ``cc_base`` is http(s)), else from ``crawl-data/``,
    where a folder counts only if its ``warc.paths.gz`` exists (checked for the newest ones
    until ``verify`` listed snapshots are confirmed; older ones are assumed complete).
    """
    if collinfo is None and cc_base.startswith(("http://", "https://")):
        collinfo = COLLINFO_URL
    if collinfo:
        return sorted(set(_from_collinfo(collinfo)), reverse=True)
    ids = sorted(set(_from_crawl_data(cc_base)), reverse=True)
    fs, _ = url_to_fs(cc_base)
    out: list[str] = []
    confirmed = 0
    for sid in ids:
        if confirmed >= verify:
            out.append(sid)
            continue
        _, listing = url_to_fs(snapshot_listing(sid, cc_base))
        if fs.exists(listing):
            out.append(sid)
            confirmed += 1
    return out


def is_curated(out_root: str, snapshot: str) -> bool:
    fs, root = url_to_fs(out_root.rstrip("/"))
    return fs.exists(f"{root}/{snapshot}/{CARD}")


def newest_uncurated(cc_base: str, out_root: str, collinfo: str | None = None, lookback: int = 1) -> str | None:
    """The newest of the ``lookback`` newest snapshots without a finished run under ``out_root``."""
    if lookback < 1:
        raise InputError(f"lookback must be >= 1, got {lookback}")
    for sid in list_snapshots(cc_base, collinfo, verify=lookback)[:lookback]:
        if not is_curated(out_root, sid):
            return sid
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curation.snapshot_watch", description=__doc__.split("\n\n")[0])
    p.add_argument("--cc-base", default="https://data.commoncrawl.org/")
    p.add_argument("--collinfo", default=None, help=f"collinfo.json URL or file (default {COLLINFO_URL} for an http base)")
    p.add_argument("--out-root", required=True, help="where runs live: <out-root>/<snapshot>/")
    p.add_argument("--lookback", type=int, default=1, help="consider the N newest snapshots (default 1: only the newest)")
    args = p.parse_args(argv)
    try:
        sid = newest_uncurated(args.cc_base, args.out_root, args.collinfo or None, args.lookback)
    except InputError as exc:
        print(f"snapshot_watch: error: {exc}", file=sys.stderr)
        return 2
    # One JSON line, last on stdout: the Airflow task pushes it as its XCom.
    print(json.dumps({"snapshot": sid, "output": f"{args.out_root.rstrip('/')}/{sid}" if sid else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
