"""filters/pii.py: e-mails, phone numbers and public IP addresses replaced by placeholders, counted per kind."""
from __future__ import annotations

from collections import Counter

from filters.pii import EMAIL_PLACEHOLDERS, IPV4_PLACEHOLDERS, IPV6_PLACEHOLDERS, PHONE_PLACEHOLDERS, PiiScrubber


def scrub(text: str, **kinds) -> tuple[str, Counter]:
    c: Counter = Counter()
    return PiiScrubber(**kinds).scrub(text, c), c


def test_emails_replaced_like_datatrove_and_deterministic():
    text = "Write to jane.doe+news@mail.example.co.uk or J_Smith@uni-bonn.de today."
    out, c = scrub(text)
    assert "jane.doe" not in out and "J_Smith" not in out and c == {"pii_email": 2}
    assert all(p in EMAIL_PLACEHOLDERS for p in out.replace(".", " ").split() if "@" in p) or "@example." in out
    assert scrub(text)[0] == out  # the same placeholder for the same address on any worker, any order
    assert scrub("an @handle, a@b, user@localhost, x@y.z")[1] == Counter()  # not addresses


def test_public_ips_only_ipv4_and_ipv6():
    out, c = scrub("server 8.8.8.8 and 2606:4700:4700::1111 answer; router 192.168.1.1, lo 127.0.0.1, ::1")
    assert "8.8.8.8" not in out and "2606:4700" not in out and c == {"pii_ip": 2}
    assert any(p in out for p in IPV4_PLACEHOLDERS) and any(p in out for p in IPV6_PLACEHOLDERS)
    assert "192.168.1.1" in out and "127.0.0.1" in out and "::1" in out
    for text in ("version 1.2.3.4.5", "999.1.1.1", "at 10:30:00", "ratio 3:2:1", "price 1.234.567"):
        assert scrub(text) == (text, Counter()), text


def test_phone_numbers_and_what_is_left_alone():
    for phone in ("+44 20 7946 0958", "+1-212-555-0199", "(212) 555-0199", "212-555-0199", "212.555.0199",
                  "+49 (0)30 1234 5678"):
        out, c = scrub(f"Call {phone} now")
        assert phone not in out and c == {"pii_phone": 1}, (phone, out)
        assert any(p in out for p in PHONE_PLACEHOLDERS)
    for text in ("In 1999 we sold 12,000 units for $1,299.99", "ISBN 978-3-16-148410-0", "2024-01-15",
                 "order #123456789", "pages 123-456"):
        assert scrub(text) == (text, Counter()), text


def test_kinds_switch_off_and_document_parts():
    out, c = scrub("mail a@example.net, call +1 212 555 0199, ip 8.8.4.4", emails=False, phones=False)
    assert "a@example.net" in out and "+1 212 555 0199" in out and c == {"pii_ip": 1}
    assert PiiScrubber.from_config(type("S", (), {"pii_emails": False, "pii_phones": False, "pii_ips": False})()) is None
    c = Counter()
    meta = [None, {"alt_text": "photo by bob@example.com", "title": None, "figcaption": "call 212-555-0199"}]
    pairs = [{"caption": "photo by bob@example.com"}]
    texts = PiiScrubber().scrub_document(["contact bob@example.com", None], meta, pairs, c)
    assert "bob@" not in texts[0] and texts[1] is None and "bob@" not in meta[1]["alt_text"]
    assert "212-555" not in meta[1]["figcaption"] and "bob@" not in pairs[0]["caption"]
    assert c == {"pii_email": 3, "pii_phone": 1}
