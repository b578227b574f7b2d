"""Stopword and flagged-word lists follow the text's language (filters/base.py, filters/text.py,
filters/text_pipeline.py): English keeps OBELICS's lists, other languages get jusText's stoplists,
a language without a list is not judged and is counted."""
import pickle
from collections import Counter

import justext
import pytest

from filters.base import JUSTEXT_STOPLISTS, TextView, flagged_words, stopwords
from filters.config import DocumentFilterConfig, ParagraphFilterConfig
from filters.language import get_language_identifier
from filters.text import FlaggedWordFilter, StopwordFilter, word_set_ratio
from filters.text_pipeline import TextFilterPipeline

# Real article paragraphs from html_eval (shared/realdata/html_eval, trafilatura's evaluation pages):
# gofeminin.de/abnehmen (German) and regards.fr, "Deux ans et demi en Macronie" (French).
DE = ("Der wichtigste Aspekt, wenn ihr abnehmen wollt, ist eine gesunde, ausgewogene Ernährungsweise. "
      "Ihr müsst keine Kalorien zählen, aber ihr müsst wissen, was ihr esst. Ganz kurz lässt sich das so "
      "zusammenfassen: Esst euch an Obst und vor allen Dingen Gemüse satt. Speziell Gemüse hat kaum Kalorien "
      "und ist der beste Freund all jener, die eine Antwort auf die Frage \"Wie nehme ich schnell ab\" suchen.")
FR = ("Le 6 août 2019, le député LREM Mustapha Laabid a été condamné à six mois de prison avec sursis, trois "
      "ans d’inéligibilité et 10.000 euros d’amende pour abus de confiance. Il avait utilisé l’argent d’une "
      "association qu’il présidait à des fins personnelles. Le montant du préjudice est de 21.930,54 euros. "
      "L’élu a fait appel et la cour d’appel de Rennes a renvoyé le procès au 1er avril 2020.")
EN = ("The committee met on Tuesday to discuss the new budget, and most of its members agreed that the "
      "library should stay open in the evenings while the town looks for a way to pay for it.")
ZH = "我们今天去公园散步，天气很好，很多人在湖边钓鱼，孩子们在草地上玩耍，大家都很开心。" * 3


def test_table_names_jusText_lists_and_keeps_english_out():
    available = set(justext.get_stoplists())
    assert set(JUSTEXT_STOPLISTS.values()) <= available
    assert "en" not in JUSTEXT_STOPLISTS  # English stays OBELICS's list
    assert len(stopwords()) == len(stopwords("en")) and stopwords() is stopwords("en")
    assert {"der", "und", "ist"} <= stopwords("de") and {"le", "de", "est"} <= stopwords("fr")
    assert stopwords("zh") is None and stopwords("unknown") is None
    assert flagged_words("en") and flagged_words("de") is None and flagged_words("fr") is None


@pytest.mark.parametrize("text, lang", [(DE, "de"), (FR, "fr")])
def test_german_and_french_prose_kept_under_their_list_rejected_under_english(text, lang):
    f = StopwordFilter(0.3)  # OBELICS's paragraph threshold
    assert f.filter(TextView.of(text, lang=lang)) is True
    assert f.score(TextView.of(text, lang=lang)) > 0.4
    for english in (TextView.of(text, lang="en"), TextView.of(text)):  # no language: read in English
        rejection = f.filter(english)
        assert rejection[1] == "stopword_ratio" and f.score(english) < 0.1


def test_english_unchanged():
    f = StopwordFilter(0.3)
    expected = word_set_ratio(TextView.of(EN).words, stopwords())
    assert f.score(TextView.of(EN, lang="en")) == f.score(TextView.of(EN)) == expected
    flagged = FlaggedWordFilter(0.01)
    assert flagged.score(TextView.of(EN, lang="en")) == word_set_ratio(TextView.of(EN).words, flagged_words())
    # An explicit list is used whatever the language.
    fixed = StopwordFilter(0.3, vocabulary=stopwords())
    assert fixed.filter(TextView.of(DE, lang="de"))[1] == "stopword_ratio"


def test_language_without_a_list_is_skipped_and_noted():
    view = TextView.of(ZH, lang="zh")
    assert StopwordFilter(0.3).filter(view) is True and StopwordFilter(0.3).score(view) is None
    assert FlaggedWordFilter(0.01).filter(view) is True
    assert view.skipped == ["stopword_list_missing", "flagged_word_list_missing"]  # noted by filter(), not score()
    german = TextView.of(DE, lang="de")
    assert FlaggedWordFilter(0.01).filter(german) is True and german.skipped == ["flagged_word_list_missing"]


def pipeline(paragraph=None, document=None, lid=None):
    return TextFilterPipeline(ParagraphFilterConfig(**(paragraph or {})), DocumentFilterConfig(**(document or {})),
                              lid=lid or get_language_identifier())


def test_paragraphs_read_in_their_page_language_and_counted():
    pipe = pipeline()
    assert pipe.page_language([DE, DE]) == "de" and pipe.page_language([FR]) == "fr"
    assert pipe.filter_paragraphs([DE, FR])[1] == Counter({"stopword_ratio": 2})  # no language: English list
    assert pipe.take_counters() == Counter()
    assert pipe.filter_paragraphs([DE], "de") == ([True], Counter())
    assert pipe.filter_paragraphs([FR], "fr") == ([True], Counter())
    assert pipe.take_counters() == Counter({"paragraph_flagged_word_list_missing": 2})
    assert pipe.filter_paragraphs([ZH], "zh")[1] == Counter({"too_few_words": 1})  # no spaces: one "word"
    assert pipe.filter_paragraphs([EN], "en") == pipe.filter_paragraphs([EN]) == ([True], Counter())
    assert pipe.take_counters() == Counter()
    assert pipe.take_counters() == Counter()  # taken: reset


class CountingLid:
    def __init__(self, lang="de"):
        self.calls, self.lang = 0, lang

    def predict(self, text):
        self.calls += 1
        return self.lang, 0.99


def test_page_language_costs_nothing_when_no_paragraph_check_reads_it():
    lid = CountingLid()
    for off in ({"enabled": False}, {"min_stopword_ratio": 0.0, "max_flagged_word_ratio": 1.0}):
        assert pipeline(off, lid=lid).page_language([DE]) is None
    assert lid.calls == 0
    assert pipeline({"min_stopword_ratio": 0.0}, lid=lid).page_language([DE]) == "de" and lid.calls == 1


@pytest.mark.parametrize("text, lang", [(DE, "de"), (FR, "fr")])
def test_document_stopwords_follow_its_language(text, lang):
    doc = [text, text.replace("2019", "2018").replace("Obst", "Brot")]
    pipe = pipeline(document={"languages": [], "max_word_repetition_ratio": 1.0, "max_char_repetition_ratio": 1.0})
    verdict = pipe.judge_document(doc, 1)
    assert verdict.reason is None and verdict.lang == lang
    assert pipe.take_counters() == Counter({"document_flagged_word_list_missing": 1})
    # The default (English only): rejected by the language check, no longer by the English stopword list.
    assert pipeline(document={"max_word_repetition_ratio": 1.0, "max_char_repetition_ratio": 1.0}).judge_document(
        doc, 1).reason == "lang_not_allowed"


def test_document_without_a_list_is_not_judged_on_stopwords():
    pipe = pipeline(document={"languages": [], "min_words": 1, "max_special_character_ratio": 1.0,
                              "min_punctuation_ratio": 0.0}, lid=CountingLid("zh"))
    verdict = pipe.judge_document(["我们今天去公园散步，天气很好，很多人在湖边钓鱼。"], 1)
    assert verdict.reason is None and verdict.lang == "zh"
    assert pipe.take_counters() == Counter({"document_stopword_list_missing": 1, "document_flagged_word_list_missing": 1})


def test_flagged_words_files_give_other_languages_a_list(tmp_path):
    listed = tmp_path / "flagged_de.txt"
    listed.write_text("# test list\nkalorien\ngemüse\n", encoding="utf-8")
    f = FlaggedWordFilter(0.01, files={"de": str(listed)})
    assert f.filter(TextView.of(DE, lang="de"))[1] == "flagged_word_ratio"
    assert pickle.loads(pickle.dumps(f)).score(TextView.of(DE, lang="de")) == f.score(TextView.of(DE, lang="de")) > 0.05
    french = TextView.of(FR, lang="fr")
    assert f.filter(french) is True and french.skipped == ["flagged_word_list_missing"]
    assert f.score(TextView.of(EN, lang="en")) == FlaggedWordFilter(0.01).score(TextView.of(EN, lang="en"))
    pipe = pipeline({"flagged_words_files": {"de": str(listed)}})
    assert pipe.filter_paragraphs([DE], "de")[1] == Counter({"flagged_word_ratio": 1})
    with pytest.raises(ValueError, match="flagged_words_files"):
        pipeline(document={"flagged_words_files": {"de": str(tmp_path / "missing.txt")}})
