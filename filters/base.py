"""The generic filter (one rule on one view) and its chain table; the text view and word lists.

Every filter of the package (text, image header, image-text pair) is a :class:`Filter`: datatrove's
``filter(view) -> True | (False, reason)`` contract, a separate ``score(view)`` as in NeMo Curator,
and a rejection that carries the failing value. Each filter declares its own config keys
(:class:`Setting`); a :class:`FilterTable` lists the filters in order with the chains (levels)
they run in, and builds both the chains and the config dataclasses (``filters.config``).

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
OBELICS's ``obelisc/utils/filtering_utils.py`` kept in ``filters/resources/``; those are English.
Stopwords of the other languages are jusText's stoplists (:data:`JUSTEXT_STOPLISTS`); no other
language has a flagged-word list.
"""
from __future__ import annotations

import copy
import functools
import importlib.resources
import importlib.resources.abc
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, make_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

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


# fastText lid.176 code (ISO 639-1, or 639-3 where lid.176 has no 2-letter code) -> the name of
# jusText's stoplist of that language (``justext.get_stoplists()``; BSD 2-clause, a dependency in
# pyproject.toml). jusText's lists are the most frequent words of each language's Wikipedia, made
# for the same job (telling prose from furniture by its share of function words). English is absent
# on purpose: ``en`` keeps OBELICS's list, so English filtering is unchanged. jusText lists that no
# lid.176 label names are left out (Aromanian, Belarusian Taraškievica, Samogitian, Simple English);
# lid.176 languages without a jusText list (Chinese, Japanese, Thai, ...) have no stopword list.
JUSTEXT_STOPLISTS: dict[str, str] = {
    "af": "Afrikaans", "sq": "Albanian", "ar": "Arabic", "an": "Aragonese", "hy": "Armenian",
    "ast": "Asturian", "az": "Azerbaijani", "eu": "Basque", "be": "Belarusian", "bn": "Bengali",
    "bpy": "Bishnupriya_Manipuri", "bs": "Bosnian", "br": "Breton", "bg": "Bulgarian", "ca": "Catalan",
    "ceb": "Cebuano", "cv": "Chuvash", "hr": "Croatian", "cs": "Czech", "da": "Danish", "nl": "Dutch",
    "eo": "Esperanto", "et": "Estonian", "fi": "Finnish", "fr": "French", "gl": "Galician",
    "ka": "Georgian", "de": "German", "el": "Greek", "gu": "Gujarati", "ht": "Haitian", "he": "Hebrew",
    "hi": "Hindi", "hu": "Hungarian", "is": "Icelandic", "io": "Ido", "ig": "Igbo", "id": "Indonesian",
    "ga": "Irish", "it": "Italian", "jv": "Javanese", "kn": "Kannada", "kk": "Kazakh", "ko": "Korean",
    "ku": "Kurdish", "ky": "Kyrgyz", "la": "Latin", "lv": "Latvian", "lt": "Lithuanian", "lmo": "Lombard",
    "nds": "Low_Saxon", "lb": "Luxembourgish", "mk": "Macedonian", "ms": "Malay", "ml": "Malayalam",
    "mt": "Maltese", "mr": "Marathi", "nap": "Neapolitan", "ne": "Nepali", "new": "Newar",
    "no": "Norwegian_Bokmal", "nn": "Norwegian_Nynorsk", "oc": "Occitan", "fa": "Persian",
    "pms": "Piedmontese", "pl": "Polish", "pt": "Portuguese", "qu": "Quechua", "ro": "Romanian",
    "ru": "Russian", "sr": "Serbian", "sh": "Serbo_Croatian", "scn": "Sicilian", "sk": "Slovak",
    "sl": "Slovenian", "es": "Spanish", "su": "Sundanese", "sw": "Swahili", "sv": "Swedish",
    "tl": "Tagalog", "ta": "Tamil", "te": "Telugu", "tr": "Turkish", "tk": "Turkmen", "uk": "Ukrainian",
    "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese", "vo": "Volapuk", "wa": "Walloon",
    "war": "Waray_Waray", "cy": "Welsh", "fy": "West_Frisian", "pnb": "Western_Panjabi", "yo": "Yoruba",
}
ENGLISH = "en"


def stopwords(lang: str = ENGLISH) -> frozenset[str] | None:
    """The stopwords of ``lang`` (a fastText code), None when no list exists for it; loaded once.

    ``en``: OBELICS's English list (``STOPWORDS``); another language: jusText's stoplist
    (:data:`JUSTEXT_STOPLISTS`), its entries normalised like the words they are compared with
    (:func:`split_words`: lower-cased, special characters stripped from both ends).
    """
    return _stopwords(lang)


@lru_cache(maxsize=None)
def _stopwords(lang: str) -> frozenset[str] | None:
    if lang == ENGLISH:
        return load_word_list(RESOURCES / "stopwords_en.txt")
    name = JUSTEXT_STOPLISTS.get(lang)
    if name is None:
        return None
    import justext  # imported here: only non-English pages need it

    return frozenset(w for entry in justext.get_stoplist(name) for w in split_words(entry))


def flagged_words(lang: str = ENGLISH) -> frozenset[str] | None:
    """OBELICS's English flagged (adult) words (``FLAGGED_WORDS``) for ``en``; None for any other
    language: OBELICS publishes only the English list and no other is shipped here."""
    return _english_flagged_words() if lang == ENGLISH else None


@lru_cache(maxsize=None)
def _english_flagged_words() -> frozenset[str]:
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


# --------------------------------------------------------------------------- the text view


@dataclass
class TextView:
    """A paragraph or a document, analysed once and shared by every filter.

    ``text`` is whitespace-standardised; ``words`` is the OBELICS word split of it.
    ``lang``/``lang_score`` come from ``identify`` (fastText, given by the pipeline) the first time
    :meth:`language` is asked, so the model runs only on texts that reach a check that needs it
    (the word lists, the language check). A paragraph is given its document's ``lang`` instead
    (fastText on every paragraph would be slow, and wrong on short ones). ``skipped`` names the
    checks passed without being run (no word list for the view's language), for the stats.
    """

    text: str
    words: list[str]
    n_images: int = 0
    lang: str | None = None
    lang_score: float | None = None
    identify: Callable[[str], tuple[str, float]] | None = field(default=None, repr=False, compare=False)
    skipped: list[str] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def of(cls, text: str, n_images: int = 0,
           identify: Callable[[str], tuple[str, float]] | None = None,
           lang: str | None = None) -> "TextView":
        text = standardize_whitespace(text or "")
        return cls(text=text, words=split_words(text), n_images=n_images, lang=lang, identify=identify)

    def language(self) -> tuple[str | None, float | None]:
        """``(lang, score)``, identified on first use when the view has an ``identify``."""
        if self.lang is None and self.identify is not None:
            self.lang, self.lang_score = self.identify(self.text)
        return self.lang, self.lang_score


# --------------------------------------------------------------------------- the generic filter
#
# One rule on one view (a text, an image header, an image-text pair). The contract is datatrove's
# ``BaseFilter.filter``: True keeps, ``(False, reason)`` rejects. Our rejection is a
# :class:`Rejection`, which *is* that tuple and carries the failing value as ``detail`` besides.
# As in NeMo Curator's ``DocumentFilter`` (``score_document`` / ``keep_document``), the measurement
# is a method of its own (:meth:`Filter.score`), apart from the keep decision, so a caller can log
# or histogram a score without re-deriving it; :class:`ThresholdFilter` is the common case where
# the decision is a bound on that score.


class Rejection(tuple):
    """``(False, reason)`` (datatrove's reject value, so it compares equal to one) plus ``detail``:
    the value that failed and the bound it failed, e.g. ``"stopword_ratio 0.12 < 0.3"``."""

    detail: str | None

    def __new__(cls, reason: str, detail: str | None = None) -> "Rejection":
        self = super().__new__(cls, (False, reason))
        self.detail = detail
        return self

    def __getnewargs__(self) -> tuple[str, str | None]:  # type: ignore[override]  # pickling
        return self[1], self.detail

    @property
    def reason(self) -> str:
        return self[1]


FilterResult = bool | tuple[bool, str]
V = TypeVar("V")


def _fmt(value: Any) -> str:
    return str(round(value, 4)) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Setting:
    """One config key of a filter, declared on the filter class (``Filter.settings``).

    ``key`` is the YAML key (``paragraph_filters.<key>``), ``arg`` the constructor argument it feeds
    (the key itself when empty), ``defaults`` its default per chain level (``"paragraph"``,
    ``"document"``, ``"pair"``...); a level without a default does not get the key and the
    constructor's own default applies. ``check(key, value)`` raises ValueError on a bad value.
    """

    key: str
    type: Any
    defaults: dict[str, Any]
    arg: str = ""
    check: Callable[[str, Any], None] | None = None

    @property
    def argument(self) -> str:
        return self.arg or self.key


def setting(key: str, type_: Any, *, arg: str = "", check: Callable[[str, Any], None] | None = None,
            **defaults: Any) -> Setting:
    """``setting("min_words", int, paragraph=4, document=10)``: see :class:`Setting`."""
    return Setting(key, type_, defaults, arg, check)


def ratio(key: str, value: float) -> None:
    """Setting check: a share in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} must be in [0, 1], got {value}")


def at_least(low: float) -> Callable[[str, Any], None]:
    """Setting check: ``value >= low``."""
    def check(key: str, value: Any) -> None:
        if value < low:
            raise ValueError(f"{key} must be >= {low}, got {value}")
    return check


def language_codes(key: str, value: list[str]) -> None:
    """Setting check: a list of non-empty language codes."""
    if any(not isinstance(lang, str) or not lang for lang in value):
        raise ValueError(f"{key} must be non-empty language codes such as 'en'")


def check_range(values: Mapping[str, Any], low_key: str, high_key: str, floor: float = 0) -> None:
    """Cross-key check of a ``[low, high]`` pair: ``floor <= low <= high``."""
    low, high = values.get(low_key), values.get(high_key)
    if low is not None and high is not None and not floor <= low <= high:
        raise ValueError(f"need {floor} <= {low_key} <= {high_key}, got {low}, {high}")


class Filter(ABC, Generic[V]):
    """One rule on a view ``V``. ``filter`` returns True to keep, or a :class:`Rejection`.

    ``name`` is the rejection reason; a rule with two sides (too few / too many) lists every
    reason it can return in ``reasons``. ``settings`` are its config keys, with their defaults:
    the level config dataclasses are derived from them (:meth:`FilterTable.config_class`).
    """

    name: ClassVar[str]
    reasons: ClassVar[tuple[str, ...]] = ()
    settings: ClassVar[tuple[Setting, ...]] = ()

    @classmethod
    def all_reasons(cls) -> tuple[str, ...]:
        return cls.reasons or (cls.name,)

    def score(self, view: V) -> Any:
        """The value the decision is taken on (NeMo's ``score_document``); None when not measured."""
        return None

    @abstractmethod
    def filter(self, view: V) -> FilterResult:
        raise NotImplementedError

    def reject(self, reason: str | None = None, detail: str | None = None) -> Rejection:
        return Rejection(reason or self.name, detail)

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> "Filter | None":
        """The filter built from its settings' values (by config key); None leaves it out of the chain."""
        return cls(**{s.argument: values[s.key] for s in cls.settings if s.key in values})

    @classmethod
    def check_config(cls, values: Mapping[str, Any]) -> None:
        """Raise ValueError on bad setting values (by config key): each setting's check, then cross-key rules."""
        for s in cls.settings:
            if s.check is not None and s.key in values:
                s.check(s.key, values[s.key])

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class ThresholdFilter(Filter[V]):
    """Keep when ``minimum <= score(view) <= maximum`` (a None bound is open).

    A score of None (not measurable, e.g. an unknown image size) or NaN fails the lower bound.
    ``too_low``/``too_high`` name the reasons of each side (``name`` when unset); ``measure``
    names the value in the detail (``name`` when unset). A one-sided rule needs no constructor of
    its own: ``Rule(threshold)`` sets the side named by ``bound``.
    """

    minimum: Any = None
    maximum: Any = None
    bound: ClassVar[str] = "minimum"
    too_low: ClassVar[str | None] = None
    too_high: ClassVar[str | None] = None
    measure: ClassVar[str | None] = None

    def __init__(self, threshold: Any) -> None:
        setattr(self, self.bound, threshold)

    def filter(self, view: V) -> FilterResult:
        value = self.score(view)
        lo, hi = self.minimum, self.maximum
        if value is None:
            return self.reject(self.too_low, f"{self.measure or self.name} unknown")
        if lo is not None and not value >= lo:  # written so that NaN fails
            return self.reject(self.too_low, f"{self.measure or self.name} {_fmt(value)} < {_fmt(lo)}")
        if hi is not None and not value <= hi:
            return self.reject(self.too_high, f"{self.measure or self.name} {_fmt(value)} > {_fmt(hi)}")
        return True


# --------------------------------------------------------------------------- running a chain


def find_rejection(filters: Iterable[Filter], view: Any) -> Rejection | None:
    """Apply ``filters`` in order; the first :class:`Rejection`, or None when all keep.

    A filter that returns a bare False or a plain ``(False, reason)`` tuple (datatrove style) is
    accepted too; its rejection has no detail.
    """
    for f in filters:
        result = f.filter(view)
        if result is True:
            continue
        if isinstance(result, tuple):
            if not result[0]:
                return result if isinstance(result, Rejection) else Rejection(result[1] or f.name)
        elif not result:
            return Rejection(f.name)
    return None


def run_filters(filters: Iterable[Filter], view: Any) -> str | None:
    """The first rejection reason of ``filters`` on ``view``, or None when all keep."""
    rejection = find_rejection(filters, view)
    return None if rejection is None else rejection[1]


# --------------------------------------------------------------------------- the chain table


class FilterTable:
    """Filter classes in the order they run, each with the levels (chains) it belongs to.

    One table per kind of view; every level's chain *and* its config dataclass come from it, so a
    new filter is one class (with its ``settings``) plus one row here, and no config file or chain
    builder is edited by hand.
    """

    def __init__(self, rows: Sequence[tuple[type[Filter], Sequence[str]]]) -> None:
        self.rows = tuple((cls, tuple(levels)) for cls, levels in rows)
        for cls, levels in self.rows:
            for s in cls.settings:
                stray = set(s.defaults) - set(levels)
                if stray:
                    raise TypeError(f"{cls.__name__}.{s.key} has defaults for {sorted(stray)}, not its levels")

    def classes(self, level: str) -> tuple[type[Filter], ...]:
        return tuple(cls for cls, levels in self.rows if level in levels)

    def settings(self, level: str) -> list[Setting]:
        """The config keys of ``level`` in table order (a key shared by two filters appears once)."""
        out: dict[str, Setting] = {}
        for cls in self.classes(level):
            for s in cls.settings:
                if level in s.defaults:
                    out.setdefault(s.key, s)
        return list(out.values())

    def reasons(self) -> tuple[str, ...]:
        """Every reason a filter of the table can return, in table order."""
        return tuple(dict.fromkeys(r for cls, _ in self.rows for r in cls.all_reasons()))

    def _values(self, cls: type[Filter], level: str, cfg: Any) -> dict[str, Any]:
        return {s.key: getattr(cfg, s.key) for s in cls.settings if level in s.defaults}

    def build(self, level: str, cfg: Any) -> list[Filter]:
        """The chain of ``level`` with the thresholds of ``cfg`` (empty when ``cfg.enabled`` is False)."""
        if not cfg.enabled:
            return []
        chain = (cls.from_config(self._values(cls, level, cfg)) for cls in self.classes(level))
        return [f for f in chain if f is not None]

    def validate(self, level: str, cfg: Any) -> None:
        for cls in self.classes(level):
            cls.check_config(self._values(cls, level, cfg))

    def config_class(self, level: str, name: str, module: str, doc: str) -> type:
        """The dataclass of ``level``'s config: ``enabled`` then every setting with its default.

        Its fields are the YAML keys of the section; ``validate()`` runs the filters' checks.
        """
        fields: list[tuple[str, Any, Any]] = [("enabled", bool, field(default=True))]
        for s in self.settings(level):
            default = s.defaults[level]
            if isinstance(default, (list, dict, set)):
                fields.append((s.key, s.type, field(default_factory=functools.partial(copy.deepcopy, default))))
            else:
                fields.append((s.key, s.type, field(default=default)))
        table = self

        def validate(cfg: Any) -> None:
            table.validate(level, cfg)

        return make_dataclass(name, fields, namespace={"__module__": module, "__doc__": doc, "validate": validate})
