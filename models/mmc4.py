"""MMC4-style documents: sentence splitting, image-to-sentence assignment, core filter, schema.

A document in MMC4's released JSONL looks like::

    {"url": ..., "text_list": [sentence, ...],
     "image_info": [{"raw_url", "image_name", "matched_text_index", "matched_sim", ...}],
     "similarity_matrix": [[...], ...]}   # CLIP cosine, rows = images, cols = sentences

:func:`build_mmc4_document` produces that schema (plus ``is_core``) from sentences, image
URLs and a similarity matrix, using :func:`models.assignment.assign`.  Only kept images
(best similarity >= ``min_sim``) appear in ``image_info`` and ``similarity_matrix``.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np

from models.assignment import DEFAULT_MIN_SIM, assign

__all__ = [
    "CORE_MIN_SENTENCES",
    "CORE_MAX_SENTENCES",
    "CORE_MIN_IMAGES",
    "CORE_MAX_IMAGES",
    "CORE_SIM_THRESHOLD",
    "CORE_MIN_FRACTION_ABOVE",
    "split_sentences",
    "image_name",
    "build_mmc4_document",
    "is_core",
    "mmc4_arrow_schema",
]

# MMC4 "core" subset rules (inclusive bounds; similarity strictly above the threshold).
CORE_MIN_SENTENCES = 4
CORE_MAX_SENTENCES = 40
CORE_MIN_IMAGES = 2
CORE_MAX_IMAGES = 15
CORE_SIM_THRESHOLD = 0.25
CORE_MIN_FRACTION_ABOVE = 0.75

# ---------------------------------------------------------------------------------------
# Sentence splitting (rule based, no nltk data download)
# ---------------------------------------------------------------------------------------

# Lower-cased abbreviations (without the final dot) that never end a sentence.
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms mx dr prof sr jr st mt ft rev gen col capt lt sgt hon gov sen rep pres
    e.g eg i.e ie cf vs v viz al approx ca fig figs eq eqs no nos vol vols pp p ch sec
    dept univ inc ltd co corp bros est jan feb mar apr jun jul aug sep sept oct nov dec
    u.s u.k u.s.a a.m p.m ph.d m.d b.a m.a d.c
    """.split()
)
# Abbreviations that may legitimately end a sentence when the next word is capitalised.
_TERMINAL_ABBREVIATIONS = frozenset({"etc", "inc", "ltd", "co", "corp", "a.m", "p.m"})

# A candidate boundary: terminal punctuation, optional closing quotes/brackets, whitespace.
_BOUNDARY = re.compile(r"""([.!?\u2026]+)(["'\u2019\u201d)\]]*)(\s+)""")
_NEXT_START = re.compile(r"""["'\u2018\u201c(\[]*[A-Z0-9\u00C0-\u024F]""")
_WORD_BEFORE = re.compile(r"(\S+)$")
_NEWLINES = re.compile(r"\s*\n\s*\n\s*|\s*\n\s*(?=\S)")


def _is_boundary(text: str, m: re.Match) -> bool:
    punct = m.group(1)
    rest = text[m.end():]
    if not rest:
        return True
    if not _NEXT_START.match(rest):
        return False  # next word starts lower-case (or with a symbol): not a new sentence
    if punct != ".":
        return True  # "!", "?", "...", "?!" followed by a capitalised word
    before = _WORD_BEFORE.search(text, 0, m.start())
    if before is None:
        return True
    word = before.group(1).lstrip("\"'(\u2018\u201c[")
    low = word.lower()
    if low in _ABBREVIATIONS and low not in _TERMINAL_ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isalpha() and word.isupper():
        return False  # an initial: "J. K. Rowling"
    if re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", word) and low not in _TERMINAL_ABBREVIATIONS:
        return False  # dotted acronym / abbreviation: "e.g", "i.e", "Ph.D"
    return True


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences with simple rules (no model download).

    A sentence ends at ``.``, ``!``, ``?`` or an ellipsis (plus closing quotes/brackets)
    followed by whitespace and a capitalised word, digit or opening quote — except after a
    known abbreviation ("Dr.", "e.g.", "Fig.", "vs.") or a single-letter initial.  Decimals
    ("3.14") and URLs never split because a boundary needs whitespace after the dot.  Line
    breaks always end a sentence.  Whitespace inside a sentence is collapsed.
    """
    if not text:
        return []
    sentences: list[str] = []
    for block in _NEWLINES.split(text):
        block = block.strip()
        if not block:
            continue
        start = 0
        for m in _BOUNDARY.finditer(block):
            if _is_boundary(block, m):
                piece = block[start:m.end(2)]
                start = m.end()
                piece = " ".join(piece.split())
                if piece:
                    sentences.append(piece)
        tail = " ".join(block[start:].split())
        if tail:
            sentences.append(tail)
    return sentences


# ---------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------

_IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff", "svg", "avif"}


def image_name(raw_url: str, content: bytes | None = None) -> str:
    """MMC4-style image file name: 12 hex digits of a SHA-256 plus the URL's extension.

    MMC4 names look like ``95d37b64235d.jpg``; the released names are not a hash of the
    URL (checked: not SHA-256/SHA-1/MD5 of ``raw_url``), presumably of the downloaded
    bytes, so pass ``content`` when you have the image and the URL is hashed otherwise.
    The extension is the URL path's, lower-cased, when it is an image extension, else ``jpg``.
    """
    digest = hashlib.sha256(content if content is not None else raw_url.encode("utf-8")).hexdigest()[:12]
    path = urlsplit(raw_url).path
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    if ext not in _IMAGE_EXTENSIONS:
        ext = "jpg"
    return f"{digest}.{ext}"


def build_mmc4_document(
    url: str,
    sentences: Sequence[str],
    image_urls: Sequence[str],
    similarity: np.ndarray,
    min_sim: float = DEFAULT_MIN_SIM,
) -> dict:
    """Assemble one MMC4 document from sentences, image URLs and their similarity matrix.

    ``similarity`` is (len(image_urls) x len(sentences)).  Images are assigned with
    :func:`models.assignment.assign`; dropped images (best similarity < ``min_sim``) are
    left out of ``image_info`` and ``similarity_matrix`` (whose rows follow ``image_info``).
    Returns ``{url, text_list, image_info, similarity_matrix, is_core}``.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.size == 0:
        sim = sim.reshape(len(image_urls), len(sentences))
    if sim.shape != (len(image_urls), len(sentences)):
        raise ValueError(
            f"similarity shape {sim.shape} != (images={len(image_urls)}, sentences={len(sentences)})"
        )
    assignment = assign(sim, min_sim=min_sim)
    image_info: list[dict] = []
    rows: list[list[float]] = []
    for i, (raw_url, s) in enumerate(zip(image_urls, assignment)):
        if s is None:
            continue
        image_info.append(
            {
                "raw_url": raw_url,
                "image_name": image_name(raw_url),
                "matched_text_index": int(s),
                "matched_sim": float(sim[i, s]),
            }
        )
        rows.append([float(x) for x in sim[i]])
    doc = {
        "url": url,
        "text_list": list(sentences),
        "image_info": image_info,
        "similarity_matrix": rows,
    }
    doc["is_core"] = is_core(doc)
    return doc


def is_core(doc: Mapping) -> bool:
    """MMC4 core rules: 4-40 sentences, 2-15 images, >= 75% of matched sims above 0.25."""
    n_sent = len(doc.get("text_list") or [])
    images = doc.get("image_info") or []
    if not (CORE_MIN_SENTENCES <= n_sent <= CORE_MAX_SENTENCES):
        return False
    if not (CORE_MIN_IMAGES <= len(images) <= CORE_MAX_IMAGES):
        return False
    sims = [float(im["matched_sim"]) for im in images]
    above = sum(1 for x in sims if not math.isnan(x) and x > CORE_SIM_THRESHOLD)
    return above >= CORE_MIN_FRACTION_ABOVE * len(sims)


def mmc4_arrow_schema():
    """PyArrow schema for writing :func:`build_mmc4_document` output to Parquet."""
    import pyarrow as pa

    image = pa.struct(
        [
            pa.field("raw_url", pa.string()),
            pa.field("image_name", pa.string()),
            pa.field("matched_text_index", pa.int32()),
            pa.field("matched_sim", pa.float32()),
        ]
    )
    return pa.schema(
        [
            pa.field("url", pa.string()),
            pa.field("text_list", pa.list_(pa.string())),
            pa.field("image_info", pa.list_(image)),
            pa.field("similarity_matrix", pa.list_(pa.list_(pa.float32()))),
            pa.field("is_core", pa.bool_()),
        ]
    )
