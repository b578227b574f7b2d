"""Read WARC files with FastWARC, turning every problem into a counted event.

Real crawls hold truncated gzip members, files cut mid-record, records whose
payload is not HTML, and the occasional multi-megabyte page. Whatever happens,
:func:`iter_warc` yields either a :class:`ResponseRecord` or a
:class:`ReadProblem` and never raises for bad data: a corrupt gzip member is
reported and reading resumes at the next member (a "resync"), so one bad
record costs one record, not the rest of the file.

Nothing vanishes without an item, and no two items share an offset (the row id):

* every record start (a gzip member that inflates to ``WARC/1.``, or ``WARC/1.``
  after a record's closing CRLFCRLF in a plain file) is noted as FastWARC reads
  past it; when one lies *inside* a record, that record's ``Content-Length``
  swallowed its neighbours (issue 19.3): the liar is parsed again bounded by its
  own member (it reads as truncated) and each swallowed record on its own;
* a problem is filed where the bad data starts (the corrupt member, the junk
  after a member), never at the offset of a good record (issue 19.4);
* a 0-byte file is one ``empty_warc_file`` problem, a file with no record at all
  one ``warc_read_error``.

Paths go through fsspec, so local files, ``https://data.commoncrawl.org/...``
and ``s3://commoncrawl/...`` share one code path.
"""
from __future__ import annotations

import bisect
import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Iterator

import fsspec
from fastwarc.warc import ArchiveIterator, WarcRecordType

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGIC = b"WARC/1."
PLAIN_BOUNDARY = b"\r\n\r\n" + WARC_MAGIC  # a record ends with CRLFCRLF; the next starts with WARC/1.
_SCAN_CHUNK = 1 << 20
_VALIDATE_BYTES = 1024
# Not data errors: re-raised where everything else a reader raises becomes a ReadProblem.
_FATAL = (GeneratorExit, KeyboardInterrupt, SystemExit, MemoryError)


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
    reason: str  # warc_open_error | warc_read_error | empty_warc_file
    detail: str

    @property
    def row_id(self) -> str:
        return f"{self.warc_filename}@{self.offset}"


@dataclass
class FileReadStats:
    records_by_type: Counter = field(default_factory=Counter)
    resyncs: int = 0
    overruns: int = 0  # records whose Content-Length ran into the next record(s), which were read on their own


def strip_target_uri(uri: str | None) -> str:
    """``WARC-Target-URI`` without the ``<...>`` that WARC/1.0 writers such as wget put around it."""
    uri = (uri or "").strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri


def _record_type_name(rtype: WarcRecordType) -> str:
    return str(rtype).rsplit(".", 1)[-1]


class _SpanReader:
    """What FastWARC reads: ``fh[start:end]`` seen from offset 0, noting every record-start candidate.

    It seeks before every read, so the reader can look elsewhere in ``fh`` (validating a
    candidate, parsing a swallowed member) between two reads without disturbing FastWARC.
    ``candidates`` are absolute offsets where ``pattern`` occurs (the gzip magic, or a plain
    record boundary), in increasing order; :func:`_is_record_start` tells the real ones.
    """

    def __init__(self, fh: IO[bytes], start: int, end: int | None, pattern: bytes | None = None, shift: int = 0):
        self.fh = fh
        self.pos = self.start = start
        self.end = end
        self.pattern = pattern
        self.shift = shift
        self.candidates: list[int] = []
        self._tail = b""

    def read(self, n: int = -1) -> bytes:
        if self.end is not None:
            left = self.end - self.pos
            if left <= 0:
                return b""
            n = left if n is None or n < 0 else min(n, left)
        self.fh.seek(self.pos)
        data = self.fh.read(n) if n is not None and n >= 0 else self.fh.read()
        if self.pattern and data:
            buf = self._tail + data
            base = self.pos - len(self._tail)
            idx = buf.find(self.pattern)
            while idx >= 0:
                self.candidates.append(base + idx + self.shift)
                idx = buf.find(self.pattern, idx + 1)
            self._tail = buf[-(len(self.pattern) - 1):]
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos - self.start  # FastWARC's ``stream_pos`` is relative to the span


def _boundary(gzipped: bool) -> tuple[bytes, int]:
    """What marks a possible record start: a gzip member's magic, or ``WARC/1.`` after a record's CRLFCRLF."""
    return (GZIP_MAGIC, 0) if gzipped else (PLAIN_BOUNDARY, 4)


def _is_record_start(fh: IO[bytes], pos: int, gzipped: bool) -> bool:
    """Whether a WARC record (its own gzip member, when gzipped) starts at ``pos``.

    A gzip magic can occur by chance inside compressed data (about once in 16 MB); a real
    member start decompresses to ``WARC/1.``.
    """
    try:
        fh.seek(pos)
        head = fh.read(_VALIDATE_BYTES)
        if gzipped:
            head = zlib.decompressobj(31).decompress(head, 16)
        return head.startswith(WARC_MAGIC)
    except Exception:  # zlib.error on a chance magic, OSError on a broken remote read
        return False


def _find_next_member(fh: IO[bytes], start: int, gzipped: bool) -> int | None:
    """Offset of the next record start (a gzip member or a plain ``WARC/1.`` record) at or after ``start``."""
    pattern, shift = _boundary(gzipped)
    pos = max(0, start - shift)
    while True:
        fh.seek(pos)
        chunk = fh.read(_SCAN_CHUNK)
        if not chunk:
            return None
        idx = chunk.find(pattern)
        while idx >= 0:
            cand = pos + idx + shift
            if cand >= start and _is_record_start(fh, cand, gzipped):
                return cand
            idx = chunk.find(pattern, idx + 1)
        if len(chunk) < len(pattern):
            return None
        pos += len(chunk) - (len(pattern) - 1)


def _member_end(fh: IO[bytes], start: int, end: int | None) -> int | None:
    """Where the gzip member starting at ``start`` ends (None when it does not decompress)."""
    dec = zlib.decompressobj(31)
    pos = start
    while end is None or pos < end:
        fh.seek(pos)
        chunk = fh.read(_SCAN_CHUNK if end is None else min(_SCAN_CHUNK, end - pos))
        if not chunk:
            return None
        data = chunk
        try:
            while data:
                dec.decompress(data, _SCAN_CHUNK)  # bounded output: a gzip bomb costs time, not memory
                if dec.eof:
                    return pos + len(chunk) - len(dec.unused_data)
                data = dec.unconsumed_tail
        except zlib.error:
            return None
        pos += len(chunk)
    return None


class _FileReader:
    """Reads one opened WARC file; see :func:`iter_warc`."""

    def __init__(self, fh: IO[bytes], name: str, gzipped: bool, size: int | None,
                 max_payload_bytes: int, max_resyncs: int, stats: FileReadStats):
        self.fh, self.name, self.gzipped, self.size = fh, name, gzipped, size
        self.max_payload_bytes, self.max_resyncs, self.stats = max_payload_bytes, max_resyncs, stats

    def records(self) -> Iterator[ResponseRecord | ReadProblem]:
        pattern, shift = _boundary(self.gzipped)
        start = 0
        while True:
            reader = _SpanReader(self.fh, start, self.size, pattern, shift)
            pending: int | None = None  # offset of the last record seen, not yet settled
            record: ResponseRecord | None = None
            try:
                for rec in ArchiveIterator(reader, parse_http=True, stream_detect=True):
                    pos = start + rec.stream_pos
                    if pending is not None:
                        done, done_rec, pending, record = pending, record, None, None
                        yield from self._settle(done, done_rec, pos, reader.candidates)
                    pending = pos
                    self.stats.records_by_type[_record_type_name(rec.record_type)] += 1
                    if rec.record_type == WarcRecordType.response:
                        record = _to_response(rec, self.name, self.max_payload_bytes, pos)
                if pending is not None:
                    end = self.size if self.size is not None else reader.pos
                    yield from self._settle(pending, record, end, reader.candidates, at_eof=True)
                elif start == 0:
                    yield ReadProblem(self.name, 0, "warc_read_error", "no WARC record in the file")
                return
            except _FATAL:
                raise
            except BaseException as exc:  # noqa: B036  FastWARC raises OSError for bad data, a Rust panic
                # (a BaseException) for worse; anything else here is a bad record too
                detail = f"{type(exc).__name__}: {exc}"
                after = start if pending is None else pending
                nxt = _find_next_member(self.fh, after + 1, self.gzipped)
                if pending is None:
                    # The record at ``start`` itself could not be read.
                    yield ReadProblem(self.name, start, "warc_read_error", detail)
                else:
                    # The last record seen is parsed again on its own, up to the next record start:
                    # it may be the one that broke, or it may have run into a broken neighbour.
                    yield from _parse_span(self, pending, nxt if nxt is not None else self.size, count_first=False,
                                           error=detail)
            if nxt is None:
                return
            if self.stats.resyncs >= self.max_resyncs:
                log.warning("%s: giving up after %d resyncs", self.name, self.stats.resyncs)
                yield ReadProblem(self.name, nxt, "warc_read_error",
                                  f"gave up after {self.stats.resyncs} resyncs; the rest of the file was not read")
                return
            self.stats.resyncs += 1
            log.info("%s: unreadable data after offset %d, resuming at %d", self.name, after, nxt)
            start = nxt

    def _settle(self, offset: int, record: ResponseRecord | None, next_pos: int, candidates: list[int],
                at_eof: bool = False) -> Iterator[ResponseRecord | ReadProblem]:
        """Yield the record at ``offset`` (the next one starts at ``next_pos``), or, when record starts lie
        between the two, the records its lying ``Content-Length`` swallowed, each parsed on its own."""
        i = bisect.bisect_right(candidates, offset)
        j = bisect.bisect_left(candidates, next_pos)
        inner = [q for q in candidates[i:j] if _is_record_start(self.fh, q, self.gzipped)]
        del candidates[:j]
        if inner and self.gzipped:
            # A record start inside the record's own gzip member is payload (a crawled .warc.gz kept in
            # deflate's stored blocks), not a neighbour: only starts after the member's end were swallowed.
            own_end = _member_end(self.fh, offset, next_pos)
            inner = [q for q in inner if own_end is not None and q >= own_end]
        if not inner:
            if record is not None:
                if not at_eof:
                    record.length = next_pos - offset
                yield record
            return
        self.stats.overruns += 1
        log.warning("%s: the record at %d runs past its end into %d more record(s)", self.name, offset, len(inner))
        bounds = [offset, *inner, next_pos]
        for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
            yield from _parse_span(self, a, b, count_first=k > 0)


def _parse_span(
    reader: _FileReader, start: int, end: int | None, count_first: bool, error: str | None = None
) -> Iterator[ResponseRecord | ReadProblem]:
    """Parse ``fh[start:end]`` on its own: the records in it, then a problem for what is left unread.

    Used for a record whose neighbour's ``Content-Length`` swallowed it, for the liar itself
    (bounded by its own member it reads as truncated) and for the last record before an error.
    A gzipped span is cut at the end of its first member; bytes after it are a problem of their own.
    """
    name, fh = reader.name, reader.fh
    stop = end
    if reader.gzipped:
        stop = _member_end(fh, start, end)
        if stop is None:
            yield ReadProblem(name, start, "warc_read_error", error or "corrupt gzip member")
            return
    found: list[ResponseRecord] = []
    seen = 0
    last: int | None = None
    last_done = False
    problem: ReadProblem | None = None
    try:
        for rec in ArchiveIterator(_SpanReader(fh, start, stop), parse_http=True, stream_detect=True):
            last, last_done = start + rec.stream_pos, False
            if found and found[-1].length is None:
                found[-1].length = last - found[-1].offset
            if seen or count_first:
                reader.stats.records_by_type[_record_type_name(rec.record_type)] += 1
            seen += 1
            if rec.record_type == WarcRecordType.response:
                found.append(_to_response(rec, name, reader.max_payload_bytes, last))
            last_done = True
    except _FATAL:
        raise
    except BaseException as exc:  # noqa: B036  see _FileReader.records
        at = start if last is None else (last + 1 if last_done else last)
        problem = ReadProblem(name, at, "warc_read_error", f"{type(exc).__name__}: {exc}")
    if found and found[-1].length is None and stop is not None and end is not None:
        found[-1].length = stop - found[-1].offset
    yield from found
    if problem is not None:
        yield problem
    elif not seen:
        yield ReadProblem(name, start, "warc_read_error", error or "no WARC record here")
    if stop is not None and end is not None and stop < end:
        yield ReadProblem(name, stop, "warc_read_error", f"{end - stop} bytes after a gzip member are not a WARC record")


def iter_warc(
    path: str,
    display_name: str | None = None,
    max_payload_bytes: int = 5_000_000,
    max_resyncs: int = 100,
    stats: FileReadStats | None = None,
) -> Iterator[ResponseRecord | ReadProblem]:
    """Yield every response record of ``path`` and every unreadable region, in file order.

    ``display_name`` is what goes into ``warc_filename`` (e.g. the path relative
    to the Common Crawl base); defaults to ``path``. Every item has its own offset, so row ids
    are unique: a problem is filed where the bad data starts, never at a good record's offset.
    A 0-byte file is one ``empty_warc_file`` problem, a file that cannot be opened one
    ``warc_open_error``.
    """
    name = display_name or path
    stats = stats if stats is not None else FileReadStats()
    try:
        fh = fsspec.open(path, "rb").open()
    except Exception as exc:  # missing file, network error, permission
        yield ReadProblem(name, 0, "warc_open_error", f"{type(exc).__name__}: {exc}")
        return
    try:
        try:
            magic = fh.read(3)
            size: int | None
            try:
                fh.seek(0, 2)
                size = fh.tell()
            except Exception:  # a stream without a known size
                size = None
        except Exception as exc:
            yield ReadProblem(name, 0, "warc_open_error", f"{type(exc).__name__}: {exc}")
            return
        if not magic:
            yield ReadProblem(name, 0, "empty_warc_file", "the file has 0 bytes")
            return
        reader = _FileReader(fh, name, magic == GZIP_MAGIC, size, max_payload_bytes, max_resyncs, stats)
        yield from reader.records()
    finally:
        fh.close()


def _to_response(rec, name: str, max_payload_bytes: int, offset: int) -> ResponseRecord:
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
    declared = (rec.headers.get("Content-Length") or "").strip()
    if not declared.isdigit() or len(declared) > 18:
        # No Content-Length (a header cut short) or one FastWARC could not take as it is written
        # ("-5", "abc", 20 digits): the record's extent is unknown, so is its payload.
        truncated = True
    return ResponseRecord(
        warc_filename=name,
        offset=offset,
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
