"""curation.minhash: exact permutation arithmetic, datasketch parity, estimator quality."""
from __future__ import annotations

import random

import numpy as np
import pytest

from curation.sample.text import letter_word
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
    return " ".join(letter_word(rng.randrange(5000)) for _ in range(n))


def test_normalize_text():
    assert normalize_text("Hello, World_x 2024!  Ça\u00a0va? “q”") == "hello world x 0000 ça va q"
    assert normalize_text("") == "" and normalize_text(None) == ""
    assert normalize_text("a\tb\nc") == "a b c"
    # lone surrogates survive (they are not word characters)
    assert normalize_text("x \udcff y") == "x y"


M64 = 2**64 - 1


def _fmix64_ref(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def test_permutations_follow_the_scheme_formulas_exactly():
    """Pure-Python big-int reference of each scheme's permutation (no numpy wrap-around to trust)."""
    x = [0, 1, 2**32 - 1, 2**63 + 5, M64] + [random.getrandbits(64) for _ in range(60)]
    hs = np.array(x, dtype=np.uint64)
    legacy = MinHasher(112, 5, seed=1, scheme="legacy")
    got = legacy.permute(hs)
    for i, xv in enumerate(x):
        x32 = (xv ^ (xv >> 32)) & 0xFFFFFFFF
        for j in range(112):
            expected = (((int(legacy.a[j]) * x32 + int(legacy.b[j])) % 2**64) % MERSENNE_PRIME) & 0xFFFFFFFF
            assert int(got[i, j]) == expected
    a64 = MinHasher(112, 5, seed=1, scheme="affine64")
    got = a64.permute(hs)
    assert got.dtype == np.uint64 and all(int(a) % 2 == 1 for a in a64.a)
    for i, xv in enumerate(x):
        for j in range(112):
            assert int(got[i, j]) == (int(a64.a[j]) * _fmix64_ref(xv) + int(a64.b[j])) % 2**64


@pytest.mark.parametrize("scheme", ["affine64", "affine32", "legacy"])
def test_signatures_bit_identical_to_datasketch(scheme):
    """Every signature value equals datasketch.MinHash(num_perm, seed, scheme) fed the same shingle hashes."""
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(3)
    texts = [_doc(rng, rng.randint(1, 400)) for _ in range(40)] + ["x", "a b c"]
    m = MinHasher(112, 5, seed=7, scheme=scheme, chunk=257)  # small chunks: documents span chunks
    sig = m.signatures(texts)
    for i, t in enumerate(texts):
        ref = datasketch.MinHash(num_perm=112, seed=7, scheme=scheme, hashfunc=lambda v: v)
        ref.update_batch([int(v) for v in m.hash_inputs(shingles(t))])
        assert (ref.hashvalues.astype(np.uint64) == sig[i]).all(), (scheme, i)


def test_bad_scheme_is_refused():
    with pytest.raises(ValueError, match="scheme"):
        MinHasher(scheme="sha1")


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


@pytest.mark.parametrize("scheme", ["affine64", "affine32", "legacy"])
def test_estimate_is_unbiased(scheme):
    rng = random.Random(1)
    m = MinHasher(112, 5, seed=1, scheme=scheme)
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
    assert abs(np.mean(errors)) < 0.015  # standard error of the mean ~0.004
    assert np.std(errors) < 0.06  # binomial sd at J=0.5 with 112 perms is 0.047


def test_band_hashes_and_curve():
    m = MinHasher(112, 5, seed=1)
    sig = m.signatures(["a b c d e f g h", "a b c d e f g h", "q r s t u v"])
    bh = band_hashes(sig, 14, 8)
    assert bh.shape == (3, 14) and bh.dtype == np.int64
    assert (bh[0] == bh[1]).all() and not (bh[0] == bh[2]).any()
    assert abs(lsh_threshold(14, 8) - 0.719) < 0.01
    assert candidate_probability(0.85, 14, 8) > 0.98 > candidate_probability(0.6, 14, 8)


def test_large_batches_are_hashed_in_slices_with_the_same_result(monkeypatch):
    import curation.minhash as mh

    rng = random.Random(4)
    texts = [_doc(rng, rng.randint(0, 200)) for _ in range(60)] + ["", "y" * 5000]
    whole_h, whole_d = batch_shingles(texts, 5)
    monkeypatch.setattr(mh, "SLICE_BYTES", 700)  # every slice holds one or a few documents
    part_h, part_d = mh.batch_shingles(texts, 5)
    assert (whole_h == part_h).all() and (whole_d == part_d).all()


def test_digits_normalise_so_numbered_copies_collide():
    """Digits are normalised: pages that differ only in dates/counters share every shingle."""
    a = "posted on 12.03.2024 by the editor of the daily paper in town"
    b = "posted on 07.11.2025 by the editor of the daily paper in town"
    assert (shingles(a) == shingles(b)).all()
    assert len(shingles("alpha beta gamma delta epsilon zeta")) == 2
