"""Each OBELICS text filter keeps a normal English paragraph and rejects a crafted bad one."""
from __future__ import annotations

import dataclasses
import math
import pickle
import random
import re
from collections import Counter

import pytest

from filters.base import (
    FilterTable,
    TextView,
    ThresholdFilter,
    flagged_words,
    ratio,
    setting,
    run_filters,
    special_characters,
    split_words,
    standardize_whitespace,
    stopwords,
)
from filters.config import DocumentFilterConfig, ParagraphFilterConfig
from filters.text import (
    ALL_REASONS,
    BOTH,
    PARAGRAPH,
    TEXT_FILTERS,
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
    character_repetition_ratio,
    punctuation_ratio,
    word_repetition_ratio,
    word_set_ratio,
)
from filters.text_pipeline import paragraph_filters

GOOD = (
    "The old lighthouse stands on a rocky point at the edge of the bay. For more than a century, its keepers "
    "climbed the spiral stairs every evening to light the lamp, and sailors relied on its beam to find their way "
    "home through the fog. Today the tower is a small museum, and visitors can walk up to the gallery to enjoy the view."
)

P = ParagraphFilterConfig()


def default_paragraph_filters():
    return paragraph_filters(P)


def reason(f, text, n_images=0):
    result = f.filter(TextView.of(text, n_images=n_images))
    if result is True:
        return None
    assert isinstance(result, tuple) and result[0] is False
    assert result[1] in f.all_reasons()
    return result[1]


# ---------------------------------------------------------------- word lists and word split


def test_resources_are_obelics_lists():
    sw, fw, sc = stopwords(), flagged_words(), special_characters()
    assert len(sw) == 301 and {"the", "a.k.a", "and/or", "you're", "yourselves"} <= sw
    assert len(fw) == 67 and {"porn", "xxx", "youporn"} <= fw
    assert {"!", "#", "0", "9", " ", "\n", "\t", "€", "\u00a0", "\u3000", "😀"} <= sc
    assert not ({"a", "z", "é", "中"} & sc)


def test_split_words_obelics_rules():
    # split on space/newline/tab only, lower-case, strip special characters at both ends
    assert split_words('Hello,  World!! "Quoted" — 123 e.g. it\'s\tTAB\nnew') == [
        "hello", "world", "quoted", "e.g", "it's", "tab", "new",
    ]
    assert split_words("a\u00a0b") == ["a\u00a0b"]  # NBSP is not a separator...
    assert TextView.of("a\u00a0b").words == ["a", "b"]  # ...until whitespace is standardised
    assert standardize_whitespace("x\u2009y\u3000z") == "x y z"


def _obelics_words(text):
    # Direct transcription of OBELICS get_words_from_text (split_on_whitespace + custom strip).
    words = [w for w in re.split(" |\n|\t", text) if w]
    words = [w.lower() for w in words]
    sc = special_characters()
    out = []
    for w in words:
        b, e = 0, len(w)
        while b < e and w[b] in sc:
            b += 1
        while e > b and w[e - 1] in sc:
            e -= 1
        if w[b:e]:
            out.append(w[b:e])
    return out


def _obelics_char_rep(text, n):
    freqs = sorted(Counter(text[i : i + n] for i in range(len(text) - n + 1)).values(), reverse=True)
    if not freqs:
        return 0
    k = min(int(math.sqrt(len(freqs))), len(freqs) - sum(1 for f in freqs if f == 1))
    return sum(freqs[:k]) / sum(freqs)


def _obelics_word_rep(text, n):
    words = _obelics_words(text)
    freqs = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1)).values()
    return sum(f for f in freqs if f > 1) / sum(freqs) if freqs else 0


def test_metrics_match_obelics_reference():
    rng = random.Random(0)
    vocab = ["the", "cat", "sat", "on", "mat", "—", "(ok)", "10%", "e.g.", "x", "...", "\n", "\t", ",", "Dog!"]
    for _ in range(30):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 80)))
        words = split_words(text)
        assert words == _obelics_words(text)
        assert character_repetition_ratio(text, 10) == pytest.approx(_obelics_char_rep(text, 10))
        assert character_repetition_ratio(text, 3) == pytest.approx(_obelics_char_rep(text, 3))
        assert word_repetition_ratio(words, 5) == pytest.approx(_obelics_word_rep(text, 5))
        assert word_repetition_ratio(words, 2) == pytest.approx(_obelics_word_rep(text, 2))
        tokens = re.findall(r"[\w']+|[,;:?!.]", text)
        expected = sum(t in ",;:?!." for t in tokens) / len(tokens) if tokens else 0
        assert punctuation_ratio(text) == pytest.approx(expected)


def test_character_repetition_long_text_matches_reference():
    # texts over 1024 characters take the vectorised (numpy rolling-hash) path
    rng = random.Random(1)
    vocab = ["the", "cat", "sat", "on", "mat", "héllo", "中文", "😀", ",", "aaaaaaaaaaaa"]
    for _ in range(5):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(400, 2000)))
        assert len(text) > 1024
        for n in (3, 10):
            assert character_repetition_ratio(text, n) == pytest.approx(_obelics_char_rep(text, n))


def test_punctuation_ratio_definition():
    # tokens: Hi , there . Don't go !
    assert punctuation_ratio("Hi, there. Don't go!") == pytest.approx(3 / 7)
    assert punctuation_ratio("") == 0.0
    assert punctuation_ratio("no marks in this short one", min_tokens=12) == 1.0


# ---------------------------------------------------------------- good paragraph passes everything


def test_good_paragraph_passes_every_paragraph_filter():
    view = TextView.of(GOOD)
    for f in default_paragraph_filters():
        assert f.filter(view) is True, f
    assert run_filters(default_paragraph_filters(), view) is None


# ---------------------------------------------------------------- each filter rejects its bad case


def test_word_count():
    f = WordCountFilter(P.min_words, P.max_words)
    assert reason(f, "Read more »") == "too_few_words"
    assert reason(f, " ".join(["word"] * 1001)) == "too_many_words"
    assert reason(f, "one two three four") is None
    assert reason(WordCountFilter(100, 1000), GOOD) == "too_few_words"  # threshold from the arguments


def test_character_repetition():
    f = CharacterRepetitionFilter(P.char_repetition_ngram, P.max_char_repetition_ratio)
    assert reason(f, "abcdefghijk " * 30) == "char_repetition_ratio"
    assert reason(f, GOOD) is None
    assert reason(CharacterRepetitionFilter(10, 0.0), GOOD + " " + GOOD) == "char_repetition_ratio"


def test_word_repetition():
    f = WordRepetitionFilter(P.word_repetition_ngram, P.max_word_repetition_ratio)
    assert reason(f, "buy cheap shoes online now, " * 6) == "word_repetition_ratio"
    assert reason(f, GOOD) is None
    assert reason(WordRepetitionFilter(5, 1.0), "buy cheap shoes online now, " * 6) is None


def test_special_characters():
    f = SpecialCharacterFilter(P.max_special_character_ratio)
    assert reason(f, "*** $$$ 100% !!! ### 2023-01-01 @@@ ★★★ 😀😀😀 >>> ok") == "special_character_ratio"
    assert reason(f, GOOD) is None
    assert reason(SpecialCharacterFilter(0.1), GOOD) == "special_character_ratio"  # spaces count


def test_stopwords():
    f = StopwordFilter(P.min_stopword_ratio)
    assert reason(f, "Laptop charger, USB cable, HDMI adapter, battery pack, wireless keyboard.") == "stopword_ratio"
    assert reason(f, GOOD) is None
    assert reason(StopwordFilter(0.9), GOOD) == "stopword_ratio"


def test_flagged_words():
    f = FlaggedWordFilter(P.max_flagged_word_ratio)
    assert reason(f, GOOD + " Watch free porn videos.") == "flagged_word_ratio"
    assert reason(f, GOOD) is None
    assert reason(FlaggedWordFilter(0.5), GOOD + " porn") is None


def test_punctuation():
    f = PunctuationFilter(P.min_punctuation_ratio, P.punctuation_min_tokens)
    no_marks = "we walked along the river and then we had lunch in the park near the old bridge"
    assert reason(f, no_marks) == "punctuation_ratio"
    assert reason(f, "we walked along the river") is None  # < 12 tokens: not judged
    assert reason(f, GOOD) is None
    assert reason(PunctuationFilter(0.03), "we walked along the river") == "punctuation_ratio"  # document level


def test_common_words():
    vocab = set(split_words(GOOD))
    f = CommonWordFilter(0.8, vocab)
    assert reason(f, GOOD) is None
    assert reason(f, "Zyxwv qwertz plugh xyzzy frobnicate the lamp.") == "common_word_ratio"


def test_image_count():
    d = DocumentFilterConfig()
    f = ImageCountFilter(d.min_images, d.max_images)
    assert reason(f, GOOD, n_images=0) == "too_few_images"
    assert reason(f, GOOD, n_images=31) == "too_many_images"
    assert reason(f, GOOD, n_images=1) is None
    assert reason(ImageCountFilter(0, 30), GOOD, n_images=0) is None


def test_language_filter():
    f = LanguageFilter(["en"], 0.8)
    view = TextView.of(GOOD)
    view.lang, view.lang_score = "en", 0.95
    assert f.filter(view) is True
    view.lang = "fr"
    assert f.filter(view) == (False, "lang_not_allowed")
    view.lang, view.lang_score = "en", 0.5
    assert f.filter(view) == (False, "lang_score_too_low")
    assert LanguageFilter([], 0.8).filter(view) is True
    assert LanguageFilter(["en"], 0.4).filter(view) is True


def test_run_filters_returns_first_reason_and_reasons_are_listed():
    view = TextView.of("Read more")
    assert run_filters(default_paragraph_filters(), view) == "too_few_words"
    assert len(set(ALL_REASONS)) == len(ALL_REASONS)
    assert {"too_few_words", "stopword_ratio", "lang_not_allowed", "too_few_images"} <= set(ALL_REASONS)


@pytest.mark.parametrize("bad", [
    {"min_words": 10, "max_words": 5},
    {"max_char_repetition_ratio": 1.5},
    {"min_stopword_ratio": -0.1},
    {"word_repetition_ngram": 0},
])
def test_paragraph_config_validation(bad):
    with pytest.raises(ValueError):
        ParagraphFilterConfig(**bad).validate()


@pytest.mark.parametrize("bad", [{"min_images": 5, "max_images": 1}, {"min_lang_score": 2.0}, {"languages": [""]}])
def test_document_config_validation(bad):
    with pytest.raises(ValueError):
        DocumentFilterConfig(**bad).validate()


def test_obelics_default_thresholds():
    p, d = ParagraphFilterConfig(), DocumentFilterConfig()
    assert (p.min_words, p.max_words, d.min_words, d.max_words) == (4, 1000, 10, 2000)
    assert (d.min_images, d.max_images) == (1, 30)
    assert (p.min_stopword_ratio, d.min_stopword_ratio) == (0.3, 0.35)
    assert (p.max_special_character_ratio, d.max_special_character_ratio) == (0.3, 0.275)
    assert (p.max_word_repetition_ratio, d.max_word_repetition_ratio) == (0.1, 0.2)
    assert (p.min_punctuation_ratio, d.min_punctuation_ratio, p.punctuation_min_tokens) == (0.001, 0.03, 12)
    assert (d.languages, d.min_lang_score) == (["en"], 0.8)


# ---------------------------------------------------------------- rejection detail, score, chain table


def test_rejection_carries_the_failing_value():
    result = WordCountFilter(4, 1000).filter(TextView.of("Read more »"))
    assert result == (False, "too_few_words") and result.detail == "words 2 < 4"
    bad = "Laptop charger, USB cable, HDMI adapter, battery pack, wireless keyboard."
    result = StopwordFilter(0.3).filter(TextView.of(bad))
    assert result == (False, "stopword_ratio") and result.detail == "stopword_ratio 0.0 < 0.3"
    result = FlaggedWordFilter(0.01).filter(TextView.of(GOOD + " porn"))
    assert result.detail.startswith("flagged_word_ratio 0.01") and result.detail.endswith("> 0.01")
    view = TextView.of(GOOD)
    view.lang, view.lang_score = "fr", 0.99
    assert LanguageFilter(["en"]).filter(view).detail == "lang fr"


def test_score_is_apart_from_the_decision():
    view = TextView.of(GOOD)
    assert StopwordFilter(0.9).score(view) == pytest.approx(word_set_ratio(view.words, stopwords()))
    assert WordCountFilter(1, 2).score(view) == len(view.words)
    assert CharacterRepetitionFilter(10, 0.1).score(view) == character_repetition_ratio(view.text, 10)


def test_chains_follow_the_table_in_obelics_order():
    assert [type(f) for f in paragraph_filters(P)] == [
        WordCountFilter, CharacterRepetitionFilter, WordRepetitionFilter, SpecialCharacterFilter,
        StopwordFilter, FlaggedWordFilter, PunctuationFilter,
    ]
    from filters.text_pipeline import document_filters

    chain = document_filters(DocumentFilterConfig())
    assert [type(f) for f in chain][:2] == [ImageCountFilter, WordCountFilter]
    assert type(chain[-1]) is LanguageFilter
    assert CommonWordFilter not in map(type, chain)  # no word list configured
    assert document_filters(DocumentFilterConfig(languages=[]))[-1].__class__ is PunctuationFilter
    assert paragraph_filters(ParagraphFilterConfig(enabled=False)) == []
    # the thresholds reach the filters
    assert paragraph_filters(ParagraphFilterConfig(min_words=7))[0].minimum == 7
    assert paragraph_filters(P)[-1].min_tokens == 12 and chain[-2].min_tokens == -1


def test_config_keys_are_the_yaml_keys():
    # Users' YAML files name these keys: a rename here breaks them.
    assert [f.name for f in dataclasses.fields(ParagraphFilterConfig)] == [
        "enabled", "min_words", "max_words", "char_repetition_ngram", "max_char_repetition_ratio",
        "word_repetition_ngram", "max_word_repetition_ratio", "max_special_character_ratio", "min_stopword_ratio",
        "max_flagged_word_ratio", "flagged_words_files", "min_punctuation_ratio", "punctuation_min_tokens", "common_words_file",
        "min_common_word_ratio",
    ]
    assert sorted(f.name for f in dataclasses.fields(DocumentFilterConfig)) == sorted([
        "enabled", "min_words", "max_words", "min_images", "max_images", "char_repetition_ngram",
        "max_char_repetition_ratio", "word_repetition_ngram", "max_word_repetition_ratio",
        "max_special_character_ratio", "min_stopword_ratio", "max_flagged_word_ratio", "flagged_words_files", "min_punctuation_ratio",
        "common_words_file", "min_common_word_ratio", "languages", "min_lang_score",
    ])
    d = DocumentFilterConfig()
    assert d.languages is not DocumentFilterConfig().languages  # a fresh list per instance
    assert pickle.loads(pickle.dumps(d)) == d


def test_yaml_keys_load_through_the_pipeline_config():
    from curation.config import ConfigError, PipelineConfig

    cfg = PipelineConfig.load(overrides={"paragraph_filters.min_words": 6, "document_filters.languages": ["fr"]})
    assert cfg.paragraph_filters.min_words == 6 and cfg.document_filters.languages == ["fr"]
    with pytest.raises(ConfigError, match="max_special_character_ratio"):
        PipelineConfig.load(overrides={"paragraph_filters.max_special_character_ratio": 2})
    with pytest.raises(ConfigError, match="unknown config key"):
        PipelineConfig.load(overrides={"paragraph_filters.min_wrods": 6})


class _ExclamationFilter(ThresholdFilter[TextView]):
    """A new rule as a contributor writes it: reason, config key with defaults, measurement."""

    name = "exclamation_ratio"
    bound = "maximum"
    settings = (setting("max_exclamation_ratio", float, arg="threshold", check=ratio, paragraph=0.1, document=0.05),)

    def score(self, view):
        return view.text.count("!") / max(1, len(view.text))


def test_a_new_filter_is_its_class_and_one_table_row():
    # What adding a row to TEXT_FILTERS does: both chains and both configs pick the filter up.
    table = FilterTable((*TEXT_FILTERS.rows, (_ExclamationFilter, BOTH)))
    para = table.config_class(PARAGRAPH, "Para", __name__, "test")
    assert para().max_exclamation_ratio == 0.1 and para().min_words == 4
    chain = table.build(PARAGRAPH, para())
    assert isinstance(chain[-1], _ExclamationFilter)
    from filters.base import find_rejection

    assert find_rejection(chain, TextView.of(GOOD)) is None
    rejection = find_rejection(chain[-1:], TextView.of(GOOD + "!" * 50))
    assert rejection.reason == "exclamation_ratio" and rejection.detail.startswith("exclamation_ratio 0.")
    with pytest.raises(ValueError, match="max_exclamation_ratio"):
        para(max_exclamation_ratio=3.0).validate()
    assert "exclamation_ratio" in table.reasons()
