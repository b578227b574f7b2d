"""OBELICS's paragraph then document text filtering, built from ``filters.config``.

Order of the checks is OBELICS's (huggingface/OBELICS ``obelics/processors/web_document_filtering.py``,
``WebDocumentFilteringNodeLevel`` and ``WebDocumentFilteringDocLevel``):

* paragraph ("node level"): word count, character repetition, word repetition, special characters,
  stopwords, flagged words, punctuation, common words (if a list is configured);
  OBELICS's paragraph language-id and perplexity checks are off in its config and not built here;
* document: image count, word count, character repetition, word repetition, special characters,
  stopwords, flagged words, punctuation, common words, language id. The KenLM perplexity check is
  skipped (see ``filters.text``).

A filter object is built once per pipeline and holds precomputed word sets; a pipeline instance is
cheap to pickle (the language model is re-attached per process, see ``filters.language``).
"""
from __future__ import annotations

from collections import Counter

from filters.base import TextFilter, TextView, load_word_list, run_filters
from filters.config import DocumentFilterConfig, ParagraphFilterConfig
from filters.language import UNKNOWN, LanguageIdentifier, get_language_identifier
from filters.text import (
    CharacterRepetitionFilter,
    CommonWordFilter,
    FlaggedWordFilter,
    ImageCountFilter,
    LanguageFilter,
    PunctuationFilter,
    SpecialCharacterFilter,
    StopwordFilter,
    WordCountFilter,
    WordRepetitionFilter,
)

PARAGRAPH_SEPARATOR = "\n\n"


def paragraph_filters(cfg: ParagraphFilterConfig) -> list[TextFilter]:
    """The paragraph-level filters of ``cfg``, in OBELICS order (empty when ``cfg.enabled`` is False)."""
    if not cfg.enabled:
        return []
    filters: list[TextFilter] = [
        WordCountFilter(cfg.min_words, cfg.max_words),
        CharacterRepetitionFilter(cfg.char_repetition_ngram, cfg.max_char_repetition_ratio),
        WordRepetitionFilter(cfg.word_repetition_ngram, cfg.max_word_repetition_ratio),
        SpecialCharacterFilter(cfg.max_special_character_ratio),
        StopwordFilter(cfg.min_stopword_ratio),
        FlaggedWordFilter(cfg.max_flagged_word_ratio),
        PunctuationFilter(cfg.min_punctuation_ratio, cfg.punctuation_min_tokens),
    ]
    if cfg.common_words_file:
        filters.append(CommonWordFilter(cfg.min_common_word_ratio, load_word_list(cfg.common_words_file)))
    return filters


def document_filters(cfg: DocumentFilterConfig) -> list[TextFilter]:
    """The document-level filters of ``cfg`` except the language filter, in OBELICS order."""
    if not cfg.enabled:
        return []
    filters: list[TextFilter] = [
        ImageCountFilter(cfg.min_images, cfg.max_images),
        WordCountFilter(cfg.min_words, cfg.max_words),
        CharacterRepetitionFilter(cfg.char_repetition_ngram, cfg.max_char_repetition_ratio),
        WordRepetitionFilter(cfg.word_repetition_ngram, cfg.max_word_repetition_ratio),
        SpecialCharacterFilter(cfg.max_special_character_ratio),
        StopwordFilter(cfg.min_stopword_ratio),
        FlaggedWordFilter(cfg.max_flagged_word_ratio),
        PunctuationFilter(cfg.min_punctuation_ratio),
    ]
    if cfg.common_words_file:
        filters.append(CommonWordFilter(cfg.min_common_word_ratio, load_word_list(cfg.common_words_file)))
    return filters


class TextFilterPipeline:
    """Paragraph keep-mask and document verdict for one page.

    ``identify_rejected``: also run language identification on documents rejected by an earlier
    check (by default the model runs only on documents that reach the language check, as in OBELICS;
    the others report ``("unknown", 0.0)``).
    """

    def __init__(
        self,
        paragraph_cfg: ParagraphFilterConfig,
        document_cfg: DocumentFilterConfig,
        lid: LanguageIdentifier | None = None,
        *,
        identify_rejected: bool = False,
    ) -> None:
        paragraph_cfg.validate()
        document_cfg.validate()
        self.paragraph_cfg = paragraph_cfg
        self.document_cfg = document_cfg
        self.identify_rejected = identify_rejected
        self._lid = lid
        self.paragraph_filters = paragraph_filters(paragraph_cfg)
        self.document_filters = document_filters(document_cfg)
        self.language_filter = (
            LanguageFilter(document_cfg.languages, document_cfg.min_lang_score)
            if document_cfg.enabled and document_cfg.languages
            else None
        )

    @property
    def lid(self) -> LanguageIdentifier:
        if self._lid is None:
            self._lid = get_language_identifier()
        return self._lid

    def identify(self, text: str) -> tuple[str, float]:
        """OBELICS ``compute_lang_id_pred_score``: fastText on the lower-cased text, newlines as spaces."""
        return self.lid.predict(text.lower())

    # ------------------------------------------------------------------ paragraphs

    def filter_paragraph(self, paragraph: str) -> str | None:
        """Rejection reason of one paragraph, or None to keep it."""
        if not self.paragraph_filters:
            return None
        return run_filters(self.paragraph_filters, TextView.of(paragraph))

    def filter_paragraphs(self, paragraphs: list[str]) -> tuple[list[bool], Counter]:
        """Keep-mask over ``paragraphs`` and the number of paragraphs removed per reason."""
        removed: Counter = Counter()
        if not self.paragraph_filters:
            return [True] * len(paragraphs), removed
        filters = self.paragraph_filters
        mask = []
        for paragraph in paragraphs:
            reason = run_filters(filters, TextView.of(paragraph))
            mask.append(reason is None)
            if reason is not None:
                removed[reason] += 1
        return mask, removed

    # ------------------------------------------------------------------ documents

    def filter_document(self, paragraphs: list[str], n_images: int) -> tuple[str | None, str, float]:
        """Verdict on a document made of the kept ``paragraphs`` (joined by blank lines) and ``n_images`` images.

        Returns ``(reason or None, language, language score)``. The reason is a filter reason such as
        ``"too_few_images"``, ``"too_few_words"``, ``"stopword_ratio"``, ``"lang_not_allowed"``.
        """
        text = PARAGRAPH_SEPARATOR.join(p for p in paragraphs if p)
        if not self.document_cfg.enabled:
            lang, score = self.identify(text)
            return None, lang, score
        view = TextView.of(text, n_images=n_images)
        reason = run_filters(self.document_filters, view)
        if reason is not None:
            lang, score = self.identify(view.text) if self.identify_rejected else (UNKNOWN, 0.0)
            return reason, lang, score
        view.lang, view.lang_score = self.identify(view.text)
        if self.language_filter is not None:
            reason = run_filters((self.language_filter,), view)
        return reason, view.lang, view.lang_score
