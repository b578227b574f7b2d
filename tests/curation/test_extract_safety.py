"""Extract's safety steps: blocked pages never parsed (``blocked_domain``), personal data replaced and counted."""
from __future__ import annotations

import json

from curation.config import PipelineConfig
from curation.extract import RecordProcessor
from filters.text_pipeline import TextFilterPipeline
from tests.curation.test_extract import ENGLISH, MORE_ENGLISH, _record


def _processor(**overrides) -> RecordProcessor:
    cfg = PipelineConfig.load(overrides=overrides)
    return RecordProcessor(cfg.extract, TextFilterPipeline(cfg.paragraph_filters, cfg.document_filters), "test", cfg.safety)


PAGE = (f"<html><head><title>Call 212-555-0199</title></head><body>{ENGLISH}"
        "<p>Questions about the village walks can be sent to the tourist office at walks@village-office.example.org "
        "or by phone on +44 20 7946 0958, and the booking server lives at 93.184.216.34 for now.</p>"
        f"<img src='/a.jpg' alt='stone house, photo by anna.berg@photos.example.com'>{MORE_ENGLISH}</body></html>").encode()


def test_pii_replaced_in_texts_captions_metadata_and_counted():
    res = _processor().process(_record(PAGE))
    assert res.reason is None, res.detail
    blob = json.dumps([res.document, res.pairs])
    for secret in ("walks@village", "anna.berg", "7946 0958", "93.184.216.34", "212-555-0199"):
        assert secret not in blob, secret
    assert res.counters["pii_email"] == 3  # text, alt text in metadata, caption
    assert res.counters["pii_phone"] == 2 and res.counters["pii_ip"] == 1  # text phone + title phone
    assert res.pairs and "@example." in res.pairs[0]["caption"]


def test_pii_off_keeps_the_text():
    res = _processor(**{"safety.pii_emails": False, "safety.pii_phones": False, "safety.pii_ips": False}).process(_record(PAGE))
    assert "walks@village-office.example.org" in json.dumps(res.document) and not any(k.startswith("pii_") for k in res.counters)


def test_blocked_domain_page_is_a_reason_and_never_parsed(tmp_path, monkeypatch):
    f = tmp_path / "blocked.txt"
    f.write_text("blocked.example\n")
    proc = _processor(**{"safety.blocked_domains_file": str(f)})
    import curation.extract as ex

    monkeypatch.setattr(ex, "extract_page", lambda *a, **k: (_ for _ in ()).throw(AssertionError("parsed")))
    res = proc.process(_record(PAGE, uri="https://www.blocked.example/page"))
    assert res.reason == "blocked_domain" and res.document is None and not res.pairs
    monkeypatch.undo()
    assert proc.process(_record(PAGE, uri="https://allowed.example/page")).reason is None
