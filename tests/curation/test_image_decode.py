"""The one decoder of stored image bytes: reasons, draft decoding, the pixel budget, one name per fact."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
from PIL import Image

from curation.image_check import ImageChecker, Rejection
from curation.image_decode import (
    MAX_PIXELS,
    NO_IMAGE_BYTES,
    TOO_MANY_PIXELS,
    UNDECODABLE,
    ImageDecodeError,
    decode_image,
)
from filters.config import ImageFilterConfig
from tests.support import image_payloads as P


def jpeg(color=(200, 30, 30), size=(96, 72), fmt="JPEG", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


def reason_of(blob, **kw) -> str:
    with pytest.raises(ImageDecodeError) as e:
        decode_image(blob, **kw)
    return e.value.reason


def test_reasons():
    assert reason_of(None) == reason_of(b"") == NO_IMAGE_BYTES == "no_image_bytes"
    assert reason_of(b"not an image at all") == UNDECODABLE == "undecodable"
    assert reason_of(jpeg(size=(400, 300))[:300]) == UNDECODABLE  # truncated JPEG: header fine, data missing
    assert reason_of(jpeg(size=(100, 100)), max_pixels=5000) == TOO_MANY_PIXELS == "decompression_bomb"
    assert reason_of(P.png_claiming(10000, 10000)) == TOO_MANY_PIXELS  # over our budget, read from the header
    assert reason_of(P.png_claiming(50000, 50000)) == TOO_MANY_PIXELS  # PIL's own check fires while opening
    with pytest.raises(ImageDecodeError) as e:
        decode_image(jpeg(size=(100, 100)), max_pixels=5000)
    assert "100x100 > 5000" in e.value.detail and str(e.value).startswith("decompression_bomb: ")


def test_every_mode_comes_out_rgb():
    assert decode_image(jpeg()).mode == "RGB"
    pal = Image.new("P", (20, 20))
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    assert decode_image(buf.getvalue()).mode == "RGB"
    assert decode_image(jpeg(mode="L", color=128, fmt="PNG")).mode == "RGB"
    assert decode_image(P.cmyk_jpeg()).mode == "RGB"


def test_draft_decodes_jpeg_at_reduced_scale():
    big = jpeg((10, 200, 10), size=(640, 480))
    assert decode_image(big).size == (640, 480)
    small = decode_image(big, draft_size=64)
    assert min(small.size) >= 64 and small.size[0] < 640
    assert decode_image(jpeg(mode="L", color=128, fmt="PNG"), draft_size=8).size == (96, 72)  # not a JPEG: full


def test_budget_is_the_image_filters_default():
    """A picture the fetch stage let through is never refused later for its size."""
    assert MAX_PIXELS == ImageFilterConfig().max_pixels


@pytest.mark.parametrize("payload", [P.truncated_jpeg(), P.png_claiming(50000, 50000), P.png_claiming(10000, 10000)])
def test_fetch_check_and_decoder_name_a_bad_image_alike(payload):
    """The same bytes get the same reason at fetch time (image_check) and when stored bytes are decoded."""
    rejected = ImageChecker(ImageFilterConfig()).check(payload, "http://x/y")
    assert isinstance(rejected, Rejection)
    assert rejected.reason == reason_of(payload)


def test_imports_neither_torch_nor_pil():
    """Fetch workers and Dask workers import it: no torch, and PIL only when something is decoded."""
    code = "import sys, curation.image_decode; print('torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_failure_detail_is_the_same_on_every_run():
    from curation.image_decode import ImageDecodeError, decode_image

    details = set()
    for _ in range(2):
        try:
            decode_image(b"not an image at all")
        except ImageDecodeError as exc:
            details.add(exc.detail)
    assert len(details) == 1 and "0x" not in details.pop()
