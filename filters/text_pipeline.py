"""OBELICS's paragraph then document text filtering: the chains of ``filters.text.TEXT_FILTERS``.

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

The stopword and flagged-word lists follow the text's language (``filters.text._LanguageWordSetFilter``):
a document is identified by fastText when its first such check runs; paragraphs get the language of
their page, identified once on all of the page's paragraphs before the paragraph chain
(:meth:`TextFilterPipeline.page_language`), not one fastText call per paragraph. Checks passed for
want of a list are counted in :attr:`TextFilterPipeline.counters` (``paragraph_stopword_list_missing``,
``document_flagged_word_list_missing``, ...), which the caller takes per record (:meth:`take_counters`).
"""
from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from filters.base import Filter, TextView, find_rejection, run_filters, split_words, standardize_whitespace
from filters.config import DocumentFilterConfig, ParagraphFilterConfig
from filters.language import UNKNOWN, LanguageIdentifier, get_language_identifier
from filters.text import DOCUMENT, PARAGRAPH, TEXT_FILTERS

from curation.layout import PARAGRAPH_SEP as PARAGRAPH_SEPARATOR  # spelled once, in curation.layout


class _DocumentView(TextView):
    """A document's :class:`TextView` whose word split waits for the first check that reads it: the image
    count comes first in the chain and rejects the articles without an image (a third of html_eval) on
    the text alone. Same words, same verdicts as ``TextView.of``."""

    @property
    def words(self) -> list[str]:  # type: ignore[override]
        words = self.__dict__.get("_words")
        if words is None:
            words = self.__dict__["_words"] = split_words(self.text)
        return words

    @words.setter
    def words(self, value: list[str] | None) -> None:
        self.__dict__["_words"] = value


def paragraph_filters(cfg: ParagraphFilterConfig) -> list[Filter]:
    """The paragraph chain of :data:`filters.text.TEXT_FILTERS` with the thresholds of ``cfg``."""
    return TEXT_FILTERS.build(PARAGRAPH, cfg)


def document_filters(cfg: DocumentFilterConfig) -> list[Filter]:
    """The document chain of :data:`filters.text.TEXT_FILTERS` (language id last) with the thresholds of ``cfg``."""
    return TEXT_FILTERS.build(DOCUMENT, cfg)


class DocumentVerdict(NamedTuple):
    """A document's rejection reason (None: kept), the failing value, and its language."""

    reason: str | None
    detail: str | None
    lang: str
    lang_score: float


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
        # Whether the paragraph chain reads a word list by language (else no page language is needed).
        self._paragraphs_need_language = any(getattr(f, "needs_language", False) for f in self.paragraph_filters)
        self.counters: Counter = Counter()

    @property
    def lid(self) -> LanguageIdentifier:
        if self._lid is None:
            self._lid = get_language_identifier()
        return self._lid

    def identify(self, text: str) -> tuple[str, float]:
        """OBELICS ``compute_lang_id_pred_score``: fastText on the lower-cased text, newlines as spaces."""
        return self.lid.predict(text.lower())

    def take_counters(self) -> Counter:
        """The counts noted since the last call (checks skipped for want of a word list), and reset them."""
        counters, self.counters = self.counters, Counter()
        return counters

    def _note_skipped(self, level: str, view: TextView) -> None:
        for what in view.skipped:
            self.counters[f"{level}_{what}"] += 1

    # ------------------------------------------------------------------ paragraphs

    def page_language(self, paragraphs: list[str]) -> str | None:
        """The language the paragraph chain reads its word lists in: fastText once on all of the page's
        ``paragraphs`` (before any is removed). None, and no model call, when no paragraph check needs
        it (chain off, or its stopword and flagged-word bounds cannot fail); paragraphs without a
        language are read in English."""
        if not self._paragraphs_need_language:
            return None
        return self.identify(PARAGRAPH_SEPARATOR.join(p for p in paragraphs if p))[0]

    def filter_paragraph(self, paragraph: str, lang: str | None = None) -> str | None:
        """Rejection reason of one paragraph (of a page in ``lang``), or None to keep it."""
        if not self.paragraph_filters:
            return None
        view = TextView.of(paragraph, lang=lang)
        reason = run_filters(self.paragraph_filters, view)
        self._note_skipped(PARAGRAPH, view)
        return reason

    def filter_paragraphs(self, paragraphs: list[str], lang: str | None = None) -> tuple[list[bool], Counter]:
        """Keep-mask over ``paragraphs`` (of a page in ``lang``, see :meth:`page_language`; None: English)
        and the number of paragraphs removed per reason."""
        removed: Counter = Counter()
        if not self.paragraph_filters:
            return [True] * len(paragraphs), removed
        filters = self.paragraph_filters
        mask = []
        for paragraph in paragraphs:
            view = TextView.of(paragraph, lang=lang)
            reason = run_filters(filters, view)
            if view.skipped:
                self._note_skipped(PARAGRAPH, view)
            mask.append(reason is None)
            if reason is not None:
                removed[reason] += 1
        return mask, removed

    # ------------------------------------------------------------------ documents

    def judge_document(self, paragraphs: list[str], n_images: int) -> DocumentVerdict:
        """Verdict on a document made of the kept ``paragraphs`` (joined by blank lines) and ``n_images`` images.

        The reason is a filter reason such as ``"too_few_images"``, ``"stopword_ratio"``,
        ``"lang_not_allowed"``; the detail names the failing value (``"stopword_ratio 0.12 < 0.35"``).
        The language is identified when the document reaches a check that needs it (the stopword and
        flagged-word lists, the language check), is kept, or ``identify_rejected`` is set; otherwise
        it is ``("unknown", 0.0)``.
        """
        text = PARAGRAPH_SEPARATOR.join(p for p in paragraphs if p)
        if not self.document_cfg.enabled:
            lang, score = self.identify(text)
            return DocumentVerdict(None, None, lang, score)
        view = _DocumentView(text=standardize_whitespace(text), words=None, n_images=n_images, identify=self.identify)
        rejection = find_rejection(self.document_filters, view)
        self._note_skipped(DOCUMENT, view)
        if rejection is None or self.identify_rejected or view.lang is not None:
            lang, score = view.language()
        else:
            lang, score = UNKNOWN, 0.0
        if rejection is None:
            return DocumentVerdict(None, None, lang, score)
        return DocumentVerdict(rejection.reason, rejection.detail, lang, score)

    def filter_document(self, paragraphs: list[str], n_images: int) -> tuple[str | None, str, float]:
        """``(reason or None, language, language score)`` of :meth:`judge_document`."""
        verdict = self.judge_document(paragraphs, n_images)
        return verdict.reason, verdict.lang, verdict.lang_score
