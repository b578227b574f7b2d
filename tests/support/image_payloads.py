"""Test helpers: image payloads (good and hostile) and a loopback HTTP server with scripted routes.

Shared by tests/curation/test_image_check.py, test_safe_http.py, test_fetch.py and
tests/pipelines/test_images.py.
"""
from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


def scene(w: int = 300, h: int = 240, seed: int = 0) -> Image.Image:
    """A distinct picture per seed (random blocks, so pHashes differ)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(blocks, "RGB").resize((w, h), Image.Resampling.NEAREST)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(w: int = 300, h: int = 240, seed: int = 0) -> bytes:
    return encode(scene(w, h, seed), "JPEG", quality=90)


def png(w: int = 300, h: int = 240, seed: int = 0) -> bytes:
    return encode(scene(w, h, seed), "PNG")


def webp(w: int = 300, h: int = 240, seed: int = 0) -> bytes:
    return encode(scene(w, h, seed), "WEBP", quality=90)


def truncated_jpeg() -> bytes:
    data = jpeg(400, 300, seed=11)
    return data[: len(data) * 6 // 10]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="400" height="300">'
       b'<rect width="400" height="300" fill="red"/></svg>')


def animated_gif() -> bytes:
    frames = [scene(300, 240, seed=s).convert("P") for s in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_webp() -> bytes:
    frames = [scene(300, 240, seed=s) for s in range(3)]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)


def cmyk_jpeg() -> bytes:
    return encode(scene(320, 240, seed=21).convert("CMYK"), "JPEG", quality=90)


def png_16bit() -> bytes:
    ramp = (np.linspace(0, 65535, 300 * 240).reshape(240, 300)).astype(np.uint16)
    return encode(Image.fromarray(ramp), "PNG")  # mode I;16


# --------------------------------------------------------------------------- server


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a stalling server)
    drip: float = 0.0  # seconds between chunks of the body (a slow-drip server)
    drip_bytes: int = 64  # bytes per dripped chunk
    content_type: str = "image/jpeg"


class ScriptedServer:
    """``ThreadingHTTPServer`` on 127.0.0.1 answering ``routes[path]`` (404 otherwise); records requests."""

    def __init__(self, routes: dict[str, Route] | None = None):
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - stdlib name
                with server._lock:
                    server.requests.append(self.path)
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.delay:
                    time.sleep(route.delay)
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                if "Content-Length" not in route.headers:
                    self.send_header("Content-Length", str(len(route.body)))
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    if route.drip:
                        for i in range(0, len(route.body), route.drip_bytes):
                            self.wfile.write(route.body[i:i + route.drip_bytes])
                            self.wfile.flush()
                            time.sleep(route.drip)
                    else:
                        self.wfile.write(route.body)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def allow(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def hostile_routes(port_for_redirect: int | None = None) -> dict[str, Route]:
    """Every hostile case of the images issue, plus a few good images, by path."""
    routes = {
        "/ok.jpg": Route(jpeg(seed=1)),
        "/ok.png": Route(png(seed=2), content_type="image/png"),
        "/ok.webp": Route(webp(seed=3), content_type="image/webp"),
        "/stall.jpg": Route(jpeg(seed=4), delay=8.0),  # tests use a 3 s timeout
        "/truncated.jpg": Route(truncated_jpeg()),
        "/bomb.png": Route(png_claiming(50000, 50000), content_type="image/png"),
        "/big-header.png": Route(png_claiming(10000, 10000), content_type="image/png"),
        "/image.svg": Route(SVG, content_type="image/svg+xml"),
        "/empty.jpg": Route(b""),
        "/anim.gif": Route(animated_gif(), content_type="image/gif"),
        "/anim.webp": Route(animated_webp(), content_type="image/webp"),
        "/cmyk.jpg": Route(cmyk_jpeg()),
        "/16bit.png": Route(png_16bit(), content_type="image/png"),
        "/tiny.jpg": Route(jpeg(100, 80, seed=5)),
        "/strip.jpg": Route(jpeg(600, 160, seed=6)),
        "/noai.jpg": Route(jpeg(seed=7), headers={"X-Robots-Tag": "noai"}),
        "/redirect-private": Route(status=302, headers={"Location": "http://10.0.0.1/x.jpg"}),
        "/redirect-metadata": Route(status=301, headers={"Location": "http://169.254.169.254/latest/meta-data/"}),
        "/redirect-file": Route(status=302, headers={"Location": "file:///etc/passwd"}),
        "/huge.jpg": Route(jpeg(seed=8), headers={"Content-Length": str(10**9)}),
    }
    if port_for_redirect is not None:
        routes["/redirect-ok"] = Route(status=302, headers={"Location": f"http://127.0.0.1:{port_for_redirect}/ok.jpg"})
    return routes


# path -> the reason the fetch path must give (None: kept)
HOSTILE_EXPECTED = {
    "/ok.jpg": None,
    "/ok.png": None,
    "/ok.webp": None,
    "/stall.jpg": "fetch_error:timeout",
    "/truncated.jpg": "undecodable",
    "/bomb.png": "decompression_bomb",
    "/big-header.png": "decompression_bomb",
    "/image.svg": "format",
    "/empty.jpg": "empty_body",
    "/anim.gif": "format",
    "/anim.webp": "animated",
    "/cmyk.jpg": None,
    "/16bit.png": None,
    "/tiny.jpg": "too_small",
    "/strip.jpg": "bad_aspect",
    "/noai.jpg": "robots_noai",
    "/redirect-private": "unsafe_address",
    "/redirect-metadata": "unsafe_address",
    "/redirect-file": "unsafe_scheme",
    "/huge.jpg": "too_large",
    "/missing.jpg": "fetch_error:404",
}
