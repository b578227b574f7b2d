"""Stored image bytes -> an RGB picture, or the reason why not (one decoder, one set of reason names).

Every consumer of image bytes that the pipeline already stored (the trainer's loaders in
:mod:`models.data`, CLIP scoring in :mod:`models.scoring`, BLIP captioning, evaluation) decodes
through :func:`decode_image`, and the fetch-time checker (:mod:`curation.image_check`) names its
failures with the same constants. So one fact has one name in every stage's rejects, in the
report and in the trainer's skip counters: before, a truncated JPEG was ``undecodable`` at fetch
and ``undecodable_image`` at scoring, an oversized picture ``decompression_bomb`` and
``image_too_large``.

No torch import here (and PIL only inside the function): the Dask workers, the fetch workers and
the trainer's DataLoader workers all import this module.
"""
from __future__ import annotations

import io
import re
import warnings

from filters.config import ImageFilterConfig

# Reject/skip reasons, the same in every stage.
NO_IMAGE_BYTES = "no_image_bytes"  # a null or empty ``image`` value in a stored row
TOO_MANY_PIXELS = "decompression_bomb"  # the header claims more than ``max_pixels``: never decoded
UNDECODABLE = "undecodable"  # PIL cannot read the header or decode the data (truncated, corrupt, ...)

# The pixel budget: the image filters' default (PIL's own decompression-bomb limit), so a picture
# the fetch stage let through is never refused later for its size.
MAX_PIXELS: int = ImageFilterConfig.max_pixels


class ImageDecodeError(ValueError):
    """Bytes that do not give an RGB picture; ``reason`` is one of the reason constants above."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_image(blob: bytes | None, draft_size: int | None = None, max_pixels: int = MAX_PIXELS):
    """Decode ``blob`` to an RGB PIL image or raise :class:`ImageDecodeError`.

    The size check reads only the header, so a decompression bomb is never decoded (PIL's own
    check, which fires at twice its limit while opening, gives the same reason). ``draft_size``
    lets the JPEG decoder produce a reduced-scale image whose sides are still at least
    ``draft_size``: a 64-pixel model does not need a 640-pixel decode (3-5x faster). Palette
    images with transparency go through RGBA so PIL does not warn on every one of them.
    """
    from PIL import Image

    if not blob:
        raise ImageDecodeError(NO_IMAGE_BYTES, "empty or null image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(io.BytesIO(blob)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageDecodeError(TOO_MANY_PIXELS, f"{w}x{h} > {max_pixels} pixels")
                if draft_size and im.format == "JPEG":
                    im.draft("RGB", (draft_size, draft_size))
                im.load()
                if im.mode == "P" and "transparency" in im.info:
                    return im.convert("RGBA").convert("RGB")
                return im.convert("RGB")
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(TOO_MANY_PIXELS, _detail(exc)) from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
        raise ImageDecodeError(UNDECODABLE, _detail(exc)) from None


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _detail(exc: Exception) -> str:
    """The reject detail of a decode failure, without object addresses (PIL names the
    ``BytesIO`` it read, ``<_io.BytesIO object at 0x7f...>``), so reruns write the same rows."""
    return _ADDRESS.sub("", f"{type(exc).__name__}: {exc}")[:300]
