"""What the images stage decided on a run, as plain sorted data: the before/after check of the Spark rewrite.

The sample serves its images on a free port, so URLs are written relative to the sample's image base
URL. The port is in the sample's WARC records, so their compressed offsets, and with them the
document ids (``doc_id_for(file, offset)``) and pair keys, change with it: documents are named by
their page URL instead (unique after dedup; the images stage's input ``<run>/dedup/documents``). Bytes, a document's texts and its metadata are summarised by a sha256 prefix (the rows must carry
the same bytes and texts, not only the same URLs).
``tests/support/data/images_sample_before.json`` holds this snapshot of the 80-page sample run
(the ``sample_run`` fixture of tests/pipelines/test_images.py) taken with the single-process stage
(commit 62bd2a3, the images stage alone on that run's dedup output), before the stage moved to Spark.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

BEFORE = Path(__file__).parent / "data" / "images_sample_before.json"


def _rel(value, base: str):
    if isinstance(value, str):
        return value.replace(base, "<base>/")
    if isinstance(value, list):
        return [_rel(v, base) for v in value]
    return value


def _digest(blob: bytes | None) -> str | None:
    return None if blob is None else hashlib.sha256(blob).hexdigest()[:16]


def _doc_names(root: Path):
    """doc id -> its page URL, and a function naming a document id or a pair key (``<doc id>-NNNN``) by it."""
    names = {}
    if (root / "dedup" / "documents").exists():
        t = pq.read_table(root / "dedup" / "documents", columns=["doc_id", "url"])
        names = dict(zip(t.column("doc_id").to_pylist(), t.column("url").to_pylist()))

    def name(key):
        if key in names:
            return names[key]
        head, sep, tail = (key or "").rpartition("-")
        return f"{names[head]}{sep}{tail}" if head in names else key

    return name


def images_snapshot(run_root: str | Path) -> dict:
    """Kept images, rejects, pairs and documents of ``<run_root>/images``, sorted, URLs made port-free."""
    root = Path(run_root)
    manifest = root / "_sample" / "manifest.json"
    base = json.loads(manifest.read_text())["image_base_url"] if manifest.exists() else "\0"
    out = root / "images"
    kept = pq.read_table(out / "images").to_pylist()
    rejects = pq.read_table(out / "rejects").to_pylist()
    pairs = pq.read_table(out / "pairs").to_pylist()
    docs = pq.read_table(out / "documents").to_pylist()
    name = _doc_names(root)
    return {
        "images": sorted([_rel(r["url"], base), r["sha256"], r["width"], r["height"], r["format"], r["phash"],
                          _digest(r["image"])] for r in kept),
        "rejects": sorted([r["table"], _rel(r["row_id"] if r["table"] == "images" else name(r["row_id"]), base),
                           r["reason"], _rel(r["detail"], base),
                           _rel(r["duplicate_of"], base)] for r in rejects),
        "pairs": sorted([name(r["key"]), _rel(r["url"], base), r["caption"], r["sha256"], _digest(r["image"])]
                        for r in pairs),
        "documents": sorted([name(d["doc_id"]), _rel(d["images"], base), _digest(json.dumps(d["texts"]).encode()),
                             _digest((_rel(d["metadata"], base) or "").encode()),
                             [_digest(b) for b in (d["image_bytes"] or [])]] for d in docs),
    }


if __name__ == "__main__":  # python -m tests.support.images_snapshot <run root> <out.json>
    Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
    Path(sys.argv[2]).write_text(json.dumps(images_snapshot(sys.argv[1]), indent=0, ensure_ascii=False) + "\n")
