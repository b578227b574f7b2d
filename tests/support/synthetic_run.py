"""A small synthetic run directory in the pipeline's schemas, for report and card tests.

It holds every stage the pipeline has or is growing (extract, dedup, images, score,
capfilt), each with Parquet outputs in the schemas of ``curation/schemas.py``, a
``rejects/`` table, a ``stats.json`` that conserves rows and a completion marker; plus
a partial stage (no marker) whose files must be ignored. Captions carry planted HTML
that must never be interpreted.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.schemas import (
    BOOTSTRAPPED_PAIRS, DOCUMENTS, IMAGE_PAIRS, IMAGES, INTERLEAVED, PAIRS, REJECTS, SCORED_PAIRS,
)

SCRIPT_CAPTION = ("<script>document.title='PWNED';document.documentElement.setAttribute('data-pwned','1');"
                  "document.body.innerHTML='<h1 id=pwned>PWNED</h1>'</script>a red square")
IMG_CAPTION = '<img src=x onerror="document.title=\'PWNED2\'">"quoted" & <b>bold</b>'
# Pure colours the screenshot test looks for: red images are the best CLIP scores.
RED, BLUE = (230, 20, 20), (20, 40, 220)


def png_bytes(color, size=(320, 240), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def _write(path: Path, rows: list[dict], schema: pa.Schema, parts: int = 1) -> None:
    path.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    n = max(1, -(-len(rows) // parts))
    for i in range(parts):
        pq.write_table(table.slice(i * n, n), path / f"part-{i:05d}.parquet")


def _finish(stage_dir: Path, stats: dict, minute: int) -> None:
    stats.setdefault("outputs", {})
    stats.setdefault("counters", {})
    stats.setdefault("tables", {})
    stats.setdefault("seconds", 1.5)
    assert stats["rows_in"] == stats["rows_out"] + sum(stats["rejected"].values())
    for t in stats["tables"].values():
        assert t["rows_in"] == t["rows_out"] + sum(t["rejected"].values())
    (stage_dir / "stats.json").write_text(json.dumps(stats))
    (stage_dir / "_STAGE_COMPLETE").write_text(json.dumps({
        "stage": stats["stage"], "run_id": f"{stats['stage']}-test", "fingerprint": "x",
        "finished_at": f"2026-01-01T00:{minute:02d}:00+00:00",
        "inputs": {"warcs": "/data/a.warc.gz,/data/b.warc.gz"} if stats["stage"] == "extract" else {},
        "rows_out": stats["rows_out"],
    }))


def _rejects(stage: str, rows: list[tuple]) -> list[dict]:
    return [dict(row_id=r[0], table=r[1], stage=stage, reason=r[2], detail=r[3] if len(r) > 3 else None,
                 duplicate_of=r[4] if len(r) > 4 else None) for r in rows]


def _doc(i: int, n_images: int, words: int, lang: str = "en") -> dict:
    texts = [" ".join(["word"] * words)] + [None] * n_images
    images = [None] + [f"http://img.test/{i}-{k}.jpg" for k in range(n_images)]
    meta = [None] + [{"src": u} for u in images[1:]]
    return dict(doc_id=f"d{i}", url=f"http://site.test/{i}", texts=texts, images=images, metadata=json.dumps(meta),
                general_metadata=json.dumps({"url": f"http://site.test/{i}", "snapshot": "CC-MAIN-2026-01"}),
                lang=lang, lang_score=0.9)


def make_run(root: Path) -> dict:
    """Write the run; returns what the tests compare against."""
    rng = np.random.default_rng(0)
    # ---------------------------------------------------------------- extract: 12 records
    docs = [_doc(i, n_images=(i % 4) + 1, words=20 * (i + 1), lang="en" if i % 5 else "fr") for i in range(10)]
    pairs = [dict(key=f"d{i}-{k}", url=f"http://img.test/{i}-{k}.jpg", caption=f"caption {i} {k} words here",
                  caption_source="alt" if k % 2 == 0 else "figcaption", page_url=f"http://site.test/{i}", doc_id=f"d{i}")
             for i in range(10) for k in range((i % 4) + 1)]
    d = root / "extract"
    _write(d / "documents", docs, DOCUMENTS)
    _write(d / "pairs", pairs, PAIRS)
    _write(d / "rejects", _rejects("extract", [("a.warc.gz@1", "records", "http_status", "404"),
                                               ("a.warc.gz@2", "records", "not_html")]), REJECTS)
    _finish(d, {"stage": "extract", "rows_in": 12, "rows_out": 10, "rejected": {"http_status": 1, "not_html": 1},
                "outputs": {"documents": 10, "pairs": len(pairs)}}, 1)

    # ---------------------------------------------------------------- dedup: d1,d2 dup of d0; d4 dup of d3
    dup = {"d1": "d0", "d2": "d0", "d4": "d3"}
    ddocs = [x for x in docs if x["doc_id"] not in dup]
    dpairs = [p for p in pairs if p["doc_id"] not in dup]
    d = root / "dedup"
    _write(d / "documents", ddocs, DOCUMENTS, parts=2)
    _write(d / "pairs", dpairs, PAIRS)
    rej = [(k, "documents", "near_duplicate" if k != "d4" else "url_duplicate", None, v) for k, v in dup.items()]
    rej += [(p["key"], "pairs", "doc_removed") for p in pairs if p["doc_id"] in dup]
    _write(d / "rejects", _rejects("dedup", rej), REJECTS)
    n_pair_rej = len(pairs) - len(dpairs)
    _finish(d, {"stage": "dedup", "rows_in": 10, "rows_out": 7, "rejected": {"near_duplicate": 2, "url_duplicate": 1},
                "outputs": {"documents": 7, "pairs": len(dpairs)},
                "tables": {"pairs": {"rows_in": len(pairs), "rows_out": len(dpairs),
                                     "rejected": {"doc_removed": n_pair_rej}}}}, 2)

    # ---------------------------------------------------------------- images: the last pair fails to fetch
    fetched = dpairs[:-1]
    sizes = {p["key"]: (200 + 40 * (j % 5), 150 + 30 * (j % 3)) for j, p in enumerate(fetched)}
    img_rows, ipairs = [], []
    for j, p in enumerate(fetched):
        color = RED if j < 4 else BLUE
        data = png_bytes(color, sizes[p["key"]])
        w, h = sizes[p["key"]]
        img_rows.append(dict(url=p["url"], image=data, width=w, height=h, sha256=f"{j:064x}", format="png", phash="0" * 16))
        ipairs.append({**p, "image": data, "width": w, "height": h, "sha256": f"{j:064x}"})
    inter = []
    fetched_urls = {r["url"] for r in img_rows}
    for x in ddocs:
        pos = [i for i, u in enumerate(x["images"]) if u is None or u in fetched_urls]
        meta = json.loads(x["metadata"])
        inter.append({**x, "texts": [x["texts"][i] for i in pos], "images": [x["images"][i] for i in pos],
                      "metadata": json.dumps([meta[i] for i in pos]),
                      "image_bytes": [None if x["images"][i] is None else png_bytes(RED, (8, 8)) for i in pos]})
    d = root / "images"
    _write(d / "images", img_rows, IMAGES)
    _write(d / "pairs", ipairs, IMAGE_PAIRS)
    _write(d / "documents", inter, INTERLEAVED)
    _write(d / "rejects", _rejects("images", [(dpairs[-1]["key"], "pairs", "fetch_failed", "HTTP 404")]), REJECTS)
    (d / "webdataset").mkdir()
    for shard in range(2):
        with tarfile.open(d / "webdataset" / f"{shard:05d}.tar", "w") as tf:
            for p in ipairs[shard::2]:
                for ext, payload in (("jpg", png_bytes(RED, (16, 16), "JPEG")), ("txt", p["caption"].encode()),
                                     ("json", json.dumps({"key": p["key"]}).encode())):
                    info = tarfile.TarInfo(f"{p['key']}.{ext}")
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
    # As curation/wds_writer.py: samples per shard beside the tars.
    (d / "webdataset" / "sizes.json").write_text(json.dumps({f"{s:05d}.tar": len(ipairs[s::2]) for s in range(2)}))
    _finish(d, {"stage": "images", "rows_in": len(dpairs), "rows_out": len(ipairs), "rejected": {"fetch_failed": 1},
                "outputs": {"pairs": len(ipairs), "images": len(img_rows), "documents": len(inter)}}, 3)

    # ---------------------------------------------------------------- score: CLIP scores, planted captions
    scores = np.round(np.linspace(0.40, 0.10, len(ipairs)), 4).astype(float)
    spairs = []
    for j, p in enumerate(ipairs):
        row = {**p, "clip_score": float(scores[j]), "embedding_row": j}
        if j == 0:
            row["caption"] = SCRIPT_CAPTION  # the best score: shown in the "best" band
        if j == len(ipairs) - 1:
            row["image"] = b"not an image at all"  # the worst: shown as undecodable
        spairs.append(row)
    rejected_low = spairs[-2]  # below the threshold: rejected, not in the output
    spairs_out = [r for r in spairs if r is not rejected_low]
    d = root / "score"
    _write(d / "pairs", spairs_out, SCORED_PAIRS)
    _write(d / "rejects", _rejects("score", [(rejected_low["key"], "pairs", "clip_score_below_threshold", "0.1")]), REJECTS)
    _finish(d, {"stage": "score", "rows_in": len(spairs), "rows_out": len(spairs_out),
                "rejected": {"clip_score_below_threshold": 1}, "outputs": {"pairs": len(spairs_out)}}, 4)

    # ---------------------------------------------------------------- capfilt: web + synthetic captions with ITM
    bpairs, cap_rej = [], []
    for j, p in enumerate(spairs_out):
        itm_web = float(rng.uniform(0.2, 1.0))
        web = {**p, "image_key": p["key"], "itm_score": itm_web, "caption_source": "web", "caption_model": "web"}
        if j == 1:
            web["caption"] = IMG_CAPTION
            web["itm_score"] = 0.99
        syn = {**p, "key": f"{p['key']}-syn0", "image_key": p["key"], "caption": f"a picture of a shape {j}",
               "itm_score": float(rng.uniform(0.5, 1.0)), "caption_source": "synthetic", "caption_model": "vlc-tiny-blip"}
        if web["itm_score"] >= 0.5:
            bpairs.append(web)
        else:
            cap_rej.append((p["key"], "pairs", "itm_below_threshold"))
        bpairs.append(syn)
    d = root / "capfilt"
    _write(d / "pairs", bpairs, BOOTSTRAPPED_PAIRS)
    _write(d / "rejects", _rejects("capfilt", cap_rej), REJECTS)
    kept_images = len(spairs_out)
    _finish(d, {"stage": "capfilt", "rows_in": len(spairs_out), "rows_out": kept_images, "rejected": {},
                "outputs": {"pairs": len(bpairs)},
                "tables": {"captions": {"rows_in": len(spairs_out) * 2, "rows_out": len(bpairs),
                                        "rejected": {"itm_below_threshold": len(cap_rej)}}}}, 5)

    # ---------------------------------------------------------------- a partial stage: must be ignored
    d = root / "train"
    _write(d / "pairs", spairs_out[:2], SCORED_PAIRS)
    (d / "stats.json").write_text(json.dumps({"stage": "train", "rows_in": 999, "rows_out": 999, "rejected": {}}))

    return {
        "docs": docs, "dedup_docs": ddocs, "pairs": pairs, "image_pairs": ipairs, "scored": spairs_out,
        "bootstrapped": bpairs, "images": img_rows, "interleaved": inter,
        "dup_clusters": {"d0": 3, "d3": 2},
    }
