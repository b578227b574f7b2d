"""Benchmark: main-content quality and speed against trafilatura, on trafilatura's own evaluation pages.

``../shared/realdata/html_eval/`` holds 945 real pages with trafilatura's annotations: ``with``
snippets a main-content extraction must contain and ``without`` snippets of furniture it must not.
Scoring is trafilatura's (``tests/comparison.py``, ``evaluate_result``): a ``with`` snippet found in
the output is a true positive, missing a false negative; a ``without`` snippet found is a false
positive, absent a true negative; counts are summed over pages, then precision, recall and F1. Both
the output and the snippets have their whitespace collapsed to single spaces, for every system alike
(our paragraphs are joined by newlines, trafilatura's lines too).

The pages are split once, by a hash of the URL (``split_of``), into ``dev`` (two thirds: the
extractor's thresholds were tuned on these only) and ``heldout`` (one third: never looked at while
tuning); every figure is reported per split.

Systems, all on the same pages in this run:
- ``main_content``: ``extract_page(mode="main_content")``, the extractor alone;
- ``main_content_record``: the whole record path (charset, extraction, paragraph and document
  filters, language ID) with the default config except ``languages: []`` (the pages are in many
  languages; a rejected document scores as an empty output);
- ``obelics``: ``extract_page(mode="obelics")``, the previous extractor;
- ``trafilatura``: ``trafilatura.extract`` with its defaults (text output).

Each system is also scored on the pages fastText calls English (``english_pages``): the default
config keeps English only, and only English has a flagged-word list (the stopword lists follow
each document's language: OBELICS's for English, jusText's for the others, ``filters/base.py``).

Speed is pages/s on one core (single process) over a fixed subset of each split (``--speed-pages``),
best of ``--rounds`` per page with the systems interleaved page by page (the machine is shared);
quality is over all pages. The per-filter table (``filter_table_dev``) says, for every paragraph
filter and document filter, how many ``with`` and ``without`` snippets it removes from the
main-content output of the dev pages, each filter alone: with OBELICS's thresholds
(``obelics_thresholds``, the filters' own defaults) and, for the document filters, with this
project's main-content defaults (``main_content_defaults``, ``curation/config.py``).

Usage: python bench/extract_quality.py [--realdata DIR] [--speed-pages N] [--rounds N]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_WS = re.compile(r"\s+")


def split_of(url: str) -> str:
    """``heldout`` for a third of the pages, ``dev`` for the rest: fixed by the URL's SHA-1, never by order."""
    return "heldout" if int(hashlib.sha1(url.encode("utf-8")).hexdigest()[:8], 16) % 3 == 0 else "dev"


def normalise(text: str) -> str:
    return _WS.sub(" ", text).strip()


def load_eval(realdata: Path):
    """(url, item, payload bytes, decoded html) for every annotated page whose file is present."""
    from curation.extract import decode_html

    base = realdata / "html_eval"
    data = json.loads((base / "evaldata.json").read_text(encoding="utf-8"))
    pages = []
    for url in sorted(data):
        item = data[url]
        path = base / "html" / f"{item['file']}.gz"
        if not path.exists():
            continue
        payload = gzip.decompress(path.read_bytes())
        html, _, _ = decode_html(payload, None)
        pages.append((url, item, payload, html or ""))
    return pages


def score_page(text: str | None, item: dict) -> tuple[int, int, int, int]:
    """(tp, fn, fp, tn) of one output, as trafilatura's evaluate_result counts them."""
    if not text:
        return 0, len(item["with"]), 0, len(item["without"])
    out = normalise(text)
    tp = sum(1 for s in item["with"] if normalise(s) in out)
    fp = sum(1 for s in item["without"] if normalise(s) in out)
    return tp, len(item["with"]) - tp, fp, len(item["without"]) - fp


def scores(counts: list[tuple[int, int, int, int]]) -> dict:
    tp, fn, fp, tn = (sum(c[i] for c in counts) for i in range(4))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"pages": len(counts), "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3)}


def page_text(page) -> str:
    """The text of an ExtractedPage as the documents carry it: paragraphs in order, one per line."""
    return "\n".join(p for it in page.items if isinstance(it, list) for p in it)


def record_of(url: str, payload: bytes, i: int):
    from curation.warc_reader import ResponseRecord

    return ResponseRecord(
        warc_filename="html_eval", offset=i, record_id=str(i), target_uri=url, warc_date="",
        http_status=200, content_type="text/html", charset=None, payload=payload, payload_length=len(payload),
    )


def record_text(result) -> str:
    if result.document is None:
        return ""
    return "\n".join(t for t in result.document["texts"] if t)


def build_systems(cfg_languages: list[str] | None = None):
    """name -> function(url, payload, html, i) -> (text, n_images); all built once, outside the timing."""
    import trafilatura

    from curation.config import PipelineConfig
    from curation.extract import RecordProcessor
    from curation.html_extract import HtmlTooDeep, extract_page
    from filters.text_pipeline import TextFilterPipeline

    cfg = PipelineConfig()
    cfg.document_filters.languages = [] if cfg_languages is None else cfg_languages
    banned = frozenset(cfg.extract.image_url_banned_words)
    proc = RecordProcessor(cfg.extract, TextFilterPipeline(cfg.paragraph_filters, cfg.document_filters), "bench")
    proc.text_pipeline.identify("warm up the language model")

    def ours(mode):
        def run(url, payload, html, i):
            try:
                page = extract_page(html, url, banned, cfg.extract.max_dom_depth, mode=mode)
            except HtmlTooDeep:  # the record path rejects these pages (html_too_deep): an empty output
                return "", 0
            return page_text(page), len(page.images)
        return run

    def record(url, payload, html, i):
        res = proc.process(record_of(url, payload, i))
        n_img = sum(1 for u in res.document["images"] if u) if res.document else 0
        return record_text(res), n_img

    def traf(url, payload, html, i):
        return trafilatura.extract(html, url=url) or "", None

    return {"main_content": ours("main_content"), "main_content_record": record,
            "obelics": ours("obelics"), "trafilatura": traf}, proc


def time_interleaved(systems, pages, rounds: int) -> dict[str, float]:
    """Seconds per system over ``pages``: every page runs through every system back to back, and each
    (page, system) keeps its best of ``rounds``, so a busy shared machine slows all systems alike."""
    best: dict[str, list[float]] = {name: [float("inf")] * len(pages) for name in systems}
    for _ in range(rounds):
        for i, (url, item, payload, html) in enumerate(pages):
            for name, fn in systems.items():
                start = time.perf_counter()
                fn(url, payload, html, i)
                best[name][i] = min(best[name][i], time.perf_counter() - start)
    return {name: sum(v) for name, v in best.items()}


def traf_images(pages, per_split: int) -> dict:
    """Images kept on the timed pages of each split: main-content mode vs
    ``trafilatura.extract(output_format="xml", include_images=True)`` (another full trafilatura pass
    over every page would double the bench's runtime)."""
    import html as htmllib

    import trafilatura

    from curation.html_extract import HtmlTooDeep, extract_page

    out = {}
    for split in ("dev", "heldout"):
        ours = theirs = 0
        for url, item, payload, html in [p for p in pages if split_of(p[0]) == split][:per_split]:
            try:
                ours += len(extract_page(html, url, mode="main_content").images)
            except HtmlTooDeep:
                pass
            xml = trafilatura.extract(html, url=url, output_format="xml", include_images=True) or ""
            theirs += len({htmllib.unescape(s) for s in re.findall(r'<graphic src="([^"]*)"', xml)})
        out[split] = {"pages": min(per_split, sum(split_of(p[0]) == split for p in pages)),
                      "main_content": ours, "trafilatura_include_images": theirs}
    return out


def filter_table(pages, text_pipeline, banned) -> list[dict]:
    """Per paragraph filter and document filter: ``with``/``without`` snippets (and characters) it removes.

    Paragraph filters are measured one at a time on the main-content paragraphs (a snippet is removed
    when it is found in the paragraphs before the filter and not after it); document filters by the
    snippets of the documents each one rejects when run alone on the paragraphs the configured
    paragraph filters keep. Every count is given for all pages and (``en_`` keys) for the pages fastText
    calls English. The word lists follow the language as in the record path: paragraphs are read in
    their page's language, documents in their own.
    """
    from curation.html_extract import HtmlTooDeep, extract_page
    from filters.base import TextView, run_filters

    para_filters = text_pipeline.paragraph_filters
    doc_filters = text_pipeline.document_filters
    rows = {f"paragraph:{f.name}": Counter() for f in para_filters}
    rows.update({f"document:{f.name}": Counter() for f in doc_filters})

    def add(row: Counter, key: str, n: int, english: bool) -> None:
        row[key] += n
        if english:
            row["en_" + key] += n

    n_pages = n_en = 0
    for url, item, payload, html in pages:
        try:
            page = extract_page(html, url, banned, mode="main_content")
        except HtmlTooDeep:
            continue
        paras = [p for it in page.items if isinstance(it, list) for p in it]
        n_images = len(page.images)
        full = normalise("\n".join(paras))
        lang = text_pipeline.identify(full)[0]
        english = lang == "en"
        n_pages += 1
        n_en += english
        views = [TextView.of(p, lang=lang) for p in paras]
        for f in para_filters:
            kept = [p for p, v in zip(paras, views) if run_filters((f,), v) is None]
            after = normalise("\n".join(kept))
            row = rows[f"paragraph:{f.name}"]
            add(row, "paragraphs_removed", len(paras) - len(kept), english)
            for key, snippets in (("with", item["with"]), ("without", item["without"])):
                for s in snippets:
                    s = normalise(s)
                    if s in full and s not in after:
                        add(row, f"{key}_removed", 1, english)
                        add(row, f"{key}_chars_removed", len(s), english)
        mask, _ = text_pipeline.filter_paragraphs(paras, lang)
        kept_text = "\n\n".join(p for p, k in zip(paras, mask) if k)
        view = TextView.of(kept_text, n_images=n_images, identify=text_pipeline.identify)
        found = normalise(kept_text)
        n_with = sum(1 for s in item["with"] if normalise(s) in found)
        n_without = sum(1 for s in item["without"] if normalise(s) in found)
        for f in doc_filters:
            if run_filters((f,), view) is not None:
                row = rows[f"document:{f.name}"]
                add(row, "documents_rejected", 1, english)
                add(row, "with_removed", n_with, english)
                add(row, "without_removed", n_without, english)
    return [{"filter": name, "pages": n_pages, "en_pages": n_en, **dict(c)} for name, c in rows.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realdata", default=os.environ.get("REALDATA_DIR", str(ROOT / ".." / "shared" / "realdata")))
    ap.add_argument("--speed-pages", type=int, default=100, help="pages per split timed for pages/s")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-filter-table", action="store_true")
    args = ap.parse_args()

    pages = load_eval(Path(args.realdata))
    systems, proc = build_systems()
    result: dict = {
        "benchmark": "extract_quality",
        "machine": f"{platform.machine()} {os.cpu_count()} cores (single process = per core)",
        "data": "html_eval (trafilatura tests/evaldata.json, 945 pages)",
        "scoring": "trafilatura evaluate_result: with-snippet found = TP, missing = FN; without-snippet found = FP",
        "published_on_this_set": {"trafilatura": {"precision": 0.906, "recall": 0.943, "f1": 0.924},
                                  "resiliparse_f1": 0.811},
        "splits": {},
    }
    for split in ("dev", "heldout"):
        sub = [p for p in pages if split_of(p[0]) == split]
        out: dict = {"pages": len(sub)}
        seconds = time_interleaved(systems, sub[: args.speed_pages], args.rounds)
        english = None
        for name, fn in systems.items():
            counts = []
            n_images = 0
            texts = []
            for i, (url, item, payload, html) in enumerate(sub):
                text, n_img = fn(url, payload, html, i)
                counts.append(score_page(text, item))
                texts.append(text)
                n_images += n_img or 0
            if english is None:  # the first system is main_content: fastText on its text
                english = [proc.text_pipeline.identify(normalise(t))[0] == "en" for t in texts]
            entry = scores(counts)
            entry["english_pages"] = scores([c for c, en in zip(counts, english) if en])
            entry["pages_per_s"] = round(min(len(sub), args.speed_pages) / seconds[name], 1)
            if name != "trafilatura":
                entry["images_kept"] = n_images
            out[name] = entry
        traf = out["trafilatura"]
        out["f1_vs_trafilatura"] = round(out["main_content"]["f1"] - traf["f1"], 3)
        out["speedup_extract_vs_trafilatura"] = round(seconds["trafilatura"] / seconds["main_content"], 2)
        out["speedup_record_vs_trafilatura"] = round(seconds["trafilatura"] / seconds["main_content_record"], 2)
        out["target_met"] = bool(out["f1_vs_trafilatura"] >= 0 and out["speedup_extract_vs_trafilatura"] >= 3
                                 and out["speedup_record_vs_trafilatura"] >= 3)
        result["splits"][split] = out
    result["images_on_speed_pages"] = traf_images(pages, args.speed_pages)
    if not args.no_filter_table:
        from curation.config import PipelineConfig
        from filters.config import DocumentFilterConfig, ParagraphFilterConfig
        from filters.text_pipeline import TextFilterPipeline

        dev = [p for p in pages if split_of(p[0]) == "dev"]
        # OBELICS's thresholds (the filters' own defaults) and this project's main-content defaults, each
        # filter alone, on the main-content output of the dev pages; every language kept.
        obelics = TextFilterPipeline(ParagraphFilterConfig(), DocumentFilterConfig(languages=[]), proc.text_pipeline.lid)
        cfg = PipelineConfig()
        cfg.document_filters.languages = []
        main = TextFilterPipeline(cfg.paragraph_filters, cfg.document_filters, proc.text_pipeline.lid)
        result["filter_table_dev"] = {
            "obelics_thresholds": filter_table(dev, obelics, proc.banned),
            "main_content_defaults": [r for r in filter_table(dev, main, proc.banned) if r["filter"].startswith("document:")],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
