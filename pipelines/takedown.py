"""``curate takedown --run RUN --urls FILE [--domains FILE] [--sha256 FILE]``: remove from a finished run.

A takedown request names pages or images (URLs, whole domains, image SHA-256 digests); it must reach
every output a run wrote, not only the last one. This job walks every complete stage directory of
the run and removes:

- Parquet rows whose ``url`` or ``page_url`` is listed (or on a listed domain), or whose ``sha256``
  is listed: pages, pairs, images, scored and bootstrapped pairs; reject rows whose ``row_id`` is a
  listed URL or whose ``detail`` names one;
- image positions of documents (``images`` lists, cut with ``texts``/``metadata``/``image_bytes``
  kept aligned by :func:`curation.layout.cut_positions`) whose URL is listed or whose bytes hash to a
  listed digest; MMC4 ``image_info`` entries (and their ``similarity_matrix`` rows) of such URLs; a
  document whose own URL is listed goes whole;
- WebDataset samples (every file of the sample) whose ``.json`` names a listed URL or whose image
  bytes hash to a listed digest, ``sizes.json`` updated;
- the score stage's float16 embedding rows of removed pairs (zeroed: ``embedding_row`` of the other
  rows stays valid).

A listed SHA-256 also lists every URL whose bytes have it (found in any table with ``url`` and
``sha256``), so documents and MMC4 entries, which carry URLs, follow. Only files with a match are
rewritten (temporary name, then rename); every other file is left byte for byte. Each changed
stage's ``stats.json`` gets ``counters.takedown`` (rows removed per file), its ``outputs`` counts
lowered and the removed rows counted as the reason ``takedown`` of their table (rows in = rows out +
rejected still holds), and its completion marker's file list is refreshed (the runner checks sizes and row counts
of inputs). ``takedowns/<UTC date>.jsonl`` lists what was removed from where.

The lists are merged into ``<run>/takedowns/lists/`` (urls, domains, sha256): a later rerun of extract
refuses the pages (reason ``takedown``), of images the image URLs (``takedown``) and digests
(``hash_listed``). Not done: embedding rows of pairs the score stage had already rejected are not located.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import InputError
from curation.layout import WHOLE_POSITION, cut_positions, load_metadata
from filters.blocklists import record_takedown
from filters.image import UrlListFilter, load_url_list

log = logging.getLogger(__name__)

MARKER = "_STAGE_COMPLETE"


@dataclass
class TakedownLists:
    urls: set[str]
    domains: UrlListFilter | None
    sha256: set[str]
    domain_entries: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, urls: str | None, domains: str | None = None, sha256: str | None = None) -> "TakedownLists":
        def read(path: str | None, what: str) -> list[str]:
            if not path:
                return []
            try:
                return load_url_list(path)
            except FileNotFoundError:
                raise InputError(f"takedown: {what} file not found: {path}") from None

        shas = {s.split()[0].lower() for s in read(sha256, "--sha256")}
        bad = [s for s in shas if len(s) != 64 or any(c not in "0123456789abcdef" for c in s)]
        if bad:
            raise InputError(f"takedown: --sha256 lines must be SHA-256 hex digests, got {bad[0]!r}")
        doms = read(domains, "--domains")
        return cls(set(read(urls, "--urls")), UrlListFilter(doms, "takedown") if doms else None, shas, doms)

    def url_hit(self, url: str | None) -> bool:
        return bool(url) and (url in self.urls or (self.domains is not None and self.domains.match(url)))


@dataclass
class Result:
    removed: list[dict] = field(default_factory=list)  # the takedowns/<date>.jsonl rows
    per_file: dict[str, int] = field(default_factory=dict)
    embedding_rows: set[int] = field(default_factory=set)


def _stage_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")) and (p / MARKER).exists())


def _outputs(stage_dir: Path, suffix: str) -> list[Path]:
    return sorted(f for f in stage_dir.rglob(f"*{suffix}")
                  if not any(part.startswith(("_", ".")) for part in f.relative_to(stage_dir).parts))


def _atomic_write(path: Path, data_writer) -> None:
    tmp = path.with_name(f".takedown-{path.name}")
    data_writer(tmp)
    os.replace(tmp, path)


def _urls_of_listed_hashes(root: Path, lists: TakedownLists) -> None:
    """A listed digest lists the URLs whose bytes have it (documents and MMC4 carry URLs only)."""
    if not lists.sha256:
        return
    for stage in _stage_dirs(root):
        for f in _outputs(stage, ".parquet"):
            names = pq.read_schema(f).names
            if "url" in names and "sha256" in names:
                t = pq.read_table(f, columns=["url", "sha256"])
                for u, s in zip(t.column("url").to_pylist(), t.column("sha256").to_pylist()):
                    if s and s.lower() in lists.sha256 and u:
                        lists.urls.add(u)


def _rewrite_parquet(f: Path, root: Path, lists: TakedownLists, res: Result) -> None:
    table = pq.read_table(f)
    names = table.column_names
    rows = table.to_pylist()
    keep_rows, changed = [], False
    rel = str(f.relative_to(root))
    is_rejects = f.relative_to(root).parts[1] == "rejects"
    for row in rows:
        ident = row.get("key") or row.get("doc_id") or row.get("row_id") or row.get("url")
        why = None
        if is_rejects:
            if lists.url_hit(row.get("row_id")) or any(u in (row.get("detail") or "") for u in lists.urls):
                why = "reject names a listed url"
        elif lists.url_hit(row.get("url")) or lists.url_hit(row.get("page_url")):
            why = "url"
        elif row.get("sha256") and row["sha256"].lower() in lists.sha256:
            why = "sha256"
        if why:
            changed = True
            res.removed.append({"file": rel, "row": ident, "matched": why})
            if row.get("embedding_row") is not None and f.relative_to(root).parts[:2] == ("score", "pairs"):
                res.embedding_rows.add(int(row["embedding_row"]))
            continue
        if "images" in names and "texts" in names and row.get("images"):  # a document: cut listed images
            blobs = row.get("image_bytes")
            drop = {}
            for pos, u in enumerate(row["images"]):
                if u is None:
                    continue
                hit = lists.url_hit(u) or (blobs is not None and pos < len(blobs) and blobs[pos] is not None
                                           and hashlib.sha256(blobs[pos]).hexdigest() in lists.sha256)
                if hit:
                    drop[pos] = {WHOLE_POSITION}
                    res.removed.append({"file": rel, "row": ident, "matched": "document image", "image": u})
            if drop:
                changed = True
                meta = load_metadata(row.get("metadata"))
                texts, images, meta = cut_positions(row["texts"], row["images"], meta, drop)
                if blobs is not None:  # bytes follow the kept images in order (neighbouring texts may have joined)
                    it = iter([blobs[p] for p, u in enumerate(row["images"]) if u is not None and p not in drop])
                    row["image_bytes"] = [next(it) if u is not None else None for u in images]
                row["texts"], row["images"] = texts, images
                if row.get("metadata") is not None:
                    row["metadata"] = json.dumps(meta, ensure_ascii=False)
        if "image_info" in names and row.get("image_info"):  # MMC4
            keep = [i for i, info in enumerate(row["image_info"]) if not lists.url_hit(info.get("raw_url"))]
            if len(keep) != len(row["image_info"]):
                changed = True
                for i, info in enumerate(row["image_info"]):
                    if i not in keep:
                        res.removed.append({"file": rel, "row": ident, "matched": "mmc4 image", "image": info["raw_url"]})
                row["image_info"] = [row["image_info"][i] for i in keep]
                if row.get("similarity_matrix") is not None:
                    row["similarity_matrix"] = [row["similarity_matrix"][i] for i in keep]
        keep_rows.append(row)
    if not changed:
        return
    out = pa.Table.from_pylist(keep_rows, schema=table.schema)
    _atomic_write(f, lambda p: pq.write_table(out, p))
    res.per_file[rel] = len(rows) - len(keep_rows)


def _rewrite_tar(f: Path, root: Path, lists: TakedownLists, res: Result) -> int:
    with tarfile.open(f) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    samples: dict[str, list] = {}
    for m, data in members:
        samples.setdefault(m.name.split(".", 1)[0], []).append((m, data))
    drop = set()
    for key, files in samples.items():
        for m, data in files:
            if data is None:
                continue
            ext = m.name.split(".", 1)[1] if "." in m.name else ""
            if ext == "json":
                meta = json.loads(data)
                if lists.url_hit(meta.get("url")) or lists.url_hit(meta.get("page_url")) \
                        or (meta.get("sha256") or "").lower() in lists.sha256:
                    drop.add(key)
            elif ext in ("jpg", "jpeg", "png", "webp") and hashlib.sha256(data).hexdigest() in lists.sha256:
                drop.add(key)
    if not drop:
        return 0
    rel = str(f.relative_to(root))

    def write(p: Path) -> None:
        with tarfile.open(p, "w") as out:
            for m, data in members:
                if m.name.split(".", 1)[0] not in drop:
                    out.addfile(m, io.BytesIO(data) if data is not None else None)

    _atomic_write(f, write)
    res.per_file[rel] = len(drop)
    res.removed += [{"file": rel, "row": k, "matched": "webdataset sample"} for k in sorted(drop)]
    sizes = f.parent / "sizes.json"
    if sizes.exists():
        s = json.loads(sizes.read_text())
        if f.name in s:
            s[f.name] -= len(drop)
            sizes.write_text(json.dumps(s))
    return len(drop)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr)


def _zero_embeddings(root: Path, rows: set[int], res: Result) -> None:
    index = root / "score" / "embeddings" / "index.json"
    if not rows or not index.exists():
        return
    idx = json.loads(index.read_text())
    for shard in idx["shards"]:
        mine = sorted(r - shard["offset"] for r in rows if shard["offset"] <= r < shard["offset"] + shard["rows"])
        if not mine:
            continue
        for kind in ("image", "text"):
            p = root / "score" / "embeddings" / shard[kind]
            arr = np.load(p)
            arr[mine] = 0
            _atomic_write(p, lambda t, a=arr: _save_npy(t, a))
            res.per_file[str(p.relative_to(root))] = len(mine)
    res.removed += [{"file": "score/embeddings", "row": r, "matched": "embedding of a removed pair (zeroed)"}
                    for r in sorted(rows)]


def takedown(run_root: str, lists: TakedownLists, now: datetime | None = None) -> dict[str, Any]:
    """Remove what ``lists`` names from every complete stage of ``run_root``; returns the summary."""
    from curation.stage_files import list_files

    root = Path(run_root)
    if not root.is_dir() or not _stage_dirs(root):
        raise InputError(f"takedown: {run_root} holds no complete stage")
    _urls_of_listed_hashes(root, lists)
    res = Result()
    for stage in _stage_dirs(root):
        for f in _outputs(stage, ".parquet"):
            _rewrite_parquet(f, root, lists, res)
        for f in _outputs(stage, ".tar"):
            _rewrite_tar(f, root, lists, res)
    _zero_embeddings(root, res.embedding_rows, res)
    now = now or datetime.now(timezone.utc)
    for stage in _stage_dirs(root):
        mine = {k: v for k, v in res.per_file.items() if k.split("/", 1)[0] == stage.name}
        if not mine:
            continue
        stats_path = stage / "stats.json"
        if stats_path.exists():
            stats = json.loads(stats_path.read_text())
            outputs_before = dict(stats.get("outputs") or {})
            for rel, n in mine.items():
                out = rel.split("/")[1]
                if rel.endswith((".tar", ".npy")) or out not in outputs_before:
                    continue
                stats["outputs"][out] -= n
                # Keep rows in = rows out + rejected: the removed rows become the reason ``takedown`` of
                # the table they were counted in (the main table when this output is its rows_out).
                if out in (stats.get("tables") or {}):
                    t = stats["tables"][out]
                elif outputs_before[out] == stats.get("rows_out"):
                    t = stats
                else:
                    continue
                t["rows_out"] -= n
                t.setdefault("rejected", {})["takedown"] = t["rejected"].get("takedown", 0) + n
            tk = stats.setdefault("counters", {}).setdefault("takedown", {})
            tk[now.date().isoformat()] = mine
            stats_path.write_text(json.dumps(stats, indent=1))
        marker = json.loads((stage / MARKER).read_text())
        if "files" in marker:
            marker["files"] = list_files(str(stage))
            (stage / MARKER).write_text(json.dumps(marker))
    # A later rerun of extract or images refuses them again (filters.blocklists.takedown_filter).
    record_takedown(str(root), lists.urls, lists.domain_entries, lists.sha256)
    out_dir = root / "takedowns"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{now.date().isoformat()}.jsonl"
    with path.open("a", encoding="utf-8") as fh:
        for r in res.removed:
            fh.write(json.dumps({"at": now.isoformat(timespec="seconds"), **r}) + "\n")
    return {"removed": len(res.removed), "files_rewritten": len(res.per_file), "log": str(path)}


def add_cli_arguments(sub) -> None:
    p = sub.add_parser("takedown", help="remove listed pages/images/pairs from every output of a finished run")
    p.add_argument("--run", required=True, help="the run directory")
    p.add_argument("--urls", required=True, help="page or image URLs, one per line")
    p.add_argument("--domains", help="domains (and their subdomains), one per line")
    p.add_argument("--sha256", help="image SHA-256 digests, one per line")
    p.add_argument("--config", default=None, help=argparse_suppress())
    p.add_argument("--set", dest="overrides", action="append", default=[], help=argparse_suppress())


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def cli_main(args, load_config) -> int:
    summary = takedown(args.run, TakedownLists.load(args.urls, args.domains, args.sha256))
    print(f"takedown: removed {summary['removed']} rows/entries, rewrote {summary['files_rewritten']} files; "
          f"log {summary['log']}")
    return 0
