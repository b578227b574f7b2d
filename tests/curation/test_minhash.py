"""curation.minhash: exact permutation arithmetic, datasketch parity, estimator quality."""
from __future__ import annotations

import random

import numpy as np
import pytest

from curation.minhash import (
    EMPTY,
    MERSENNE_PRIME,
    MinHasher,
    band_hashes,
    batch_shingles,
    candidate_probability,
    jaccard,
    lsh_threshold,
    normalize_text,
    shingles,
)


def _doc(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


def test_normalize_text():
    assert normalize_text("Hello, World_x 2024!  Ça\u00a0va? “q”") == "hello world x 0000 ça va q"
    assert normalize_text("") == "" and normalize_text(None) == ""
    assert normalize_text("a\tb\nc") == "a b c"
    # lone surrogates survive (they are not word characters)
    assert normalize_text("x \udcff y") == "x y"


def test_permutation_is_datasketch_formula_exactly():
    m = MinHasher(112, 5, seed=1)
    x = np.array([0, 1, 2**32 - 1] + [random.getrandbits(32) for _ in range(100)], dtype=np.uint64)
    got = m.permute(x)
    for i, xv in enumerate(x.tolist()):
        for j in range(112):
            expected = ((int(m.a[j]) * xv + int(m.b[j])) % 2**64) % MERSENNE_PRIME
            assert int(got[i, j]) == expected
    assert (got < MERSENNE_PRIME).all()


def test_bit_identical_to_datasketch_legacy():
    datasketch = pytest.importorskip("datasketch")
    from datasketch.hashfunc import sha1_hash32

    items = [f"shingle {i}".encode() for i in range(500)]
    ref = datasketch.MinHash(num_perm=112, seed=7, scheme="legacy")
    ref.update_batch(items)
    m = MinHasher(112, 5, seed=7)
    x = np.array([sha1_hash32(s) for s in items], dtype=np.uint64)
    ours = (m.permute(x) & np.uint64(0xFFFFFFFF)).min(axis=0)
    assert (ours == ref.hashvalues).all()


def test_batch_equals_single_and_empty_rows():
    rng = random.Random(0)
    texts = [_doc(rng, rng.randint(0, 300)) for _ in range(50)] + ["", None, "one", "a b c", "x" * 100_000]
    m = MinHasher(64, 5, seed=3)
    sig = m.signatures(texts)
    assert sig.shape == (len(texts), 64) and sig.dtype == np.uint64
    for i, t in enumerate(texts):
        assert (m.signatures([t])[0] == sig[i]).all()
    assert (sig[-5] == EMPTY).all() and (sig[-4] == EMPTY).all()
    assert (sig[-3] != EMPTY).all()  # fewer words than ngram: one shingle
    hs, docs = batch_shingles(["a b c d e f g", "", "x y"], 5)
    assert np.bincount(docs, minlength=3).tolist() == [3, 0, 1]


def test_estimate_is_unbiased():
    rng = random.Random(1)
    m = MinHasher(112, 5, seed=1)
    errors = []
    for _ in range(150):
        words = _doc(rng, 400).split()
        edited = list(words)
        step = rng.choice([5, 10, 20, 40])
        for i in range(0, len(edited), step):
            edited[i] = f"edit{i}"
        a, b = " ".join(words), " ".join(edited)
        sa, sb = m.signatures([a, b])
        errors.append(float((sa == sb).mean()) - jaccard(shingles(a), shingles(b)))
    assert abs(np.mean(errors)) < 0.02
    assert np.std(errors) < 0.06  # binomial sd at J=0.5 with 112 perms is 0.047


def test_band_hashes_and_curve():
    m = MinHasher(112, 5, seed=1)
    sig = m.signatures(["a b c d e f g h", "a b c d e f g h", "q r s t u v"])
    bh = band_hashes(sig, 14, 8)
    assert bh.shape == (3, 14) and bh.dtype == np.int64
    assert (bh[0] == bh[1]).all() and not (bh[0] == bh[2]).any()
    assert abs(lsh_threshold(14, 8) - 0.719) < 0.01
    assert candidate_probability(0.85, 14, 8) > 0.98 > candidate_probability(0.6, 14, 8)
