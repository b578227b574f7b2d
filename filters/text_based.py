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
``n01440764`` ...) and WordNet 3.0 (``nltk.download("wordnet")``), then writes every WordNet
lemma name ``w`` with ``wordnet.synsets(w)[0].offset()`` in those ids (docs/recipes.md shows the
five lines). The packaged default (``filters/resources/imagenet21k_words_small.txt``) is a small
hand-written list of common ImageNet-21k nouns for the sample and tests, not that list.

The lemmatisation is approximated: a token is tried as written (lower-cased, punctuation at its
ends stripped) and with a plural ``s``/``es`` removed, the regular cases of ``morphy``'s noun
rules; irregular plurals (``mice``) match only if the list holds them.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REASON = "text_based"
DEFAULT_WORDS = "imagenet21k_words_small.txt"
# Punctuation stripped at both ends of a token ("dog," "(cat)" "car's" -> "car").
_EDGE = r"^[^\w]+|(?:'s)?[^\w]*$"


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
        word = pc.replace_substring_regex(flat, _EDGE, "")
        hit = pc.is_in(word, value_set=self.words).to_numpy(zero_copy_only=False)
        for suffix in ("es", "s"):  # morphy's regular noun rules: "boxes" -> "box", "dogs" -> "dog"
            ends = pc.ends_with(word, suffix).to_numpy(zero_copy_only=False) & ~hit
            if ends.any():
                stem = pc.utf8_slice_codeunits(word, 0, -len(suffix))
                hit |= ends & pc.is_in(stem, value_set=self.words).fill_null(False).to_numpy(zero_copy_only=False)
        out = np.zeros(n, dtype=bool)
        if hit.any():
            out[np.unique(parent[hit])] = True
        return out
