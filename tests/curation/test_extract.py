"""Record -> document: every response becomes a document or a counted reason."""
from __future__ import annotations

import json
from collections import Counter

from curation.config import PipelineConfig
from curation.extract import RecordProcessor, decode_html, usable_caption
from curation.html_extract import ExtractedImage, extract_page
from curation.warc_reader import ResponseRecord, iter_warc
from filters.text_pipeline import TextFilterPipeline
from tests.support.realdata import realdata_path

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


def _every_codec_name() -> list[str]:
    """Every codec name Python knows: the alias table's keys and values and the encodings modules."""
    import encodings
    import encodings.aliases
    import pkgutil

    names = set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
    names |= {m.name for m in pkgutil.iter_modules(encodings.__path__) if not m.name.startswith("_")}
    names |= {"punycode", "undefined", "idna", "rot13", "base64_codec", "zlib_codec", "utf-16", "utf-32",
              "UTF-16LE", "utf_32_be", "x-no-such-charset", "utf-8\x00", ""}
    return sorted(names)


def test_every_codec_name_in_header_or_meta_decodes_or_is_a_counted_rejection():
    """Issue 19.1: ``punycode``, ``undefined`` and ``idna`` raised plain UnicodeError and ended the job."""
    proc = _processor()
    names = _every_codec_name()
    assert len(names) > 300
    bodies = [
        f"{ENGLISH}<img src='/a.jpg' alt='a stone house by the river'>{MORE_ENGLISH}".encode(),
        b"<p>xn--a-\xff\xfe caf\xc3\xa9 \\N{bad} x-" + b"a" * 20_000 + b"</p>",  # bad xn-- label, punycode bait
        bytes(range(256)) * 4,
    ]
    outcomes = Counter()
    for name in names:
        for body in bodies:
            meta = f"<html><head><meta charset='{name}'></head><body>".encode("ascii", "replace")
            for payload, header in ((b"<html><body>" + body, name), (meta + body, None)):
                text, _, note = decode_html(payload, header)
                assert (text is None) == (note in ("undecodable", "binary_payload")), (name, note)
                res = proc.process(_record(payload, charset=header))
                assert (res.document is None) != (res.reason is None), (name, res.reason)
                assert res.reason != "record_error", (name, res.detail)
                outcomes[res.reason or "doc"] += 1
                if body is bodies[0] and name.lower() in ("punycode", "undefined", "idna", "base64_codec", "rot13"):
                    assert res.document is not None, (name, res.reason)  # a label naming no charset is ignored
    assert outcomes["doc"] >= len(names)  # the English page is kept under most labels (not utf-16/32 ones)
    assert set(outcomes) <= {"doc", "undecodable", "binary_payload", "no_content"} | {
        r for r in outcomes if r.startswith("doc_")}


def test_an_exception_in_any_record_step_is_that_records_reject(monkeypatch):
    import curation.extract as extract_mod

    def boom(*args, **kwargs):
        raise RuntimeError("parser exploded")

    html = f"<html><body>{ENGLISH}</body></html>".encode()
    monkeypatch.setattr(extract_mod, "decode_html", boom)
    res = _processor().process(_record(html, offset=7))
    assert res.document is None and res.reason == "record_error" and res.row_id == "test.warc.gz@7"
    assert "RuntimeError" in res.detail
    monkeypatch.undo()
    proc = _processor()
    monkeypatch.setattr(proc.text_pipeline, "filter_paragraphs", boom)
    assert proc.process(_record(html)).reason == "record_error"
