"""PIL rendering of the sample's images: shape scenes (content) and page furniture.

A content image shows ``count`` (1-4) non-overlapping objects of one shape and
one colour on a plain or lightly textured background, so its true caption
("three red circles on a white background") is exact and learnable by a small
model. Colours get a little jitter and shapes a little rotation/size variation.
"""
from __future__ import annotations

import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw

from curation.sample.text import Scene

COLOUR_RGB = {
    "red": (215, 35, 35), "green": (35, 155, 55), "blue": (35, 75, 210),
    "yellow": (240, 205, 25), "purple": (130, 45, 170), "orange": (245, 135, 25),
}
BACKGROUND_RGB = {"white": (248, 248, 248), "black": (18, 18, 18), "grey": (128, 128, 128), "beige": (228, 214, 182)}

_FORMAT_EXT = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}


def ext_of(fmt: str) -> str:
    return _FORMAT_EXT[fmt]


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, offset: float) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(offset + 2 * math.pi * k / n), cy + radius * math.sin(offset + 2 * math.pi * k / n))
                for k in range(n)]

    if shape == "square":
        return ring(4, r, math.pi / 4 + rot)
    if shape == "triangle":
        return ring(3, r, -math.pi / 2 + rot)
    if shape == "hexagon":
        return ring(6, r, rot)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2 + rot), ring(5, r * 0.42, -math.pi / 2 + math.pi / 5 + rot)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, b = r, r * 0.34
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    raise ValueError(shape)


def render_scene(rng: random.Random, scene: Scene, width: int, height: int, textured: bool = False) -> Image.Image:
    """Draw ``scene`` at ``width`` x ``height``."""
    bg = _jitter(BACKGROUND_RGB[scene.background], rng, 6)
    if textured:
        arr = np.empty((height, width, 3), dtype=np.int16)
        arr[:] = bg
        nrng = np.random.default_rng(rng.getrandbits(32))
        arr += nrng.integers(-9, 10, size=(height, width, 1), dtype=np.int16)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    else:
        img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    side = min(width, height)
    n = scene.count
    base = {1: 0.30, 2: 0.20, 3: 0.16, 4: 0.14}[n]
    fill = _jitter(COLOUR_RGB[scene.colour], rng, 14)
    placed: list[tuple[float, float, float]] = []
    for _ in range(n):
        for attempt in range(400):
            r = side * base * rng.uniform(0.8, 1.15) * (0.97 ** (attempt // 50))
            cx = rng.uniform(r + 4, width - r - 4)
            cy = rng.uniform(r + 4, height - r - 4)
            if all(math.hypot(cx - x, cy - y) > r + rr + 6 for x, y, rr in placed):
                break
        placed.append((cx, cy, r))
        if scene.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_polygon(scene.shape, cx, cy, r, rng.uniform(-0.25, 0.25)), fill=fill)
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    """Deterministic bytes of ``img`` in ``fmt`` (jpeg | png | webp | gif)."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.convert("RGB").save(buf, "JPEG", quality=88)
    elif fmt == "png":
        img.save(buf, "PNG", optimize=False)
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=85, method=0)
    elif fmt == "gif":
        img.save(buf, "GIF")
    else:
        raise ValueError(fmt)
    return buf.getvalue()


def render_logo(rng: random.Random, label: str, width: int = 120, height: int = 40) -> Image.Image:
    img = Image.new("RGB", (width, height), _jitter((30, 40, 60), rng, 30))
    d = ImageDraw.Draw(img)
    d.rectangle([3, 3, height - 4, height - 4], fill=_jitter((240, 240, 240), rng, 10))
    d.text((height + 2, height // 2 - 6), label[:12], fill=(255, 255, 255))
    return img


def render_icon(rng: random.Random, size: int) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([0, 0, size - 1, size - 1], radius=max(2, size // 5), fill=_jitter((60, 90, 160), rng, 60) + (255,))
    d.line([size // 4, size // 2, 3 * size // 4, size // 2], fill=(255, 255, 255, 255), width=max(1, size // 8))
    return img


def render_pixel() -> Image.Image:
    return Image.new("RGB", (1, 1), (255, 255, 255))


def render_sponsor(rng: random.Random, width: int, height: int, label: str) -> Image.Image:
    img = Image.new("RGB", (width, height), _jitter((250, 230, 120), rng, 5))
    d = ImageDraw.Draw(img)
    for k in range(0, width, 24):
        d.line([k, 0, k + height, height], fill=_jitter((230, 200, 90), rng, 5), width=6)
    d.rectangle([10, 10, width - 11, height - 11], outline=(40, 40, 40), width=3)
    d.text((24, height // 2 - 6), label, fill=(20, 20, 20))
    return img
