"""Shared pieces of the text filters: the per-text view, the filter interface, word lists.

Word splitting and normalisation follow OBELICS
(huggingface/OBELICS, ``obelics/processors/web_document_filtering.py``,
``FilteringFunctions.standardize_whitespace`` / ``split_on_whitespace`` /
``strip`` / ``get_words_from_text``):

* whitespace standardisation: exotic Unicode spaces (and U+FFFC) become ``" "``;
  OBELICS runs it on every text node before splitting paragraphs
  (``cond_standardize_whitespace: True``);
* words: split on ``" "``, ``"\\n"`` and ``"\\t"`` only (not on ``\\r``, NBSP...),
  drop empty pieces, lower-case, strip OBELICS's special characters from both
  ends of each piece, drop the pieces that became empty.

The word lists (stopwords, flagged words, special characters) are copies of
OBELICS's ``obelisc/utils/filtering_utils.py`` kept in ``filters/resources/``.
"""
from __future__ import annotations

import importlib.resources
import importlib.resources.abc
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

FilterResult = bool | tuple[bool, str]

# Read through importlib.resources, not a filesystem path: on a Spark cluster the package is
# imported from the zip that curation/spark.py ships with addPyFile.
RESOURCES = importlib.resources.files(__package__ or "filters") / "resources"


# --------------------------------------------------------------------------- word lists


def load_word_list(path: str | Path) -> frozenset[str]:
    """One entry per line; blank lines and lines starting with ``#`` are skipped; entries lower-cased.

    A ``.json`` file holding a list (or a mapping, whose keys are used) is accepted too, which is
    the format of OBELICS's ``common_words.json``.
    """
    path = path if isinstance(path, importlib.resources.abc.Traversable) else Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        import json

        data = json.loads(text)
        return frozenset(str(w).lower() for w in data)
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _load_code_points(path: Path) -> frozenset[str]:
    chars = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        token = line.split("\t", 1)[0].strip()
        chars.add(chr(int(token.removeprefix("U+"), 16)))
    return frozenset(chars)


@lru_cache(maxsize=None)
def stopwords() -> frozenset[str]:
    """OBELICS's English stopwords (``STOPWORDS``)."""
    return load_word_list(RESOURCES / "stopwords_en.txt")


@lru_cache(maxsize=None)
def flagged_words() -> frozenset[str]:
    """OBELICS's English flagged (adult) words (``FLAGGED_WORDS``)."""
    return load_word_list(RESOURCES / "flagged_words_en.txt")


@lru_cache(maxsize=None)
def special_characters() -> frozenset[str]:
    """OBELICS's ``SPECIAL_CHARACTERS``: punctuation, digits, whitespace, symbols and emoji."""
    return _load_code_points(RESOURCES / "special_characters.txt")


# OBELICS's PUNCTUATION set (used only by the punctuation ratio).
PUNCTUATION = frozenset({",", ";", ":", "?", "!", "."})

# Characters ``standardize_whitespace`` maps to " ": every Unicode space separator (category Zs)
# plus U+FFFC (object replacement character), as in OBELICS's list.
_EXOTIC_SPACES = [0x00A0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000, 0xFFFC]
_WHITESPACE_TABLE = dict.fromkeys(_EXOTIC_SPACES, " ")
_WHITESPACE_CHARS = "".join(map(chr, _WHITESPACE_TABLE))
_HAS_EXOTIC_WHITESPACE = re.compile(f"[{re.escape(_WHITESPACE_CHARS)}]")
_WORD_SPLIT = re.compile(r"[ \n\t]+")


def standardize_whitespace(text: str) -> str:
    """Replace exotic Unicode spaces by ``" "`` (OBELICS ``standardize_whitespace``)."""
    if _HAS_EXOTIC_WHITESPACE.search(text) is None:  # the common case: nothing to copy
        return text
    return text.translate(_WHITESPACE_TABLE)


class _Splitter:
    """Precomputed state of :func:`split_words` (built once per process)."""

    def __init__(self) -> None:
        specials = special_characters()
        self.specials = specials
        self.strip_chars = "".join(sorted(specials))


@lru_cache(maxsize=None)
def _splitter() -> _Splitter:
    return _Splitter()


def split_words(text: str) -> list[str]:
    """OBELICS ``get_words_from_text(lower_case=True, strip_words=True, strip_characters=SPECIAL_CHARACTERS)``."""
    sp = _splitter()
    specials = sp.specials
    strip_chars = sp.strip_chars
    words = []
    append = words.append
    for token in _WORD_SPLIT.split(text.lower()):
        if not token:
            continue
        if token[0] in specials or token[-1] in specials:
            token = token.strip(strip_chars)
            if not token:
                continue
        append(token)
    return words


# --------------------------------------------------------------------------- view and interface


@dataclass
class TextView:
    """A paragraph or a document, analysed once and shared by every filter.

    ``text`` is whitespace-standardised; ``words`` is the OBELICS word split of it.
    ``lang``/``lang_score`` are filled by the pipeline (fastText) before the language filter.
    """

    text: str
    words: list[str]
    n_images: int = 0
    lang: str | None = None
    lang_score: float | None = None

    @classmethod
    def of(cls, text: str, n_images: int = 0) -> "TextView":
        text = standardize_whitespace(text or "")
        return cls(text=text, words=split_words(text), n_images=n_images)


class TextFilter(ABC):
    """One rule. ``filter`` returns True to keep, or ``(False, reason)`` to reject.

    ``name`` is the rejection reason. Filters with two sides (too few / too many) list every
    reason they can emit in ``reasons``; a bare ``False`` means ``name``.
    """

    name: ClassVar[str]
    reasons: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def all_reasons(cls) -> tuple[str, ...]:
        return cls.reasons or (cls.name,)

    @abstractmethod
    def filter(self, view: TextView) -> FilterResult:
        raise NotImplementedError

    def reject(self, reason: str | None = None) -> tuple[bool, str]:
        return False, reason or self.name

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def run_filters(filters: Iterable[TextFilter], view: TextView) -> str | None:
    """Apply ``filters`` in order; return the first rejection reason, or None when all keep."""
    for f in filters:
        result = f.filter(view)
        if result is True:
            continue
        if isinstance(result, tuple):
            keep, reason = result
            if not keep:
                return reason or f.name
        elif not result:
            return f.name
    return None
