"""Paragraph- and document-level text filters of OBELICS, one class per rule.

Every definition reproduces ``FilteringFunctions`` of huggingface/OBELICS
``obelics/processors/web_document_filtering.py``; the thresholds (in ``filters.config``) are those
of ``obelisc/configs/config_filter_web_documents.yaml``. Each filter reads a :class:`TextView`
(text and OBELICS word split computed once) and returns True or ``(False, reason)``.

Not implemented: OBELICS's KenLM perplexity filter (``check_perplexity_score``, doc-level max 1500
with the edugp/kenlm Wikipedia ``en`` model + SentencePiece). The model cannot be fetched offline
and ``kenlm`` does not build here, so that rule is skipped.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Iterable
from heapq import nlargest
from itertools import islice
from typing import ClassVar

import numpy as np

from filters.base import (
    PUNCTUATION,
    FilterResult,
    TextFilter,
    TextView,
    flagged_words,
    special_characters,
    stopwords,
)

# --------------------------------------------------------------------------- metrics


# Above this many characters the n-gram counting is done with numpy on 64-bit rolling hashes
# (5x faster on a 10k-character document; equal to exact counting unless two distinct n-grams
# of one text collide in 64 bits).
_NUMPY_MIN_CHARS = 1024
_HASH_BASE = np.uint64(1_000_003)


def _char_ngram_counts(text: str, n: int, total: int):
    if len(text) < _NUMPY_MIN_CHARS:
        return list(Counter(map(text.__getitem__, map(slice, range(total), range(n, total + n)))).values())
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    hashes = codes[:total].copy()
    for i in range(1, n):
        hashes *= _HASH_BASE
        hashes += codes[i : i + total]
    return np.unique(hashes, return_counts=True)[1]


def character_repetition_ratio(text: str, n: int) -> float:
    """OBELICS ``compute_character_repetition_ratio``.

    Count the character n-grams of ``text`` (case kept); take the ``k = min(floor(sqrt(#distinct)),
    #distinct - #seen-once)`` most frequent ones; ratio = their occurrences / all n-gram occurrences.
    """
    total = len(text) - n + 1
    if total <= 0:
        return 0.0
    freqs = _char_ngram_counts(text, n, total)
    distinct = len(freqs)
    if isinstance(freqs, np.ndarray):
        seen_once = int(np.count_nonzero(freqs == 1))
        k = min(math.isqrt(distinct), distinct - seen_once)
        return float(np.partition(freqs, distinct - k)[distinct - k :].sum()) / total if k > 0 else 0.0
    seen_once = sum(1 for f in freqs if f == 1)
    k = min(math.isqrt(distinct), distinct - seen_once)
    return sum(nlargest(k, freqs)) / total if k > 0 else 0.0


def word_repetition_ratio(words: list[str], n: int) -> float:
    """OBELICS ``compute_word_repetition_ratio``: share of word n-gram occurrences whose n-gram occurs more than once."""
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    counts = Counter(zip(*(islice(words, i, None) for i in range(n))))
    return sum(f for f in counts.values() if f > 1) / total


def _delete_table(chars: Iterable[str]) -> dict[int, None]:
    return dict.fromkeys(map(ord, chars))


_SPECIAL_DELETE: dict[int, None] | None = None


def special_character_ratio(text: str) -> float:
    """OBELICS ``compute_special_character_ratio``: characters of ``text`` in SPECIAL_CHARACTERS / len(text)."""
    global _SPECIAL_DELETE
    if not text:
        return 0.0
    if _SPECIAL_DELETE is None:
        _SPECIAL_DELETE = _delete_table(special_characters())
    return (len(text) - len(text.translate(_SPECIAL_DELETE))) / len(text)


def word_set_ratio(words: list[str], vocabulary: Collection[str]) -> float:
    """Share of ``words`` that are in ``vocabulary`` (OBELICS stopword / flagged / common word ratios)."""
    if not words:
        return 0.0
    return sum(1 for w in words if w in vocabulary) / len(words)


# ``[\w']+|[<punctuation>]`` as in OBELICS compute_punctuation_ratio.
_PUNCT_TOKENS = re.compile(r"[\w']+|[" + re.escape("".join(sorted(PUNCTUATION))) + "]")


def punctuation_ratio(text: str, min_tokens: int = -1) -> float:
    """OBELICS ``compute_punctuation_ratio``.

    Tokens are ``[\\w']+`` runs and single marks of ``, ; : ? ! .``; ratio = marks / tokens.
    With ``min_tokens > 0`` a text of fewer tokens gets 1.0 (too short to judge by punctuation).
    """
    n_tokens = sum(1 for _ in _PUNCT_TOKENS.finditer(text))
    if n_tokens == 0:
        return 0.0
    if 0 < min_tokens and n_tokens < min_tokens:
        return 1.0
    # Marks are never part of a [\w']+ run, so every occurrence in the text is one token.
    n_marks = sum(text.count(p) for p in PUNCTUATION)
    return n_marks / n_tokens


# --------------------------------------------------------------------------- filters


class WordCountFilter(TextFilter):
    """OBELICS ``check_number_words``: keep ``min_words <= #words <= max_words`` (OBELICS word split)."""

    name: ClassVar[str] = "word_count"
    reasons: ClassVar[tuple[str, ...]] = ("too_few_words", "too_many_words")

    def __init__(self, min_words: int, max_words: int) -> None:
        self.min_words = min_words
        self.max_words = max_words

    def filter(self, view: TextView) -> FilterResult:
        n = len(view.words)
        if n < self.min_words:
            return self.reject("too_few_words")
        if n > self.max_words:
            return self.reject("too_many_words")
        return True


class ImageCountFilter(TextFilter):
    """OBELICS ``check_number_images`` (document level): keep ``min_images <= n_images <= max_images``."""

    name: ClassVar[str] = "image_count"
    reasons: ClassVar[tuple[str, ...]] = ("too_few_images", "too_many_images")

    def __init__(self, min_images: int, max_images: int) -> None:
        self.min_images = min_images
        self.max_images = max_images

    def filter(self, view: TextView) -> FilterResult:
        if view.n_images < self.min_images:
            return self.reject("too_few_images")
        if view.n_images > self.max_images:
            return self.reject("too_many_images")
        return True


class CharacterRepetitionFilter(TextFilter):
    """OBELICS ``check_character_repetition_ratio``: reject when the ratio (see
    :func:`character_repetition_ratio`) is above ``max_ratio``."""

    name: ClassVar[str] = "char_repetition_ratio"

    def __init__(self, ngram: int = 10, max_ratio: float = 0.1) -> None:
        self.ngram = ngram
        self.max_ratio = max_ratio

    def filter(self, view: TextView) -> FilterResult:
        if character_repetition_ratio(view.text, self.ngram) > self.max_ratio:
            return self.reject()
        return True


class WordRepetitionFilter(TextFilter):
    """OBELICS ``check_word_repetition_ratio``: reject when the word n-gram repetition ratio is above ``max_ratio``."""

    name: ClassVar[str] = "word_repetition_ratio"

    def __init__(self, ngram: int = 5, max_ratio: float = 0.1) -> None:
        self.ngram = ngram
        self.max_ratio = max_ratio

    def filter(self, view: TextView) -> FilterResult:
        if word_repetition_ratio(view.words, self.ngram) > self.max_ratio:
            return self.reject()
        return True


class SpecialCharacterFilter(TextFilter):
    """OBELICS ``check_special_character_ratio``: reject when the share of special characters
    (punctuation, digits, whitespace, symbols, emoji) of the raw text is above ``max_ratio``."""

    name: ClassVar[str] = "special_character_ratio"

    def __init__(self, max_ratio: float) -> None:
        self.max_ratio = max_ratio

    def filter(self, view: TextView) -> FilterResult:
        if special_character_ratio(view.text) > self.max_ratio:
            return self.reject()
        return True


class _WordSetFilter(TextFilter):
    """Ratio of words in a fixed vocabulary, compared to a bound."""

    minimum: ClassVar[bool]

    def __init__(self, ratio: float, vocabulary: Collection[str]) -> None:
        self.ratio = ratio
        self._vocabulary = frozenset(vocabulary)

    def filter(self, view: TextView) -> FilterResult:
        value = word_set_ratio(view.words, self._vocabulary)
        bad = value < self.ratio if self.minimum else value > self.ratio
        return self.reject() if bad else True


class StopwordFilter(_WordSetFilter):
    """OBELICS ``check_stopword_ratio``: reject when fewer than ``min_ratio`` of the words are stopwords
    (OBELICS English list, ``filters/resources/stopwords_en.txt``)."""

    name: ClassVar[str] = "stopword_ratio"
    minimum = True

    def __init__(self, min_ratio: float, vocabulary: Collection[str] | None = None) -> None:
        super().__init__(min_ratio, stopwords() if vocabulary is None else vocabulary)


class FlaggedWordFilter(_WordSetFilter):
    """OBELICS ``check_flagged_word_ratio``: reject when more than ``max_ratio`` of the words are flagged
    (adult) words (``filters/resources/flagged_words_en.txt``)."""

    name: ClassVar[str] = "flagged_word_ratio"
    minimum = False

    def __init__(self, max_ratio: float, vocabulary: Collection[str] | None = None) -> None:
        super().__init__(max_ratio, flagged_words() if vocabulary is None else vocabulary)


class CommonWordFilter(_WordSetFilter):
    """OBELICS ``check_common_word_ratio``: reject when fewer than ``min_ratio`` of the words are in a
    list of common English words.

    OBELICS's list (``common_words.json``) is distributed from a Google Drive link, not from the
    repository, so it is not shipped here: the pipeline enables this rule only when
    ``common_words_file`` names a word list.
    """

    name: ClassVar[str] = "common_word_ratio"
    minimum = True

    def __init__(self, min_ratio: float, vocabulary: Collection[str]) -> None:
        super().__init__(min_ratio, vocabulary)


class PunctuationFilter(TextFilter):
    """OBELICS ``check_punctuation_ratio``: reject when marks / tokens is below ``min_ratio``.

    ``min_tokens`` (paragraph level: 12 in OBELICS, document level: off) keeps texts with fewer tokens.
    """

    name: ClassVar[str] = "punctuation_ratio"

    def __init__(self, min_ratio: float, min_tokens: int = -1) -> None:
        self.min_ratio = min_ratio
        self.min_tokens = min_tokens

    def filter(self, view: TextView) -> FilterResult:
        if punctuation_ratio(view.text, self.min_tokens) < self.min_ratio:
            return self.reject()
        return True


class LanguageFilter(TextFilter):
    """OBELICS ``check_lang_id``: keep when fastText's top language is allowed and its score is at
    least ``min_score`` (OBELICS: ``en``, 0.8, document level). Reads ``view.lang``/``view.lang_score``,
    which the pipeline fills (see ``filters.language``). An empty ``languages`` keeps every language.
    """

    name: ClassVar[str] = "lang_not_allowed"
    reasons: ClassVar[tuple[str, ...]] = ("lang_not_allowed", "lang_score_too_low")

    def __init__(self, languages: Iterable[str], min_score: float = 0.8) -> None:
        self.languages = frozenset(languages)
        self.min_score = min_score

    def filter(self, view: TextView) -> FilterResult:
        if not self.languages:
            return True
        if view.lang not in self.languages:
            return self.reject("lang_not_allowed")
        if (view.lang_score or 0.0) < self.min_score:
            return self.reject("lang_score_too_low")
        return True


ALL_FILTERS: tuple[type[TextFilter], ...] = (
    WordCountFilter,
    ImageCountFilter,
    CharacterRepetitionFilter,
    WordRepetitionFilter,
    SpecialCharacterFilter,
    StopwordFilter,
    FlaggedWordFilter,
    PunctuationFilter,
    CommonWordFilter,
    LanguageFilter,
)
# Every reason a text filter can return, e.g. for stats columns.
ALL_REASONS: tuple[str, ...] = tuple(r for f in ALL_FILTERS for r in f.all_reasons())
