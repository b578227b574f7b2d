"""The config dataclass of every filter chain: paragraph, document, image, pair.

The text and pair configs are *derived* from their filter tables (``filters.text.TEXT_FILTERS``,
``filters.pairs.PAIR_FILTERS``): each filter declares its YAML keys and defaults next to it
(``settings``), so a new filter needs no edit here. The image config is written out because its
filter module imports PIL, and ``curation.config`` must validate a YAML file without the image
libraries or the language model (the text and pair modules import neither).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from filters.pairs import PAIR, PAIR_FILTERS
from filters.text import DOCUMENT, PARAGRAPH, TEXT_FILTERS

# Defaults: huggingface/OBELICS obelisc/configs/config_filter_web_documents.yaml ("node level" =
# paragraph, "doc level" = document), declared on each filter in filters/text.py. A check is
# switched off by a bound that cannot fail (e.g. a max ratio of 1.0, a min ratio of 0.0).
ParagraphFilterConfig = TEXT_FILTERS.config_class(
    PARAGRAPH, "ParagraphFilterConfig", __name__,
    "OBELICS paragraph-level (\"node level\") filters (web documents); keys: ``filters.text`` settings.",
)
DocumentFilterConfig = TEXT_FILTERS.config_class(
    DOCUMENT, "DocumentFilterConfig", __name__,
    "OBELICS document-level filters (web documents); run on the kept paragraphs joined by blank lines. "
    "Language identification is fastText lid.176; an empty ``languages`` keeps every language.",
)
PairFilterConfig = PAIR_FILTERS.config_class(
    PAIR, "PairFilterConfig", __name__,
    "DataComp's basic filter on pairs (Gadre et al. 2023, ``baselines/filters.py``); keys: ``filters.pairs`` settings.",
)


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
