"""Hostile WARC files, built byte by byte, each with the row every record must become.

Shared by tests/hostile/test_hostile_warc.py (per-file function and one Spark run) and
tests/curation/test_warc_reader.py. A case is a list of *parts* (one WARC record, or raw
bytes such as junk or a corrupt member) that :func:`build` joins into a file, returning
``{offset: expected}`` for every row the file must give: ``None`` for a kept document, a set
of acceptable reject reasons otherwise (:func:`matches`). An offset is where the part starts in the file, so
the expected row ids are ``<file>@<offset>``.
"""
from __future__ import annotations

import gzip
import random
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

CRLF = b"\r\n"

GOOD_PAGE = (
    "<html><head><title>River village</title></head><body>"
    "<p>The small village sits at the edge of a quiet river, and in the summer the children of the "
    "town walk down to the water to watch the boats go by in the late afternoon light.</p>"
    "<p>Most of the houses were built of local stone more than two hundred years ago, and many of "
    "them have been restored by families who have lived there for several generations.</p>"
    "<img src='/a.jpg' alt='boats on the quiet river'>"
    "<p>A narrow road climbs from the old bridge to the church, where a market is held every Saturday "
    "morning and farmers from the nearby hills sell bread, cheese and fresh vegetables.</p>"
    "</body></html>"
)
KEPT = None
READ_ERROR = frozenset({"warc_read_error"})
DOC_ANY = "doc_*"  # in an expected set: any document filter's reason (doc_too_few_images, ...)


def good_page(n: int = 0, charset: str = "utf-8") -> bytes:
    """A page the default filters keep; ``n`` makes its text (and its dedup hashes) distinct."""
    return GOOD_PAGE.replace("River village", f"River village {n}").replace(
        "quiet river,", f"quiet river number {n},").encode(charset)


def http_response(body: bytes, ctype: str | None = "text/html", status: bytes = b"200 OK",
                  extra: list[bytes] = ()) -> bytes:
    lines = [b"HTTP/1.1 " + status]
    if ctype is not None:
        lines.append(b"Content-Type: " + ctype.encode("latin-1"))
    lines += list(extra)
    return CRLF.join(lines) + CRLF + CRLF + body


def warc_record(uri: bytes | str, block: bytes, rtype: str = "response", length_delta: int = 0,
                n: int = 0, extra: list[bytes] = ()) -> bytes:
    """One WARC/1.1 record; ``length_delta`` makes its Content-Length lie (+: longer than the block)."""
    if isinstance(uri, str):
        uri = uri.encode("utf-8")
    head = [
        b"WARC/1.1",
        b"WARC-Type: " + rtype.encode(),
        b"WARC-Record-ID: <urn:uuid:00000000-0000-4000-8000-%012d>" % n,
        b"WARC-Date: 2024-01-01T00:00:00Z",
        b"WARC-Target-URI: " + uri,
        b"Content-Type: application/http; msgtype=" + (b"request" if rtype == "request" else b"response"),
        *extra,
        b"Content-Length: %d" % (len(block) + length_delta),
    ]
    return CRLF.join(head) + CRLF + CRLF + block + CRLF + CRLF


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def gz_zeros_after(data: bytes, zeros: int) -> bytes:
    """One gzip member: ``data`` then ``zeros`` NUL bytes (a bomb: megabytes on disk, far more inflated)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(data)]
    block = b"\0" * (1 << 22)
    left = zeros
    while left > 0:
        out.append(comp.compress(block[: min(left, len(block))]))
        left -= len(block)
    out.append(comp.flush())
    return b"".join(out)


@dataclass
class Part:
    """Bytes of the file and the rows they must give, keyed by offset *within* the part."""

    data: bytes
    rows: dict[int, frozenset | None] = field(default_factory=dict)


def rec(expect, uri: str | bytes = "https://example.org/", body: bytes | None = None, *, gzipped: bool = True,
        ctype: str | None = "text/html", n: int = 0, **kw) -> Part:
    """A response record part: ``expect`` is None (kept) or a reason or a set of reasons."""
    block = http_response(good_page(n) if body is None else body, ctype)
    raw = warc_record(uri, block, n=n, **kw)
    return Part(gz(raw) if gzipped else raw, {0: _reasons(expect)})


def other(rtype: str = "request", gzipped: bool = True, n: int = 0, **kw) -> Part:
    """A non-response record: counted by type, no row."""
    raw = warc_record(f"https://example.org/{n}", b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n", rtype=rtype, n=n, **kw)
    return Part(gz(raw) if gzipped else raw)


def raw(data: bytes, expect=None) -> Part:
    """Bytes that are no record (junk, a corrupt member); ``expect`` the reasons of its row at its start."""
    return Part(data, {} if expect is None else {0: _reasons(expect)})


def _reasons(expect) -> frozenset | None:
    if expect is None:
        return None
    return frozenset({expect}) if isinstance(expect, str) else frozenset(expect)


def build(parts: list[Part]) -> tuple[bytes, dict[int, frozenset | None]]:
    data = bytearray()
    rows: dict[int, frozenset | None] = {}
    for part in parts:
        for off, want in part.rows.items():
            rows[len(data) + off] = want
        data += part.data
    return bytes(data), rows


def corrupt_member(n: int) -> bytes:
    """A member whose header decompresses but whose deflate data is zeroed in the middle."""
    member = bytearray(gz(warc_record(f"https://example.org/corrupt{n}", http_response(good_page(n) * 20), n=n)))
    mid = len(member) // 2
    member[mid: mid + 64] = b"\0" * 64
    return bytes(member)


def embedded_warc() -> bytes:
    """A small .warc.gz of incompressible records (seeded), to be the payload of an outer record."""
    rng = random.Random(19)
    return b"".join(gz(warc_record(f"https://inner.example/{i}", http_response(rng.randbytes(100_000)), n=100 + i))
                    for i in range(3))


def hostile_cases() -> dict[str, list[Part]]:
    """File name -> parts. Every file mixes good records with the bad ones: the good ones must be kept."""
    big_line = b"<html><body><p>" + b"w" * 50_000_000 + b"</p></body></html>"  # a 50 MB line
    deep = b"<html><body>" + b"<div>" * 200_000 + b"deep" + b"</div>" * 200_000 + b"</body></html>"
    swallowed = warc_record("https://example.org/swallowed", http_response(good_page(31)), n=31)
    return {
        "lie-longer.warc.gz": [
            rec(KEPT, n=1),
            # Content-Length runs 300 bytes into the next member: the liar is cut, its neighbour read on its own.
            rec("truncated_record", "https://example.org/liar", n=2, length_delta=300),
            rec(KEPT, n=3),
            # ... and this one swallows the next two records whole.
            rec("truncated_record", "https://example.org/liar2", n=4, length_delta=len(gz(swallowed)) * 2 + 500),
            rec(KEPT, "https://example.org/swallowed", n=31),
            other("request", n=32),
            rec(KEPT, n=5),
        ],
        # The probe's case: the lie is exactly the next record's size, so FastWARC lands on the record
        # after it without any error and the swallowed one had no row at all.
        "lie-exact.warc.gz": [
            rec(KEPT, n=1),
            rec("truncated_record", "https://example.org/liar", n=2, length_delta=len(swallowed)),
            Part(gz(swallowed), {0: None}),
            rec(KEPT, n=3),
        ],
        "lie-exact.warc": [
            rec(KEPT, n=1, gzipped=False),
            rec("truncated_record", "https://example.org/liar", n=2, length_delta=len(swallowed), gzipped=False),
            Part(swallowed, {0: None}),
            rec(KEPT, n=3, gzipped=False),
        ],
        # A crawled .warc.gz as a payload: deflate keeps it in stored blocks, so its members' magic
        # shows in the outer file; they are payload, not records swallowed by a lie.
        "embedded-warc.warc.gz": [
            rec(KEPT, n=1),
            rec("not_html", "https://example.org/crawl.warc.gz", embedded_warc(), ctype="application/warc", n=2),
            rec(KEPT, n=3),
        ],
        # Content-Length values that are no length: the record's extent is unknown (truncated_record);
        # the rest of its member is a problem row of its own, just after it.
        "bad-content-length.warc.gz": [
            rec(KEPT, n=1),
            *[Part(gz(re.sub(rb"Content-Length: \d+", b"Content-Length: " + value,
                             warc_record("https://example.org/bad-length", http_response(good_page(10 + i)), n=10 + i))),
                   {0: frozenset({"truncated_record"} | ({"http_status", "empty_payload"} if value.strip().isdigit() else set())),
                    1: READ_ERROR})
              for i, value in enumerate([b"-5", b"abc", b"99999999999999999999", b"", b"0x10", b" 12 "])],
            rec(KEPT, n=2),
        ],
        "lie-past-eof.warc.gz": [
            rec(KEPT, n=1),
            rec({"truncated_record", "payload_too_large"}, "https://example.org/liar", n=2, length_delta=10_000_000),
            rec(KEPT, n=3),
            rec(KEPT, n=4),
        ],
        "lie-request.warc.gz": [
            other("request", n=1, length_delta=400),  # a lying request record swallows a response
            rec(KEPT, n=2),
            rec(KEPT, n=3),
        ],
        "lie-shorter.warc.gz": [
            rec(KEPT, n=1),
            # Content-Length 200 bytes short: the page is cut, the member's rest is no record.
            # (the page is cut but may still be kept; the member's rest is a problem row just after it)
            Part(rec(None, "https://example.org/short", n=2, length_delta=-200).data,
                 {0: frozenset({None, "no_content", DOC_ANY}), 1: READ_ERROR}),
            rec(KEPT, n=3),
        ],
        "lie-longer.warc": [
            rec(KEPT, n=1, gzipped=False),
            rec("truncated_record", "https://example.org/liar", n=2, gzipped=False, length_delta=5000),
            rec(KEPT, n=3, gzipped=False),
            rec(KEPT, n=4, gzipped=False),
        ],
        "corrupt-member.warc.gz": [
            rec(KEPT, n=1),
            raw(corrupt_member(2), READ_ERROR),
            rec(KEPT, n=3),
            raw(corrupt_member(4), READ_ERROR),
            raw(corrupt_member(5), READ_ERROR),
            rec(KEPT, n=6),
        ],
        "junk-between.warc.gz": [
            rec(KEPT, n=1),
            raw(b"\x00junk that is no gzip member" * 10, READ_ERROR),
            rec(KEPT, n=2),
            raw(b"\x1f\x8b\x08" + b"\xff" * 40, READ_ERROR),  # a gzip magic with no member behind it
            rec(KEPT, n=3),
        ],
        "truncated-file.warc.gz": [
            rec(KEPT, n=1),
            rec(KEPT, n=2),
            raw(gz(warc_record("https://example.org/cut", http_response(good_page(3)), n=3))[:150],
                {"truncated_record", "warc_read_error"}),
        ],
        "bombs.warc.gz": [
            rec(KEPT, n=1),
            # An honest 200 MB page of NULs, 200 kB on disk: not read.
            Part(gz_zeros_after(warc_record("https://example.org/bomb", http_response(b""), n=2,
                                            length_delta=200_000_000)[:-4], 200_000_000) + gz(CRLF * 2),
                 {0: frozenset({"payload_too_large"})}),
            rec(KEPT, n=3),
            # A small record followed, inside its own member, by 100 MB of NULs.
            Part(gz_zeros_after(warc_record("https://example.org/bomb2", http_response(good_page(4)), n=4),
                                100_000_000), {0: None, 1: READ_ERROR}),
            rec(KEPT, n=5),
        ],
        "junk-http-headers.warc.gz": [
            rec(KEPT, n=1),
            Part(gz(warc_record("https://example.org/h1", b"HTTP/1.1 200 OK\r\nno colon here\r\n\x00\xff\xfe: \x80\r\n"
                                b"Content-Type: text/html; charset=\xff\xfe\r\n\r\n" + good_page(2), n=2)),
                 {0: frozenset({None, "not_html"})}),
            Part(gz(warc_record("https://example.org/h2", b"GARBAGE STATUS LINE\r\n\r\n" + good_page(3), n=3)),
                 {0: frozenset({"http_status", "not_html", None})}),
            Part(gz(warc_record("https://example.org/h3", b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 1_000_000
                                + b"\r\nContent-Type: text/html\r\n\r\n" + good_page(4), n=4)),
                 {0: READ_ERROR}),  # FastWARC refuses a 1 MB header line
            Part(gz(warc_record("https://example.org/h4", b"", n=5)), {0: frozenset({"http_status"})}),
            Part(gz(warc_record("https://example.org/h5", b"HTTP/1.1 999999999999 Huh\r\n\r\n" + good_page(6),
                                n=6)), {0: frozenset({"http_status", None})}),
            rec(KEPT, n=7),
        ],
        "long-lines.warc.gz": [
            rec(KEPT, n=1),
            rec("payload_too_large", "https://example.org/line", big_line, n=2),
            Part(gz(warc_record("https://example.org/" + "u" * 5_000_000, http_response(good_page(3)), n=3)),
                 {0: READ_ERROR}),  # FastWARC refuses a 5 MB header line
            rec("html_too_deep", "https://example.org/deep", deep, n=4),
            rec(KEPT, n=5),
        ],
        "charsets.warc.gz": [
            rec(KEPT, n=1),
            *[rec({None, "undecodable", "binary_payload"}, body=good_page(10 + i), n=10 + i,
                  ctype=f"text/html; charset={cs}")
              for i, cs in enumerate(["punycode", "undefined", "idna", "rot13", "base64_codec", "zlib_codec",
                                      "x-bogus", "utf-7", "unicode_escape", "utf-32", "hex", "mbcs", "\\xff"])],
            rec({None, "undecodable", "binary_payload", "no_content", DOC_ANY}, body=b"<html><head><meta charset='punycode'></head>"
                b"<body><p>xn--a-\xff x-" + b"a" * 200_000 + b"</p></body></html>", n=30),
            rec({"undecodable", "binary_payload", "no_content"}, body=b"<html><body><p>+2D0- +2D0-</p></body></html>",
                n=31, ctype="text/html; charset=utf-7"),
            rec(KEPT, body=b"\xff\xfe" + good_page(32, "utf-16-le"), n=32, ctype="text/html; charset=utf-16"),
            rec(KEPT, n=2),
        ],
        "target-uris.warc.gz": [
            rec(KEPT, n=1),
            *[Part(gz(warc_record(uri, http_response(good_page(10 + i)), n=10 + i)),
                   {0: frozenset({None, "html_parse_error", DOC_ANY})})
              for i, uri in enumerate([b"", b"<>", b"not a url", b"http://[::1", b"javascript:alert(1)",
                                       b"http://" + b"a" * 10_000, b"http://ex ample.org/\x01\x7f",
                                       "https://bücher.example/ü".encode(), b"\xff\xfe\xfd", b"http://:99999/",
                                       b"http://example.org:abc/"])],
            rec(KEPT, n=2),
        ],
        "empty.warc.gz": [raw(b"", None)],  # its row is the file's own: see EMPTY
        "garbage.warc.gz": [raw(b"\x1f\x8b\x08 definitely not gzip", READ_ERROR)],
    }


def matches(reason: str | None, expected: frozenset | None) -> bool:
    """Whether a row's reason (None: kept) is one the expectation allows."""
    if expected is None:
        return reason is None
    return reason in expected or (reason is not None and reason.startswith("doc_") and DOC_ANY in expected)


def write_cases(folder: Path) -> dict[str, dict[int, frozenset | None]]:
    """Write every hostile case into ``folder``; file name -> ``{offset: expected}``."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, parts in hostile_cases().items():
        data, rows = build(parts)
        (folder / name).write_bytes(data)
        if not data:
            rows = {0: frozenset({"empty_warc_file"})}
        expected[name] = rows
    return expected
