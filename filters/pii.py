"""Personal data in text: e-mail addresses, phone numbers and IP addresses replaced by placeholders.

Modelled on datatrove's ``PIIFormatter`` (``datatrove/pipeline/formatters/pii.py``): regular
expressions, a validator per match (IP addresses are replaced only when public:
``ipaddress``'s ``is_global``, so ``127.0.0.1`` or ``192.168.1.1`` in a how-to stay), and
well-formed placeholders instead of tags, so the text still reads like text
(``email@example.com`` / ``firstname.lastname@example.org`` as datatrove). Differences, and why:

- the placeholder is picked by a hash of the match, not round-robin: datatrove's counter
  depends on the order records reach a worker, this pipeline's outputs must not;
- IP placeholders are the documentation ranges (RFC 5737 ``192.0.2.0/24``..., RFC 3849
  ``2001:db8::/32``), never real hosts; IPv6 is covered too;
- phone numbers (datatrove has none): international ``+CC ...`` numbers and North-American
  ``(555) 555-0100`` / ``555-555-0100`` / ``555.555.0100`` shapes only, 7-15 digits with the
  separators phone numbers are written with. Plain digit runs (years, prices, ids) are left:
  a false positive destroys text, a rare miss leaves a number that identifies nobody alone.

Counts per kind go to the caller's counter (``pii_email``, ``pii_phone``, ``pii_ip``).
"""
from __future__ import annotations

import ipaddress
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

EMAIL_PLACEHOLDERS = ("email@example.com", "firstname.lastname@example.org")
IPV4_PLACEHOLDERS = ("192.0.2.1", "198.51.100.23", "203.0.113.42")
IPV6_PLACEHOLDERS = ("2001:db8::1", "2001:db8::42")
PHONE_PLACEHOLDERS = ("+1 555 0100", "+1 555 0123")  # 555-01xx: reserved for fiction in North America

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\b"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d]|\.\d)")
# Candidate IPv6 strings (validated by ipaddress): hex groups with at least two colons.
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|:){2,7}(?:[0-9A-Fa-f]{1,4}|:)(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]\d{2,4}){1,4}"  # +44 20 7946 0958, +1-212-555-0199
    r"|\(\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}"  # (212) 555-0199
    r"|\d{3}[.\-]\d{3}[.\-]\d{4}"  # 212-555-0199, 212.555.0199
    r")(?![\w])"
)


def _pick(match: str, options: tuple[str, ...]) -> str:
    return options[zlib.crc32(match.encode("utf-8", "surrogatepass")) % len(options)]


def _public_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_global
    except ValueError:
        return False


@dataclass(frozen=True)
class PiiScrubber:
    """Replaces the kinds switched on; ``scrub`` returns the text and adds counts to ``counts``."""

    emails: bool = True
    phones: bool = True
    ips: bool = True

    @classmethod
    def from_config(cls, safety: Any | None) -> "PiiScrubber | None":
        """From ``safety.pii_*`` (curation.config.SafetyConfig); None when every kind is off."""
        if safety is None:
            return cls()
        s = cls(safety.pii_emails, safety.pii_phones, safety.pii_ips)
        return s if (s.emails or s.phones or s.ips) else None

    def scrub(self, text: str | None, counts: Counter) -> str | None:
        if not text:
            return text
        if self.emails and "@" in text:
            text, n = _EMAIL.subn(lambda m: _pick(m.group(0), EMAIL_PLACEHOLDERS), text)
            if n:
                counts["pii_email"] += n
        if self.ips and "." in text:
            text = _sub_valid(_IPV4, text, _public_ip, IPV4_PLACEHOLDERS, counts, "pii_ip")
        if self.ips and ("::" in text or text.count(":") >= 7):
            text = _sub_valid(_IPV6, text, _public_ip, IPV6_PLACEHOLDERS, counts, "pii_ip")
        if self.phones:
            text = _sub_valid(_PHONE, text, _phone_digits_ok, PHONE_PLACEHOLDERS, counts, "pii_phone")
        return text

    def scrub_document(self, texts: list[str | None], metadata: list[dict | None], pairs: list[dict],
                       counts: Counter) -> list[str | None]:
        """A document's texts, its images' alt/title/figcaption (in place) and its pairs' captions (in place)."""
        out = [self.scrub(t, counts) for t in texts]
        for m in metadata:
            if m:
                for key in ("alt_text", "title", "figcaption"):
                    if m.get(key):
                        m[key] = self.scrub(m[key], counts)
        for p in pairs:
            p["caption"] = self.scrub(p["caption"], counts)
        return out


def _phone_digits_ok(text: str) -> bool:
    return 7 <= sum(c.isdigit() for c in text) <= 15


def _sub_valid(regex: re.Pattern, text: str, valid, options: tuple[str, ...], counts: Counter, key: str) -> str:
    n = 0

    def repl(m: re.Match) -> str:
        nonlocal n
        s = m.group(0)
        if not valid(s):
            return s
        n += 1
        return _pick(s, options)

    text = regex.sub(repl, text)
    if n:
        counts[key] += n
    return text

