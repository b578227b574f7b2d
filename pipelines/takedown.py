"""``curate takedown --run RUN --urls FILE [--domains FILE] [--sha256 FILE]``: remove from a finished run.

A takedown request names pages or images (URLs, whole domains, image SHA-256 digests); it must reach
every output a run wrote, not only the last one. The job is one task per output file of every
complete stage directory (``curation.dask_cluster.run_shards``; the driver handles file names and
counts only), in two passes:

1. **scan** (Parquet files with ``url``/``page_url``/``sha256``/``key``/``doc_id``): the listed digests
   become URLs (a digest lists every URL whose bytes have it: documents, MMC4 entries and tars carry
   URLs, not digests), and the pair keys and document ids of matching rows are collected (reject
   records name pairs and documents by key / id).
2. **clean**: each file filtered with Arrow compute (``pc.is_in`` on url / page_url / sha256 / key /
   row_id, domains matched once per distinct host), rewritten only when something matched
   (temporary name, then rename), every other file left byte for byte:

   - Parquet rows whose ``url`` or ``page_url`` is listed (or on a listed domain), whose ``sha256``
     is listed or whose ``key`` is a removed pair's: pages, pairs, images, scored, bootstrapped and
     released pairs;
   - reject records that name a removed URL, pair or document (``row_id``, ``duplicate_of``, or a
     listed URL inside ``detail``): the record would itself keep the URL. The stats keep the count:
     the row moves from its reason to ``takedown`` in the same table (docs/safety.md, "Takedowns");
   - image positions of documents whose URL is listed (texts, metadata and ``image_bytes`` kept
     aligned by :func:`curation.layout.cut_positions`); MMC4 ``image_info`` entries with their
     ``similarity_matrix`` rows; only the rows that hold such an image go through Python;
   - WebDataset samples: a pair sample whose ``.json`` names a listed URL, digest or key goes whole;
     in a document sample (the release's interleaved tars, ``image_urls`` in the ``.json``) the listed
     image member and its position go; ``sizes.json`` recounted;
   - the score stage's float16 embedding rows of every removed pair, **kept or rejected by score**
     (zeroed, so every other ``embedding_row`` stays valid). Rejected pairs have no
     ``embedding_row`` column anywhere, so the first takedown of a score run stores the score
     input's key order (which is the embedding row order) in ``takedowns/maps/score-<run id>.parquet``
     before it rewrites anything; later takedowns read that map.

Resumable per file: the work directory ``takedowns/_work/<id>/`` (``id`` = the lists' fingerprint and
the run ids of the stages) holds a done-marker per file and the rows each file lost (written
before the file is replaced, so a kill between the two loses nothing); a rerun with the same lists
skips finished files, one with a different list gets a new id and is not skipped. The stats are
updated once per id from those logs (``counters.takedown[<date>/<id>]``, rows per file): removed
rows lower ``rows_out`` and ``outputs`` and count as the reason ``takedown`` of their table, so
rows in = rows out + rejected still holds; completion markers get the refreshed file list (the
runner checks sizes and row counts of inputs) and the takedown id. ``takedowns/<UTC date>.jsonl``
lists what was removed from where.

The lists are merged into ``<run>/takedowns/lists/`` (urls, domains, sha256): a later rerun of extract
refuses the pages (reason ``takedown``), of images the image URLs (``takedown``) and digests
(``hash_listed``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import InputError
from curation.layout import WHOLE_POSITION, cut_positions, load_metadata
from filters.blocklists import record_takedown
from filters.image import UrlListFilter, load_url_list

log = logging.getLogger(__name__)

MARKER = "_STAGE_COMPLETE"
TAKEDOWN = "takedown"
# scheme://[user@]host: the host of a URL column, for domain lists (matched once per distinct host).
_HOST_RE = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?(?P<host>[^:/?#]*)"
# Where a removed row of ``<stage>/<output>`` is counted when the output is not a stats table of its own.
OUTPUT_TABLE = {("score", "mmc4"): "documents"}


@dataclass
class TakedownLists:
    urls: set[str]
    domains: UrlListFilter | None
    sha256: set[str]
    domain_entries: list[str] = field(default_factory=list)
    # Derived by the scan pass: keys of removed pairs and ids of removed documents (reject records).
    keys: set[str] = field(default_factory=set)

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
        return cls(set(read(urls, "--urls")), UrlListFilter(doms, TAKEDOWN) if doms else None, shas, doms)

    def to_json(self) -> dict[str, list[str]]:
        return {"urls": sorted(self.urls), "domains": sorted(self.domain_entries), "sha256": sorted(self.sha256),
                "keys": sorted(self.keys)}

    @classmethod
    def from_json(cls, d: dict[str, list[str]]) -> "TakedownLists":
        doms = list(d.get("domains") or [])
        return cls(set(d["urls"]), UrlListFilter(doms, TAKEDOWN) if doms else None, set(d["sha256"]), doms,
                   set(d.get("keys") or []))

    def fingerprint(self) -> str:
        """What the user listed (not what the scan derives): part of the work id."""
        blob = json.dumps({k: v for k, v in self.to_json().items() if k != "keys"}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def url_hit(self, url: str | None) -> bool:
        return bool(url) and (url in self.urls or (self.domains is not None and self.domains.match(url)))

    @property
    def domains_are_hosts(self) -> bool:
        """Every domain entry is a plain domain: matching one URL column needs its distinct hosts only."""
        return all("://" not in e and not e.startswith("re:") and "/" not in e for e in self.domain_entries)


# --------------------------------------------------------------------------- vectorised matching


def _strings(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr if arr.type == pa.string() else arr.cast(pa.string())


def _is_in(arr: pa.Array, values: set[str] | list[str]) -> np.ndarray:
    if not len(arr) or not values:
        return np.zeros(len(arr), dtype=bool)
    hit = pc.is_in(arr, value_set=pa.array(sorted(values), pa.string()))
    return hit.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def url_mask(col: pa.ChunkedArray | pa.Array, lists: TakedownLists) -> np.ndarray:
    """Which values of a URL column are listed: exact URLs by ``is_in``, domains per distinct host."""
    arr = _strings(col)
    mask = _is_in(arr, lists.urls)
    if lists.domains is not None and len(arr):
        if lists.domains_are_hosts:
            hosts = pc.utf8_lower(pc.struct_field(pc.extract_regex(arr, _HOST_RE), [0]))
            hit = [h for h in pc.unique(hosts).drop_null().to_pylist() if h and lists.domains.match(f"http://{h}/")]
            mask |= _is_in(hosts, hit)
        else:  # URL prefixes or regexes: once per distinct URL
            hit = [u for u in pc.unique(arr).drop_null().to_pylist() if lists.domains.match(u)]
            mask |= _is_in(arr, hit)
    return mask


def sha_mask(col: pa.ChunkedArray | pa.Array, lists: TakedownLists) -> np.ndarray:
    return _is_in(pc.utf8_lower(_strings(col)), lists.sha256)


def _detail_mask(col: pa.ChunkedArray | pa.Array, urls: set[str]) -> np.ndarray:
    """Reject details that quote a listed URL (dedup's ``same URL <url>``): one vectorised pass per URL."""
    arr = _strings(col)
    mask = np.zeros(len(arr), dtype=bool)
    if not len(arr) or arr.null_count == len(arr):
        return mask
    for u in sorted(urls):
        mask |= pc.match_substring(arr, u).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    return mask


def _rows_with_listed_items(lists_col: pa.ChunkedArray, lists: TakedownLists, field_name: str | None = None) -> np.ndarray:
    """Row indices of a list column (document ``images``, MMC4 ``image_info``) with a listed URL."""
    arr = lists_col.combine_chunks()
    flat = pc.list_flatten(arr)
    if field_name is not None:
        flat = pc.struct_field(flat, field_name)
    if not len(flat):
        return np.zeros(0, dtype=np.int64)
    hit = url_mask(flat, lists)
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
    return np.unique(parents[hit])


# --------------------------------------------------------------------------- files and ids


def _stage_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")) and (p / MARKER).exists())


def _outputs(stage_dir: Path, suffix: str) -> list[Path]:
    return sorted(f for f in stage_dir.rglob(f"*{suffix}")
                  if not any(part.startswith(("_", ".")) for part in f.relative_to(stage_dir).parts))


def _file_id(rel: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", rel.replace("/", "__"))


def _atomic_write(path: Path, data_writer) -> None:
    tmp = path.with_name(f".takedown-{path.name}")
    data_writer(tmp)
    os.replace(tmp, path)


def _write_log(log_dir: str, file_id: str, entries: list[dict]) -> None:
    """The rows a file loses, written before the file is replaced (a killed task's count is not lost)."""
    p = Path(log_dir) / f"{file_id}.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(p, lambda t: t.write_text("".join(json.dumps(e, default=str) + "\n" for e in entries)))


def _load_lists(path: str) -> TakedownLists:
    from curation.dask_cluster import setup_once

    return setup_once(("takedown-lists", path, os.path.getmtime(path)),
                      lambda: TakedownLists.from_json(json.loads(Path(path).read_text())))


# --------------------------------------------------------------------------- pass 1: scan


def scan_file(lists_path: str, shard, payload, out) -> dict:
    """URLs of listed digests, keys of matching pairs and ids of matching documents in one Parquet file."""
    lists = _load_lists(lists_path)
    names = pq.read_schema(shard.path).names
    cols = [c for c in ("url", "page_url", "sha256", "key", "doc_id", "texts") if c in names]
    if not {"url", "page_url", "sha256"} & set(cols):
        return {"urls": [], "keys": []}
    t = pq.read_table(shard.path, columns=[c for c in cols if c != "texts"])
    hit = np.zeros(t.num_rows, dtype=bool)
    urls: list[str] = []
    if "sha256" in cols:
        by_sha = sha_mask(t.column("sha256"), lists)
        hit |= by_sha
        if "url" in cols:
            urls = [u for u in t.column("url").filter(pa.array(by_sha)).to_pylist() if u]
    for c in ("url", "page_url"):
        if c in cols:
            hit |= url_mask(t.column(c), lists)
    keys: list[str] = []
    if "key" in cols:
        keys += [k for k in t.column("key").filter(pa.array(hit)).to_pylist() if k]
    if "doc_id" in cols and "texts" in cols:  # a document table: its removed documents' ids
        keys += [k for k in t.column("doc_id").filter(pa.array(hit)).to_pylist() if k]
    return {"urls": sorted(set(urls)), "keys": sorted(set(keys))}


# --------------------------------------------------------------------------- pass 2: clean


def _cut_document(row: dict, lists: TakedownLists, rel: str, ident: Any, entries: list[dict]) -> None:
    blobs = row.get("image_bytes")
    drop = {pos: {WHOLE_POSITION} for pos, u in enumerate(row["images"]) if u is not None and lists.url_hit(u)}
    for pos in drop:
        entries.append({"file": rel, "row": ident, "matched": "document image", "image": row["images"][pos],
                        "removed": "image"})
    meta = load_metadata(row.get("metadata"))
    texts, images, meta = cut_positions(row["texts"], row["images"], meta, drop)
    if blobs is not None:  # bytes follow the kept images in order (neighbouring texts may have joined)
        it = iter([blobs[p] for p, u in enumerate(row["images"]) if u is not None and p not in drop and p < len(blobs)])
        row["image_bytes"] = [next(it, None) if u is not None else None for u in images]
    row["texts"], row["images"] = texts, images
    if row.get("metadata") is not None:
        row["metadata"] = json.dumps(meta, ensure_ascii=False)


def _cut_mmc4(row: dict, lists: TakedownLists, rel: str, ident: Any, entries: list[dict]) -> None:
    keep = [i for i, info in enumerate(row["image_info"]) if not lists.url_hit(info.get("raw_url"))]
    for i, info in enumerate(row["image_info"]):
        if i not in keep:
            entries.append({"file": rel, "row": ident, "matched": "mmc4 image", "image": info.get("raw_url"),
                            "removed": "image"})
    row["image_info"] = [row["image_info"][i] for i in keep]
    if row.get("similarity_matrix") is not None:
        row["similarity_matrix"] = [row["similarity_matrix"][i] for i in keep if i < len(row["similarity_matrix"])]


def clean_parquet(path: Path, rel: str, lists: TakedownLists) -> tuple[pa.Table | None, list[dict]]:
    """The file's table without what ``lists`` names (None when nothing matched) and the log entries."""
    table = pq.read_table(path)
    names = table.column_names
    n = table.num_rows
    is_rejects = rel.split("/")[1] == "rejects"
    why = np.full(n, None, dtype=object)

    def mark(mask: np.ndarray, reason: str) -> None:
        why[mask & (why == None)] = reason  # noqa: E711 - numpy elementwise

    if is_rejects:
        ids = lists.urls | lists.keys
        for c in ("row_id", "duplicate_of"):
            if c in names:
                mark(url_mask(table.column(c), lists) | _is_in(_strings(table.column(c)), ids), f"reject {c}")
        if "detail" in names and lists.urls:
            mark(_detail_mask(table.column("detail"), lists.urls), "reject detail")
    else:
        for c in ("url", "page_url"):
            if c in names:
                mark(url_mask(table.column(c), lists), c)
        for c in ("sha256", "original_sha256"):  # the release keeps the fetched digest beside a blurred copy's
            if c in names:
                mark(sha_mask(table.column(c), lists), c)
        if "key" in names and lists.keys:
            mark(_is_in(_strings(table.column("key")), lists.keys), "key")
    drop = why != None  # noqa: E711
    edit: np.ndarray = np.zeros(0, dtype=np.int64)
    if not is_rejects and "images" in names and "texts" in names:
        edit = _rows_with_listed_items(table.column("images"), lists)
    elif not is_rejects and "image_info" in names:
        edit = _rows_with_listed_items(table.column("image_info"), lists, "raw_url")
    edit = edit[~drop[edit]] if edit.size else edit
    if not drop.any() and not edit.size:
        return None, []

    ident_col = next((c for c in ("key", "doc_id", "row_id", "url") if c in names), None)
    idx = np.flatnonzero(drop)
    idents = table.column(ident_col).take(pa.array(idx)).to_pylist() if ident_col else idx.tolist()
    entries: list[dict] = []
    extra = {c: table.column(c).take(pa.array(idx)).to_pylist() for c in ("table", "reason", "caption_source", "image_key")
             if c in names}
    for j, (i, ident) in enumerate(zip(idx.tolist(), idents)):
        e = {"file": rel, "row": ident, "matched": str(why[i]), "removed": "row"}
        for c, vals in extra.items():
            e[c] = vals[j]
        entries.append(e)
    keep = np.flatnonzero(~drop)
    if not edit.size:
        return table.take(pa.array(keep)), entries
    rows = table.take(pa.array(edit)).to_pylist()
    for row, i in zip(rows, edit.tolist()):
        ident = row.get(ident_col) if ident_col else i
        if "image_info" in names:
            _cut_mmc4(row, lists, rel, ident, entries)
        else:
            _cut_document(row, lists, rel, ident, entries)
    plain = np.setdiff1d(keep, edit)
    combined = pa.concat_tables([table.take(pa.array(plain)), pa.Table.from_pylist(rows, schema=table.schema)])
    order = np.argsort(np.concatenate([plain, edit]), kind="stable")
    return combined.take(pa.array(order)), entries


def _sample_of(name: str) -> tuple[str, str]:
    key, _, ext = name.partition(".")
    return key, ext


def clean_tar(path: Path, rel: str, lists: TakedownLists) -> tuple[list | None, list[dict]]:
    """A tar's members without the listed samples / document images (None when nothing matched).

    Only the ``.json`` members are read to decide (one small JSON per sample: a tar has no column
    to vectorise over); the image members are read only when the tar is rewritten.
    """
    drop: set[str] = set()
    cut: dict[str, tuple[dict, set[str], list[str]]] = {}  # document samples: new json, members to drop, URLs
    with tarfile.open(path) as tf:
        members = tf.getmembers()
        for m in members:
            key, ext = _sample_of(m.name)
            if ext != "json" or not m.isfile():
                continue
            meta = json.loads(tf.extractfile(m).read())
            if lists.url_hit(meta.get("url")) or lists.url_hit(meta.get("page_url")) \
                    or (meta.get("sha256") or "").lower() in lists.sha256 or (meta.get("key") or "") in lists.keys \
                    or (meta.get("original_sha256") or "").lower() in lists.sha256:
                drop.add(key)
            elif meta.get("image_urls"):  # one document per sample (release interleaved_wds)
                hits = [i for i, u in enumerate(meta["image_urls"]) if u is not None and lists.url_hit(u)]
                if hits:
                    cut[key] = (*_cut_doc_sample(meta, set(hits), key), [meta["image_urls"][i] for i in hits])
        if not drop and not cut:
            return None, []
        kept = []
        for m in members:
            key, ext = _sample_of(m.name)
            if key in drop or (key in cut and m.name in cut[key][1]):
                continue
            if key in cut and ext == "json":
                data = json.dumps(cut[key][0], ensure_ascii=False).encode("utf-8")
                m.size = len(data)
            else:
                data = tf.extractfile(m).read() if m.isfile() else None
            kept.append((m, data))
    entries = [{"file": rel, "row": k, "matched": "webdataset sample", "removed": "row"} for k in sorted(drop)]
    entries += [{"file": rel, "row": k, "matched": "document image", "image": u, "removed": "image"}
                for k, (_, _, urls) in sorted(cut.items()) for u in urls]
    return kept, entries


def _cut_doc_sample(meta: dict, hits: set[int], key: str) -> tuple[dict, set[str]]:
    texts, urls, names = meta.get("texts") or [], meta["image_urls"], meta.get("images") or []
    members = {f"{key}.{names[i]}" for i in hits if i < len(names) and names[i]}
    md = meta.get("metadata")
    new_t, new_u, new_m = cut_positions(texts, urls, md, {i: {WHOLE_POSITION} for i in hits})
    it = iter([names[i] for i, u in enumerate(urls) if u is not None and i not in hits and i < len(names)])
    out = dict(meta, texts=new_t, image_urls=new_u, images=[next(it, None) if u is not None else None for u in new_u])
    if isinstance(md, list):
        out["metadata"] = new_m
    return out, members


def zero_embeddings(path: Path, rel: str, rows: list[int]) -> tuple[np.ndarray | None, list[dict]]:
    arr = np.load(path)
    if not rows or not arr[rows].any():  # already zero: a resumed takedown
        return None, []
    arr[rows] = 0
    return arr, [{"file": rel, "row": r, "matched": "embedding of a removed pair (zeroed)", "removed": "embedding"}
                 for r in rows]


def clean_file(lists_path: str, root: str, log_dir: str, shard, payload, out) -> dict:
    """One output file: filter it, log what left (before the replace), replace it atomically."""
    lists = _load_lists(lists_path)
    path = Path(shard.path)
    rel = str(path.relative_to(root))
    if rel.endswith(".parquet"):
        table, entries = clean_parquet(path, rel, lists)
        writer = (lambda p: pq.write_table(table, p)) if table is not None else None
    elif rel.endswith(".tar"):
        kept, entries = clean_tar(path, rel, lists)

        def writer(p: Path) -> None:
            with tarfile.open(p, "w") as tf:
                for m, data in kept:
                    tf.addfile(m, _bytes_io(data))

        writer = writer if kept is not None else None
    else:  # an embeddings .npy: rows to zero in the payload
        arr, entries = zero_embeddings(path, rel, list(payload or []))

        def writer(p: Path) -> None:
            with open(p, "wb") as fh:
                np.save(fh, arr)

        writer = writer if arr is not None else None
    if writer is None:
        return {"file": rel, "entries": 0}
    _write_log(log_dir, shard.id, entries)
    _atomic_write(path, writer)
    return {"file": rel, "entries": len(entries)}


def _bytes_io(data: bytes | None):
    import io

    return io.BytesIO(data) if data is not None else None


# --------------------------------------------------------------------------- driver


def _embedding_map(root: Path) -> pa.Table | None:
    """``key -> embedding_row`` for every pair the score stage read (kept *and* rejected).

    The score stage numbers its input pairs in file order (``plan_shards``) and writes
    ``embedding_row`` on kept pairs only. The map is taken from the input's key order once, before
    any takedown rewrites the input, checked against every kept pair's ``embedding_row``, and
    stored per score run id; without a consistent input only the kept pairs are located.
    """
    from curation.dask_cluster import list_parquet_files

    score = root / "score"
    if not (score / MARKER).exists() or not (score / "embeddings" / "index.json").exists():
        return None
    marker = json.loads((score / MARKER).read_text())
    path = root / "takedowns" / "maps" / f"score-{_file_id(str(marker.get('run_id', 'unknown')))}.parquet"
    if path.exists():
        return pq.read_table(path)
    kept = pq.read_table(score / "pairs", columns=["key", "embedding_row"])
    src = marker.get("inputs", {}).get("pairs") or "images/pairs"
    local = root / "/".join(src.rstrip("/").split("/")[-2:])  # the run may have moved: <stage>/<output> in it
    files = list_parquet_files(str(local)) if local.exists() else []
    keys = pa.concat_arrays([_strings(pq.read_table(f, columns=["key"]).column("key")) for f in files]) if files else None
    total = sum(s["rows"] for s in json.loads((score / "embeddings" / "index.json").read_text())["shards"])
    table = None
    if keys is not None and len(keys) == total:
        pos = pc.index_in(kept.column("key"), value_set=keys).fill_null(-1).to_numpy(zero_copy_only=False)
        if np.array_equal(pos, kept.column("embedding_row").to_numpy(zero_copy_only=False)):
            table = pa.table({"key": keys, "embedding_row": pa.array(np.arange(total, dtype=np.int64))})
    if table is None:
        log.warning("takedown: the score stage's input %s does not match its embedding rows; only kept pairs' "
                    "embeddings can be located", local)
        table = kept.replace_schema_metadata({"complete": "false"})
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda p: pq.write_table(table, p))
    return table


def _embedding_payloads(root: Path, emap: pa.Table | None, keys: set[str]) -> dict[Path, list[int]]:
    if emap is None or not keys:
        return {}
    rows = emap.column("embedding_row").filter(pa.array(_is_in(_strings(emap.column("key")), keys))).to_pylist()
    index = json.loads((root / "score" / "embeddings" / "index.json").read_text())
    out: dict[Path, list[int]] = {}
    for shard in index["shards"]:
        mine = sorted(r - shard["offset"] for r in rows if shard["offset"] <= r < shard["offset"] + shard["rows"])
        if mine:
            for kind in ("image", "text"):
                out[root / "score" / "embeddings" / shard[kind]] = mine
    return out


def _shard(path: Path, root: Path):
    from curation.dask_cluster import Shard

    return Shard(_file_id(str(path.relative_to(root))), str(path), (), 0, 0)


def _update_stats(stage: Path, entries: list[dict], tid: str, day: str) -> None:
    """Removed rows become the reason ``takedown`` of the table that counted them (once per takedown id)."""
    stats_path = stage / "stats.json"
    if not stats_path.exists():
        return
    stats = json.loads(stats_path.read_text())
    tk = stats.setdefault("counters", {}).setdefault("takedown", {})
    label = f"{day}/{tid[:12]}"
    if any(k.endswith(tid[:12]) for k in tk):
        return  # this takedown was counted already (a resumed run)
    outputs = stats.setdefault("outputs", {})
    tables = stats.get("tables") or {}
    # An output whose count is the main table's rows_out holds the main table's rows (decided before any change).
    main_outputs = {o for o, v in outputs.items() if v == stats.get("rows_out")}
    # Else the secondary table whose rows_out is the output's count (e.g. all captions of a stage).
    by_count = {o: name for o, v in outputs.items() for name, t in tables.items() if t.get("rows_out") == v}
    capfilt_split = stage.name == "capfilt" and "synthetic_captions" in tables  # web pairs: main; synthetic: a table
    images_gone: set[str] = set()

    def count(t: dict | None) -> None:
        if t is not None:
            t["rows_out"] -= 1
            t.setdefault("rejected", {})[TAKEDOWN] = t["rejected"].get(TAKEDOWN, 0) + 1

    for e in entries:
        if e["removed"] != "row":
            continue
        out = e["file"].split("/")[1]
        if out == "rejects":  # the record left; its row is counted as taken down instead of its reason
            t = tables.get(e.get("table")) or stats
            rej = t.setdefault("rejected", {})
            if rej.get(e.get("reason"), 0) > 0:
                rej[e["reason"]] -= 1
                rej[TAKEDOWN] = rej.get(TAKEDOWN, 0) + 1
                if not rej[e["reason"]]:
                    del rej[e["reason"]]
            continue
        if out in outputs:
            outputs[out] -= 1
        if e["file"].endswith(".tar"):
            continue  # the tar's sample is the same pair as a Parquet row counted there
        if capfilt_split and out == "pairs":
            syn = e.get("caption_source") == "synthetic"
            sub = "synthetic" if syn else "web"
            if sub in outputs:
                outputs[sub] -= 1
            count(tables["synthetic_captions"] if syn else stats)
            if e.get("image_key") and "images" in tables and e["image_key"] not in images_gone:
                images_gone.add(e["image_key"])
                count(tables["images"])
        elif out in tables:
            count(tables[out])
        elif (stage.name, out) in OUTPUT_TABLE:
            count(tables.get(OUTPUT_TABLE[(stage.name, out)]))
        elif out in main_outputs:
            count(stats)
        elif out in by_count:
            count(tables[by_count[out]])
    per_file = Counter(e["file"] for e in entries)
    tk[label] = dict(sorted(per_file.items()))
    _atomic_write(stats_path, lambda p: p.write_text(json.dumps(stats, indent=1)))


def _recount_sizes(tars: list[Path]) -> None:
    for d in sorted({t.parent for t in tars}):
        sizes = d / "sizes.json"
        if not sizes.exists():
            continue
        s = json.loads(sizes.read_text())
        for t in tars:
            if t.parent == d and t.name in s:
                with tarfile.open(t) as tf:
                    s[t.name] = len({_sample_of(n)[0] for n in tf.getnames()})
        _atomic_write(sizes, lambda p, s=s: p.write_text(json.dumps(s, indent=1)))


def _drop_kept_caches(root: Path, stages: list[Path]) -> list[str]:
    """Delete work caches a stage kept (``images.keep_fetch_cache``, ``score.keep_work``): they hold
    fetched bytes and per-shard copies that no per-file pass rewrites; a rerun recomputes them."""
    gone = []
    work_root = (root / "_work").resolve()
    for stage in stages:
        counters = (json.loads((stage / "stats.json").read_text()).get("counters") or {}) if (stage / "stats.json").exists() else {}
        for key in ("fetch_work_dir", "work_dir"):
            d = counters.get(key)
            if isinstance(d, str) and "://" not in d and Path(d).is_dir() and work_root in Path(d).resolve().parents:
                shutil.rmtree(d)
                gone.append(str(Path(d).resolve().relative_to(root)))
    return gone


def takedown(run_root: str, lists: TakedownLists, now: datetime | None = None, client: Any = None) -> dict[str, Any]:
    """Remove what ``lists`` names from every complete stage of ``run_root``; returns the summary.

    ``client``: a Dask client for the per-file tasks (``curate takedown`` passes the config's); None
    runs them here, one after another.
    """
    from curation.dask_cluster import run_shards
    from curation.stage_files import list_files

    root = Path(run_root).resolve()
    if not root.is_dir() or not _stage_dirs(root):
        raise InputError(f"takedown: {run_root} holds no complete stage")
    stages = _stage_dirs(root)
    run_ids = {s.name: json.loads((s / MARKER).read_text()).get("run_id") for s in stages}
    tid = hashlib.sha256(json.dumps([lists.fingerprint(), run_ids], sort_keys=True).encode()).hexdigest()[:16]
    applied = root / "takedowns" / "applied" / f"{tid}.json"
    if applied.exists():
        log.info("takedown %s was applied already to %s", tid, root)
        return dict(json.loads(applied.read_text()), already_applied=True)
    now = now or datetime.now(timezone.utc)
    work = root / "takedowns" / "_work" / tid
    work.mkdir(parents=True, exist_ok=True)
    emap = _embedding_map(root)  # before anything is rewritten

    # Pass 1: listed digests -> URLs, removed pairs and documents -> keys / ids.
    base = work / "lists0.json"
    if not base.exists():
        _atomic_write(base, lambda p: p.write_text(json.dumps(lists.to_json())))
    parquet = [f for s in stages for f in _outputs(s, ".parquet")]
    scan = run_shards(client, partial(scan_file, str(base)),
                      [_shard(f, root) for f in parquet if f.relative_to(root).parts[1] != "rejects"],
                      str(work / "scan"), desc="takedown:scan", progress=False)
    full = TakedownLists.from_json(json.loads(base.read_text()))
    for s in scan.values():
        full.urls.update(s["urls"])
        full.keys.update(s["keys"])
    lists_path = work / "lists.json"
    if not lists_path.exists():
        _atomic_write(lists_path, lambda p: p.write_text(json.dumps(full.to_json())))

    # Pass 2: one task per file.
    emb = _embedding_payloads(root, emap, full.keys)
    files = parquet + [f for s in stages for f in _outputs(s, ".tar")] + sorted(emb)
    shards = [_shard(f, root) for f in files]
    payloads = {_shard(f, root).id: rows for f, rows in emb.items()}
    logs = work / "logs"
    done = run_shards(client, partial(clean_file, str(lists_path), str(root), str(logs)), shards, str(work / "clean"),
                      payloads, desc="takedown:clean", progress=False)

    # Counts from the logs (each written before its file was replaced), once per takedown id.
    entries = [json.loads(line) for f in sorted(logs.glob("*.jsonl")) for line in f.read_text().splitlines() if line]
    day = now.date().isoformat()
    changed = sorted({e["file"] for e in entries})
    _recount_sizes([root / f for f in changed if f.endswith(".tar")])
    for stage in stages:
        mine = [e for e in entries if e["file"].split("/", 1)[0] == stage.name]
        if not mine:
            continue
        _update_stats(stage, mine, tid, day)
        marker = json.loads((stage / MARKER).read_text())
        if "files" in marker:
            marker["files"] = list_files(str(stage))
        marker["takedowns"] = sorted(set(marker.get("takedowns") or []) | {tid})
        _atomic_write(stage / MARKER, lambda p, m=marker: p.write_text(json.dumps(m)))
    caches = _drop_kept_caches(root, stages)
    # A later rerun of extract or images refuses them again (filters.blocklists.takedown_filter).
    record_takedown(str(root), full.urls, full.domain_entries, full.sha256)
    out_dir = root / "takedowns"
    path = out_dir / f"{day}.jsonl"
    with path.open("a", encoding="utf-8") as fh:
        for e in entries:
            fh.write(json.dumps({"at": now.isoformat(timespec="seconds"), "takedown": tid, **e}, default=str) + "\n")
    summary = {"takedown": tid, "removed": len(entries),
               "rows_removed": sum(e["removed"] == "row" for e in entries),
               "files_rewritten": len(changed), "files_checked": len(done), "log": str(path), "caches_deleted": caches,
               "embedding_rows_of_rejected_pairs": emap is None or (emap.schema.metadata or {}).get(b"complete") != b"false"}
    applied.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(applied, lambda p: p.write_text(json.dumps(summary, indent=1)))
    shutil.rmtree(work, ignore_errors=True)
    if work.parent.is_dir() and not any(work.parent.iterdir()):
        work.parent.rmdir()
    return summary


def add_cli_arguments(sub) -> None:
    p = sub.add_parser("takedown", help="remove listed pages/images/pairs from every output of a finished run")
    p.add_argument("--run", required=True, help="the run directory")
    p.add_argument("--urls", required=True, help="page or image URLs, one per line")
    p.add_argument("--domains", help="domains (and their subdomains), one per line")
    p.add_argument("--sha256", help="image SHA-256 digests, one per line")
    p.add_argument("--config", default=None, help="config YAML (its dask section: where the per-file tasks run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="a.b=value config override")
    p.add_argument("--scheduler", default=None, help="an existing Dask scheduler (default: a LocalCluster)")


def cli_main(args, load_config) -> int:
    from curation.dask_cluster import dask_client

    lists = TakedownLists.load(args.urls, args.domains, args.sha256)
    if not Path(args.run).is_dir():
        raise InputError(f"takedown: {args.run} holds no complete stage")
    cfg = load_config(args)
    with dask_client(cfg.dask) as client:
        summary = takedown(args.run, lists, client=client)
    print(f"takedown {summary['takedown']}: removed {summary['removed']} rows/entries "
          f"({summary['rows_removed']} rows), rewrote {summary['files_rewritten']} of {summary['files_checked']} files; "
          f"log {summary['log']}" + (" (applied already: nothing to do)" if summary.get("already_applied") else ""))
    return 0
