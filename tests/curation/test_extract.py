"""Record -> document: every response becomes a document or a counted reason."""
from __future__ import annotations

import json
from collections import Counter

from curation.config import PipelineConfig
from curation.extract import RecordProcessor, decode_html, usable_caption
from curation.html_extract import ExtractedImage, extract_page
from curation.warc_reader import ResponseRecord, iter_warc
from filters.text_pipeline import TextFilterPipeline
from tests.conftest import realdata_path

ENGLISH = (
    "<p>The small village sits at the edge of a quiet river, and in the summer the children of the "
    "town walk down to the water to watch the boats go by in the late afternoon light.</p>"
    "<p>Most of the houses were built of local stone more than two hundred years ago, and many of "
    "them have been restored by families who have lived there for several generations.</p>"
)
MORE_ENGLISH = (
    "<p>A narrow road climbs from the old bridge to the church, where a market is held every Saturday "
    "morning and farmers from the nearby hills sell bread, cheese and fresh vegetables.</p>"
)


def _processor(**overrides) -> RecordProcessor:
    cfg = PipelineConfig.load(overrides=overrides)
    return RecordProcessor(cfg.extract, TextFilterPipeline(cfg.paragraph_filters, cfg.document_filters), "test")


def _record(payload: bytes, ctype="text/html", charset=None, status=200, uri="https://example.org/p.html", **kw):
    return ResponseRecord(
        warc_filename="test.warc.gz", offset=kw.pop("offset", 0), record_id="<urn:uuid:1>", target_uri=uri,
        warc_date="2024-01-01T00:00:00Z", http_status=status, content_type=ctype, charset=charset,
        payload=payload, payload_length=len(payload), **kw,
    )


def test_english_page_becomes_document_with_pairs():
    html = (f"<html><body>{ENGLISH}<img src='/a.jpg' alt='a stone house by the river'>"
            f"<img src='/b.jpg' alt='IMG_2041.jpg'>{MORE_ENGLISH}</body></html>").encode()
    res = _processor().process(_record(html))
    assert res.reason is None, res.detail
    doc = res.document
    assert len(doc["texts"]) == len(doc["images"]) == len(json.loads(doc["metadata"]))
    assert all((t is None) != (i is None) for t, i in zip(doc["texts"], doc["images"]))
    assert doc["images"][1] == "https://example.org/a.jpg"
    assert doc["lang"] == "en" and doc["lang_score"] > 0.8
    gm = json.loads(doc["general_metadata"])
    assert gm["warc_filename"] == "test.warc.gz" and gm["snapshot"] == "test"
    assert [p["caption"] for p in res.pairs] == ["a stone house by the river"]  # filename alt is not a caption
    assert res.pairs[0]["key"] == f"{doc['doc_id']}-0001"


def test_bad_records_are_rejected_with_reasons():
    proc = _processor()
    big = b"<html><body>" + b"<p>word </p>" * 2_000_000 + b"</body></html>"  # ~20 MB
    cases = {
        "http_status": _record(b"not found", status=404),
        "not_html": _record(b"\x89PNG\r\n\x1a\n", ctype="image/png"),
        "payload_too_large": ResponseRecord("t", 0, "id", "https://e/x", "", 200, "text/html", None, None, len(big)),
        "truncated_record": _record(b"<html><body><p>cut", truncated=True),
        "empty_payload": _record(b"   "),
        "binary_payload": _record(bytes(range(256)) * 50, ctype="text/html", charset="latin-1"),
        "html_too_deep": _record(b"<div>" * 100_000 + b"</div>" * 100_000),
        "no_content": _record(b"<html><body><script>x</script></body></html>"),
    }
    for reason, rec in cases.items():
        res = proc.process(rec)
        assert res.document is None and res.reason == reason, (reason, res.reason, res.detail)


def test_charsets_declared_in_meta_or_header_decode_correctly():
    text = "Café naïve “quotes”"
    html = f"<html><head><meta charset='windows-1252'></head><body><p>{text}</p></body></html>".encode("cp1252")
    decoded, enc, note = decode_html(html, None)
    assert text in decoded and note == "ok"
    decoded, enc, note = decode_html(text.encode("cp1252"), "windows-1252")
    assert decoded == text
    # Undecodable garbage as "utf-8" falls back to detection instead of failing.
    decoded, enc, note = decode_html(b"<p>caf\xe9 ol\xe9</p>", "utf-8")
    assert decoded is not None and "caf" in decoded


def test_usable_caption_rules():
    assert usable_caption("a red bicycle leaning on a wall", 5)
    for bad in (None, "", "img", "photo", "IMG_2041.jpg", "logo", "abc"):
        assert not usable_caption(bad, 5)


def test_every_real_html_response_is_a_document_or_a_reason():
    proc = _processor()
    outcomes = Counter()
    for path in sorted(realdata_path("warc").glob("*.warc.gz")):
        for rec in iter_warc(str(path)):
            res = proc.process(rec)
            assert (res.document is None) != (res.reason is None)
            outcomes["doc" if res.document else res.reason] += 1
    assert sum(outcomes.values()) == 109  # every response record of the four files
    assert outcomes["doc"] >= 5
    assert outcomes["not_html"] >= 60  # the Wikipedia capture's images, css and js


def test_language_agrees_with_common_crawl_cld2_where_confident():
    """fastText on our extracted text vs CC's own CLD2 label (metadata records of CC-MAIN-2020-34)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    path = realdata_path("warc", "resiliparse_CC-MAIN-2020-34_warcfile.warc.gz")
    cld2 = {}
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh, record_types=WarcRecordType.metadata):
            body = rec.reader.read().decode("utf-8", "replace")
            for line in body.splitlines():
                if line.startswith("languages-cld2:"):
                    info = json.loads(line.split(":", 1)[1])
                    langs = info.get("languages") or []
                    if info.get("reliable") and langs and langs[0]["text-covered"] >= 0.9:
                        cld2[rec.headers.get("WARC-Target-URI")] = langs[0]["code"]
    cfg = PipelineConfig()
    pipeline = TextFilterPipeline(cfg.paragraph_filters, cfg.document_filters)
    agree = total = 0
    for rec in iter_warc(str(path)):
        if rec.target_uri not in cld2:
            continue
        html, _, _ = decode_html(rec.payload, rec.charset)
        page = extract_page(html, rec.target_uri)
        text = "\n\n".join(p for it in page.items if not isinstance(it, ExtractedImage) for p in it)
        lang, score = pipeline.identify(text)
        total += 1
        agree += lang == cld2[rec.target_uri].split("-")[0]
    assert total >= 10
    assert agree / total >= 0.9, f"{agree}/{total} agree with CLD2"
