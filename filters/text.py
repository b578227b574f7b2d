"""Paragraph- and document-level text filters of OBELICS, one class per rule.

Every definition reproduces ``FilteringFunctions`` of huggingface/OBELICS
``obelics/processors/web_document_filtering.py``; the default thresholds, declared on each filter
(``settings``), are those of ``obelisc/configs/config_filter_web_documents.yaml``. Each filter reads
a :class:`TextView` (text and OBELICS word split computed once), measures it (``score``) and
returns True or a :class:`filters.base.Rejection` whose detail is the failing value.

Not implemented: OBELICS's KenLM perplexity filter (``check_perplexity_score``, doc-level max 1500
with the edugp/kenlm Wikipedia ``en`` model + SentencePiece). The model cannot be fetched offline
and ``kenlm`` does not build here, so that rule is skipped.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from heapq import nlargest
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

from filters.base import (
    ENGLISH,
    PUNCTUATION,
    Filter,
    FilterResult,
    FilterTable,
    TextView,
    ThresholdFilter,
    at_least,
    check_range,
    language_codes,
    flagged_words,
    load_word_list,
    ratio,
    setting,
    special_characters,
    stopwords,
)

# --------------------------------------------------------------------------- metrics


# Above this many characters the n-gram counting is done with numpy on 64-bit rolling hashes
# (5x faster on a 10k-character document; equal to exact counting unless two distinct n-grams
# of one text collide in 64 bits).
_NUMPY_MIN_CHARS = 1024
_HASH_BASE = 1_000_003


def _char_ngram_counts(text: str, n: int, total: int):
    if len(text) < _NUMPY_MIN_CHARS:
        return list(Counter(map(text.__getitem__, map(slice, range(total), range(n, total + n)))).values())
    import numpy as np  # here, not at module level: curation.config imports this module to build its configs

    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    hashes = codes[:total].copy()
    for i in range(1, n):
        hashes *= np.uint64(_HASH_BASE)
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
    if not isinstance(freqs, list):  # a numpy array of counts (long texts)
        import numpy as np

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
    return sum(map(vocabulary.__contains__, words)) / len(words)


# ``[\w']+|[<punctuation>]`` as in OBELICS compute_punctuation_ratio.
_PUNCT_TOKENS = re.compile(r"[\w']+|[" + re.escape("".join(sorted(PUNCTUATION))) + "]")


def punctuation_ratio(text: str, min_tokens: int = -1) -> float:
    """OBELICS ``compute_punctuation_ratio``.

    Tokens are ``[\\w']+`` runs and single marks of ``, ; : ? ! .``; ratio = marks / tokens.
    With ``min_tokens > 0`` a text of fewer tokens gets 1.0 (too short to judge by punctuation).
    """
    n_tokens = len(_PUNCT_TOKENS.findall(text))
    if n_tokens == 0:
        return 0.0
    if 0 < min_tokens and n_tokens < min_tokens:
        return 1.0
    # Marks are never part of a [\w']+ run, so every occurrence in the text is one token.
    n_marks = sum(text.count(p) for p in PUNCTUATION)
    return n_marks / n_tokens


# --------------------------------------------------------------------------- filters
#
# Each filter declares its config keys next to it (``settings``, with OBELICS's paragraph and
# document defaults) and has one row in TEXT_FILTERS below; ``filters.config`` derives the
# ``paragraph_filters`` / ``document_filters`` dataclasses from that table and
# ``filters.text_pipeline`` builds both chains from it.

PARAGRAPH = "paragraph"  # OBELICS "node level"
DOCUMENT = "document"  # the kept paragraphs joined by blank lines
BOTH = (PARAGRAPH, DOCUMENT)


# A rule on a paragraph or a document; threshold rules are ``ThresholdFilter[TextView]``.
TextFilter = Filter[TextView]


class WordCountFilter(ThresholdFilter[TextView]):
    """OBELICS ``check_number_words``: keep ``min_words <= #words <= max_words`` (OBELICS word split)."""

    name: ClassVar[str] = "word_count"
    reasons: ClassVar[tuple[str, ...]] = ("too_few_words", "too_many_words")
    too_low, too_high, measure = "too_few_words", "too_many_words", "words"
    settings = (
        setting("min_words", int, paragraph=4, document=10),
        setting("max_words", int, paragraph=1000, document=2000),
    )

    def __init__(self, min_words: int, max_words: int) -> None:
        self.minimum, self.maximum = min_words, max_words

    def score(self, view: TextView) -> int:
        return len(view.words)

    @classmethod
    def check_config(cls, values: Mapping[str, Any]) -> None:
        super().check_config(values)
        check_range(values, "min_words", "max_words")


class ImageCountFilter(ThresholdFilter[TextView]):
    """OBELICS ``check_number_images`` (document level): keep ``min_images <= n_images <= max_images``."""

    name: ClassVar[str] = "image_count"
    reasons: ClassVar[tuple[str, ...]] = ("too_few_images", "too_many_images")
    too_low, too_high, measure = "too_few_images", "too_many_images", "images"
    settings = (
        setting("min_images", int, document=1),
        setting("max_images", int, document=30),
    )

    def __init__(self, min_images: int, max_images: int) -> None:
        self.minimum, self.maximum = min_images, max_images

    def score(self, view: TextView) -> int:
        return view.n_images

    @classmethod
    def check_config(cls, values: Mapping[str, Any]) -> None:
        super().check_config(values)
        check_range(values, "min_images", "max_images")


class _RepetitionFilter(ThresholdFilter[TextView]):
    """Share of repeated n-grams (of characters or words), rejected above ``max_ratio``."""

    bound = "maximum"

    def __init__(self, ngram: int, max_ratio: float) -> None:
        super().__init__(max_ratio)
        self.ngram = ngram


class CharacterRepetitionFilter(_RepetitionFilter):
    """OBELICS ``check_character_repetition_ratio``: reject when the ratio (see
    :func:`character_repetition_ratio`) is above ``max_ratio``."""

    name: ClassVar[str] = "char_repetition_ratio"
    settings = (
        setting("char_repetition_ngram", int, arg="ngram", check=at_least(1), paragraph=10, document=10),
        setting("max_char_repetition_ratio", float, arg="max_ratio", check=ratio, paragraph=0.1, document=0.1),
    )

    def score(self, view: TextView) -> float:
        return character_repetition_ratio(view.text, self.ngram)


class WordRepetitionFilter(_RepetitionFilter):
    """OBELICS ``check_word_repetition_ratio``: reject when the word n-gram repetition ratio is above ``max_ratio``."""

    name: ClassVar[str] = "word_repetition_ratio"
    settings = (
        setting("word_repetition_ngram", int, arg="ngram", check=at_least(1), paragraph=5, document=5),
        setting("max_word_repetition_ratio", float, arg="max_ratio", check=ratio, paragraph=0.1, document=0.2),
    )

    def score(self, view: TextView) -> float:
        return word_repetition_ratio(view.words, self.ngram)


class SpecialCharacterFilter(ThresholdFilter[TextView]):
    """OBELICS ``check_special_character_ratio``: reject when the share of special characters
    (punctuation, digits, whitespace, symbols, emoji) of the raw text is above the threshold."""

    name: ClassVar[str] = "special_character_ratio"
    bound = "maximum"
    settings = (
        setting("max_special_character_ratio", float, arg="threshold", check=ratio, paragraph=0.3, document=0.275),
    )

    def score(self, view: TextView) -> float:
        return special_character_ratio(view.text)


class _WordSetFilter(ThresholdFilter[TextView]):
    """Share of the words in a vocabulary (``default_words()`` unless given), bounded on the side ``bound``."""

    default_words: ClassVar[Callable[[], Collection[str]] | None] = None

    def __init__(self, threshold: float, vocabulary: Collection[str] | None = None) -> None:
        super().__init__(threshold)
        if vocabulary is None:
            if self.default_words is None:
                raise TypeError(f"{type(self).__name__} needs a vocabulary")
            vocabulary = self.default_words()
        self._vocabulary = frozenset(vocabulary)

    def score(self, view: TextView) -> float:
        return word_set_ratio(view.words, self._vocabulary)


class _LanguageWordSetFilter(_WordSetFilter):
    """A word-set ratio read in the list of the view's language (``lists(lang)``, None: no list).

    An English list applied to German or French prose finds few of its words and rejects real text,
    so the list follows :meth:`TextView.language` (a document: fastText on its text; a paragraph:
    its document's language, given by the pipeline). A language without a list is not judged: the
    check passes and ``missing`` is noted in ``view.skipped`` (counted in the extract stats). A view
    without a language (no identifier given, e.g. a bare ``TextView.of(text)``) is read in English,
    OBELICS's behaviour; so is every view when an explicit ``vocabulary`` is given.
    """

    lists: ClassVar[Callable[[str], Collection[str] | None]]
    missing: ClassVar[str]

    def __init__(self, threshold: float, vocabulary: Collection[str] | None = None) -> None:
        super().__init__(threshold, vocabulary)
        self._fixed = vocabulary is not None
        self._by_language: dict[str, frozenset[str] | None] = {}

    @property
    def needs_language(self) -> bool:
        """Whether the rule reads the view's language: it has no fixed list and its bound can fail
        (a minimum above 0 or a maximum below 1), so a switched-off rule costs no fastText call."""
        if self._fixed:
            return False
        if self.bound == "minimum":
            return self.minimum is not None and self.minimum > 0.0
        return self.maximum is not None and self.maximum < 1.0

    def vocabulary(self, view: TextView) -> frozenset[str] | None:
        if not self.needs_language:
            return self._vocabulary
        lang = view.language()[0]
        if lang is None:
            return self._vocabulary
        if lang not in self._by_language:
            words = self.words_of(lang)
            self._by_language[lang] = None if words is None else frozenset(words)
        return self._by_language[lang]

    def words_of(self, lang: str) -> Collection[str] | None:
        """The list of ``lang`` (None: none), looked up once per language."""
        return type(self).lists(lang)

    def score(self, view: TextView) -> float | None:
        vocabulary = self.vocabulary(view)
        return None if vocabulary is None else word_set_ratio(view.words, vocabulary)

    def filter(self, view: TextView) -> FilterResult:
        if self.vocabulary(view) is None:
            view.skipped.append(self.missing)
            return True
        return super().filter(view)


class StopwordFilter(_LanguageWordSetFilter):
    """OBELICS ``check_stopword_ratio``: reject when fewer than ``threshold`` of the words are stopwords
    of the text's language (English: OBELICS's list, ``filters/resources/stopwords_en.txt``; other
    languages: jusText's stoplists, see :func:`filters.base.stopwords`; none: not judged, counted
    ``stopword_list_missing``)."""

    name: ClassVar[str] = "stopword_ratio"
    bound = "minimum"
    default_words = staticmethod(stopwords)
    lists = staticmethod(stopwords)
    missing = "stopword_list_missing"
    settings = (setting("min_stopword_ratio", float, arg="threshold", check=ratio, paragraph=0.3, document=0.35),)


def _language_files(key: str, value: Mapping[str, str]) -> None:
    """Setting check: ``{language code: word list file}``, every file present."""
    for lang, path in value.items():
        if not lang or not isinstance(path, str) or not Path(path).is_file():
            raise ValueError(f"{key}: {lang!r} must name an existing word list file, got {path!r}")


class FlaggedWordFilter(_LanguageWordSetFilter):
    """OBELICS ``check_flagged_word_ratio``: reject when more than ``threshold`` of the words are flagged
    (adult) words (``filters/resources/flagged_words_en.txt``). Only English has a list (OBELICS's):
    a text in another language is not judged, counted ``flagged_word_list_missing``, unless
    ``flagged_words_files`` gives a list for it (``{de: path}``, one word per line; an ``en`` entry
    replaces OBELICS's list)."""

    name: ClassVar[str] = "flagged_word_ratio"
    bound = "maximum"
    default_words = staticmethod(flagged_words)
    lists = staticmethod(flagged_words)
    missing = "flagged_word_list_missing"
    settings = (
        setting("max_flagged_word_ratio", float, arg="threshold", check=ratio, paragraph=0.01, document=0.01),
        setting("flagged_words_files", dict[str, str], arg="files", check=_language_files, paragraph={}, document={}),
    )

    def __init__(self, threshold: float, vocabulary: Collection[str] | None = None,
                 files: Mapping[str, str] | None = None) -> None:
        super().__init__(threshold, vocabulary)
        self.files = dict(files or {})
        # Read here, on the driver, like ``common_words_file``: the lists travel with the pickled filter.
        self._by_language.update({lang: load_word_list(path) for lang, path in self.files.items()})
        if vocabulary is None and ENGLISH in self.files:  # views without a language are read in English
            self._vocabulary = self._by_language[ENGLISH]


class CommonWordFilter(_WordSetFilter):
    """OBELICS ``check_common_word_ratio``: reject when fewer than ``threshold`` of the words are in a
    list of common English words.

    OBELICS's list (``common_words.json``) is distributed from a Google Drive link, not from the
    repository, so it is not shipped here: the chain holds this rule only when
    ``common_words_file`` names a word list (text file, one word per line, or a JSON list/mapping).
    """

    name: ClassVar[str] = "common_word_ratio"
    bound = "minimum"
    settings = (
        setting("common_words_file", str, paragraph="", document=""),
        setting("min_common_word_ratio", float, arg="threshold", check=ratio, paragraph=0.8, document=0.9),
    )

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> "CommonWordFilter | None":
        path = values["common_words_file"]
        return cls(values["min_common_word_ratio"], load_word_list(path)) if path else None


class PunctuationFilter(ThresholdFilter[TextView]):
    """OBELICS ``check_punctuation_ratio``: reject when marks / tokens is below ``min_ratio``.

    ``min_tokens`` keeps texts with fewer ``[\\w']+``/punctuation tokens (OBELICS
    ``min_number_words_to_check_punctuation_ratio``: 12 at paragraph level; off at document level).
    """

    name: ClassVar[str] = "punctuation_ratio"
    settings = (
        setting("min_punctuation_ratio", float, arg="min_ratio", check=ratio, paragraph=0.001, document=0.03),
        setting("punctuation_min_tokens", int, arg="min_tokens", paragraph=12),
    )

    def __init__(self, min_ratio: float, min_tokens: int = -1) -> None:
        self.minimum = min_ratio
        self.min_tokens = min_tokens

    def score(self, view: TextView) -> float:
        return punctuation_ratio(view.text, self.min_tokens)


class LanguageFilter(TextFilter):
    """OBELICS ``check_lang_id``: keep when fastText's top language is allowed and its score is at
    least ``min_score`` (OBELICS: ``en``, 0.8, document level). Reads :meth:`TextView.language`,
    identified on first use (see ``filters.language``). An empty ``languages`` keeps every language
    (and leaves the rule out of the chain).
    """

    name: ClassVar[str] = "lang_not_allowed"
    reasons: ClassVar[tuple[str, ...]] = ("lang_not_allowed", "lang_score_too_low")
    settings = (
        setting("languages", list[str], check=language_codes, document=["en"]),
        setting("min_lang_score", float, arg="min_score", check=ratio, document=0.8),
    )

    def __init__(self, languages: Iterable[str], min_score: float = 0.8) -> None:
        self.languages = frozenset(languages)
        self.min_score = min_score

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> "LanguageFilter | None":
        return cls(values["languages"], values["min_lang_score"]) if values["languages"] else None

    def score(self, view: TextView) -> float | None:
        return view.language()[1]

    def filter(self, view: TextView) -> FilterResult:
        if not self.languages:
            return True
        lang, score = view.language()
        if lang not in self.languages:
            return self.reject("lang_not_allowed", f"lang {lang}")
        if (score or 0.0) < self.min_score:
            return self.reject("lang_score_too_low", f"lang_score {round(score or 0.0, 4)} < {self.min_score}")
        return True


# The one chain table: OBELICS order (``WebDocumentFilteringNodeLevel`` / ``...DocLevel``), and
# the chains each filter runs in. The document chain starts with the image count and ends with
# the language id (the model runs only on documents that reach it).
TEXT_FILTERS = FilterTable((
    (ImageCountFilter, (DOCUMENT,)),
    (WordCountFilter, BOTH),
    (CharacterRepetitionFilter, BOTH),
    (WordRepetitionFilter, BOTH),
    (SpecialCharacterFilter, BOTH),
    (StopwordFilter, BOTH),
    (FlaggedWordFilter, BOTH),
    (PunctuationFilter, BOTH),
    (CommonWordFilter, BOTH),
    (LanguageFilter, (DOCUMENT,)),
))
ALL_FILTERS: tuple[type[Filter], ...] = tuple(cls for cls, _ in TEXT_FILTERS.rows)
# Every reason a text filter can return, e.g. for stats columns.
ALL_REASONS: tuple[str, ...] = TEXT_FILTERS.reasons()
