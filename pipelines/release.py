"""The release stage: the curated result in the formats its consumers read.

Every earlier stage ends in Parquet in the pipeline's own schemas; training jobs want other
shapes. This stage (last in the registry) writes, under ``<run>/release/``:

- ``pairs_wds/``: WebDataset tars of the final kept pairs (``capfilt/pairs``, or ``score/pairs``
  where capfilt did not run) with their image bytes, as open_clip's ``get_wds_dataset`` reads them:
  ``<key>.<jpg|png|webp>``, ``<key>.txt``, ``<key>.json``; shuffled across shards by a seeded hash
  of the pair key (a trainer reading shards in order still sees a mixed stream: pages, pictures
  and synthetic captions of one picture are not clustered), about ``release.samples_per_shard``
  samples per tar, ``sizes.json`` (open_clip's ``--train-num-samples``) and ``_info.json`` (what
  DataComp's resharder records beside its output: totals, shard count, seed, source);
- ``interleaved_wds/``: one WebDataset sample per document (OpenFlamingo/MINT-1T layout):
  ``<key>.json`` holds ``texts`` and ``images`` aligned by position (an image position names its
  member, ``<key>.<i>.<ext>``), and each image is a member of its own;
- ``interleaved/``: the same documents as Parquet (the ``INTERLEAVED`` schema, ``image_bytes``);
- ``hf/``: Parquet shards (``data/train-*.parquet``) whose ``image`` column is a ``{bytes, path}``
  struct, and a ``README.md`` with YAML front matter (configs, features, licence), so
  ``datasets.load_dataset("<run>/release/hf")`` gives typed rows with ``datasets.Image`` pictures
  (and ``push_to_hub`` publishes the same folder).

Streaming, on Dask (a :class:`curation.dask_stage.DaskStage`: the base owns the client, the work
directory, the empty rejects and the clean-up): no process holds the whole run. Pairs go in
two passes, like a shuffle: pass 1 (one task per row-group shard of the final pairs) checks each
pair's image bytes and hashes its key into one of ``ceil(rows / samples_per_shard)`` buckets,
writing a small Parquet per (input shard, bucket); pass 2 (one task per bucket, about one tar's
rows in memory) sorts a bucket by the hash and writes its tar and its HF shard. Documents go in
one pass, a task per row-group shard. Every task writes into ``<run>/_work/release-<hash>/`` with
a done-marker last (``run_shards``), so a killed run resumes per output shard; the driver only
plans, counts and moves finished files into the stage directory. Limit: pass 1 writes one small
file per (input shard, output shard), ``(rows / shard_rows) x (rows / samples_per_shard)`` files: fine
up to millions of pairs (1M pairs: 50 x 100), too many for hundreds of millions, where the shuffle
belongs in Spark's (external sort, spill) instead.

Accounting: the main table is the final pairs (released, or ``no_image_bytes`` / ``undecodable``
/ ``unsupported_format`` when their bytes are not a picture open_clip can read); ``tables.documents``
counts documents (released, or ``no_image_bytes`` when an image position has no bytes,
``empty_document`` when nothing is left).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import tarfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from fsspec.core import url_to_fs

from curation.config import PipelineConfig, ReleaseConfig
from curation.dask_cluster import DONE_DIR, Shard, ShardOutput, list_parquet_files, plan_shards, read_shard
from curation.dask_stage import DaskRun, DaskStage
from curation.errors import InputError, StageError
from curation.image_decode import NO_IMAGE_BYTES, UNDECODABLE
from curation.rejects import rejects_table
from curation.schemas import INTERLEAVED
from curation.stage import StageContext, StageStats, read_marker
from models.faces import blur_boxes

log = logging.getLogger(__name__)

STAGE = "release"
FORMATS = ("pairs_wds", "interleaved_wds", "interleaved", "hf")
UNSUPPORTED_FORMAT = "unsupported_format"  # bytes of a picture open_clip's loader does not decode (gif, ...)
EMPTY_DOCUMENT = "empty_document"
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}  # open_clip keeps jpg/png/jpeg/webp members
# Pair columns carried into the tars' json and the HF rows when the final table has them.
PAIR_METADATA = ("key", "url", "page_url", "doc_id", "caption_source", "caption_model", "image_key",
                 "clip_score", "itm_score", "nsfw_score", "aesthetic_score", "width", "height", "sha256",
                 "original_sha256", "face_count", "face_detections")
BLUR_FAILED = "blur_failed"  # a picture with face boxes that could not be re-encoded blurred: never released
_HASH = "_release_hash"
HF_ROW_GROUP = 100  # rows per Parquet row group of the HF shards (the Hub's advice for image datasets)


# --------------------------------------------------------------------------- small pure helpers


def image_format(blob: bytes | None) -> str | None:
    """``jpeg`` / ``png`` / ``webp`` / ``gif`` from the magic bytes (None: not a known picture).

    The pairs carry bytes, not their format; the tar member's extension must match what the
    bytes are (webdataset decodes by extension), and sniffing 12 bytes costs nothing next to a decode.
    """
    if not blob:
        return None
    if blob[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if blob[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if blob[:4] == b"RIFF" and blob[8:12] == b"WEBP":
        return "webp"
    if blob[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def picture_reason(blob: bytes | None) -> tuple[str | None, str | None]:
    """``(extension, None)`` for bytes a trainer can read, else ``(None, reject reason)``."""
    if not blob:
        return None, NO_IMAGE_BYTES
    fmt = image_format(blob)
    if fmt is None:
        return None, UNDECODABLE
    if fmt not in EXTENSIONS:
        return None, UNSUPPORTED_FORMAT
    return EXTENSIONS[fmt], None


def key_hash(seed: int, key: str) -> int:
    """A seeded 63-bit hash of a pair key: its bucket (output shard) and its place in it."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # fits Arrow's int64


def _member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    info.mtime = 0  # reproducible tars: the same run gives the same bytes
    tar.addfile(info, io.BytesIO(payload))


def _write_atomic(path: str, write: Callable[[Any], None]) -> None:
    """Write ``path`` through a temporary name in the same folder, renamed when complete."""
    fs, p = url_to_fs(path)
    folder, name = p.rsplit("/", 1)
    fs.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/.tmp-{name}"
    with fs.open(tmp, "wb") as fh:
        write(fh)
    fs.mv(tmp, p)


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


# --------------------------------------------------------------------------- faces (DataComp-style blurring)


def _sha256(blob: bytes | None) -> str | None:
    return hashlib.sha256(blob).hexdigest() if blob else None


def _blur_pair_faces(table: pa.Table, blur: bool) -> tuple[pa.Table, int, np.ndarray]:
    """Pairs with their face boxes blurred in ``image`` (when ``blur``), ``sha256`` of the bytes released
    and ``original_sha256`` of the bytes the pipeline kept (the id takedown lists and earlier stages use).

    Returns (table, pictures blurred, rows whose blur failed). Runs in the pass-1 task of its shard, on the
    boxes the score stage stored with the pair (``face_detections``, original pixels).
    """
    n = table.num_rows
    names = table.column_names
    original = table.column("sha256").to_pylist() if "sha256" in names else [None] * n
    failed = np.zeros(n, dtype=bool)
    blurred = 0
    if blur and "face_detections" in names and n:
        boxes = table.column("face_detections").to_pylist()
        rows = [i for i, b in enumerate(boxes) if b]
        if rows:
            blobs = table.column("image").to_pylist()
            original = [o or _sha256(b) for o, b in zip(original, blobs)]
            for i in rows:
                try:
                    blobs[i] = blur_boxes(blobs[i], boxes[i])
                    blurred += 1
                except Exception:  # noqa: BLE001 (any decoder error: the row is rejected, not released)
                    failed[i] = True
            image_type = table.schema.field("image").type
            table = table.set_column(names.index("image"), "image", pa.array(blobs, image_type))
            shas = [_sha256(b) for b in blobs]
            if "sha256" in names:
                table = table.set_column(names.index("sha256"), "sha256", pa.array(shas, pa.string()))
            else:
                table = table.append_column("sha256", pa.array(shas, pa.string()))
    original_col = pa.array(original, pa.string())
    if "original_sha256" in table.column_names:
        table = table.set_column(table.column_names.index("original_sha256"), "original_sha256", original_col)
    else:
        table = table.append_column("original_sha256", original_col)
    return table, blurred, failed


def _face_boxes(table_path: str | None, urls: Sequence[str]) -> dict[str, list]:
    """{image URL: boxes} for the URLs of one documents shard, from the score stage's ``images`` table."""
    if not table_path or not urls:
        return {}
    files = list_parquet_files(table_path)
    if not files:
        return {}
    import pyarrow.compute as pc

    wanted = pa.array(sorted(set(urls)), pa.string())
    out: dict[str, list] = {}
    for f in files:
        t = pq.read_table(f, columns=["url", "face_detections"])
        t = t.filter(pc.is_in(t.column("url"), value_set=wanted))
        for u, b in zip(t.column("url").to_pylist(), t.column("face_detections").to_pylist()):
            if b:
                out[u] = b
    return out


# --------------------------------------------------------------------------- pairs: pass 1 (per input shard)


def _bucket_pairs(shard: Shard, payload: dict, out: ShardOutput) -> dict:
    """Check each pair's bytes; hash its key into a bucket; one Parquet per non-empty bucket."""
    table = read_shard(shard)
    cols = [c for c in ("caption", "image", *PAIR_METADATA) if c in table.column_names]
    table = table.select(cols)
    keys = table.column("key").to_pylist()
    blobs = table.column("image").to_pylist()
    seed, n_buckets = payload["seed"], payload["buckets"]
    keep, hashes, exts = [], [], []
    rej_ids, rej_reasons, rej_details = [], [], []
    for i, (key, blob) in enumerate(zip(keys, blobs)):
        ext, reason = picture_reason(blob)
        if reason:
            rej_ids.append(key)
            rej_reasons.append(reason)
            rej_details.append(image_format(blob) if reason == UNSUPPORTED_FORMAT else None)
            continue
        keep.append(i)
        hashes.append(key_hash(seed, key))
        exts.append(ext)
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[keep] = True
    kept = table.filter(pa.array(mask)).append_column(_HASH, pa.array(hashes, pa.int64())) \
        .append_column("_ext", pa.array(exts, pa.string()))
    kept, blurred, failed = _blur_pair_faces(kept, payload.get("blur_faces", False))
    if failed.any():  # never publish a face that should have been blurred
        for i in np.flatnonzero(failed).tolist():
            rej_ids.append(kept.column("key")[i].as_py())
            rej_reasons.append(BLUR_FAILED)
            rej_details.append("face boxes but the picture could not be re-encoded")
        kept = kept.filter(pa.array(~failed))
        hashes = kept.column(_HASH).to_pylist()
    bucket_of = [h % n_buckets for h in hashes]
    buckets: Counter = Counter(bucket_of)
    if kept.num_rows:
        import pyarrow.compute as pc

        bucket_col = pa.array(bucket_of, pa.int64())
        for b in sorted(buckets):
            out.write_table(f"buckets/{b:05d}", kept.filter(pc.equal(bucket_col, b)))
    if rej_ids:
        out.write_table("rejects", rejects_table(rej_ids, "pairs", STAGE, rej_reasons, rej_details))
    return {"rows_in": table.num_rows, "kept": kept.num_rows, "rejected": dict(Counter(rej_reasons)),
            "buckets_written": len(buckets), "faces_blurred": blurred}


# --------------------------------------------------------------------------- pairs: pass 2 (per output shard)


def _hf_features(columns: Sequence[str], schema: pa.Schema) -> list[dict]:
    """``dataset_info.features`` of the README: the ``image`` column is a ``datasets.Image``."""
    dtypes = {pa.string(): "string", pa.float32(): "float32", pa.float64(): "float64", pa.int32(): "int32",
              pa.int64(): "int64"}
    def feature(typ: pa.DataType) -> Any:  # a list column is a ``sequence`` of its items (face boxes)
        return {"sequence": feature(typ.value_type)} if pa.types.is_list(typ) else dtypes.get(typ, "string")

    feats = []
    for c in columns:
        f = "image" if c == "image" else feature(schema.field(c).type)
        feats.append({"name": c, **(f if isinstance(f, dict) else {"dtype": f})})
    return feats


def _pair_shard(shard: Shard, payload: dict, out: ShardOutput) -> dict:
    """One bucket -> one tar (``pairs_wds``) and one HF Parquet shard, rows in seeded-hash order."""
    files = list_parquet_files(shard.path)
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default") if files else None
    if table is None or table.num_rows == 0:
        return {"samples": 0}
    # large_binary before the sort: a shard of 10k pictures can pass 2 GB, the limit of binary offsets.
    table = table.set_column(table.schema.get_field_index("image"), "image", table.column("image").cast(pa.large_binary()))
    table = table.sort_by([(_HASH, "ascending"), ("key", "ascending")])
    rows = table.num_rows
    width = max(7, len(str(rows)))
    sample_keys = [f"{shard.id}{i:0{width}d}" for i in range(rows)]
    exts = table.column("_ext").to_pylist()
    result: dict[str, Any] = {"samples": rows}
    if "pairs_wds" in payload["formats"]:
        meta_cols = [c for c in PAIR_METADATA if c in table.column_names]
        meta_rows = table.select(meta_cols).to_pylist()
        captions = table.column("caption").to_pylist()
        blobs = table.column("image")

        def write(fh):
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for i, key in enumerate(sample_keys):
                    _member(tar, f"{key}.{exts[i]}", blobs[i].as_py())
                    _member(tar, f"{key}.txt", (captions[i] or "").encode("utf-8"))
                    _member(tar, f"{key}.json", json.dumps(meta_rows[i], ensure_ascii=False).encode("utf-8"))

        path = f"{payload['work']}/pairs_wds/{shard.id}.tar"
        _write_atomic(path, write)
        result["tar"] = path
    if "hf" in payload["formats"]:
        paths = pa.array([f"{k}.{e}" for k, e in zip(sample_keys, exts)], pa.string())
        parts = []
        for start in range(0, rows, HF_ROW_GROUP):  # datasets.Image's struct<bytes: binary, path>, per row group
            part = table.slice(start, HF_ROW_GROUP)
            image = pa.StructArray.from_arrays(
                [part.column("image").combine_chunks().cast(pa.binary()), paths.slice(start, part.num_rows)],
                names=["bytes", "path"])
            cols = {"key": part.column("key"), "image": image, "caption": part.column("caption")}
            cols.update({c: part.column(c) for c in PAIR_METADATA if c in part.column_names and c not in cols})
            parts.append(pa.table(cols))
        path = f"{payload['work']}/hf/{shard.id}.parquet"
        _write_atomic(path, lambda fh: pq.write_table(pa.concat_tables(parts), fh, row_group_size=HF_ROW_GROUP))
        result["hf"] = path
    return result


# --------------------------------------------------------------------------- documents (per input shard)


def _doc_sample(key: str, row: dict) -> tuple[dict, list[tuple[str, bytes]]]:
    """The json and image members of one document's WebDataset sample."""
    texts, images, blobs = row["texts"] or [], row["images"] or [], row["image_bytes"] or []
    members: list[tuple[str, bytes]] = []
    names: list[str | None] = []
    for i in range(max(len(texts), len(images))):
        if i < len(images) and images[i] is not None:
            ext, _ = picture_reason(blobs[i] if i < len(blobs) else None)
            name = f"{i}.{ext or 'bin'}"
            members.append((f"{key}.{name}", blobs[i]))
            names.append(name)
        else:
            names.append(None)
    doc = {"doc_id": row["doc_id"], "url": row.get("url"),
           "texts": [texts[i] if i < len(texts) else None for i in range(len(names))],
           "images": names, "image_urls": [images[i] if i < len(images) else None for i in range(len(names))],
           "metadata": _json_or_none(row.get("metadata")), "general_metadata": _json_or_none(row.get("general_metadata")),
           "lang": row.get("lang")}
    return doc, members


def _doc_reason(row: dict) -> str | None:
    texts, images, blobs = row["texts"] or [], row["images"] or [], row["image_bytes"] or []
    if not any(t for t in texts) and not any(u is not None for u in images):
        return EMPTY_DOCUMENT
    for i, u in enumerate(images):
        if u is not None and not (i < len(blobs) and blobs[i]):
            return NO_IMAGE_BYTES
    return None


def _blur_document_faces(rows: list[dict], keep: list[int], boxes: dict[str, list]) -> int:
    """Blur the face boxes of each kept document's images in place (``image_bytes``); the image's entry in
    ``metadata`` gains ``face_detections`` and ``original_sha256``. Returns the pictures blurred."""
    blurred = 0
    for d in keep:
        row = rows[d]
        images, blobs = row["images"] or [], row["image_bytes"] or []
        hit = [i for i, u in enumerate(images) if u in boxes and i < len(blobs) and blobs[i]]
        if not hit:
            continue
        meta = _json_or_none(row.get("metadata"))
        meta = meta if isinstance(meta, list) else [None] * len(images)
        meta += [None] * (len(images) - len(meta))
        blobs = list(blobs)
        for i in hit:
            original = _sha256(blobs[i])
            blobs[i] = blur_boxes(blobs[i], boxes[images[i]])
            entry = meta[i] if isinstance(meta[i], dict) else {}
            meta[i] = {**entry, "face_detections": boxes[images[i]], "original_sha256": original}
            blurred += 1
        row["image_bytes"], row["metadata"] = blobs, json.dumps(meta, ensure_ascii=False)
    return blurred


def _replace_columns(table: pa.Table, rows: list[dict], names: tuple[str, ...], chunk: int = 256) -> pa.Table:
    """``table`` with columns ``names`` rebuilt from ``rows``, in chunks (list<binary> past 2 GB stays valid)."""
    for name in names:
        typ = table.schema.field(name).type
        parts = [pa.array([r[name] for r in rows[k:k + chunk]], typ) for k in range(0, len(rows), chunk)]
        table = table.set_column(table.schema.get_field_index(name), name, pa.chunked_array(parts, typ))
    return table


def _doc_shard(shard: Shard, payload: dict, out: ShardOutput) -> dict:
    """One row-group shard of documents -> one interleaved tar and one interleaved Parquet file."""
    table = read_shard(shard, schema=INTERLEAVED)
    rows = table.to_pylist()
    keep, rej = [], []
    for i, row in enumerate(rows):
        reason = _doc_reason(row)
        (rej.append((row["doc_id"], reason)) if reason else keep.append(i))
    result: dict[str, Any] = {"rows_in": len(rows), "kept": len(keep), "rejected": dict(Counter(r for _, r in rej))}
    if payload.get("blur_faces") and keep:
        urls = [u for i in keep for u in (rows[i]["images"] or []) if u is not None]
        result["faces_blurred"] = _blur_document_faces(rows, keep, _face_boxes(payload.get("faces_table"), urls))
        if result["faces_blurred"]:
            table = _replace_columns(table, rows, ("image_bytes", "metadata"))
    if "interleaved" in payload["formats"] and keep:
        mask = np.zeros(len(rows), dtype=bool)
        mask[keep] = True  # filter, not take: keeps the row groups' chunks (list<binary> past 2 GB)
        result["parquet"] = out.write_table("interleaved", table.filter(pa.array(mask)))
    if "interleaved_wds" in payload["formats"] and keep:
        def write(fh):
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for i in keep:
                    key = f"{shard.offset + i:09d}"
                    doc, members = _doc_sample(key, rows[i])
                    _member(tar, f"{key}.json", json.dumps(doc, ensure_ascii=False).encode("utf-8"))
                    for name, blob in members:
                        _member(tar, name, blob)

        path = f"{payload['work']}/interleaved_wds/{shard.id}.tar"
        _write_atomic(path, write)
        result["tar"] = path
    if rej:
        out.write_table("rejects", rejects_table([d for d, _ in rej], "documents", STAGE, [r for _, r in rej]))
    return result


# --------------------------------------------------------------------------- the stage


def score_images_table(inputs: dict[str, str]) -> str | None:
    """The score stage's ``images`` table (face boxes per image URL) beside ``score/pairs``, if there."""
    path = inputs.get("scored_pairs")
    if not path:
        return None
    table = path.rstrip("/").rsplit("/", 1)[0] + "/images"
    return table if list_parquet_files(table) else None


def final_pairs_input(inputs: dict[str, str]) -> tuple[str, str]:
    """``(path, stage)`` of the final pairs: capfilt's when that stage finished, else score's.

    The registry lists both (``pairs`` = ``capfilt/pairs``, ``scored_pairs`` = ``score/pairs``).
    The runner checks every input of a stage that applies to the run, so capfilt's pairs are used
    whenever capfilt is part of the run; ``score/pairs`` is the fallback for a run where capfilt
    does not apply (or a caller passing only ``scored_pairs``).
    """
    for key in ("pairs", "scored_pairs"):
        path = inputs.get(key)
        if path and read_marker(path.rstrip("/").rsplit("/", 1)[0]) is not None and list_parquet_files(path):
            return path, path.rstrip("/").rsplit("/", 2)[-2]
    for key in ("pairs", "scored_pairs"):  # a hand-made directory without a marker (tests, ad-hoc runs)
        if inputs.get(key) and list_parquet_files(inputs[key]):
            return inputs[key], key
    raise InputError(f"release: no final pairs found (inputs {inputs}); run capfilt (or score) first")


def _run_complete(run: DaskRun, fn: Callable, shards: list[Shard], payloads: dict, phase: str) -> dict:
    """``run.map``, then once more for shards marked done whose files are gone.

    Publishing moves finished files out of the work folder; a run killed while publishing leaves
    done-markers of shards whose files already moved. Those shards are recomputed (their names are
    deterministic, so nothing is counted twice). No phase runs a model: no task asks for the
    stage's resources.
    """
    results = run.map(phase, fn, shards, payloads=payloads, uses_model=False)
    def files(summary: dict) -> list[str]:
        return [*summary.get("_files", []), *(summary[k] for k in ("tar", "hf", "parquet") if summary.get(k))]

    gone = [s for s in shards if any(not url_to_fs(f)[0].exists(url_to_fs(f)[1]) for f in files(results[s.id]))]
    if gone:
        log.info("release:%s: %d finished shard(s) lost their files (an interrupted publish): computing them again",
                 phase, len(gone))
        for s in gone:
            fs, p = url_to_fs(f"{run.work_dir}/{DONE_DIR}/{s.id}.json")
            fs.rm(p)
        results.update(run.map(phase, fn, gone, payloads=payloads, uses_model=False))
    return results


def hf_readme(features: list[dict], license_id: str, rows: int, shards: int, pretty_name: str, num_bytes: int) -> str:
    """The dataset card ``datasets`` reads: YAML front matter (licence, configs, features) + a body."""
    front = {
        "license": license_id,
        "pretty_name": pretty_name,
        "task_categories": ["image-to-text", "text-to-image"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
        "dataset_info": {"features": features, "splits": [{"name": "train", "num_bytes": num_bytes, "num_examples": rows}]},
    }
    body = (f"# {pretty_name}\n\nImage-text pairs curated from Common Crawl by vl-curation: {rows:,} rows in "
            f"{shards} Parquet shards, shuffled by a seeded hash of the pair key. The `image` column holds the "
            "picture's bytes (`datasets.Image`).\n\n```python\nimport datasets\n"
            "ds = datasets.load_dataset(\"path/to/release/hf\", split=\"train\")\n"
            "# publish: ds.push_to_hub(\"org/name\")  (or: huggingface-cli upload org/name path/to/release/hf "
            "--repo-type dataset)\n```\n\nSee DATASET_CARD.md in the run directory for the curation steps, "
            "thresholds, and licence and opt-out notes.\n")
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body


@dataclass(frozen=True)
class ReleasePlan:
    """What the release decides before its client opens: the formats, the final pairs (and the stage
    they come from), their input shards and output buckets, the document shards, the face boxes' table."""

    formats: tuple[str, ...]
    pairs_path: str
    pairs_from: str
    pair_shards: tuple[Shard, ...]
    n_buckets: int
    doc_shards: tuple[Shard, ...]
    faces_table: str | None


class ReleaseStage(DaskStage):
    """``curate release``: its phases on :class:`curation.dask_stage.DaskStage` (client, preflight, work
    dir and its clean-up, empty rejects are the base's): pairs into buckets, a tar and an HF shard
    per bucket, documents per shard; then the driver publishes the finished files under consecutive names.
    It loads no model: ``setup`` has nothing to load and no task asks for resources."""

    name = STAGE
    outputs = FORMATS
    config_sections = ("release", "safety.blur_faces")

    def plan(self, ctx: StageContext) -> ReleasePlan:
        rel: ReleaseConfig = ctx.config.release
        formats = tuple(f for f in FORMATS if f in rel.formats)
        pairs_path, pairs_from = final_pairs_input(ctx.inputs)
        docs_path = ctx.inputs.get("documents")
        pair_shards = plan_shards(pairs_path, rel.shard_rows, prefix="pairs-")
        total = sum(s.rows for s in pair_shards)
        n_buckets = max(1, math.ceil(total / rel.samples_per_shard))
        doc_shards = plan_shards(docs_path, rel.documents_per_shard, prefix="docs-") \
            if docs_path and {"interleaved", "interleaved_wds"} & set(formats) else []
        log.info("release: %d final pairs from %s/pairs in %d shards -> %d output shards; %d document shards",
                 total, pairs_from, len(pair_shards), n_buckets, len(doc_shards))
        # Faces: pairs carry their boxes; documents look theirs up in the score stage's image table.
        faces_table = score_images_table(ctx.inputs) if ctx.config.safety.blur_faces else None
        return ReleasePlan(formats, pairs_path, pairs_from, tuple(pair_shards), n_buckets, tuple(doc_shards),
                           faces_table)

    def work_key(self, ctx: StageContext, plan: ReleasePlan) -> dict[str, Any]:
        cfg = ctx.config
        return {"release": cfg.section("release"), "pairs": plan.pairs_path, "inputs": ctx.input_run_ids,
                "blur_faces": cfg.safety.blur_faces}

    def worker_spec(self, ctx: StageContext, plan: ReleasePlan, client: Any) -> None:
        return None  # the settings travel in each task's payload

    def setup(self, spec: None) -> None:
        return None

    def phases(self, run: DaskRun, plan: ReleasePlan) -> StageStats:
        ctx, cfg, work = run.ctx, run.ctx.config, run.work_dir
        rel: ReleaseConfig = cfg.release
        formats, pairs_from = plan.formats, plan.pairs_from
        common = {"seed": rel.seed, "buckets": plan.n_buckets, "formats": formats, "work": work,
                  "blur_faces": cfg.safety.blur_faces, "faces_table": plan.faces_table}

        def each(fn, shards, phase):
            return _run_complete(run, fn, list(shards), {s.id: common for s in shards}, phase)

        p1 = each(_bucket_pairs, plan.pair_shards, "pairs")
        # Every bucket is an output shard task (an empty one writes nothing); the driver keeps no
        # per-bucket state of the input shards.
        buckets = [Shard(f"{b:05d}", f"{work}/buckets/{b:05d}", (), 0, 0) for b in range(plan.n_buckets)]
        p2 = each(_pair_shard, buckets, "shards") if {"pairs_wds", "hf"} & set(formats) else {}
        p3 = each(_doc_shard, plan.doc_shards, "documents")
        stats = self._accounting(p1, p2, p3, buckets, pairs_from)
        stats.counters["faces_blurred"] = {
            "enabled": cfg.safety.blur_faces,
            "pairs": sum(s.get("faces_blurred", 0) for s in p1.values()),
            "document_images": sum(s.get("faces_blurred", 0) for s in p3.values()),
            "boxes_from": f"{pairs_from}/pairs face_detections; "
                          f"{plan.faces_table or 'no score/images table: documents not blurred'}",
        }
        self._publish(ctx, cfg, work, buckets, p2, list(plan.doc_shards), p3, formats, stats, pairs_from)
        return stats

    def _accounting(self, p1: dict, p2: dict, p3: dict, buckets: list[Shard], pairs_from: str) -> StageStats:
        rejected: Counter = Counter()
        for s in p1.values():
            rejected.update(s["rejected"])
        kept = sum(s["kept"] for s in p1.values())
        written = sum(s.get("samples", 0) for s in p2.values())
        if p2 and written != kept:
            raise StageError(f"release: {kept} pairs were bucketed but {written} written to shards")
        doc_rej: Counter = Counter()
        for s in p3.values():
            doc_rej.update(s["rejected"])
        docs_in = sum(s["rows_in"] for s in p3.values())
        docs_out = sum(s["kept"] for s in p3.values())
        return StageStats(
            stage=STAGE, rows_in=sum(s["rows_in"] for s in p1.values()), rows_out=kept, rejected=dict(rejected),
            tables={"documents": {"rows_in": docs_in, "rows_out": docs_out, "rejected": dict(doc_rej)}},
            counters={"pairs_from": f"{pairs_from}/pairs", "pair_shards": sum(1 for s in p2.values() if s.get("samples"))},
        )

    def _publish(self, ctx: StageContext, cfg: PipelineConfig, work: str, buckets: list[Shard], p2: dict,
                 doc_shards: list[Shard], p3: dict, formats: tuple[str, ...], stats: StageStats,
                 pairs_from: str) -> None:
        """Move finished shards from the work folder into ``release/`` under consecutive names."""
        fs, _ = url_to_fs(ctx.stage_dir)
        rel = cfg.release

        def mv(src: str, dst: str) -> None:  # a copy when the work folder is kept (its shards stay done)
            s, d = url_to_fs(src)[1], url_to_fs(dst)[1]
            fs.makedirs(d.rsplit("/", 1)[0], exist_ok=True)
            fs.copy(s, d) if rel.keep_work else fs.mv(s, d)

        def write_text(path: str, text: str) -> None:
            _write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))

        def publish_tars(fmt: str, tars: list[tuple[str, int]]) -> dict[str, int]:
            """Each (work tar, samples) as ``<fmt>/NNNNN.tar`` plus ``<fmt>/sizes.json``; the sizes."""
            sizes = {}
            for i, (src, samples) in enumerate(tars):
                name = f"{i:05d}.tar"
                mv(src, ctx.output_path(f"{fmt}/{name}"))
                sizes[name] = samples
            write_text(ctx.output_path(f"{fmt}/sizes.json"), json.dumps(sizes, indent=1))
            stats.outputs[fmt] = sum(sizes.values())
            return sizes

        filled = [b for b in buckets if p2.get(b.id, {}).get("samples")]
        n = len(filled)
        if "pairs_wds" in formats:
            sizes = publish_tars("pairs_wds", [(p2[b.id]["tar"], p2[b.id]["samples"]) for b in filled])
            info = {"output_shard_count": n, "total_samples": sum(sizes.values()), "samples_per_shard": rel.samples_per_shard,
                    "shuffle": f"blake2b(seed:key) order, seed {rel.seed}", "seed": rel.seed,
                    "source": f"{pairs_from}/pairs", "run_id": ctx.run_id, "shards": sizes}
            write_text(ctx.output_path("pairs_wds/_info.json"), json.dumps(info, indent=1))
        if "hf" in formats:
            schema = None
            for i, b in enumerate(filled):
                src = p2[b.id]["hf"]
                if schema is None:
                    with fs.open(url_to_fs(src)[1], "rb") as fh:
                        schema = pq.read_schema(fh)
                mv(src, ctx.output_path(f"hf/data/train-{i:05d}-of-{n:05d}.parquet"))
            cols = schema.names if schema is not None else ["key", "image", "caption"]
            features = _hf_features(cols, schema) if schema is not None else \
                [{"name": "key", "dtype": "string"}, {"name": "image", "dtype": "image"}, {"name": "caption", "dtype": "string"}]
            write_text(ctx.output_path("hf/README.md"),
                       hf_readme(features, rel.license, stats.rows_out, n, f"vl-curation {cfg.snapshot}",
                                 sum(fs.size(f) for f in fs.glob(url_to_fs(ctx.output_path("hf/data"))[1] + "/*.parquet"))))
            stats.outputs["hf"] = stats.rows_out
        docs_done = [s for s in doc_shards if p3.get(s.id, {}).get("kept")]
        if "interleaved" in formats:
            for i, s in enumerate(docs_done):
                mv(p3[s.id]["parquet"], ctx.output_path(f"interleaved/part-{i:05d}.parquet"))
            stats.outputs["interleaved"] = stats.tables["documents"]["rows_out"]
        if "interleaved_wds" in formats:
            publish_tars("interleaved_wds", [(p3[s.id]["tar"], p3[s.id]["kept"]) for s in docs_done])
        rejects = sorted(f for f in list_parquet_files(f"{work}/rejects"))
        for i, f in enumerate(rejects):  # none: the base writes the empty rejects (ctx.write_empty_outputs)
            mv(f, ctx.output_path(f"rejects/part-{i:05d}.parquet"))


def released_pairs(stage_dir: str) -> int:
    """Samples in the release's pair tars (``sizes.json``), for the card and the benches."""
    with fsspec.open(f"{stage_dir.rstrip('/')}/pairs_wds/sizes.json", "r") as fh:
        return int(sum(json.load(fh).values()))

