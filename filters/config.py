"""Thresholds of every filter, with OBELICS's published values as defaults.

Kept apart from the filter classes so ``curation.config`` can validate a YAML
file without importing the language model or image libraries.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ParagraphFilterConfig:
    """OBELICS paragraph-level filters (web documents)."""

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

    def validate(self) -> None:
        if self.min_words > self.max_words:
            raise ValueError("min_words > max_words")


@dataclass
class DocumentFilterConfig:
    """OBELICS document-level filters (web documents)."""

    enabled: bool = True
    min_words: int = 10
    max_words: int = 2000
    min_images: int = 1
    max_images: int = 30
    char_repetition_ngram: int = 10
    max_char_repetition_ratio: float = 0.1
    word_repetition_ngram: int = 5
    max_word_repetition_ratio: float = 0.1
    max_special_character_ratio: float = 0.275
    min_stopword_ratio: float = 0.35
    max_flagged_word_ratio: float = 0.01
    min_punctuation_ratio: float = 0.001
    # Language identification (fastText lid.176); empty list keeps every language.
    languages: list[str] = field(default_factory=lambda: ["en"])
    min_lang_score: float = 0.8

    def validate(self) -> None:
        if self.min_words > self.max_words:
            raise ValueError("min_words > max_words")
        if self.min_images > self.max_images:
            raise ValueError("min_images > max_images")
        if not 0.0 <= self.min_lang_score <= 1.0:
            raise ValueError("min_lang_score must be in [0, 1]")


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
    url_banlist_file: str | None = None
    phash_max_hamming: int = 5
