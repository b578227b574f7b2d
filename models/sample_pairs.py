"""IMAGE_PAIRS tables straight from the sample mini-crawl's ground truth.

The trainer, CapFilt and their tests need image-text pairs of the sample without running the
crawl, extract and image stages: the sample generator already lists every ``<img>`` occurrence
with its alt text and what kind of alt text it planted (``correct``, ``wrong``, ``boilerplate``,
``empty``, ``none``), and every content image with its true caption. Extra columns
``alt_kind`` and ``true_caption`` carry that ground truth (readers of IMAGE_PAIRS ignore them).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from curation.schemas import IMAGE_PAIRS

GROUND_TRUTH_FIELDS = [pa.field("alt_kind", pa.string()), pa.field("true_caption", pa.string())]
SAMPLE_PAIRS = pa.schema(list(IMAGE_PAIRS) + GROUND_TRUTH_FIELDS)


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _image_files(sample_dir: Path) -> dict[str, dict]:
    return {r["url"]: r for r in _jsonl(sample_dir / "ground_truth" / "images.jsonl")}


def web_pairs(sample_dir: str | Path, with_empty: bool = False) -> pa.Table:
    """One row per content ``<img>`` with an alt text (the web pairs a crawl would find), planted
    noise included; ``with_empty`` also keeps empty/missing alt texts (as empty captions)."""
    root = Path(sample_dir)
    files = _image_files(root)
    cache: dict[str, bytes] = {}
    rows = []
    for o in _jsonl(root / "ground_truth" / "alt_texts.jsonl"):
        if o["role"] != "content" or o["image_url"] not in files:
            continue
        alt = o.get("alt") or ""
        if not alt.strip() and not with_empty:
            continue
        f = files[o["image_url"]]
        if f["file"] not in cache:
            cache[f["file"]] = (root / f["file"]).read_bytes()
        blob = cache[f["file"]]
        doc = hashlib.sha1(o["page_url"].encode()).hexdigest()[:16]
        rows.append({
            "key": f"{doc}-{o['position']}", "url": o["image_url"], "caption": alt, "caption_source": "alt",
            "page_url": o["page_url"], "doc_id": doc, "image": blob, "width": f["width"], "height": f["height"],
            "sha256": hashlib.sha256(blob).hexdigest(), "alt_kind": o["alt_kind"], "true_caption": o["true_caption"],
        })
    return pa.Table.from_pylist(rows, schema=SAMPLE_PAIRS)


def true_pairs(sample_dir: str | Path) -> pa.Table:
    """One row per content image with its true caption (``caption_source = "ground_truth"``)."""
    root = Path(sample_dir)
    rows = []
    for f in _image_files(root).values():
        if f["role"] != "content":
            continue
        blob = (root / f["file"]).read_bytes()
        digest = hashlib.sha256(blob).hexdigest()
        rows.append({
            "key": f"gt-{Path(f['file']).stem}", "url": f["url"], "caption": f["caption"],
            "caption_source": "ground_truth", "page_url": None, "doc_id": None, "image": blob,
            "width": f["width"], "height": f["height"], "sha256": digest, "alt_kind": None,
            "true_caption": f["caption"],
        })
    return pa.Table.from_pylist(rows, schema=SAMPLE_PAIRS)


def clean_pairs(sample_dir: str | Path) -> pa.Table:
    """The sample's clean human-style split (COCO format, 5 captions per image) as IMAGE_PAIRS."""
    from models.coco import read_coco_captions

    root = Path(sample_dir)
    return read_coco_captions(root / "clean" / "captions.json", root / "clean" / "images")
