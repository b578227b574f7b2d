"""TextFilterPipeline: paragraph keep-mask, document verdict, thresholds taken from the config."""
from __future__ import annotations

import pickle
from collections import Counter

import pytest

from filters.config import DocumentFilterConfig, ParagraphFilterConfig
from filters.language import get_language_identifier
from filters.text_pipeline import TextFilterPipeline

P1 = (
    "The old lighthouse stands on a rocky point at the edge of the bay. For more than a century, its keepers "
    "climbed the spiral stairs every evening to light the lamp, and sailors relied on its beam to find their way "
    "home through the fog."
)
P2 = (
    "Today the tower is a small museum, and visitors can walk up to the gallery to enjoy the view. On clear days "
    "you can see the islands to the north, and in the spring the cliffs are covered with wild flowers."
)
FR = (
    "Le vieux phare se dresse sur une pointe rocheuse au bord de la baie. Pendant plus d'un siècle, ses gardiens "
    "ont monté l'escalier chaque soir pour allumer la lampe, et les marins comptaient sur lui pour rentrer."
)


def pipeline(paragraph=None, document=None, **kw):
    return TextFilterPipeline(
        ParagraphFilterConfig(**(paragraph or {})), DocumentFilterConfig(**(document or {})),
        lid=get_language_identifier(), **kw,
    )


def test_paragraph_mask_and_counts():
    mask, removed = pipeline().filter_paragraphs([P1, "Home | About | Contact", "", P2, "buy now " * 20])
    assert mask == [True, False, False, True, False]
    assert removed == Counter({"too_few_words": 2, "char_repetition_ratio": 1})  # checked before word repetition


def test_paragraph_thresholds_come_from_config():
    assert pipeline().filter_paragraphs([P1])[0] == [True]
    mask, removed = pipeline({"min_words": 100}).filter_paragraphs([P1])
    assert mask == [False] and removed == Counter({"too_few_words": 1})
    assert pipeline({"min_stopword_ratio": 0.9}).filter_paragraphs([P1])[1] == Counter({"stopword_ratio": 1})
    mask, removed = pipeline({"enabled": False}).filter_paragraphs(["", "x"])
    assert mask == [True, True] and not removed


def test_good_document_kept_with_language():
    reason, lang, score = pipeline().filter_document([P1, P2], n_images=2)
    assert reason is None and lang == "en" and score >= 0.8


@pytest.mark.parametrize(
    "document, paragraphs, n_images, expected",
    [
        ({}, [P1, P2], 0, "too_few_images"),
        ({"max_images": 1}, [P1, P2], 2, "too_many_images"),
        ({}, ["Gallery photos"], 1, "too_few_words"),
        ({"min_words": 500}, [P1, P2], 1, "too_few_words"),
        ({}, [P1, P1], 1, "word_repetition_ratio"),
        ({"max_word_repetition_ratio": 1.0, "max_char_repetition_ratio": 1.0}, [P1, P1], 1, None),
        ({"min_stopword_ratio": 0.9}, [P1, P2], 1, "stopword_ratio"),
        ({"max_special_character_ratio": 0.1}, [P1, P2], 1, "special_character_ratio"),
        ({"min_punctuation_ratio": 0.5}, [P1, P2], 1, "punctuation_ratio"),
        ({}, [FR], 1, "lang_not_allowed"),  # read in French stopwords, French passes; the language check rejects it
        ({"languages": ["fr"]}, [FR], 1, None),
        ({"min_stopword_ratio": 0.0}, [FR], 1, "lang_not_allowed"),
        ({"min_stopword_ratio": 0.0, "languages": ["fr"]}, [FR], 1, None),
        ({"languages": ["fr"]}, [P1, P2], 1, "lang_not_allowed"),
        ({"min_lang_score": 1.0}, [P1, P2], 1, "lang_score_too_low"),
        ({"languages": []}, [P1, P2], 1, None),
        ({"enabled": False}, [""], 0, None),
    ],
)
def test_document_reasons_follow_config(document, paragraphs, n_images, expected):
    reason, _, _ = pipeline(document=document).filter_document(paragraphs, n_images)
    assert reason == expected


def test_language_reported_for_rejected_documents_only_on_request():
    assert pipeline().filter_document([P1, P2], 0) == ("too_few_images", "unknown", 0.0)
    reason, lang, score = pipeline(identify_rejected=True).filter_document([P1, P2], 0)
    assert (reason, lang) == ("too_few_images", "en") and score > 0.8
    reason, lang, _ = pipeline(document={"enabled": False}).filter_document([FR], 0)
    assert (reason, lang) == (None, "fr")


def test_common_words_file(tmp_path):
    words = tmp_path / "common.txt"
    words.write_text("# tiny list\nthe\nof\na\n")
    mask, removed = pipeline({"common_words_file": str(words)}).filter_paragraphs([P1])
    assert mask == [False] and removed == Counter({"common_word_ratio": 1})


def test_pickles_for_workers():
    pipe = pipeline()
    clone = pickle.loads(pickle.dumps(pipe))
    assert clone.lid is pipe.lid
    assert clone.filter_document([P1, P2], 1) == pipe.filter_document([P1, P2], 1)


def test_invalid_config_rejected():
    with pytest.raises(ValueError):
        pipeline(document={"min_images": 3, "max_images": 2})


class CountingLid:
    """A language identifier that says English and counts its calls."""

    def __init__(self):
        self.calls = 0

    def predict(self, text):
        self.calls += 1
        return "en", 0.97


def test_judge_document_gives_the_failing_value():
    verdict = pipeline({}, {"min_stopword_ratio": 0.9}).judge_document([P1, P2], 1)
    assert verdict.reason == "stopword_ratio" and verdict.detail.startswith("stopword_ratio 0.")
    assert verdict.detail.endswith("< 0.9") and verdict.lang == "en"  # identified to pick the stopword list
    assert pipeline().judge_document([P1, P2], 0).detail == "images 0 < 1"
    verdict = pipeline(document={"min_stopword_ratio": 0.0}).judge_document([FR], 1)
    assert (verdict.reason, verdict.detail, verdict.lang) == ("lang_not_allowed", "lang fr", "fr")
    verdict = pipeline().judge_document([P1, P2], 1)
    assert verdict.reason is None and verdict.detail is None and verdict.lang == "en"


def test_language_model_runs_only_when_needed():
    lid = CountingLid()
    pipe = TextFilterPipeline(ParagraphFilterConfig(), DocumentFilterConfig(), lid=lid)
    assert pipe.filter_document([P1, P2], 0) == ("too_few_images", "unknown", 0.0) and lid.calls == 0
    assert pipe.filter_document([P1, P2], 1) == (None, "en", 0.97) and lid.calls == 1  # once, shared by the check
    no_language_rule = TextFilterPipeline(ParagraphFilterConfig(), DocumentFilterConfig(languages=[]), lid=lid)
    assert no_language_rule.filter_document([P1, P2], 1) == (None, "en", 0.97) and lid.calls == 2
