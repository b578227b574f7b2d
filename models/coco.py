"""COCO-format caption sets (``captions_*.json`` + an image directory) as IMAGE_PAIRS.

Clean human-annotated sets come in COCO's caption format: ``images`` (``id``, ``file_name``,
``width``, ``height``) and ``annotations`` (``image_id``, ``caption``), about five captions per
image. The trainer fine-tunes BLIP's captioner and filter on them and evaluates on held-out
ones, so they are turned into the pipeline's own pair schema: one row per caption, the image
bytes repeated per row (what IMAGE_PAIRS is), ``caption_source = "human"``.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.schemas import IMAGE_PAIRS


def _load(captions_json: str | Path) -> tuple[list[dict], dict[int, list[dict]]]:
    doc = json.loads(Path(captions_json).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise ValueError(f"{captions_json}: not a COCO captions file (needs 'images' and 'annotations')")
    anns: dict[int, list[dict]] = defaultdict(list)
    for a in doc["annotations"]:
        anns[a["image_id"]].append(a)
    images = sorted(doc["images"], key=lambda im: im["id"])
    return images, anns


def _rows(images: list[dict], anns: dict[int, list[dict]], image_dir: Path, source: str):
    for im in images:
        path = image_dir / im["file_name"]
        try:
            blob = path.read_bytes()
        except OSError:
            blob = None  # kept: the loader counts it (no_image_bytes) like any bad row
        digest = hashlib.sha256(blob).hexdigest() if blob else None
        for a in sorted(anns.get(im["id"], []), key=lambda a: a["id"]):
            yield {
                "key": f"coco-{im['id']}-{a['id']}",
                "url": im.get("coco_url") or str(path),
                "caption": a["caption"],
                "caption_source": source,
                "page_url": im.get("flickr_url"),
                "doc_id": f"coco-{im['id']}",
                "image": blob,
                "width": im.get("width"),
                "height": im.get("height"),
                "sha256": digest,
            }


def read_coco_captions(captions_json: str | Path, image_dir: str | Path | None = None,
                       source: str = "human", limit_images: int | None = None) -> pa.Table:
    """All captions of a COCO-format set as one IMAGE_PAIRS table (images read into memory).

    ``image_dir`` defaults to ``images/`` beside the json. For sets too big for memory use
    :func:`coco_to_parquet`.
    """
    captions_json = Path(captions_json)
    image_dir = Path(image_dir) if image_dir else captions_json.parent / "images"
    images, anns = _load(captions_json)
    if limit_images is not None:
        images = images[:limit_images]
    return pa.Table.from_pylist(list(_rows(images, anns, image_dir, source)), schema=IMAGE_PAIRS)


def coco_to_parquet(captions_json: str | Path, out_dir: str | Path, image_dir: str | Path | None = None,
                    rows_per_shard: int = 5000, row_group_rows: int = 1000, source: str = "human") -> list[str]:
    """Write a COCO-format set as IMAGE_PAIRS Parquet shards (each written to a temp name, then renamed)."""
    captions_json = Path(captions_json)
    image_dir = Path(image_dir) if image_dir else captions_json.parent / "images"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, anns = _load(captions_json)
    paths: list[str] = []
    batch: list[dict] = []

    def flush() -> None:
        path = out / f"part-{len(paths):05d}.parquet"
        tmp = out / f".{path.name}.tmp"
        pq.write_table(pa.Table.from_pylist(batch, schema=IMAGE_PAIRS), tmp, row_group_size=row_group_rows)
        os.replace(tmp, path)
        paths.append(str(path))
        batch.clear()

    for row in _rows(images, anns, image_dir, source):
        batch.append(row)
        if len(batch) >= rows_per_shard:
            flush()
    if batch:
        flush()
    return paths


def find_coco_captions(path: str | Path) -> Path | None:
    """The COCO captions json of a directory (``captions*.json``), or None when it holds none."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return p
    if p.is_dir():
        found = sorted(p.glob("captions*.json"))
        return found[0] if found else None
    return None
