"""Streaming loaders for the trainer: image-text pairs and interleaved documents.

Pairs come from Parquet shards with the ``IMAGE_PAIRS`` columns (``key, caption, image``, and
``sha256`` when present; extra columns such as ``clip_score`` are ignored), WebDataset tars
(``<key>.jpg|png|webp`` + ``<key>.txt`` + ``<key>.json``) or an in-memory Arrow table (a COCO
split read by :mod:`models.coco`).

How the stream is laid out, and why it resumes exactly:

- Every shard is cut into *units* (a Parquet row group, or a slice of at most ``rows_per_unit``
  rows of one; a slice of a tar's samples). Each epoch shuffles the units with ``seed`` and the
  epoch number, and logical stream ``s`` of ``S`` reads units ``s, s+S, ...``.
- A stream runs its units through a shuffle buffer seeded by ``(seed, epoch, stream)``, decodes
  the images (JPEG at reduced scale with PIL's ``draft`` when the model is small), skips bad rows
  (undecodable image, empty caption) with a counted reason, and yields whole batches. Streams are
  endless (epoch after epoch) for training and one pass for evaluation.
- DataLoader worker ``i`` serves logical stream ``(i + rotation) % S``; the DataLoader takes
  batches from its workers round-robin, so the global batch order is fixed by the seed.
  Each batch says which stream made it and where that stream is (``epoch``, rows consumed in
  the epoch). A :class:`LoaderState` saved with a checkpoint (each stream's position, and the
  stream due next as the rotation) rebuilds the same sequence: a stream replays its epoch's
  units through the same buffer without decoding the rows it had already served.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import random
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.image_decode import ImageDecodeError, decode_image

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
PAIR_COLUMNS = ("key", "caption", "image")


def image_id_of(sha256_hex: str | None, blob: bytes | None) -> int:
    """A 60-bit integer id of an image (from its sha256): equal ids mean the same picture."""
    digest = sha256_hex or hashlib.sha256(blob or b"").hexdigest()
    return int(digest[:15], 16)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Unit:
    """Rows ``start:stop`` of part ``part`` (a Parquet row group; 0 for tars and tables) of one source."""

    source: int
    part: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class RawPair:
    """One row before decoding: what the shuffle buffer holds."""

    key: str
    caption: str | None
    image: bytes | None
    sha256: str | None


class PairSource:
    """A shard of pairs that can list its units and read one unit's raw rows."""

    path: str

    def parts(self) -> list[int]:
        """Rows per part (row group, tar, table)."""
        raise NotImplementedError

    def read(self, unit: Unit) -> Iterator[RawPair]:
        raise NotImplementedError

    def units(self, index: int, rows_per_unit: int) -> list[Unit]:
        out = []
        for part, n in enumerate(self.parts()):
            for start in range(0, n, rows_per_unit):
                out.append(Unit(index, part, start, min(n, start + rows_per_unit)))
        return out

    def captions(self) -> Iterator[str]:
        """Every row's caption (to learn a tokenizer vocabulary)."""
        for part, n in enumerate(self.parts()):
            for r in self.read(Unit(0, part, 0, n)):
                if r.caption:
                    yield r.caption

    def sha256s(self) -> list[str]:
        """The sha256 of every row's image (for decontamination)."""
        return [r.sha256 or hashlib.sha256(r.image or b"").hexdigest()
                for part, n in enumerate(self.parts()) for r in self.read(Unit(0, part, 0, n))]


class DataError(ValueError):
    """The training or evaluation data cannot be read (missing columns, no shards, ...)."""


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


class ParquetSource(PairSource):
    def __init__(self, path: str):
        self.path = str(path)
        self._meta = pq.ParquetFile(self.path).metadata
        names = set(pq.read_schema(self.path).names)
        missing = [c for c in PAIR_COLUMNS if c not in names]
        if missing:
            raise DataError(f"{self.path}: not a pair shard, missing column(s) {', '.join(missing)} "
                            f"(IMAGE_PAIRS needs {', '.join(PAIR_COLUMNS)}; it has {', '.join(sorted(names))})")
        self.columns = [c for c in ("key", "caption", "image", "sha256") if c in names]
        self._pf = None

    def __getstate__(self):  # ParquetFile handles do not cross process boundaries
        return {**self.__dict__, "_pf": None}

    def parts(self) -> list[int]:
        return [self._meta.row_group(i).num_rows for i in range(self._meta.num_row_groups)]

    def read(self, unit: Unit) -> Iterator[RawPair]:
        if self._pf is None:
            self._pf = pq.ParquetFile(self.path)
        t = self._pf.read_row_group(unit.part, columns=self.columns).slice(unit.start, unit.rows)
        for k, c, im, s in zip(_column(t, "key"), _column(t, "caption"), _column(t, "image"), _column(t, "sha256")):
            yield RawPair(k, c, im, s)

    def captions(self) -> Iterator[str]:
        for c in pq.read_table(self.path, columns=["caption"]).column("caption").to_pylist():
            if c:
                yield c

    def sha256s(self) -> list[str]:
        if "sha256" in self.columns:
            vals = pq.read_table(self.path, columns=["sha256"]).column("sha256").to_pylist()
            if all(vals):
                return vals
        return super().sha256s()


class TableSource(PairSource):
    """An in-memory Arrow table with the IMAGE_PAIRS columns (e.g. a COCO split)."""

    def __init__(self, table: pa.Table, name: str = "<table>"):
        missing = [c for c in PAIR_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"{name}: missing column(s) {', '.join(missing)}")
        self.path = name
        self.table = table.select([c for c in ("key", "caption", "image", "sha256") if c in table.column_names])

    def parts(self) -> list[int]:
        return [self.table.num_rows]

    def read(self, unit: Unit) -> Iterator[RawPair]:
        t = self.table.slice(unit.start, unit.rows)
        for k, c, im, s in zip(_column(t, "key"), _column(t, "caption"), _column(t, "image"), _column(t, "sha256")):
            yield RawPair(k, c, im, s)


def wds_members(tf: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """``(member, key, extension)`` for each sample file of a WebDataset tar, in tar order.

    WebDataset's naming: the key is the member's path up to the first dot of its file name, the
    extension the rest (``a/0001.jpg`` -> ``a/0001``, ``jpg``); directories and dot files are not
    samples. Both tar readers (pair tars, interleaved tars) group members by this key.
    """
    for m in tf:
        if not m.isfile():
            continue
        base = m.name.rsplit("/", 1)[-1]
        if "." not in base or base.startswith("."):
            continue
        stem, ext = base.split(".", 1)
        yield m, m.name[: len(m.name) - len(base)] + stem, ext


class TarSource(PairSource):
    """A WebDataset tar: members ``<key>.<ext>`` grouped by key; image + ``txt`` (or ``json`` caption)."""

    def __init__(self, path: str):
        self.path = str(path)
        self._samples = self._scan()

    def _scan(self) -> list[tuple[str, dict[str, tuple[int, int]]]]:
        with open(self.path, "rb") as fh:
            if fh.read(2) == b"\x1f\x8b":
                raise DataError(f"{self.path}: compressed tar; WebDataset shards must be plain .tar")
        samples: dict[str, dict[str, tuple[int, int]]] = {}
        order: list[str] = []
        with tarfile.open(self.path, "r:*") as tf:
            for m, key, ext in wds_members(tf):
                if key not in samples:
                    samples[key] = {}
                    order.append(key)
                samples[key][ext.lower()] = (m.offset_data, m.size)
        return [(k, samples[k]) for k in order]

    def parts(self) -> list[int]:
        return [len(self._samples)]

    def read(self, unit: Unit) -> Iterator[RawPair]:
        with open(self.path, "rb") as fh:
            def member(off_size):
                fh.seek(off_size[0])
                return fh.read(off_size[1])

            for key, members in self._samples[unit.start:unit.stop]:
                meta: dict[str, Any] = {}
                if "json" in members:
                    try:
                        meta = json.loads(member(members["json"]))
                    except (ValueError, UnicodeDecodeError):
                        meta = {}
                caption = None
                if "txt" in members:
                    caption = member(members["txt"]).decode("utf-8", "replace")
                elif isinstance(meta.get("caption"), str):
                    caption = meta["caption"]
                ext = next((e for e in IMAGE_EXTS if e in members), None)
                image = member(members[ext]) if ext else None
                yield RawPair(str(meta.get("key") or key.rsplit("/", 1)[-1]), caption, image, meta.get("sha256"))


def _shard_files(path: str) -> list[str]:
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and f.suffix in (".parquet", ".tar")
                 and not any(part.startswith((".", "_")) or part == "rejects" for part in f.relative_to(p).parts)]
        return sorted(str(f) for f in files)
    if p.is_file():
        return [str(p)]
    return sorted(glob.glob(path))


def open_sources(data: "str | Path | pa.Table | Sequence[str | Path | pa.Table]") -> list[PairSource]:
    """Pair sources of a directory (Parquet and tar shards below it, ``rejects/`` and hidden files
    left out; a stage directory means its ``pairs/``), a glob, a file, an Arrow table, or a list of those."""
    items = list(data) if isinstance(data, (list, tuple)) else [data]
    sources: list[PairSource] = []
    for item in items:
        if isinstance(item, pa.Table):
            sources.append(TableSource(item))
            continue
        path = Path(str(item))
        if path.is_dir() and (path / "pairs").is_dir():
            path = path / "pairs"  # a stage directory (<run>/images, <run>/score, ...): its pair output
        files = _shard_files(str(path))
        if not files:
            raise DataError(f"no .parquet or .tar shards found at {item}")
        for f in files:
            sources.append(TarSource(f) if f.endswith(".tar") else ParquetSource(f))
    return sources


# --------------------------------------------------------------------------- the stream


@dataclass
class LoaderState:
    """Where each logical stream is (``[epoch, rows consumed in that epoch]``) and which stream
    the DataLoader serves next; saved in checkpoints."""

    positions: list[list[int]]
    next_stream: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rows_seen: int = 0

    @classmethod
    def fresh(cls, n_streams: int) -> "LoaderState":
        return cls([[0, 0] for _ in range(n_streams)])

    def advance(self, batch: dict) -> None:
        """Record that the trainer consumed ``batch``."""
        s = int(batch["_stream"])
        self.positions[s] = [int(batch["_epoch"]), int(batch["_offset"])]
        self.next_stream = (s + 1) % len(self.positions)
        for reason, n in batch["_skipped"].items():
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)
        self.rows_seen += int(batch["_rows"])

    def to_dict(self) -> dict:
        return {"positions": self.positions, "next_stream": self.next_stream,
                "skipped": dict(self.skipped), "rows_seen": self.rows_seen}

    @classmethod
    def from_dict(cls, d: dict) -> "LoaderState":
        return cls([list(p) for p in d["positions"]], d["next_stream"], dict(d["skipped"]), d.get("rows_seen", 0))


def _shuffled(items: Iterator[RawPair], size: int, rng: random.Random) -> Iterator[RawPair]:
    """A shuffle buffer: hold ``size`` rows, emit a random one as each new row arrives."""
    if size <= 1:
        yield from items
        return
    buf: list[RawPair] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        i = rng.randrange(size)
        yield buf[i]
        buf[i] = item
    rng.shuffle(buf)
    yield from buf


class PairStream:
    """Batches of decoded pairs, deterministic per seed and resumable (see the module docstring).

    Use through :meth:`loader` (a torch DataLoader over :class:`_TorchPairStream`). ``image_transform``
    maps an RGB PIL image to a tensor; ``text_transform`` (optional) maps the batch's captions to
    model inputs in the worker. Batches are dicts: ``pixels``, ``texts``, ``text_inputs``,
    ``image_ids`` (equal for the same picture), ``keys`` and the stream bookkeeping
    (``_stream``, ``_epoch``, ``_offset``, ``_rows``, ``_skipped``).
    """

    def __init__(self, data, batch_size: int, image_transform: Callable, text_transform: Callable | None = None,
                 *, seed: int = 0, shuffle_buffer: int = 0, rows_per_unit: int = 256, num_workers: int = 0,
                 infinite: bool = True, draft_size: int | None = None, rank: int = 0, world_size: int = 1,
                 decode_cache_mb: float = 0):
        self.sources = data if isinstance(data, list) and data and isinstance(data[0], PairSource) else open_sources(data)
        self.batch_size = batch_size
        self.image_transform = image_transform
        self.text_transform = text_transform
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.infinite = infinite
        self.draft_size = draft_size
        self.rank, self.world_size = rank, world_size
        self._units = [u for i, s in enumerate(self.sources) for u in s.units(i, rows_per_unit) if u.rows > 0]
        if not self._units:
            raise DataError("the data holds no rows")
        # More streams than units would leave a stream with nothing to read.
        per_rank = max(1, len(self._units) // world_size)
        self.num_workers = min(num_workers, per_rank)
        self.streams_per_rank = max(1, self.num_workers)
        self.total_rows = sum(u.rows for u in self._units)
        # Decoded, transformed pictures by their bytes' digest (or the reason they were skipped).
        # The transform has no randomness, so a cached tensor equals a fresh decode: a small
        # dataset trained for many epochs (the fixed-budget experiment) decodes each picture once
        # per stream instead of once per epoch. Filled first come, never evicted, up to the bound;
        # each DataLoader worker holds its own.
        self.decode_cache_bytes = int(decode_cache_mb * 2**20)
        self._decoded: dict[bytes, Any] = {}
        self._decoded_bytes = 0

    # ---------------------------------------------------------------- epochs

    def epoch_units(self, epoch: int, stream: int) -> list[Unit]:
        units = list(self._units)
        random.Random(f"units:{self.seed}:{epoch}").shuffle(units)
        n_streams = self.streams_per_rank * self.world_size
        return units[self.rank * self.streams_per_rank + stream::n_streams]

    def rows_of(self, epoch: int, stream: int) -> Iterator[RawPair]:
        rows = (r for u in self.epoch_units(epoch, stream) for r in self.sources[u.source].read(u))
        return _shuffled(rows, self.shuffle_buffer, random.Random(f"buffer:{self.seed}:{epoch}:{self.rank}:{stream}"))

    # ---------------------------------------------------------------- one stream

    def iterate(self, stream: int, start: tuple[int, int] = (0, 0)) -> Iterator[dict]:
        """Batches of logical stream ``stream`` from position ``start`` (epoch, rows consumed)."""
        epoch, skip = start
        pixels, texts, ids, keys = [], [], [], []
        skipped: Counter = Counter()
        while True:
            offset = 0
            good_in_epoch = 0
            whole_epoch = skip == 0
            for raw in self.rows_of(epoch, stream):
                offset += 1
                if offset <= skip:
                    continue  # served before the checkpoint: not decoded again
                caption = (raw.caption or "").strip()
                if not caption:
                    skipped["empty_caption"] += 1
                    continue
                px = self._pixels(raw)
                if isinstance(px, str):
                    skipped[px] += 1
                    continue
                pixels.append(px)
                texts.append(caption)
                ids.append(image_id_of(raw.sha256, raw.image))
                keys.append(raw.key)
                good_in_epoch += 1
                if len(pixels) == self.batch_size:
                    yield self._collate(pixels, texts, ids, keys, stream, epoch, offset, skipped)
                    pixels, texts, ids, keys = [], [], [], []
                    skipped = Counter()
            skip = 0
            if not self.infinite:
                if pixels or skipped:
                    yield self._collate(pixels, texts, ids, keys, stream, epoch, offset, skipped)
                return
            if good_in_epoch == 0 and whole_epoch:
                raise DataError(f"stream {stream} found no usable row in epoch {epoch} (skipped: {dict(skipped)})")
            epoch += 1

    def _pixels(self, raw: RawPair):
        """The row's image tensor, or the reason it is skipped (a str); from the cache when it holds it."""
        digest = None
        if self.decode_cache_bytes > 0:
            digest = hashlib.blake2b(raw.image or b"", digest_size=16).digest()
            hit = self._decoded.get(digest)
            if hit is not None:
                return hit
        try:
            px = self.image_transform(decode_image(raw.image, self.draft_size))
        except ImageDecodeError as exc:
            px = exc.reason
        except Exception as exc:  # noqa: BLE001 - a transform failing on one image skips it
            log.debug("image transform failed for %s: %s", raw.key, exc)
            px = "image_transform_failed"
        if digest is not None:
            size = 64 if isinstance(px, str) else int(px.element_size() * px.nelement())
            if self._decoded_bytes + size <= self.decode_cache_bytes:
                self._decoded[digest] = px
                self._decoded_bytes += size
        return px

    def _collate(self, pixels, texts, ids, keys, stream, epoch, offset, skipped) -> dict:
        import torch

        batch = {
            "pixels": torch.stack(pixels) if pixels else torch.empty(0),
            "texts": list(texts),
            "image_ids": torch.tensor(ids, dtype=torch.int64),
            "keys": list(keys),
            "_stream": stream,
            "_epoch": epoch,
            "_offset": offset,
            "_rows": len(pixels),
            "_skipped": dict(skipped),
        }
        if self.text_transform is not None and texts:
            batch["text_inputs"] = self.text_transform(list(texts))
        return batch

    # ---------------------------------------------------------------- torch

    def loader(self, state: LoaderState | None = None, generator_seed: int | None = None, pin_memory: bool = False):
        """A torch DataLoader yielding this stream's batches from ``state`` (start when None)."""
        import torch
        from torch.utils.data import DataLoader

        if state is not None and len(state.positions) != self.streams_per_rank:
            raise DataError(f"loader state has {len(state.positions)} streams but this loader has "
                            f"{self.streams_per_rank}: resume with the same num_workers and data")
        ds = _TorchPairStream(self, state)
        gen = torch.Generator().manual_seed(self.seed if generator_seed is None else generator_seed)
        return DataLoader(ds, batch_size=None, num_workers=self.num_workers, generator=gen, pin_memory=pin_memory,
                          persistent_workers=False, prefetch_factor=2 if self.num_workers else None)

    def __iter__(self) -> Iterator[dict]:
        """Single-process iteration (all streams round-robin), the same order a DataLoader gives."""
        return iter(_TorchPairStream(self, None, single_process=True))


def _torch_iterable():
    from torch.utils.data import IterableDataset

    return IterableDataset


class _TorchPairStream(_torch_iterable()):
    """The torch face of :class:`PairStream`: worker ``i`` serves stream ``(i + rotation) % S``."""

    def __init__(self, stream: PairStream, state: LoaderState | None, single_process: bool = False):
        super().__init__()
        self.stream = stream
        self.state = state or LoaderState.fresh(stream.streams_per_rank)
        self.single_process = single_process

    def __iter__(self) -> Iterator[dict]:
        from torch.utils.data import get_worker_info

        n = self.stream.streams_per_rank
        info = get_worker_info()
        if info is None and (self.single_process or self.stream.num_workers == 0):
            # One process serves all streams in the DataLoader's round-robin order.
            iters = {}
            order = [(self.state.next_stream + i) % n for i in range(n)]
            for s in order:
                iters[s] = self.stream.iterate(s, tuple(self.state.positions[s]))
            live = list(order)
            while live:
                for s in list(live):
                    try:
                        yield next(iters[s])
                    except StopIteration:
                        live.remove(s)
            return
        worker = info.id if info is not None else 0
        s = (worker + self.state.next_stream) % n
        yield from self.stream.iterate(s, tuple(self.state.positions[s]))


# --------------------------------------------------------------------------- interleaved documents


@dataclass
class InterleavedDoc:
    """One page in order: ``items`` is a list of ``("text", str)`` and ``("image", tensor)``."""

    doc_id: str
    url: str | None
    items: list[tuple[str, Any]]
    skipped: dict[str, int]


class InterleavedStream(_torch_iterable()):
    """Documents of INTERLEAVED shards (DOCUMENTS + ``image_bytes`` aligned with positions), text and
    images in page order, for Flamingo/OBELICS-style consumers. Undecodable images are dropped from the
    document and counted in its ``skipped``; a document left with nothing is skipped and counted in
    ``skipped_documents`` (of this process: each DataLoader worker counts its own). Row groups are split
    between DataLoader workers; ``shuffle`` permutes row groups per epoch with ``seed``. The release
    stage's interleaved tars (one sample per document, :func:`interleaved_tar_rows`) are read too, a
    tar being one unit."""

    def __init__(self, data, image_transform: Callable | None = None, *, seed: int = 0, shuffle: bool = False,
                 epoch: int = 0, draft_size: int | None = None):
        super().__init__()
        paths = [p for item in ([data] if isinstance(data, (str, Path)) else data) for p in _shard_files(str(item))]
        if not paths:
            raise DataError(f"no interleaved .parquet or .tar shards at {data}")
        self.paths = [p for p in paths if p.endswith((".parquet", ".tar"))]
        for p in self.paths:
            if p.endswith(".tar"):
                continue
            names = set(pq.read_schema(p).names)
            missing = {"doc_id", "texts", "images", "image_bytes"} - names
            if missing:
                raise DataError(f"{p}: not an interleaved shard, missing {', '.join(sorted(missing))}")
        # A tar is one unit (row group -1): its documents are read in order, one at a time.
        self.units = [(p, rg) for p in self.paths
                      for rg in ((-1,) if p.endswith(".tar") else range(pq.ParquetFile(p).metadata.num_row_groups))]
        self.image_transform = image_transform
        self.seed, self.shuffle, self.epoch, self.draft_size = seed, shuffle, epoch, draft_size
        self.skipped_documents: Counter = Counter()

    def __iter__(self) -> Iterator[InterleavedDoc]:
        from torch.utils.data import get_worker_info

        units = list(self.units)
        if self.shuffle:
            random.Random(f"docs:{self.seed}:{self.epoch}").shuffle(units)
        info = get_worker_info()
        if info is not None:
            units = units[info.id::info.num_workers]
        for path, rg in units:
            rows = interleaved_tar_rows(path) if rg < 0 else pq.ParquetFile(path).read_row_group(
                rg, columns=["doc_id", "url", "texts", "images", "image_bytes"]).to_pylist()
            for row in rows:
                doc = self._doc(row)
                if doc is None:
                    self.skipped_documents["empty_document"] += 1
                else:
                    yield doc

    def _doc(self, row: dict) -> InterleavedDoc | None:
        texts, images, blobs = row["texts"] or [], row["images"] or [], row["image_bytes"] or []
        items: list[tuple[str, Any]] = []
        skipped: Counter = Counter()
        for i in range(max(len(texts), len(images))):
            text = texts[i] if i < len(texts) else None
            if text is not None:
                items.append(("text", text))
                continue
            if i < len(images) and images[i] is not None:
                try:
                    im = decode_image(blobs[i] if i < len(blobs) else None, self.draft_size)
                    items.append(("image", self.image_transform(im) if self.image_transform else im))
                except ImageDecodeError as exc:
                    skipped[exc.reason] += 1
        if not items:
            return None
        return InterleavedDoc(row["doc_id"], row.get("url"), items, dict(skipped))


def interleaved_tar_rows(path: str) -> Iterator[dict]:
    """Documents of an interleaved WebDataset tar (pipelines/release.py) as INTERLEAVED-like rows.

    A sample is ``<key>.json`` (``doc_id``, ``url``, ``texts`` and ``images`` aligned by position,
    an image position naming its member ``<key>.<name>``, ``image_urls``) and one member per image.
    Members of a sample are consecutive (webdataset's rule), so one document is held at a time.
    """
    def row(doc: dict | None, blobs: dict[str, bytes]) -> dict | None:
        if doc is None:
            return None
        names = doc.get("images") or []
        urls = doc.get("image_urls") or names
        return {"doc_id": doc.get("doc_id"), "url": doc.get("url"), "texts": doc.get("texts") or [],
                "images": [urls[i] if n is not None else None for i, n in enumerate(names)],
                "image_bytes": [blobs.get(n) if n is not None else None for n in names]}

    current, doc, blobs = None, None, {}
    with tarfile.open(path, "r|") as tf:
        for m, key, name in wds_members(tf):
            if key != current:
                done = row(doc, blobs)
                if done is not None:
                    yield done
                current, doc, blobs = key, None, {}
            data = tf.extractfile(m).read()
            if name == "json":
                doc = json.loads(data)
            else:
                blobs[name] = data
    done = row(doc, blobs)
    if done is not None:
        yield done
