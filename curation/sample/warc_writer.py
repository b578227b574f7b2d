"""A small deterministic WARC/1.1 writer (one gzip member per record, as Common Crawl does).

Every record is compressed on its own with ``mtime=0`` and no file name, so the
bytes depend only on the record content; dates and record ids are chosen by the
caller (from a seeded RNG) rather than read from the clock.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import uuid
from typing import BinaryIO

CRLF = b"\r\n"


def sha1_digest(data: bytes) -> str:
    """``sha1:<BASE32>`` as in WARC-Block-Digest / WARC-Payload-Digest."""
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode("ascii")


def record_id(u: uuid.UUID) -> str:
    return f"<urn:uuid:{u}>"


def http_response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 response message (status line, headers, blank line, body)."""
    lines = [f"HTTP/1.1 {status} {reason}".encode("ascii")]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
    return CRLF.join(lines) + CRLF + CRLF + body


def http_request(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode("ascii")]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
    return CRLF.join(lines) + CRLF + CRLF


class WarcWriter:
    """Append records to a ``.warc.gz`` stream; :meth:`write_record` returns the member's offset."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.offset = 0

    def write_record(self, warc_type: str, headers: list[tuple[str, str]], block: bytes,
                     content_type: str | None = None, payload: bytes | None = None) -> tuple[int, int]:
        """Write one record. ``headers`` must hold WARC-Record-ID and WARC-Date (and Target-URI where
        relevant); Content-Type/Length and digests are added here. Returns (offset, compressed length)."""
        head = [("WARC-Type", warc_type)] + list(headers)
        if content_type:
            head.append(("Content-Type", content_type))
        head.append(("WARC-Block-Digest", sha1_digest(block)))
        if payload is not None:
            head.append(("WARC-Payload-Digest", sha1_digest(payload)))
        head.append(("Content-Length", str(len(block))))
        raw = b"WARC/1.1" + CRLF + b"".join(f"{k}: {v}".encode("utf-8") + CRLF for k, v in head) + CRLF
        raw += block + CRLF + CRLF
        member = gzip.compress(raw, compresslevel=6, mtime=0)
        start = self.offset
        self.stream.write(member)
        self.offset += len(member)
        return start, len(member)


def warc_fields(fields: list[tuple[str, str]]) -> bytes:
    """``application/warc-fields`` block (warcinfo, metadata)."""
    return b"".join(f"{k}: {v}".encode("utf-8") + CRLF for k, v in fields)
