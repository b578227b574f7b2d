"""How a document is laid out, and cutting positions out of it (used by the dedup and images stages).

A DOCUMENTS row is three aligned lists: ``texts[i]`` and ``images[i]`` (exactly one of the two
is set at a text or image position) and ``metadata[i]`` (a JSON list: ``None`` at text
positions, the image's attributes at image positions). A text position holds the paragraphs
between two images joined by :data:`PARAGRAPH_SEP`, and extract never writes two text positions
in a row (it joins them, with the same separator).

Dedup removes boilerplate paragraphs and images, the images stage removes images it did not
keep; both go through :func:`cut_positions`, so the three lists stay aligned and the text
positions that become neighbours are joined exactly as extract would have written them.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

PARAGRAPH_SEP = "\n\n"  # between the paragraphs of one text position (a blank line)
WHOLE_POSITION = -1  # in a drop set: remove the whole position, not one of its paragraphs

T = TypeVar("T", str, bytes)


def load_metadata(raw: str | None) -> list | None:
    """A document's ``metadata`` JSON as a list, or None when it is missing or not JSON
    (:func:`cut_positions` then rebuilds a minimal aligned one)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def cut_positions(texts: Sequence[T | None], images: Sequence[str | None], metadata: Any,
                  drop: Mapping[int, Collection[int]]) -> tuple[list[T | None], list[str | None], list]:
    """Cut dropped positions and paragraphs out of one document, keeping the three lists aligned.

    ``drop`` maps a position to the paragraph indices to remove from it (:data:`WHOLE_POSITION`:
    the whole position). Texts may be ``str`` or ``bytes`` (dedup keeps them as bytes, never
    decoded, so bytes that are not UTF-8 pass through). A text position left without paragraphs
    disappears; text positions that become neighbours (the image between them was dropped) are
    joined with :data:`PARAGRAPH_SEP`. ``metadata`` that is not a list as long as ``texts``
    (unparsable JSON, a truncated list) is rebuilt as ``{"src": url}`` at image positions.
    """
    n = min(len(texts), len(images))
    if not isinstance(metadata, list) or len(metadata) != len(texts):
        metadata = [None if im is None else {"src": im} for im in images]
    out_t: list[T | None] = []
    out_i: list[str | None] = []
    out_m: list = []
    for pos in range(n):
        d = drop.get(pos)
        if d is not None and WHOLE_POSITION in d:
            continue
        t = texts[pos]
        if t is not None:
            sep = PARAGRAPH_SEP.encode() if isinstance(t, bytes) else PARAGRAPH_SEP
            if d:
                parts = [q for k, q in enumerate(t.split(sep)) if k not in d]
                if not parts:
                    continue
                t = sep.join(parts)
            if out_t and out_t[-1] is not None:
                out_t[-1] = out_t[-1] + sep + t
                continue
        out_t.append(t)
        out_i.append(images[pos])
        out_m.append(metadata[pos])
    return out_t, out_i, out_m


def drop_images(images: Sequence[str | None], keep: Collection[int]) -> dict[int, set[int]]:
    """The drop map that removes every image position not in ``keep`` (text positions stay)."""
    return {pos: {WHOLE_POSITION} for pos, im in enumerate(images) if im is not None and pos not in keep}
