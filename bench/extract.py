"""Benchmark: this extractor against trafilatura on the same real pages, in the same run.

Prints JSON: pages/s on one core (single process) for
- ``extract_page`` in main-content mode (the default: the article's blocks, see
  ``curation/main_content.py``) and in OBELICS mode (every text node of the simplified DOM), the
  like-for-like comparison with ``trafilatura.extract(output_format="xml", include_images=True)``;
- the full per-record path (decode + extract + text filters + fastText LID) with the default config;
and the number of images each keeps on the same pages. Target: >= 3x trafilatura's
pages/s with at least as many images kept.

Usage: python bench/extract.py [--realdata DIR] [--rounds N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_pages(realdata: Path):
    from curation.extract import decode_html
    from curation.warc_reader import ResponseRecord, iter_warc

    pages = []
    for path in sorted((realdata / "warc").glob("*.warc.gz")):
        for rec in iter_warc(str(path)):
            if isinstance(rec, ResponseRecord) and rec.http_status == 200 and (rec.content_type or "").startswith("text/html") and rec.payload:
                html, _, _ = decode_html(rec.payload, rec.charset)
                if html:
                    pages.append((rec, html))
    return pages


def timed(fn, items, rounds):
    best = float("inf")
    out = None
    for _ in range(rounds):
        start = time.perf_counter()
        out = [fn(x) for x in items]
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realdata", default=os.environ.get("REALDATA_DIR", str(ROOT / ".." / "shared" / "realdata")))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import trafilatura

    from curation.config import PipelineConfig
    from curation.extract import RecordProcessor
    from curation.html_extract import extract_page
    from filters.text_pipeline import TextFilterPipeline

    cfg = PipelineConfig()
    banned = frozenset(cfg.extract.image_url_banned_words)
    pages = load_pages(Path(args.realdata))
    proc = RecordProcessor(cfg.extract, TextFilterPipeline(cfg.paragraph_filters, cfg.document_filters), "bench")
    proc.text_pipeline.identify("warm up the language model")

    ours_s, ours = timed(lambda p: extract_page(p[1], p[0].target_uri, banned, mode="main_content"), pages, args.rounds)
    obelics_s, obelics = timed(lambda p: extract_page(p[1], p[0].target_uri, banned, mode="obelics"), pages, args.rounds)
    full_s, _ = timed(lambda p: proc.process(p[0]), pages, args.rounds)
    traf_s, traf = timed(
        lambda p: trafilatura.extract(p[1], url=p[0].target_uri, output_format="xml", include_images=True) or "",
        pages, args.rounds,
    )
    ours_images = sum(len(pg.images) for pg in ours)
    traf_images = sum(x.count("<graphic") for x in traf)
    n = len(pages)
    result = {
        "benchmark": "extract",
        "machine": f"{platform.machine()} {os.cpu_count()} cores (single process = per core)",
        "pages": n,
        "rounds": args.rounds,
        "ours_extract_page_pages_per_s": round(n / ours_s, 1),
        "ours_extract_page_obelics_mode_pages_per_s": round(n / obelics_s, 1),
        "ours_full_record_pages_per_s": round(n / full_s, 1),
        "trafilatura_xml_images_pages_per_s": round(n / traf_s, 1),
        "speedup_extract_vs_trafilatura": round(traf_s / ours_s, 2),
        "speedup_full_record_vs_trafilatura": round(traf_s / full_s, 2),
        "images_kept_ours": ours_images,
        "images_kept_ours_obelics_mode": sum(len(pg.images) for pg in obelics),
        "images_kept_trafilatura": traf_images,
        "target": ">= 3x trafilatura pages/s with >= as many images (main-content mode)",
        "target_met": traf_s / ours_s >= 3 and ours_images >= traf_images,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
