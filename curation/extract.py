"""One WARC response record -> one interleaved document (or a reason) plus pair candidates.

Pure Python with no Spark in it, so the Spark job, the benchmark and the tests
all run exactly this code. The order of checks is the order of cost: cheap
header checks first, decoding and parsing last.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from curation.config import ExtractConfig
from curation.html_extract import ExtractedImage, ExtractedPage, HtmlTooDeep, extract_page
from curation.layout import PARAGRAPH_SEP
from curation.warc_reader import ReadProblem, ResponseRecord
from filters.blocklists import BLOCKED_DOMAIN, page_blocklist
from filters.pii import PiiScrubber

log = logging.getLogger(__name__)

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/xml+xhtml"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_:.\-]+)""", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Alt texts that say nothing about the picture.
GENERIC_CAPTIONS = frozenset(
    """image img picture photo photograph pic icon logo untitled click here click here thumbnail
    placeholder banner null none undefined spacer graphic figure""".split()
) | {"click here", "image placeholder", "no image", "read more"}
_FILENAME_LIKE = re.compile(r"^[\w\-. ]+\.(jpe?g|png|gif|webp|bmp|svg|tiff?|avif)$", re.I)


@dataclass
class RecordResult:
    """What one record became: a document row with its pairs, or a rejection."""

    row_id: str
    document: dict[str, Any] | None = None
    pairs: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    detail: str | None = None
    counters: Counter = field(default_factory=Counter)


def doc_id_for(warc_filename: str, offset: int) -> str:
    """Stable id of the record a document came from: unique per (file, offset) within a run,
    also when the same record appears in two files (mirrors, re-crawls)."""
    return hashlib.sha1(f"{warc_filename}@{offset}".encode("utf-8", "surrogatepass")).hexdigest()[:20]


# Python codecs that are no web charset: bytes.decode with them raises plain UnicodeError
# (``undefined``; ``idna`` on a bad ``xn--`` label), takes quadratic time (``punycode``: minutes
# on a hostile megabyte) or turns backslashes into code points (the ``*unicode_escape`` ones).
# Bytes-to-bytes and text-to-text codecs (base64_codec, zlib_codec, rot13, ...) fail the
# ``_is_text_encoding`` test in :func:`_text_codec`.
_NOT_CHARSETS = frozenset({"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"})


def _text_codec(label: str | None) -> str | None:
    """The Python codec a declared charset label names, or None when it names no text charset.

    A page (or its server) may declare anything; a label Python does not know, or one naming a
    codec that is not a charset, is ignored like browsers ignore an unknown label.
    """
    if not label:
        return None
    try:
        info = codecs.lookup(label.strip().lower())
    except (LookupError, ValueError, TypeError):  # ValueError: embedded NUL in the label
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def decode_html(payload: bytes, http_charset: str | None) -> tuple[str | None, str | None, str]:
    """Decode with the declared charset, then the <meta> one, then a detected one.

    Returns ``(text, encoding, note)``; ``text`` is None when the bytes are not
    text in any plausible encoding (``note`` says why). Never raises: a label that names no
    text charset is skipped (:func:`_text_codec`) and any error of a codec is a failed candidate.
    """
    from resiliparse.parse.encoding import detect_encoding

    def candidates():
        # In order; the detector runs only when the declared charsets fail (it reads 64 KiB of bytes).
        if http_charset:
            yield http_charset
        m = _META_CHARSET.search(payload[:4096])
        if m:
            yield m.group(1).decode("ascii", "ignore").lower()
        try:
            yield detect_encoding(payload[:65536])
        except Exception:  # noqa: BLE001  detection is a hint; utf-8 follows anyway
            pass
        yield "utf-8"

    seen: set[str] = set()
    for enc in candidates():
        if not enc or enc in seen:
            continue
        seen.add(enc)
        codec = _text_codec(enc)
        if codec is None:
            continue
        try:
            text = payload.decode(enc)
        except Exception:  # noqa: BLE001  UnicodeError (incl. its Decode subclass) and whatever a codec raises
            continue
        # utf-7 decodes "+2D0-" to a lone surrogate, which no writer can encode; strict utf-8 never does (the
        # search over the whole page was 5% of the record path's time).
        if codec != "utf-8" and _SURROGATE.search(text):
            continue
        if _looks_binary(text):
            return None, enc, "binary_payload"
        return text, enc, "ok"
    text = payload.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    if bad > max(8, len(text) // 100):
        return None, None, "undecodable"
    if _looks_binary(text):
        return None, None, "binary_payload"
    return text, "utf-8", "lossy"


def _looks_binary(text: str) -> bool:
    sample = text[:8192]
    return len(_CONTROL.findall(sample)) > max(4, len(sample) // 100)


def usable_caption(text: str | None, min_chars: int) -> bool:
    if not text:
        return False
    t = text.strip()
    if len(t) < min_chars:
        return False
    low = t.lower()
    if low in GENERIC_CAPTIONS or _FILENAME_LIKE.match(t):
        return False
    return True


def _pick_caption(img: ExtractedImage, sources: list[str], min_chars: int) -> tuple[str | None, str | None]:
    for source in sources:
        text = {"alt": img.alt, "figcaption": img.figcaption, "title": img.title}.get(source)
        if usable_caption(text, min_chars):
            return text, source
    return None, None


class RecordProcessor:
    """Turns records into documents; holds the filters so a worker builds them once."""

    def __init__(self, extract_cfg: ExtractConfig, text_pipeline, snapshot: str, safety=None, takedown=None):
        self.cfg = extract_cfg
        self.text_pipeline = text_pipeline
        self.snapshot = snapshot
        self.banned = frozenset(w.lower() for w in extract_cfg.image_url_banned_words)
        # Release safety (docs/safety.md; ``safety``: curation.config.SafetyConfig, None = its defaults).
        self.blocked = page_blocklist(safety.blocked_domains_file) if safety and safety.blocked_domains_file else None
        self.pii = PiiScrubber.from_config(safety)
        self.takedown = takedown  # the run's takedown list (filters.blocklists.takedown_filter), reason ``takedown``

    def process(self, rec: ResponseRecord | ReadProblem) -> RecordResult:
        """``rec`` -> its :class:`RecordResult`; never raises.

        One record must not end the Spark task and take every other file of it along: an
        unexpected exception in any step is this record's ``record_error`` reject (logged, with
        the exception type in the detail), and its partial counters are dropped.
        """
        try:
            return self._process(rec)
        except Exception as exc:  # noqa: BLE001  see the docstring
            row_id = getattr(rec, "row_id", None) or "unknown@0"
            log.warning("record %s: %s: %s", row_id, type(exc).__name__, exc, exc_info=True)
            return RecordResult(row_id, reason="record_error", detail=f"{type(exc).__name__}: {exc}"[:500])

    def _process(self, rec: ResponseRecord | ReadProblem) -> RecordResult:
        if isinstance(rec, ReadProblem):
            return RecordResult(rec.row_id, reason=rec.reason, detail=rec.detail[:500])
        out = RecordResult(rec.row_id)
        if self.blocked is not None and self.blocked.match(rec.target_uri or ""):  # never parsed, never written
            out.reason, out.detail = BLOCKED_DOMAIN, (rec.target_uri or "")[:500]
            return out
        if self.takedown is not None and self.takedown.match(rec.target_uri or ""):
            out.reason, out.detail = self.takedown.reason, (rec.target_uri or "")[:500]
            return out
        if rec.truncated and rec.http_status is None:  # cut before its HTTP status line was complete
            out.reason, out.detail = "truncated_record", f"{len(rec.payload or b'')} of {rec.payload_length} bytes"
            return out
        if rec.http_status != 200:
            out.reason, out.detail = "http_status", str(rec.http_status)
            return out
        ctype = (rec.content_type or "").split(";")[0].strip()
        if ctype and ctype not in HTML_TYPES:
            out.reason, out.detail = "not_html", ctype
            return out
        if rec.payload is None:
            out.reason, out.detail = "payload_too_large", str(rec.payload_length)
            return out
        if rec.truncated:
            out.reason, out.detail = "truncated_record", f"{len(rec.payload)} of {rec.payload_length} bytes"
            return out
        if not rec.payload.strip():
            out.reason = "empty_payload"
            return out
        if not ctype and b"<html" not in rec.payload[:4096].lower():
            out.reason, out.detail = "not_html", "no content type and no <html>"
            return out
        html, encoding, note = decode_html(rec.payload, rec.charset)
        if html is None:
            out.reason, out.detail = note, encoding
            return out
        if note == "lossy":
            out.counters["decoded_lossy"] += 1
        try:
            page = extract_page(html, rec.target_uri, self.banned, self.cfg.max_dom_depth,
                                mode=self.cfg.mode, keep_boilerplate_images=self.cfg.keep_boilerplate_images)
        except HtmlTooDeep as exc:
            out.reason, out.detail = "html_too_deep", str(exc)
            return out
        except Exception as exc:  # parser bugs must not kill the job
            out.reason, out.detail = "html_parse_error", f"{type(exc).__name__}: {exc}"[:500]
            return out
        for why, n in page.dropped_images.items():
            out.counters[f"images_dropped_{why}"] += n
        return self._build(rec, page, encoding, out)

    def _build(self, rec: ResponseRecord, page: ExtractedPage, encoding: str | None, out: RecordResult) -> RecordResult:
        items: list[str | ExtractedImage] = []
        kept_paragraphs: list[str] = []
        # The word lists of the paragraph checks follow the page's language: fastText once, here.
        page_lang = self.text_pipeline.page_language([p for it in page.items if not isinstance(it, ExtractedImage) for p in it])
        for item in page.items:
            if isinstance(item, ExtractedImage):
                items.append(item)
                continue
            mask, removed = self.text_pipeline.filter_paragraphs(item, page_lang)
            for why, n in removed.items():
                out.counters[f"paragraphs_removed_{why}"] += n
            out.counters["paragraphs_in"] += len(item)
            kept = [p for p, keep in zip(item, mask) if keep]
            if not kept:
                continue
            kept_paragraphs.extend(kept)
            text = PARAGRAPH_SEP.join(kept)
            if items and isinstance(items[-1], str):
                items[-1] = items[-1] + PARAGRAPH_SEP + text
            else:
                items.append(text)
        out.counters["paragraphs_kept"] += len(kept_paragraphs)
        out.counters.update(self.text_pipeline.take_counters())  # paragraph checks skipped for want of a word list
        n_images = sum(isinstance(it, ExtractedImage) for it in items)
        if not items:
            out.reason = "no_content"
            return out
        reason, detail, lang, lang_score = self.text_pipeline.judge_document(kept_paragraphs, n_images)
        out.counters.update(self.text_pipeline.take_counters())  # document checks skipped likewise
        if reason:
            out.reason, out.detail = f"doc_{reason}", f"{detail + '; ' if detail else ''}lang={lang}:{lang_score:.2f}"
            return out

        doc_id = doc_id_for(rec.warc_filename, rec.offset)
        texts: list[str | None] = []
        images: list[str | None] = []
        metadata: list[dict[str, Any] | None] = []
        for pos, item in enumerate(items):
            if isinstance(item, str):
                texts.append(item)
                images.append(None)
                metadata.append(None)
                continue
            texts.append(None)
            images.append(item.url)
            metadata.append(
                {
                    "src": item.src,
                    "alt_text": item.alt,
                    "title": item.title,
                    "figcaption": item.figcaption,
                    "rendered_width": item.width,
                    "rendered_height": item.height,
                }
            )
            caption, source = _pick_caption(item, self.cfg.caption_sources, self.cfg.min_caption_chars)
            if caption is None:
                out.counters["images_without_caption"] += 1
                continue
            out.pairs.append(
                {
                    "key": f"{doc_id}-{pos:04d}",
                    "url": item.url,
                    "caption": caption,
                    "caption_source": source,
                    "page_url": rec.target_uri,
                    "doc_id": doc_id,
                }
            )
        general = {
            "url": rec.target_uri,
            "warc_filename": rec.warc_filename,
            "warc_record_offset": rec.offset,
            "warc_record_length": rec.length,
            "warc_date": rec.warc_date,
            "snapshot": self.snapshot,
            "title": page.title,
            "encoding": encoding,
        }
        if self.pii is not None:  # texts, alt/title/figcaption, captions, page title (filters/pii.py)
            texts = self.pii.scrub_document(texts, metadata, out.pairs, out.counters)
            general["title"] = self.pii.scrub(general["title"], out.counters)
        out.document = {
            "doc_id": doc_id,
            "url": rec.target_uri,
            "texts": texts,
            "images": images,
            "metadata": json.dumps(metadata, ensure_ascii=False),
            "general_metadata": json.dumps(general, ensure_ascii=False),
            "lang": lang,
            "lang_score": float(lang_score),
        }
        out.counters["images_kept"] += n_images
        return out
