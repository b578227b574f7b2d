"""Image filters of OBELICS/MMC4, one small class per rule, plus perceptual hashing and duplicate choice.

Per-image rules read an :class:`ImageView` (URL, format and header dimensions, known before
any pixel is decoded) and return True or a rejection ``(False, reason)`` with the failing value,
like every filter (:class:`filters.base.Filter`). Thresholds live in :class:`filters.config.ImageFilterConfig`; the
defaults are OBELICS's (``obelics/configs/config_filter_web_documents.yaml``: formats
jpg/jpeg/png/webp, both sides 150..20000 px, aspect ratio within [1/2, 2]) and MMC4's
(near duplicates: pHash Hamming distance <= 5).

Set-level rules (exact duplicates by sha256, near duplicates by pHash) need every image at
once, so they are functions over arrays that return, for each image, the index of the image
it duplicates (or -1). The kept image of a group is chosen deterministically: most pixels
first, then the smallest URL (:func:`preference_order`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from filters.base import Filter, FilterResult, ThresholdFilter, run_filters
from filters.config import ImageFilterConfig

# PIL format names -> the names used in config and in the ``format`` column.
_FORMAT_NAMES = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                 "TIFF": "tiff", "ICO": "ico", "AVIF": "avif", "HEIF": "heif"}
_FORMAT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff"}


def normalize_format(name: str | None) -> str | None:
    """``"JPEG"``/``"jpg"``/``"MPO"`` -> ``"jpeg"``; other names lower-cased."""
    if not name:
        return None
    upper = name.upper()
    if upper in _FORMAT_NAMES:
        return _FORMAT_NAMES[upper]
    low = name.lower()
    return _FORMAT_ALIASES.get(low, low)


@dataclass
class ImageView:
    """What the per-image rules look at: known from the URL and the image header alone."""

    url: str
    format: str | None = None
    width: int = 0
    height: int = 0
    n_frames: int = 1

    @property
    def pixels(self) -> int:
        return int(self.width) * int(self.height)


# A rule on an image's URL and header; threshold rules are ``ThresholdFilter[ImageView]``.
ImageFilter = Filter[ImageView]


# --------------------------------------------------------------------------- URL rules


def load_url_list(path: str | Path) -> list[str]:
    """One entry per line (blank lines and ``#`` comments skipped): a domain, a URL prefix or ``re:<regex>``."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


class UrlListFilter(ImageFilter):
    """Rejects URLs on a list: ``example.com`` (the domain and its subdomains), ``https://host/path``
    (a URL prefix) or ``re:<regex>`` (searched in the URL). Used for the URL banlist (``banned_url``)
    and for the opt-out list of the fetch policy (``opted_out``)."""

    name = "banned_url"

    def __init__(self, entries: Iterable[str], reason: str = "banned_url"):
        self.reason = reason
        self._domains: set[str] = set()
        self._prefixes: list[str] = []
        regexes = []
        for e in entries:
            e = e.strip()
            if not e:
                continue
            if e.startswith("re:"):
                regexes.append(e[3:])
            elif "://" in e:
                self._prefixes.append(e)
            else:
                self._domains.add(e.lower().lstrip(".").removeprefix("www."))
        self._regex = re.compile("|".join(f"(?:{r})" for r in regexes)) if regexes else None
        self._prefix_tuple = tuple(self._prefixes)

    def __len__(self) -> int:
        return len(self._domains) + len(self._prefixes) + (1 if self._regex else 0)

    def match(self, url: str) -> bool:
        if self._prefix_tuple and url.startswith(self._prefix_tuple):
            return True
        if self._domains:
            try:
                host = (urlsplit(url).hostname or "").lower()
            except ValueError:
                host = ""
            while host:
                if host in self._domains:
                    return True
                if "." not in host:
                    break
                host = host.split(".", 1)[1]
        return bool(self._regex and self._regex.search(url))

    def filter(self, view: ImageView) -> FilterResult:
        return self.reject(self.reason) if self.match(view.url) else True


# --------------------------------------------------------------------------- header rules


class FormatFilter(ImageFilter):
    """OBELICS: keep jpg/jpeg/png/webp (the decoded format, not the URL's extension)."""

    name = "format"

    def __init__(self, formats: Iterable[str]):
        self.formats = frozenset(normalize_format(f) for f in formats)

    def filter(self, view: ImageView) -> FilterResult:
        return True if view.format in self.formats else self.reject(detail=f"format {view.format}")


class PixelCountFilter(ThresholdFilter[ImageView]):
    """Decompression bombs: refuse before decoding when the header claims more than ``max_pixels``."""

    name = "decompression_bomb"
    measure = "pixels"
    bound = "maximum"

    def score(self, view: ImageView) -> int:
        return view.pixels


class SideFilter(ImageFilter):
    """OBELICS: both sides within [min_side, max_side] pixels."""

    name = "side"
    reasons = ("too_small", "too_big")

    def __init__(self, min_side: int, max_side: int):
        self.min_side = min_side
        self.max_side = max_side

    def filter(self, view: ImageView) -> FilterResult:
        short, long = min(view.width, view.height), max(view.width, view.height)
        if short < self.min_side:
            return self.reject("too_small", f"shorter side {short} < {self.min_side}")
        if long > self.max_side:
            return self.reject("too_big", f"longer side {long} > {self.max_side}")
        return True


class AspectRatioFilter(ThresholdFilter[ImageView]):
    """OBELICS: width / height within [min_ratio, max_ratio]; no height fails."""

    name = "bad_aspect"
    measure = "aspect ratio"

    def __init__(self, min_ratio: float, max_ratio: float):
        self.minimum, self.maximum = min_ratio, max_ratio

    def score(self, view: ImageView) -> float | None:
        return view.width / view.height if view.height > 0 else None


class AnimatedFilter(ThresholdFilter[ImageView]):
    """Animated images (GIF, APNG, animated WebP) are not one picture a caption can describe."""

    name = "animated"
    measure = "frames"
    bound = "maximum"

    def __init__(self) -> None:
        super().__init__(1)

    def score(self, view: ImageView) -> int:
        return view.n_frames


def url_filters(cfg: ImageFilterConfig) -> list[ImageFilter]:
    """Rules that need only the URL (run before any request)."""
    if cfg.url_banlist_file:
        return [UrlListFilter(load_url_list(cfg.url_banlist_file), "banned_url")]
    return []


def header_filters(cfg: ImageFilterConfig) -> list[ImageFilter]:
    """Rules on format and header dimensions, in the order they run (before decoding)."""
    return [
        FormatFilter(cfg.formats),
        PixelCountFilter(cfg.max_pixels),
        SideFilter(cfg.min_side, cfg.max_side),
        AspectRatioFilter(cfg.min_aspect_ratio, cfg.max_aspect_ratio),
    ]


def frame_filters(cfg: ImageFilterConfig) -> list[ImageFilter]:
    """Rules on the frame count, run once the header rules passed (counting GIF frames walks the file)."""
    return [AnimatedFilter()]


# The first rejection reason of the rules on a view, or None (the name ``curation.image_check`` uses).
first_rejection = run_filters


# --------------------------------------------------------------------------- perceptual hash

PHASH_SIZE = 8
_PHASH_SIDE = PHASH_SIZE * 4  # imagehash's highfreq_factor=4


def _dct_matrix(n: int, k: int) -> np.ndarray:
    # Unnormalised DCT-II as scipy.fftpack.dct(type=2): y[k] = 2 * sum_n x[n] cos(pi k (2n+1) / 2N)
    ks = np.arange(k)[:, None]
    ns = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * ks * (2 * ns + 1) / (2 * n))


_DCT = _dct_matrix(_PHASH_SIDE, PHASH_SIZE)
_BIT_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64))


def phash_input(im: Image.Image) -> np.ndarray:
    """``im`` as the 32x32 grey float array pHash transforms (16-bit and float images scaled to 0..255)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0
        grey = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    else:
        grey = im.convert("L")
    return np.asarray(grey.resize((_PHASH_SIDE, _PHASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)


def phash_arrays(pixels: np.ndarray) -> np.ndarray:
    """pHash of a batch of 32x32 grey arrays ``(n, 32, 32)`` -> ``uint64`` per image.

    Same bits as ``imagehash.phash`` (DCT of rows and columns, the 8x8 lowest frequencies
    compared with their median, first bit most significant), one matrix product per batch.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    # rounded so float noise around exact zeros (flat images) does not flip bits
    low = np.round(np.einsum("kn,bnm,lm->bkl", _DCT, pixels, _DCT), 6)
    flat = low.reshape(len(low), -1)
    med = np.median(flat, axis=1, keepdims=True)
    bits = (flat > med).astype(np.uint64)
    return (bits * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


def phash(im: Image.Image) -> int:
    """pHash of one image as an int (hex it with :func:`phash_hex`)."""
    return int(phash_arrays(phash_input(im)[None])[0])


def phash_hex(value: int) -> str:
    return f"{int(value):016x}"


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


# --------------------------------------------------------------------------- duplicates


def preference_order(pixels: Sequence[int], urls: Sequence[str]) -> list[int]:
    """Indices from the image to keep first to the last: most pixels, then the smallest URL."""
    return sorted(range(len(urls)), key=lambda i: (-int(pixels[i]), urls[i]))


def exact_duplicates(digests: Sequence[str], order: Sequence[int]) -> np.ndarray:
    """For each image, the index of the earlier (in ``order``) image with the same digest, else -1."""
    out = np.full(len(digests), -1, dtype=np.int64)
    first: dict[str, int] = {}
    for i in order:
        keeper = first.setdefault(digests[i], i)
        if keeper != i:
            out[i] = keeper
    return out


def phash_band_values(hashes: np.ndarray, n_bands: int) -> np.ndarray:
    """The 64-bit hashes cut into ``n_bands`` contiguous bit bands, shape (n, n_bands), uint64.

    The pigeonhole index of pHash near-duplicates (within a run here, across snapshots in
    pipelines/dedup_state.py): two hashes within ``n_bands - 1`` bits agree on at least one band.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    edges = np.linspace(0, 64, n_bands + 1).astype(int)
    cols = [(hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:])]
    return np.stack(cols, axis=1) if len(hashes) else np.zeros((0, n_bands), np.uint64)


def near_duplicates(hashes: np.ndarray, order: Sequence[int], max_distance: int) -> np.ndarray:
    """For each image, the index of a kept image within ``max_distance`` bits (pHash), else -1.

    Images are visited in ``order``; one is kept unless it is within the distance of an image
    already kept, so the kept set never holds two near duplicates and a chain a~b~c does not
    merge a and c. Candidates come from a pigeonhole index: split 64 bits into
    ``max_distance + 1`` bands; two hashes within the distance agree on at least one band.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    out = np.full(len(hashes), -1, dtype=np.int64)
    if max_distance < 0 or len(hashes) == 0:
        return out
    n_bands = max_distance + 1
    if n_bands > 16:  # bands too narrow to index: compare against every kept hash
        kept: list[int] = []
        for i in order:
            if kept:
                d = hamming(hashes[kept], hashes[i])
                j = int(np.argmin(d))
                if d[j] <= max_distance:
                    out[i] = kept[j]
                    continue
            kept.append(i)
        return out
    bands = phash_band_values(hashes, n_bands)
    index: list[dict[int, list[int]]] = [{} for _ in range(n_bands)]
    rank = np.empty(len(hashes), dtype=np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    for i in order:
        row = bands[i]
        cands: set[int] = set()
        for b in range(n_bands):
            cands.update(index[b].get(int(row[b]), ()))
        if cands:
            cand = np.fromiter(sorted(cands), dtype=np.int64)
            d = hamming(hashes[cand], hashes[i])
            ok = np.nonzero(d <= max_distance)[0]
            if len(ok):
                # the closest kept image; ties go to the one kept first (earlier in the order)
                best = min(ok, key=lambda k: (int(d[k]), int(rank[cand[k]])))
                out[i] = cand[best]
                continue
        for b in range(n_bands):
            index[b].setdefault(int(row[b]), []).append(i)
    return out
