"""The worker-side image check: hostile bodies are rejections with reasons, never exceptions."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from curation.image_check import CheckedImage, ImageChecker, Rejection
from filters.config import ImageFilterConfig
from tests.support import image_payloads as P

CHECK = ImageChecker(ImageFilterConfig())


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"", "empty_body"),
        (P.truncated_jpeg(), "undecodable"),
        (P.png_claiming(50000, 50000), "decompression_bomb"),  # refused by PIL's header check
        (P.png_claiming(10000, 10000), "decompression_bomb"),  # refused by our pixel budget
        (P.png_claiming(0, 0), "undecodable"),
        (P.jpeg()[:20], "undecodable"),
        (P.SVG, "format"),
        (b"<!DOCTYPE html><html><body>Not found</body></html>", "format"),
        (b"\x00\x01garbage" * 50, "format"),
        (P.animated_gif(), "format"),
        (P.animated_webp(), "animated"),
        (P.jpeg(100, 80), "too_small"),
        (P.jpeg(600, 160), "bad_aspect"),
        (P.encode(P.scene(300, 240).convert("P"), "GIF"), "format"),
        (P.encode(P.scene(300, 240), "BMP"), "format"),
    ],
)
def test_hostile_bodies_are_rejected_with_reason(payload, reason):
    result = CHECK.check(payload, "http://x/y")
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result
    assert result.message().startswith(reason)


def test_svg_is_named_in_detail():
    assert CHECK.check(P.SVG).detail == "svg"


def test_too_large_body():
    small = ImageChecker(ImageFilterConfig(max_bytes=1000))
    assert small.check(P.jpeg(400, 300)).reason == "too_large"


@pytest.mark.parametrize("payload,fmt", [(P.jpeg(), "jpeg"), (P.png(), "png"), (P.webp(), "webp")])
def test_good_images_keep_original_bytes(payload, fmt):
    result = CHECK.check(payload)
    assert isinstance(result, CheckedImage)
    assert bytes(result) == payload
    assert (result.format, result.width, result.height) == (fmt, 300, 240)
    assert result.sha256 == hashlib.sha256(payload).hexdigest()
    assert result.reencoded is None


def test_cmyk_jpeg_is_kept_and_decodes_to_rgb():
    payload = P.cmyk_jpeg()
    result = CHECK.check(payload)
    assert isinstance(result, CheckedImage) and bytes(result) == payload
    assert Image.open(io.BytesIO(bytes(result))).convert("RGB").size == (320, 240)


def test_16bit_png_is_reencoded_to_8bit_scaled():
    result = CHECK.check(P.png_16bit())
    assert isinstance(result, CheckedImage)
    assert result.reencoded == "I;16->L" and result.format == "png"
    im = Image.open(io.BytesIO(bytes(result)))
    assert im.mode == "L"
    arr = np.asarray(im)
    assert arr.min() == 0 and arr.max() == 255  # scaled, not clipped to 255 everywhere
    kept_as_is = ImageChecker(ImageFilterConfig(), normalize_high_bit_depth=False).check(P.png_16bit())
    assert isinstance(kept_as_is, CheckedImage) and kept_as_is.reencoded is None


def test_phash_is_the_full_image_hash():
    from filters.image import phash

    payload = P.jpeg(1600, 1200, seed=9)
    assert CHECK.check(payload).phash == phash(Image.open(io.BytesIO(payload)))
