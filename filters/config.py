"""Thresholds of every filter, with OBELICS's published values as defaults.

Kept apart from the filter classes so ``curation.config`` can validate a YAML
file without importing the language model or image libraries.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_common(cfg: "ParagraphFilterConfig | DocumentFilterConfig") -> None:
    if cfg.min_words < 0 or cfg.min_words > cfg.max_words:
        raise ValueError(f"need 0 <= min_words <= max_words, got {cfg.min_words}, {cfg.max_words}")
    for name in ("char_repetition_ngram", "word_repetition_ngram"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1")
    for name in (
        "max_char_repetition_ratio",
        "max_word_repetition_ratio",
        "max_special_character_ratio",
        "min_stopword_ratio",
        "max_flagged_word_ratio",
        "min_punctuation_ratio",
        "min_common_word_ratio",
    ):
        _check_ratio(name, getattr(cfg, name))


# Defaults: huggingface/OBELICS obelisc/configs/config_filter_web_documents.yaml ("node level" =
# paragraph, "doc level" = document). A check is switched off by a bound that cannot fail
# (e.g. a max ratio of 1.0, a min ratio of 0.0).


@dataclass
class ParagraphFilterConfig:
    """OBELICS paragraph-level ("node level") filters (web documents)."""

    enabled: bool = True
    min_words: int = 4
    max_words: int = 1000
    char_repetition_ngram: int = 10
    max_char_repetition_ratio: float = 0.1
    word_repetition_ngram: int = 5
    max_word_repetition_ratio: float = 0.1
    max_special_character_ratio: float = 0.3
    min_stopword_ratio: float = 0.3
    max_flagged_word_ratio: float = 0.01
    min_punctuation_ratio: float = 0.001
    # Paragraphs with fewer [\w']+/punctuation tokens skip the punctuation check (OBELICS
    # min_number_words_to_check_punctuation_ratio_node_level).
    punctuation_min_tokens: int = 12
    # OBELICS's common_words.json is not in its repository; the check runs only when a word list is given
    # (text file, one word per line, or a JSON list/mapping).
    common_words_file: str = ""
    min_common_word_ratio: float = 0.8

    def validate(self) -> None:
        _check_common(self)


@dataclass
class DocumentFilterConfig:
    """OBELICS document-level filters (web documents); run on the kept paragraphs joined by blank lines."""

    enabled: bool = True
    min_words: int = 10
    max_words: int = 2000
    min_images: int = 1
    max_images: int = 30
    char_repetition_ngram: int = 10
    max_char_repetition_ratio: float = 0.1
    word_repetition_ngram: int = 5
    max_word_repetition_ratio: float = 0.2
    max_special_character_ratio: float = 0.275
    min_stopword_ratio: float = 0.35
    max_flagged_word_ratio: float = 0.01
    min_punctuation_ratio: float = 0.03
    common_words_file: str = ""
    min_common_word_ratio: float = 0.9
    # Language identification (fastText lid.176); empty list keeps every language.
    languages: list[str] = field(default_factory=lambda: ["en"])
    min_lang_score: float = 0.8

    def validate(self) -> None:
        _check_common(self)
        if self.min_images < 0 or self.min_images > self.max_images:
            raise ValueError(f"need 0 <= min_images <= max_images, got {self.min_images}, {self.max_images}")
        _check_ratio("min_lang_score", self.min_lang_score)
        if any(not isinstance(lang, str) or not lang for lang in self.languages):
            raise ValueError("languages must be non-empty language codes such as 'en'")


@dataclass
class ImageFilterConfig:
    """OBELICS/MMC4 image filters applied after download."""

    formats: list[str] = field(default_factory=lambda: ["jpeg", "png", "webp"])
    min_side: int = 150
    max_side: int = 20000
    min_aspect_ratio: float = 0.5
    max_aspect_ratio: float = 2.0
    max_bytes: int = 20_000_000
    max_pixels: int = 89_478_485  # PIL's decompression-bomb limit
    url_banlist_file: str | None = None  # domains / URL prefixes / re:regex, one per line
    phash_max_hamming: int = 5  # MMC4; -1 turns near-duplicate removal off

    def validate(self) -> None:
        if not self.formats:
            raise ValueError("formats must name at least one image format")
        if self.min_side < 1 or self.min_side > self.max_side:
            raise ValueError(f"need 1 <= min_side <= max_side, got {self.min_side}, {self.max_side}")
        if not 0 < self.min_aspect_ratio <= self.max_aspect_ratio:
            raise ValueError(f"need 0 < min_aspect_ratio <= max_aspect_ratio, got {self.min_aspect_ratio}, "
                             f"{self.max_aspect_ratio}")
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError("max_bytes and max_pixels must be >= 1")
        if not -1 <= self.phash_max_hamming <= 64:
            raise ValueError(f"phash_max_hamming must be in [-1, 64], got {self.phash_max_hamming}")
