"""MetaCLIP's matching and balancing equal the published algorithm (facebookresearch/MetaCLIP:
``metaclip/substr_matching.py``, ``metaclip/balancing.py``) on hand-computed expectations."""
from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pyarrow as pa
import pytest

from curation.errors import ConfigError, InputError
from filters.metaclip import (
    BALANCED_OUT,
    UNMATCHED,
    MetadataMatcher,
    _main,
    balance_decisions,
    balance_keep,
    build_wordnet_metadata,
    default_metadata_path,
    entry_counts,
    entry_probabilities,
    key_hashes,
    load_metadata,
    pair_entry_uniforms,
    spaced_captions,
    spacing,
)

ENTRIES = ["dog", "cat", "red dog", "tree", "1", "new york", "café", "猫"]
DOG, CAT, RED_DOG, TREE, ONE, NEW_YORK, CAFE, NEKO = range(len(ENTRIES))


def reference_match(caption: str | None, entries: list[str]) -> list[int]:
    """MetaCLIP's rule written the slow way: padded entry is a substring of the spaced caption."""
    if not caption:
        return []
    spaced = spacing(caption)
    return sorted({i for i, e in enumerate(entries) if f" {e} " in spaced})


def test_spacing_is_metaclips():
    # " text ", the 7 punctuation marks wrapped in spaces, tab/CR/LF turned into spaces.
    assert spacing("A dog.") == " A dog .  "
    assert spacing("a\tb\nc") == " a b c "
    assert spaced_captions(["A dog.", "a\tb\nc", None]).to_pylist() == [" A dog .  ", " a b c ", "  "]
    text = "x,y;z:w?v!u`t.s\r"
    assert spaced_captions([text]).to_pylist() == [spacing(text)]


def test_match_hand_computed():
    m = MetadataMatcher(ENTRIES)
    captions = [
        "A dog.",                   # " A dog .  " -> dog
        "red dog, red cat",         # red dog, dog (inside "red dog"), cat
        "Dogs",                     # case-sensitive and whole words only: nothing
        "hotdog",                   # not a word of its own: nothing
        None,                       # null -> []
        "",                         # empty -> []
        "tree\ttree",               # each entry once per caption
        "1:1",                      # " 1 : 1 " -> 1
        "new york new york!",       # a two-word entry
        "café au lait, 猫 et chat",  # non-ASCII code points
    ]
    got = m.match(pa.array(captions, pa.string())).to_pylist()
    assert got == [
        [DOG], [DOG, CAT, RED_DOG], [], [], [], [], [TREE], [ONE], [NEW_YORK], [CAFE, NEKO],
    ]
    assert got == [reference_match(c, ENTRIES) for c in captions]
    assert m.match(captions).type == pa.list_(pa.int32())


def test_match_equals_reference_on_random_captions():
    rng = random.Random(0)
    words = ENTRIES + ["Dog", "dogs", ",", ".", "\n", "é", "york", "new", "!", "🐶", "a"]
    captions = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(400)]
    captions += [w.join(rng.sample(words, 4)) for w in ("", ",", ".", "\t")]
    got = MetadataMatcher(ENTRIES).match(captions).to_pylist()
    assert got == [reference_match(c, ENTRIES) for c in captions]


def test_matcher_pickles_without_its_automaton():
    m = MetadataMatcher(ENTRIES)
    m.match(["dog"])
    state = pickle.dumps(m)
    assert b"dog" in state and len(state) < 1000
    assert pickle.loads(state).match(["a cat"]).to_pylist() == [[CAT]]


def test_entry_counts_hand_computed():
    matches = pa.array([[DOG], [DOG, CAT], [], [DOG], [TREE]], pa.list_(pa.int32()))
    assert entry_counts(matches, len(ENTRIES)).tolist() == [3, 1, 0, 1, 0, 0, 0, 0]
    assert entry_counts(matches.slice(1, 3), len(ENTRIES)).tolist() == [2, 1, 0, 0, 0, 0, 0, 0]


def test_entry_probability_is_t_over_count_capped_at_one():
    # MetaCLIP: entry_count[entry_count < t] = t; entry_prob = t / entry_count.
    counts = np.array([0, 1, 5, 10, 20, 40])
    assert entry_probabilities(counts, 10).tolist() == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25]
    with pytest.raises(ConfigError):
        entry_probabilities(counts, 0)


def test_key_hash_is_fnv1a_64():
    # Published FNV-1a 64 test vectors.
    assert key_hashes(pa.array(["", "a", "foobar"])).tolist() == [
        0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8,
    ]
    assert key_hashes(pa.array([7])).tolist() == key_hashes(pa.array(["7"])).tolist()
    with pytest.raises(InputError):
        key_hashes(pa.array(["a", None]))


def test_balance_rule_any_matched_entry_draw_succeeds():
    # Pool: dog matched 4 times, cat once; t = 2 -> p_dog = 0.5, p_cat = 1, p_tree = 1.
    keys = pa.array(["k0", "k1", "k2", "k3", "k4", "k5"])
    matches = pa.array([[DOG], [DOG, CAT], [], [DOG], [DOG], [TREE]], pa.list_(pa.int32()))
    counts = entry_counts(matches, len(ENTRIES))
    assert counts[DOG] == 4 and counts[CAT] == 1
    keep, reason = balance_decisions(keys, matches, counts, t=2, seed=7)
    # Hand rule with the same uniforms: keep iff some matched entry's u < p.
    u = {k: pair_entry_uniforms(key_hashes(pa.array([k])), np.array([DOG]), 7)[0] for k in ["k0", "k3", "k4"]}
    expected = [u["k0"] < 0.5, True, False, u["k3"] < 0.5, u["k4"] < 0.5, True]
    assert keep.tolist() == expected
    assert reason[2] == UNMATCHED and reason[1] is None and reason[5] is None
    assert all(r == (None if k else BALANCED_OUT) for k, r in zip(keep[[0, 3, 4]], reason[[0, 3, 4]]))
    assert balance_keep(keys, matches, counts, 2, 7).tolist() == expected


def test_balance_kept_share_follows_the_published_probabilities():
    # One head entry with count 20,000 at t = 5,000: p = 0.25. Pairs matching two head entries
    # (p = 0.5 and 0.2) are kept with 1 - (1 - 0.5)(1 - 0.2) = 0.6 (independent draws per entry).
    n = 20_000
    keys = pa.array([f"pair-{i}" for i in range(n)])
    single = pa.array([[DOG]] * n, pa.list_(pa.int32()))
    counts = np.zeros(len(ENTRIES), np.int64)
    counts[DOG], counts[CAT], counts[TREE] = 20_000, 10_000, 25_000
    share = balance_keep(keys, single, counts, 5_000, seed=0).mean()
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)
    double = pa.array([[CAT, TREE]] * n, pa.list_(pa.int32()))
    share2 = balance_keep(keys, double, counts, 5_000, seed=0).mean()
    assert abs(share2 - 0.6) < 4 * np.sqrt(0.6 * 0.4 / n)
    # Tail entries (count <= t) keep every pair.
    assert balance_keep(keys, single, np.full(len(ENTRIES), 5_000), 5_000, seed=0).all()


def test_balance_is_the_same_on_any_split_and_order():
    rng = np.random.default_rng(1)
    n = 3_000
    keys = [f"k{i}" for i in range(n)]
    lists = [sorted(rng.choice(len(ENTRIES), size=rng.integers(0, 3), replace=False).tolist()) for _ in range(n)]
    matches = pa.array(lists, pa.list_(pa.int32()))
    counts = entry_counts(matches, len(ENTRIES))
    whole = balance_keep(pa.array(keys), matches, counts, t=200, seed=3)
    perm = rng.permutation(n)
    shuffled = balance_keep(pa.array([keys[i] for i in perm]), pa.array([lists[i] for i in perm], matches.type),
                            counts, t=200, seed=3)
    assert (shuffled == whole[perm]).all()
    parts = np.concatenate([balance_keep(pa.array(keys[a:b]), matches.slice(a, b - a), counts, 200, 3)
                            for a, b in [(0, 1), (1, 1000), (1000, n)]])
    assert (parts == whole).all()
    assert not (balance_keep(pa.array(keys), matches, counts, 200, seed=4) == whole).all()


def test_load_metadata_json_and_txt(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps(["dog", "new york"]))
    (tmp_path / "m.txt").write_text("dog\nnew york\r\n\n")
    assert load_metadata(tmp_path / "m.json") == load_metadata(tmp_path / "m.txt") == ["dog", "new york"]
    (tmp_path / "bad.json").write_text('{"dog": 1}')
    with pytest.raises(InputError):
        load_metadata(tmp_path / "bad.json")
    with pytest.raises(InputError):
        load_metadata(tmp_path / "missing.json")


WORDNET_LINES = {
    "data.noun": [
        "  1 This software and database is being provided to you, the LICENSEE, by  ",
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 000 | a member of the genus Canis",
        "09120000 15 n 01 New_York 0 000 | a city",
        "00000001 03 n 01 A.D. 0 000 | anno domini",
        "00000002 03 n 01 .22 0 000 | a cartridge",
        "00000003 03 n 01 ! 0 000 | a mark",
    ],
    "data.verb": ["01000000 30 v 01 bark 0 000 | speak"],
    "data.adj": ["00001740 00 s 02 big(a) 0 large 0 000 | above average"],
    "data.adv": [],
}


def test_build_metadata_follows_metaclips_wordnet_rule(tmp_path):
    for name, lines in WORDNET_LINES.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    entries = build_wordnet_metadata(tmp_path)
    # First lemma lower-cased, cut at its first dot, '_' -> ' '; "0".."99"; no empty, no punctuation.
    assert set(entries) == {str(i) for i in range(100)} | {"dog", "new york", "a", "bark", "big"}
    out = tmp_path / "out" / "meta.json"
    assert _main(["build-metadata", "--out", str(out), "--wordnet-dir", str(tmp_path)]) == 0
    assert load_metadata(out) == entries


def test_shipped_default_metadata():
    entries = load_metadata(default_metadata_path())
    assert load_metadata(None) == entries
    assert len(entries) == 86_654 and len(set(entries)) == len(entries)
    assert {"dog", "new york", "0", "99"} <= set(entries)


@pytest.mark.realdata
def test_bench_on_real_captions_agrees_and_beats_the_python_loop(realdata):
    import importlib.util

    from tests.support.realdata import ROOT

    spec = importlib.util.spec_from_file_location("bench_metaclip", ROOT / "bench" / "metaclip.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--repeats", "1", "--replicate", "2", "--loop-captions", "20", "--seeds", "2", "--t", "5", "100"])
    assert out["throughput"]["agree"] is True
    assert out["throughput"]["speedup_vs_python_loop_cpu"] >= 10
    assert out["distribution"]["captions"] == 1000
    # At a t above every count nothing is balanced out: kept share = matched share, as expected.
    last = out["balance"][-1]
    assert last["kept_share_mean"] == last["kept_share_expected"] == out["distribution"]["matched_share"]


def test_duplicated_entry_matches_under_its_last_id_as_in_metaclip():
    # MetaCLIP's automaton.add_word overwrites a key's value: the last id of a duplicate wins.
    assert MetadataMatcher(["dog", "cat", "dog"]).match(["a dog"]).to_pylist() == [[2]]
