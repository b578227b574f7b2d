"""Fetched bytes -> a checked image (format, size, pHash, bytes to store) or a rejection reason.

Runs in the fetch workers, right after img2dataset downloaded a body (see
:mod:`curation.fetch`), so decoding happens in parallel and a bad image never
reaches the driver. Order, cheapest and safest first:

1. empty body (``empty_body``), body over ``max_bytes`` (``too_large``);
2. the header only (``PIL.Image.open`` decodes no pixel): an unknown or
   unsupported format (``format``; SVG, HTML error pages, ...), then the header
   rules of :func:`filters.image.header_filters`: format, pixel count before
   any decoding (``decompression_bomb``: a PNG claiming 50000x50000 never gets a
   buffer), both sides (``too_small``/``too_big``), aspect ratio (``bad_aspect``);
3. animation (``animated``: GIF/APNG/WebP with more than one frame);
4. a full decode (``undecodable``: truncated or corrupt data). No JPEG DCT
   scaling (``draft``): it is 3x faster but moves pHash bits (up to 4-8 of 64 on
   large images), and the near-duplicate threshold (MMC4's 5) is meant for the
   hash of the full image;
5. pHash (:func:`filters.image.phash`, bit-identical to ``imagehash.phash``) of the
   decoded pixels;
6. 16-bit grey PNGs (``I;16``) are re-encoded to 8-bit PNG, because the loaders
   (``convert("RGB")``, webdataset's ``pilrgb``) clip them to white instead of
   scaling. Everything else keeps its original bytes (CMYK JPEGs decode to RGB
   correctly).

Reasons shared with the decoder of stored bytes (``undecodable``, ``decompression_bomb``) are
:mod:`curation.image_decode`'s constants, so the report counts each under one name. This check
does not call :func:`curation.image_decode.decode_image`: it needs the header and frame count before
any pixel is decoded, and the pHash of the image in its own mode, not converted to RGB.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image

from curation.image_decode import TOO_MANY_PIXELS, UNDECODABLE
from filters.config import ImageFilterConfig
from filters.image import ImageView, first_rejection, frame_filters, header_filters, normalize_format, phash

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class CheckedImage(bytes):
    """The bytes to store, carrying what the checks learnt (passes through img2dataset's writer)."""

    format: str
    width: int
    height: int
    phash: int
    reencoded: str | None

    def __new__(cls, data: bytes, *, format: str, width: int, height: int, phash: int, reencoded: str | None = None):
        obj = super().__new__(cls, data)
        obj.format = format
        obj.width = width
        obj.height = height
        obj.phash = phash
        obj.reencoded = reencoded
        return obj

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self).hexdigest()


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str = ""

    def message(self) -> str:
        """The one-line form img2dataset stores as a sample's ``error_message``."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF87a": "gif", b"GIF89a": "gif"}


def _signature(data: bytes) -> str | None:
    """The raster format the first bytes announce, if any (a broken header of a known format)."""
    for magic, fmt in _SIGNATURES.items():
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _sniff(data: bytes) -> str:
    head = data[:256].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:2048].lower()):
        return "svg"
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "unidentified"


def _frames(im: Image.Image) -> int:
    if not getattr(im, "is_animated", False):
        return 1
    return max(2, int(getattr(im, "n_frames", 2)))


class ImageChecker:
    """Checks one body at a time; built once per worker from the filter thresholds."""

    def __init__(self, cfg: ImageFilterConfig, normalize_high_bit_depth: bool = True):
        self.max_bytes = cfg.max_bytes
        self.max_pixels = cfg.max_pixels
        self.filters = header_filters(cfg)
        self.frame_filters = frame_filters(cfg)
        self.normalize_high_bit_depth = normalize_high_bit_depth

    def check(self, data: bytes, url: str = "") -> CheckedImage | Rejection:
        if not data:
            return Rejection("empty_body", "0 bytes")
        if len(data) > self.max_bytes:
            return Rejection("too_large", f"{len(data)} bytes over {self.max_bytes}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as exc:
                return Rejection(TOO_MANY_PIXELS, str(exc)[:200])
            except Image.UnidentifiedImageError:
                known = _signature(data)
                if known:
                    return Rejection(UNDECODABLE, f"{known} signature, unreadable header")
                return Rejection("format", _sniff(data))
            except Exception as exc:  # noqa: BLE001 - any parser error is a property of the bytes
                return Rejection(UNDECODABLE, f"header: {type(exc).__name__}: {exc}"[:200])
            fmt = normalize_format(im.format)
            width, height = im.size
            view = ImageView(url=url, format=fmt, width=width, height=height)
            reason = first_rejection(self.filters, view)
            if reason is not None:
                return Rejection(reason, f"{fmt} {width}x{height}")
            try:
                view.n_frames = _frames(im)
            except Exception as exc:  # noqa: BLE001
                return Rejection(UNDECODABLE, f"frames: {type(exc).__name__}: {exc}"[:200])
            reason = first_rejection(self.frame_filters, view)
            if reason is not None:
                return Rejection(reason, f"{fmt} {view.n_frames} frames")
            try:
                im.load()
                value = phash(im)
            except Exception as exc:  # noqa: BLE001 - truncated/corrupt data, bad palettes, ...
                return Rejection(UNDECODABLE, f"{type(exc).__name__}: {exc}"[:200])
            out, reencoded = data, None
            if self.normalize_high_bit_depth and im.mode in _HIGH_BIT_DEPTH_MODES:
                out, reencoded = _to_8bit_png(im), f"{im.mode}->L"
                fmt = "png"
        return CheckedImage(out, format=fmt, width=width, height=height, phash=value, reencoded=reencoded)


def _to_8bit_png(im: Image.Image) -> bytes:
    import numpy as np

    arr = np.asarray(im, dtype=np.float64)
    scale = 257.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
    grey = Image.fromarray(np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8), "L")
    buf = io.BytesIO()
    grey.save(buf, "PNG")
    return buf.getvalue()
