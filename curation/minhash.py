"""MinHash signatures computed vectorised over a whole batch of documents.

Text is normalised (:func:`normalize_text`: lower case, punctuation -> space,
every digit -> ``0``, whitespace collapsed) and cut into word n-gram
shingles, each hashed to 64 bits. Everything after normalisation is numpy over
the whole batch (:func:`batch_shingles`): the batch's texts are encoded once,
word boundaries found on the byte array, each word hashed with a polynomial
hash mod 2**64 (prefix sums times powers of the inverse base) and splitmix64,
and the n word hashes of a shingle combined with a multiply-add chain and
splitmix64. Shingles never cross documents; a document with fewer than
``ngram`` words has one shingle (all its words), one with no words has none.
Large batches are cut into slices of about 8 MB of text so the temporaries
(a few uint64 arrays per byte) stay bounded inside a Spark worker.

Permutations (``scheme``), each bit-identical to ``datasketch.MinHash`` with
the same ``num_perm``, ``seed`` and ``scheme`` when datasketch is given our
shingle hashes as its hash values (tested):

- ``affine64`` (default): the 64-bit shingle hash goes through the
  MurmurHash3 64-bit finaliser, then ``h_i(x) = a_i * x + b_i mod 2**64``
  with odd ``a_i`` (datasketch >= 2.0 ``scheme="affine64"``). Full 64-bit
  hashes end to end.
- ``affine32``: the shingle hash folded to 32 bits (``hi ^ lo``), the
  32-bit finaliser, ``a_i * x + b_i mod 2**32`` (datasketch's default scheme).
- ``legacy``: the folded 32-bit hash, ``((a_i * x + b_i) mod 2**64) mod
  (2**61 - 1)`` masked to 32 bits, as datasketch < 2.0 and datatrove; ``mod p``
  is a Mersenne fold instead of a division.

A document without shingles gets ``EMPTY`` (``2**64 - 1``) in every slot.

Speed: the permutation work is laid out permutation-major (``num_perm`` x
8,192 shingles per chunk, contiguous along shingles), so the affine map is two
in-place numpy passes and the per-document minimum is one
``np.minimum.reduceat`` along contiguous memory: no per-shingle Python, no
per-document object.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

MERSENNE_PRIME = (1 << 61) - 1
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
SCHEMES = ("affine64", "affine32", "legacy")

_P = np.uint64(MERSENNE_PRIME)
_M32 = np.uint64(0xFFFFFFFF)
_NONWORD = re.compile(r"[\W_]+")
_DIGIT = re.compile(r"\d")
# ASCII fast path: letters/digits kept (digits -> "0"), every other byte -> space.
_ASCII_TABLE = bytes(
    (c if chr(c).isalpha() else (48 if chr(c).isdigit() else 32)) if c < 128 else c for c in range(256)
)
# Constants of the shingle combiner (odd multiplier; splitmix64 finaliser).
_MUL = np.uint64(0x9E3779B97F4A7C15)
_F1 = np.uint64(0xBF58476D1CE4E5B9)
_F2 = np.uint64(0x94D049BB133111EB)
# MurmurHash3 finalisers (the pre-mix of datasketch's affine schemes).
_FMIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(33), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33))
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
# Bytes of normalised text hashed in one numpy pass (bounds the temporaries to ~40x this).
SLICE_BYTES = 8 << 20


def _normalize_bytes(text: str | None) -> bytes:
    """Normalised text as UTF-8 bytes, words separated by one or more spaces."""
    if not text:
        return b""
    low = text.lower()
    if low.isascii():
        return low.encode("ascii").translate(_ASCII_TABLE)
    return _DIGIT.sub("0", _NONWORD.sub(" ", low)).encode("utf-8", "surrogatepass")


def normalize_text(text: str | None) -> str:
    """Lower case; every run of non-word characters (punctuation, ``_``, whitespace) -> one space;
    every digit -> ``0``; stripped. Lone surrogates pass through."""
    return " ".join(_normalize_bytes(text).decode("utf-8", "surrogatepass").split())


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (a bijection of uint64), elementwise."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * _F1
        h = h ^ (h >> np.uint64(27))
        h = h * _F2
        return h ^ (h >> np.uint64(31))


def _fmix(h: np.ndarray, consts) -> np.ndarray:
    """MurmurHash3 finaliser (datasketch's ``_fmix``), elementwise in the dtype of ``consts``."""
    s1, m1, s2, m2, s3 = consts
    with np.errstate(over="ignore"):
        h = h ^ (h >> s1)
        h = h * m1
        h = h ^ (h >> s2)
        h = h * m2
        return h ^ (h >> s3)


def _powers(base: int, n: int) -> np.ndarray:
    """base**k mod 2**64 for k in [0, n)."""
    out = np.empty(n, dtype=np.uint64)
    if n:
        out[0] = 1
        out[1:] = np.uint64(base)
        with np.errstate(over="ignore"):
            np.cumprod(out, out=out)
    return out


_B = 0x100000001B3            # odd: invertible mod 2**64
_BINV = pow(_B, -1, 1 << 64)


def _slice_shingles(normed: list[bytes], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes and document index (into ``normed``) of already-normalised texts."""
    n_docs = len(normed)
    buf = np.frombuffer(b"\n".join(normed) + b"\n", dtype=np.uint8)
    is_nl = buf == 10
    is_sep = is_nl | (buf == 32)
    prev_sep = np.r_[True, is_sep[:-1]]
    next_sep = np.r_[is_sep[1:], True]
    starts = np.flatnonzero(~is_sep & prev_sep)
    ends = np.flatnonzero(~is_sep & next_sep) + 1
    if len(starts) == 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    doc_of_word = np.cumsum(is_nl)[starts]  # newlines strictly before the word's start
    # Polynomial hash of each word: sum c_k * B^(k - start), from prefix sums.
    n = len(buf)
    with np.errstate(over="ignore"):
        pw = _powers(_B, n)
        pref = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(buf.astype(np.uint64) * pw, out=pref[1:])
        del pw
        inv = _powers(_BINV, n)
        wh = (pref[ends] - pref[starts]) * inv[starts]
        del pref, inv
        wh = _mix64(wh + (ends - starts).astype(np.uint64) * _MUL)
        counts = np.bincount(doc_of_word, minlength=n_docs)
        k = ngram
        m = len(wh) - k + 1
        parts_h, parts_d = [], []
        if m > 0:
            same = doc_of_word[:m] == doc_of_word[k - 1:]
            h = wh[:m].copy()
            for i in range(1, k):
                h = h * _MUL + wh[i: i + m]
            parts_h.append(_mix64(h[same] + np.uint64(k)))
            parts_d.append(doc_of_word[:m][same])
        short = np.flatnonzero((counts > 0) & (counts < k))
        if len(short):
            first = np.searchsorted(doc_of_word, short)
            sh = np.empty(len(short), dtype=np.uint64)
            for j, (d, f) in enumerate(zip(short.tolist(), first.tolist())):
                c = int(counts[d])
                h1 = wh[f: f + 1].copy()
                for i in range(1, c):
                    h1 = h1 * _MUL + wh[f + i: f + i + 1]
                sh[j] = _mix64(h1 + np.uint64(c))[0]
            parts_h.append(sh)
            parts_d.append(short)
    hs = np.concatenate(parts_h) if parts_h else np.empty(0, np.uint64)
    ds = np.concatenate(parts_d).astype(np.int64) if parts_d else np.empty(0, np.int64)
    order = np.argsort(ds, kind="stable")
    return hs[order], ds[order]


def batch_shingles(texts: Sequence[str | None], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """All shingle hashes of a batch of texts (normalised here), and the document index of each.

    Vectorised: the texts are joined with newlines and encoded once per slice
    of ~:data:`SLICE_BYTES`; word boundaries, per-word polynomial hashes (mod
    2**64 via prefix sums and powers of an odd base and its inverse, then
    splitmix64) and the n-gram combination are numpy operations over the
    slice. Shingles never cross documents; a document with 1..ngram-1 words
    has one shingle. Output is sorted by document index.
    """
    normed = [_normalize_bytes(t) for t in texts]
    parts_h, parts_d = [], []
    lo = size = 0
    for i, b in enumerate(normed):
        size += len(b) + 1
        if size >= SLICE_BYTES or i == len(normed) - 1:
            hs, ds = _slice_shingles(normed[lo: i + 1], ngram)
            parts_h.append(hs)
            parts_d.append(ds + lo)
            lo, size = i + 1, 0
    if not parts_h:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    if len(parts_h) == 1:
        return parts_h[0], parts_d[0]
    return np.concatenate(parts_h), np.concatenate(parts_d)


def shingles(text: str | None, ngram: int = 5) -> np.ndarray:
    """The sorted distinct 64-bit shingle hashes of one text (for exact Jaccard)."""
    hs, _ = batch_shingles([text], ngram)
    return np.unique(hs)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two shingle-hash sets (as returned by :func:`shingles`)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


class MinHasher:
    """``num_perm`` MinHash permutations over word ``ngram`` shingles, seeded by ``seed``.

    The permutation parameters are datasketch's for the same ``seed`` and
    ``scheme`` (numpy ``RandomState(seed)``; see the module docstring), so a
    signature equals ``datasketch.MinHash(num_perm, seed, scheme=scheme,
    hashfunc=...)`` fed with :meth:`hash_inputs` of the same shingles, value
    for value.

    >>> MinHasher(112, 5, 1).signatures(["a b c d e f", ""]).shape
    (2, 112)
    """

    def __init__(self, num_perm: int = 112, ngram: int = 5, seed: int = 1, chunk: int = 8192,
                 scheme: str = "affine64"):
        if num_perm < 1 or ngram < 1:
            raise ValueError("num_perm and ngram must be >= 1")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        self.chunk = chunk
        self.scheme = scheme
        gen = np.random.RandomState(seed)
        if scheme == "legacy":
            ab = np.array(
                [(gen.randint(1, _P, dtype=np.uint64), gen.randint(0, _P, dtype=np.uint64)) for _ in range(num_perm)],
                dtype=np.uint64,
            )
            self.a, self.b = ab[:, 0].copy(), ab[:, 1].copy()
            self.dtype = np.uint64
        else:
            width = 64 if scheme == "affine64" else 32
            self.dtype = np.uint64 if width == 64 else np.uint32
            with np.errstate(over="ignore"):
                self.a = gen.randint(0, 1 << (width - 1), num_perm, dtype=self.dtype) * self.dtype(2) + self.dtype(1)
            self.b = gen.randint(0, 1 << width, num_perm, dtype=self.dtype)
        self._a = self.a[:, None]
        self._b = self.b[:, None]

    @staticmethod
    def fold32(h: np.ndarray) -> np.ndarray:
        return (h ^ (h >> np.uint64(32))) & _M32

    def hash_inputs(self, hs: np.ndarray) -> np.ndarray:
        """What the scheme's permutations take for 64-bit shingle hashes ``hs`` (datasketch's ``hashfunc`` output)."""
        hs = np.asarray(hs, dtype=np.uint64)
        return hs if self.scheme == "affine64" else self.fold32(hs)

    def _premix(self, hs: np.ndarray) -> np.ndarray:
        x = self.hash_inputs(hs)
        if self.scheme == "affine64":
            return _fmix(x, _FMIX64)
        if self.scheme == "affine32":
            return _fmix(x.astype(np.uint32), _FMIX32)
        return x

    def _permute_into(self, x: np.ndarray, out: np.ndarray, tmp: np.ndarray | None) -> np.ndarray:
        """Permutation values of premixed inputs ``x`` (k,) into ``out`` (num_perm, k)."""
        with np.errstate(over="ignore"):
            np.multiply(self._a, x[None, :], out=out)
            out += self._b
            if self.scheme == "legacy":
                # (t mod p) for t < 2**64 via the Mersenne fold, then datasketch's 32-bit mask.
                np.right_shift(out, np.uint64(61), out=tmp)
                out &= _P
                out += tmp
                np.subtract(out, _P, out=tmp)
                np.minimum(out, tmp, out=out)
                out &= _M32
        return out

    def permute(self, hs: np.ndarray) -> np.ndarray:
        """Every permutation's value for 64-bit shingle hashes ``hs`` (n,) -> (n, num_perm)."""
        x = self._premix(np.asarray(hs, dtype=np.uint64))
        out = np.empty((self.num_perm, len(x)), dtype=self.dtype)
        tmp = np.empty_like(out) if self.scheme == "legacy" else None
        return self._permute_into(x, out, tmp).T

    def _signatures(self, hs: np.ndarray, docs: np.ndarray, n: int) -> np.ndarray:
        """Signatures of ``n`` documents from shingle hashes ``hs`` sorted by document ``docs``."""
        sig = np.full((self.num_perm, n), np.iinfo(self.dtype).max, dtype=self.dtype)
        if len(hs):
            x = self._premix(hs)
            k = min(self.chunk, len(x))
            buf = np.empty((self.num_perm, k), dtype=self.dtype)
            tmp = np.empty_like(buf) if self.scheme == "legacy" else None
            for start in range(0, len(x), self.chunk):
                stop = min(start + self.chunk, len(x))
                w = stop - start
                phv = self._permute_into(x[start:stop], buf[:, :w], None if tmp is None else tmp[:, :w])
                d = docs[start:stop]
                cut = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
                mins = np.minimum.reduceat(phv, cut, axis=1)
                ids = d[cut]
                sig[:, ids] = np.minimum(sig[:, ids], mins)
        out = sig.T.astype(np.uint64)
        out[np.bincount(docs, minlength=n) == 0] = EMPTY
        return out

    def signatures_from_shingles(self, shingle_lists: Sequence[np.ndarray]) -> np.ndarray:
        """Signatures (len(shingle_lists), num_perm) uint64; EMPTY rows for empty lists."""
        n = len(shingle_lists)
        lengths = np.fromiter((len(s) for s in shingle_lists), dtype=np.int64, count=n)
        if n == 0 or lengths.sum() == 0:
            return np.full((n, self.num_perm), EMPTY, dtype=np.uint64)
        hs = np.concatenate([np.asarray(s, dtype=np.uint64) for s in shingle_lists if len(s)])
        return self._signatures(hs, np.repeat(np.arange(n), lengths), n)

    def signatures(self, texts: Iterable[str | None]) -> np.ndarray:
        """MinHash signatures of ``texts`` as an (n, num_perm) uint64 array (EMPTY rows: no words)."""
        texts = list(texts)
        hs, docs = batch_shingles(texts, self.ngram)
        return self._signatures(hs, docs, len(texts))


def band_hashes(signatures: np.ndarray, num_bands: int, rows_per_band: int) -> np.ndarray:
    """One signed 64-bit hash per band: (n, num_bands) int64 (Spark ``bigint``).

    A band is ``rows_per_band`` consecutive signature values; its hash is a
    multiply-add chain of the values plus the band index, finalised with
    splitmix64. Rows of an empty document hash like any other (they are
    filtered out before bucketing by the caller).
    """
    n = signatures.shape[0]
    need = num_bands * rows_per_band
    if signatures.shape[1] < need:
        raise ValueError(f"signature has {signatures.shape[1]} values, bands need {need}")
    s = signatures[:, :need].astype(np.uint64).reshape(n, num_bands, rows_per_band)
    with np.errstate(over="ignore"):
        h = np.broadcast_to(np.arange(num_bands, dtype=np.uint64)[None, :] + np.uint64(1), (n, num_bands)).copy()
        for j in range(rows_per_band):
            h = _mix64(h * _MUL + s[:, :, j])
    return h.view(np.int64)


def lsh_threshold(num_bands: int, rows_per_band: int) -> float:
    """Jaccard where the candidate probability 1-(1-s^r)^b rises fastest, ~ (1/b)^(1/r)."""
    return (1.0 / num_bands) ** (1.0 / rows_per_band)


def candidate_probability(s: float, num_bands: int, rows_per_band: int) -> float:
    """Probability that two sets of Jaccard ``s`` share at least one band."""
    return 1.0 - (1.0 - s**rows_per_band) ** num_bands
