"""A urllib opener that refuses to fetch what a web crawler must not fetch.

Image URLs come from arbitrary web pages, so a fetch worker would otherwise
request whatever a page names: the cloud metadata service (169.254.169.254),
the cluster's private network, a loopback admin port, ``file://``. This module
builds an :class:`urllib.request.OpenerDirector` that

* speaks only http and https (no file/ftp/data handlers; a redirect to another
  scheme is refused);
* resolves the host once, refuses it when any address it resolves to is
  loopback, private, link-local, multicast, reserved, unspecified, not globally
  routable or a cloud metadata address, connects to exactly the address it
  checked (no second DNS lookup, so DNS rebinding cannot swap it) and checks the
  connected peer again; every redirect hop goes through the same connection
  class;
* uses no proxy from the environment (the checked address must be the one
  connected to);
* bounds the response: a ``Content-Length`` above ``max_bytes`` is refused
  before reading, a body growing past it is cut, and a response still arriving
  ``max_seconds`` after the first request of a fetch (redirects included) is abandoned
  whatever its drip rate: every socket read gets only the time left (slow-drip servers);
* lets an explicit allowlist (``IP``, ``IP:port``, ``CIDR`` or ``CIDR:port``)
  through, e.g. the embedded sample's loopback image server.

img2dataset fetches with ``urllib.request.urlopen``, which uses the opener
installed in the process; :func:`install_safe_opener` installs this one in a
fetch worker (see :mod:`curation.fetch`). Refusals raise :class:`FetchRefused`
subclasses whose message starts with the rejection reason (``unsafe_address``,
``unsafe_scheme``, ``too_large``, ``fetch_error:timeout``), which is what
img2dataset records as the sample's error message.
"""
from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https")

# Metadata services of the big clouds; most are link-local or private already, but Azure's
# wire server (168.63.129.16) is a global address.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "168.63.129.16", "fd00:ec2::254")
)


class FetchRefused(OSError):
    """A fetch this module refused; ``reason`` is the rejection reason, the message starts with it."""

    reason = "fetch_error:refused"

    def __init__(self, detail: str):
        super().__init__(f"{self.reason}: {detail}")
        self.detail = detail


class UnsafeAddress(FetchRefused):
    reason = "unsafe_address"


class UnsafeScheme(FetchRefused):
    reason = "unsafe_scheme"


class ResponseTooLarge(FetchRefused):
    reason = "too_large"


class FetchTooSlow(FetchRefused):
    reason = "fetch_error:timeout"


class TdmReserved(FetchRefused):
    reason = "tdm_reserved"


# --------------------------------------------------------------------------- the policy


def _parse_allow(entry: str) -> tuple[IPNetwork, int | None]:
    """``127.0.0.1``, ``127.0.0.1:8417``, ``10.0.0.0/8``, ``10.0.0.0/8:80``, ``::1``, ``[::1]:8417``."""
    text = entry.strip()
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
        text = host
    elif text.count(":") == 1:
        text, port_text = text.split(":")
        port = int(port_text)
    return ipaddress.ip_network(text, strict=False), port


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch worker may connect to and how much it may read (picklable, shipped to workers)."""

    allow: tuple[str, ...] = ()
    max_bytes: int = 20_000_000
    max_seconds: float = 60.0
    max_redirects: int = 5
    honour_tdm: bool = True  # refuse a response carrying ``tdm-reservation: 1`` (TdmReservationProcessor)

    def __post_init__(self) -> None:
        for entry in self.allow:
            try:
                _parse_allow(entry)
            except ValueError as exc:
                raise ValueError(f"bad allowlist entry {entry!r}: {exc}") from None

    @functools.cached_property
    def _allow(self) -> tuple[tuple[IPNetwork, int | None], ...]:
        return tuple(_parse_allow(e) for e in self.allow)

    def allowed(self, ip: IPAddress, port: int | None) -> bool:
        return any(ip in net and (p is None or p == port) for net, p in self._allow)

    def address_verdict(self, address: str, port: int | None = None) -> str | None:
        """None when ``address`` may be connected to, else why not (``loopback``, ``private``, ...)."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "not_an_address"
        if self.allowed(ip, port):
            return None
        return unsafe_kind(ip)


def unsafe_kind(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from (None for a public unicast address)."""
    embedded = []
    if isinstance(ip, ipaddress.IPv6Address):
        for v4 in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None):
            if v4 is not None:
                embedded.append(v4)
        if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for candidate in (*embedded, ip):
        if candidate in METADATA_ADDRESSES:
            return "metadata"
        for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
            if getattr(candidate, f"is_{kind}"):
                return kind
        if not candidate.is_global:
            return "not_global"
    return None


def precheck_url(url: str, policy: FetchPolicy) -> tuple[str, str] | None:
    """Refusals decidable from the URL alone (scheme, literal IP host): ``(reason, detail)`` or None.

    Host names are checked when the worker connects (:class:`SafeHTTPConnection`), on the address
    actually used; this only spares a request for what is refused anyway.
    """
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        return "bad_url", str(exc)
    if scheme not in ALLOWED_SCHEMES:
        return UnsafeScheme.reason, f"scheme {scheme or '(none)'}"
    if not host:
        return "bad_url", "no host"
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # a name: checked at connect time
    verdict = policy.address_verdict(host, port)
    if verdict:
        return UnsafeAddress.reason, f"{host} is {verdict}"
    return None


# --------------------------------------------------------------------------- connection + response


class _DeadlineReader(io.RawIOBase):
    """The response's socket reads, each one allowed only the time left before the fetch deadline.

    A socket timeout bounds one ``recv``, not a read: a buffered ``read(65536)`` loops over
    ``recv`` calls, and a server dripping one byte per socket timeout held a fetch for days
    (issue 19.2). Here every ``recv`` (status line, headers, chunk sizes, body) gets
    ``min(socket timeout, time left)``, so the fetch ends by the deadline whatever the drip rate.
    """

    def __init__(self, sock, deadline: float):
        super().__init__()
        self._raw = sock.makefile("rb", buffering=0)
        self._sock = sock
        self._deadline = deadline
        self._timeout = sock.gettimeout()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise FetchTooSlow("response still arriving at the fetch deadline")
        self._sock.settimeout(left if self._timeout is None else min(self._timeout, left))
        try:
            return self._raw.readinto(buffer)
        except TimeoutError:  # socket.timeout
            if time.monotonic() >= self._deadline - 0.05:
                raise FetchTooSlow("response still arriving at the fetch deadline") from None
            raise

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class BoundedHTTPResponse(http.client.HTTPResponse):
    """An HTTP response whose body may not exceed ``max_bytes`` nor keep arriving past a deadline."""

    def __init__(self, sock, *args, max_bytes: int, deadline: float, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # http.client's own buffered socket file; ours bounds every recv by the deadline
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))
        self._max_bytes = max_bytes
        self._deadline = deadline
        self._seen = 0

    def _account(self, n: int) -> None:
        self._seen += n
        if self._seen > self._max_bytes:
            self.close()
            raise ResponseTooLarge(f"body over {self._max_bytes} bytes")
        if time.monotonic() > self._deadline:
            self.close()
            raise FetchTooSlow("body still arriving at the fetch deadline")

    def _read_some(self, n: int) -> bytes:
        """At most ``n`` bytes from at most one socket read (``read1``), so the checks run between reads."""
        try:
            data = super().read1(n)
        except FetchTooSlow:
            self.close()
            raise
        self._account(len(data))
        return data

    def read(self, amt: int | None = None) -> bytes:
        if amt is not None:
            chunks, got = [], 0
            while got < amt:
                chunk = self._read_some(min(amt - got, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            return b"".join(chunks)
        if self.length is not None and self.length > self._max_bytes:
            self.close()
            raise ResponseTooLarge(f"Content-Length {self.length} over {self._max_bytes} bytes")
        chunks = []
        while True:
            chunk = self._read_some(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        if not self.chunked and self.length:  # the server closed before its Content-Length, as read() says
            raise http.client.IncompleteRead(b"".join(chunks), self.length)
        return b"".join(chunks)


class _SafeConnectionMixin:
    """Replaces ``socket.create_connection`` of an ``http.client`` connection by a checked one."""

    def _setup_safety(self, policy: FetchPolicy, deadline: float | None = None) -> None:
        self._policy = policy
        self._deadline = deadline if deadline is not None else time.monotonic() + policy.max_seconds
        self._create_connection = self._safe_create_connection
        self.response_class = functools.partial(  # type: ignore[assignment]
            BoundedHTTPResponse, max_bytes=policy.max_bytes, deadline=self._deadline
        )

    def _safe_create_connection(self, address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise FetchTooSlow("fetch deadline passed before connecting")
        if timeout is socket._GLOBAL_DEFAULT_TIMEOUT or timeout is None or timeout > left:
            timeout = left  # connecting may not outlast the fetch deadline either
        host, port = address
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        for *_, sockaddr in infos:
            verdict = self._policy.address_verdict(sockaddr[0], port)
            if verdict:
                raise UnsafeAddress(f"{host} resolves to {sockaddr[0]} ({verdict})")
        last_error: OSError | None = None
        for family, type_, proto, _, sockaddr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)  # the checked address itself, not the name
                peer = sock.getpeername()
                verdict = self._policy.address_verdict(peer[0], peer[1])
                if verdict:
                    raise UnsafeAddress(f"{host} connected to {peer[0]} ({verdict})")
                return sock
            except UnsafeAddress:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                last_error = exc
        raise last_error or OSError(f"no address for {host}")


class SafeHTTPConnection(_SafeConnectionMixin, http.client.HTTPConnection):
    def __init__(self, *args, policy: FetchPolicy, deadline: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_safety(policy, deadline)


class SafeHTTPSConnection(_SafeConnectionMixin, http.client.HTTPSConnection):
    def __init__(self, *args, policy: FetchPolicy, deadline: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_safety(policy, deadline)


def _fetch_deadline(req, policy: FetchPolicy) -> float:
    """The deadline of the fetch ``req`` belongs to: set on the first request, kept by every redirect
    (:meth:`SafeRedirectHandler.redirect_request`), so ``max_seconds`` bounds the whole chain."""
    deadline = getattr(req, "fetch_deadline", None)
    if deadline is None:
        deadline = req.fetch_deadline = time.monotonic() + policy.max_seconds
    return deadline


class SafeHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: FetchPolicy):
        super().__init__()
        self.policy = policy

    def http_open(self, req):
        deadline = _fetch_deadline(req, self.policy)
        return self.do_open(functools.partial(SafeHTTPConnection, policy=self.policy, deadline=deadline), req)


class SafeHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: FetchPolicy, context: ssl.SSLContext | None = None):
        super().__init__(context=context or ssl.create_default_context())
        self.policy = policy

    def https_open(self, req):
        deadline = _fetch_deadline(req, self.policy)
        return self.do_open(functools.partial(SafeHTTPSConnection, policy=self.policy, deadline=deadline), req,
                            context=self._context)


class SafeRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows at most ``max_redirects`` redirects, to http(s) only (each hop reconnects through the checks)."""

    def __init__(self, max_redirects: int):
        super().__init__()
        self.max_redirections = max_redirects
        self.max_repeats = min(self.max_repeats, max(1, max_redirects))

    def http_error_302(self, req, fp, code, msg, headers):
        # urllib would answer a redirect to ftp itself and one to file: with an HTTPError; refuse both
        # by scheme first, so the reason is the same for every non-http(s) target.
        location = headers.get("location") or headers.get("uri")
        if location:
            scheme = urlsplit(urljoin(req.full_url, location)).scheme.lower()
            if scheme not in ALLOWED_SCHEMES:
                raise UnsafeScheme(f"redirect to {scheme}: {location[:200]}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise UnsafeScheme(f"redirect to {scheme or '(none)'}: {newurl[:200]}")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and getattr(req, "fetch_deadline", None) is not None:
            new.fetch_deadline = req.fetch_deadline  # one deadline for the whole redirect chain
        return new


class TdmReservationProcessor(urllib.request.BaseHandler):
    """W3C TDM Reservation Protocol: a ``tdm-reservation: 1`` response header reserves text and data
    mining rights, so the image is refused (``tdm_reserved``) beside img2dataset's X-Robots-Tag check."""

    def http_response(self, req, response):
        if (response.headers.get("tdm-reservation") or "").strip() == "1":
            response.close()
            raise TdmReserved(f"tdm-reservation: 1 on {req.full_url[:200]}")
        return response

    https_response = http_response


def build_safe_opener(policy: FetchPolicy) -> urllib.request.OpenerDirector:
    """An opener with only the checked http/https handlers (no proxy, file, ftp or data handler)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        SafeHTTPHandler(policy),
        SafeHTTPSHandler(policy),
        SafeRedirectHandler(policy.max_redirects),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),
    ):
        opener.add_handler(handler)
    if policy.honour_tdm:
        opener.add_handler(TdmReservationProcessor())
    return opener


_installed: FetchPolicy | None = None


def install_safe_opener(policy: FetchPolicy) -> None:
    """Make ``urllib.request.urlopen`` in this process go through :func:`build_safe_opener` (idempotent)."""
    global _installed
    if _installed != policy:
        urllib.request.install_opener(build_safe_opener(policy))
        _installed = policy
