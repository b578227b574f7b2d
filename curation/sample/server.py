"""Loopback HTTP server for the sample's images (``ImageServer(out_dir/"images")``).

A ``ThreadingHTTPServer`` in a daemon thread serving static files with the
right Content-Type; missing files get 404. Port 0 picks a free port, so tests
can run several at once; the pipeline's default sample URLs use port 8417.
"""
from __future__ import annotations

import functools
import mimetypes
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
    ".gif": "image/gif", ".html": "text/html; charset=utf-8", ".json": "application/json",
    ".jsonl": "application/jsonl", ".pdf": "application/pdf", ".svg": "image/svg+xml",
}


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **_TYPES, "": "application/octet-stream"}

    def guess_type(self, path):  # noqa: D401 - stdlib signature
        ext = os.path.splitext(str(path))[1].lower()
        return _TYPES.get(ext) or mimetypes.guess_type(str(path))[0] or "application/octet-stream"

    def list_directory(self, path):  # no directory listings
        self.send_error(404, "Not Found")
        return None

    def log_message(self, format, *args):  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class ImageServer:
    """Serve ``root_dir`` over HTTP on ``host:port`` (0 = a free port) from a daemon thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, root_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0):
        self.root_dir = os.fspath(root_dir)
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("ImageServer is not started")
        return f"http://{self.host}:{self._server.server_address[1]}/"

    def start(self) -> "ImageServer":
        if self._server is not None:
            return self
        if not os.path.isdir(self.root_dir):
            raise FileNotFoundError(f"ImageServer root is not a directory: {self.root_dir}")
        handler = functools.partial(_Handler, directory=self.root_dir)
        self._server = _Server((self.host, self.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ImageServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> "ImageServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
