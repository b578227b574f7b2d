"""Read WARC files with FastWARC, turning every problem into a counted event.

Real crawls hold truncated gzip members, files cut mid-record, records whose
payload is not HTML, and the occasional multi-megabyte page. Whatever happens,
:func:`iter_warc` yields either a :class:`ResponseRecord` or a
:class:`ReadProblem` and never raises for bad data: a corrupt gzip member is
reported and reading resumes at the next member (a "resync"), so one bad
record costs one record, not the rest of the file.

Paths go through fsspec, so local files, ``https://data.commoncrawl.org/...``
and ``s3://commoncrawl/...`` share one code path.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Iterator

import fsspec
from fastwarc.warc import ArchiveIterator, WarcRecordType

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGIC = b"WARC/1."
_SCAN_CHUNK = 1 << 20


@dataclass
class ResponseRecord:
    """One WARC ``response`` record with its HTTP payload (or why the payload was not read)."""

    warc_filename: str
    offset: int
    record_id: str
    target_uri: str
    warc_date: str
    http_status: int | None
    content_type: str | None
    charset: str | None
    payload: bytes | None  # None when the payload was not read (too large)
    payload_length: int
    truncated: bool = False
    length: int | None = None  # bytes of the (compressed) record in the file, set when known
    http_headers: dict[str, str] = field(default_factory=dict)

    @property
    def row_id(self) -> str:
        return f"{self.warc_filename}@{self.offset}"


@dataclass
class ReadProblem:
    """A part of a file that could not be read as WARC records."""

    warc_filename: str
    offset: int
    reason: str  # warc_open_error | warc_read_error
    detail: str

    @property
    def row_id(self) -> str:
        return f"{self.warc_filename}@{self.offset}"


@dataclass
class FileReadStats:
    records_by_type: Counter = field(default_factory=Counter)
    resyncs: int = 0


def strip_target_uri(uri: str | None) -> str:
    """``WARC-Target-URI`` without the ``<...>`` that WARC/1.0 writers such as wget put around it."""
    uri = (uri or "").strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri


def _record_type_name(rtype: WarcRecordType) -> str:
    return str(rtype).rsplit(".", 1)[-1]


def _find_next_member(fh: IO[bytes], start: int, gzipped: bool) -> int | None:
    """Offset of the next gzip member (or ``WARC/1.`` line) at or after ``start``, if any."""
    magic = GZIP_MAGIC if gzipped else WARC_MAGIC
    pos = start
    fh.seek(pos)
    tail = b""
    while True:
        chunk = fh.read(_SCAN_CHUNK)
        if not chunk:
            return None
        buf = tail + chunk
        idx = buf.find(magic)
        if idx >= 0:
            return pos - len(tail) + idx
        tail = buf[-(len(magic) - 1):]
        pos += len(chunk)


def iter_warc(
    path: str,
    display_name: str | None = None,
    max_payload_bytes: int = 5_000_000,
    max_resyncs: int = 100,
    stats: FileReadStats | None = None,
) -> Iterator[ResponseRecord | ReadProblem]:
    """Yield every response record of ``path`` and every unreadable region, in file order.

    ``display_name`` is what goes into ``warc_filename`` (e.g. the path relative
    to the Common Crawl base); defaults to ``path``.
    """
    name = display_name or path
    stats = stats if stats is not None else FileReadStats()
    try:
        fh = fsspec.open(path, "rb").open()
    except Exception as exc:  # missing file, network error, permission
        yield ReadProblem(name, 0, "warc_open_error", f"{type(exc).__name__}: {exc}")
        return
    try:
        magic = fh.read(3)
        fh.seek(0)
        gzipped = magic == GZIP_MAGIC
        start = 0
        pending: ResponseRecord | None = None
        while True:
            last_pos = start
            try:
                fh.seek(start)
                for rec in ArchiveIterator(fh, parse_http=True, stream_detect=True):
                    last_pos = rec.stream_pos
                    if pending is not None:
                        pending.length = rec.stream_pos - pending.offset
                        yield pending
                        pending = None
                    rtype = _record_type_name(rec.record_type)
                    stats.records_by_type[rtype] += 1
                    if rec.record_type != WarcRecordType.response:
                        continue
                    pending = _to_response(rec, name, max_payload_bytes)
                if pending is not None:
                    yield pending
                    pending = None
                return
            except OSError as exc:
                # The bad region starts after the last record we parsed completely.
                if pending is not None:
                    yield pending
                    pending = None
                problem_at = last_pos
                yield ReadProblem(name, problem_at, "warc_read_error", f"{exc}")
                if stats.resyncs >= max_resyncs:
                    log.warning("%s: giving up after %d resyncs", name, stats.resyncs)
                    return
                nxt = _find_next_member(fh, problem_at + 1, gzipped)
                if nxt is None:
                    return
                stats.resyncs += 1
                log.info("%s: corrupt data at offset %d, resuming at %d", name, problem_at, nxt)
                start = nxt
    finally:
        fh.close()


def _to_response(rec, name: str, max_payload_bytes: int) -> ResponseRecord:
    status = None
    ctype = charset = None
    headers: dict[str, str] = {}
    if rec.is_http and rec.http_headers is not None:
        status = rec.http_headers.status_code
        ctype = rec.http_content_type
        charset = rec.http_charset
        headers = {k.lower(): v for k, v in rec.http_headers.items()}
    expected = rec.content_length
    payload = None
    truncated = False
    if expected <= max_payload_bytes:
        payload = rec.reader.read()
        truncated = len(payload) < expected
    return ResponseRecord(
        warc_filename=name,
        offset=rec.stream_pos,
        record_id=strip_target_uri(rec.record_id),
        target_uri=strip_target_uri(rec.headers.get("WARC-Target-URI")),
        warc_date=rec.headers.get("WARC-Date") or "",
        http_status=status,
        content_type=(ctype or "").lower() or None,
        charset=(charset or "").lower() or None,
        payload=payload,
        payload_length=expected,
        truncated=truncated,
        http_headers=headers,
    )
