"""``curate capfilt``: BLIP's Captioner + Filter over the scored pairs, on the score stage's Dask workers.

Input: ``pairs`` (SCORED_PAIRS, ``score/pairs``) and ``models`` (``bootstrap/models``, used when
``capfilt.captioner``/``capfilt.filter`` are ``bootstrap``). Pictures are grouped by sha256 (URL
when missing): the pair with the smallest key is the picture's *image pair*, its key the picture's
``image_key``. Three sharded phases on :class:`curation.dask_stage.DaskStage` (which owns the
client, the preflight, models loaded once per worker, the work dir and its clean-up; outputs
atomic, finished shards skipped on rerun); the client holds shard plans and counts, never rows
or picture sets:

0. ``capfilt:by-picture`` (work dir ``<out>/_work/capfilt-<hash>/by_picture/``): each input shard
   writes its rows ordered by a hash of their picture (one Parquet row group per picture shard),
   so every caption of a picture meets in one *picture shard* (as many as input shards; a picture
   shard is the same row group of every input shard's file, rows in input order).
1. ``capfilt:caption`` (work dir ``<out>/_work/capfilt-<hash>/``): per picture shard, the
   ``image_key`` of each row (the smallest key of its picture: all are here), then chunks of
   ``batch_size`` pictures are decoded (the next chunk in a thread while the models run), the
   captioner writes ``num_captions`` synthetic captions for each picture (batched ``generate``:
   prompt "a picture of ", nucleus top_p 0.9, 30/10 max/min tokens, repetition penalty 1.1; each
   picture's sampling noise seeded by the picture itself, so the captions do not depend on shards,
   batches or row order), and the filter's ITM head scores every web caption and every synthetic
   caption against its picture, each picture's vision tokens computed once. Then, in the same
   task, the per-picture decision: a picture is kept when at least one of its captions (web or
   synthetic) has p(match) >= ``itm_threshold``, else it is ``no_surviving_caption``.
2. ``capfilt:write`` writes the outputs per picture shard, and returns the counts the stats sum.

Outputs (``<stage>/``): ``pairs/`` BOOTSTRAPPED_PAIRS: kept web captions (``key`` = the pair key,
``caption_source`` alt/figcaption/title as extracted, ``caption_model`` "web") and kept synthetic
captions (``key`` = ``<image_key>-syn<k>``, ``caption_source`` "synthetic", ``caption_model`` the
captioner, the image pair's picture and page columns, ``clip_score``/``embedding_row`` null: CLIP
scored the web caption, not this one); ``rejects/``; ``stats.json``.

Accounting. Main table = input pairs: kept, or ``itm_below_threshold`` (the filter removed the web
caption), ``empty_caption``, or the picture's decode reason (``undecodable``,
``no_image_bytes``, ``decompression_bomb``). ``tables.images`` = unique pictures: kept, the decode
reason, or ``no_surviving_caption`` (no web or synthetic caption passed: dropped). Synthetic
captions were never input rows: ``tables.synthetic_captions`` conserves them on their own
(generated = kept + ``itm_below_threshold`` + ``empty_caption``) and each removed one is a reject
row of table ``synthetic_captions`` (row id ``<image_key>-syn<k>``, detail = p(match) and the text),
so the filter's decisions on them can be audited. On a sample run, ``counters`` also hold the
filter's precision/recall against the planted wrong/boilerplate captions and how many synthetic
captions name their picture's true shape and colour (pipelines/sample_truth.py).
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from curation import dask_cluster as cluster
from curation.config import CapfiltConfig
from curation.dask_cluster import Shard, ShardOutput
from curation.dask_stage import DaskRun, DaskStage, Resources
from curation.errors import StageError
from curation.prefetch import prefetch
from curation.rejects import concat_rejects, rejects_table
from curation.schemas import BOOTSTRAPPED_PAIRS, SCORED_PAIRS
from curation.stage import StageContext, StageStats
from models.resolve import local_model, model_label, models_dir_of, resolve_model, source_root_of

log = logging.getLogger(__name__)

STAGE = "capfilt"
WEB = "web"
SYNTHETIC = "synthetic"
SYNTHETIC_TABLE = "synthetic_captions"
BELOW = "itm_below_threshold"
NO_CAPTION = "no_surviving_caption"


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class CapfiltSpec:
    """What a worker needs besides the shard (picklable): resolved models and BLIP's settings."""

    captioner: str
    filter: str
    caption_model: str  # the captioner's name in the output (run-independent)
    itm_first_token: str | None
    prompt: str | None
    num_captions: int
    top_p: float
    max_length: int
    min_length: int
    repetition_penalty: float
    itm_threshold: float
    filter_web: bool
    filter_synthetic: bool
    device: str
    batch_size: int
    seed: int
    threads: int | None = None

    @classmethod
    def of(cls, cfg: CapfiltConfig, captioner: str, filt: str, caption_model: str, threads: int | None) -> "CapfiltSpec":
        return cls(captioner, filt, caption_model, cfg.itm_first_token, cfg.prompt, cfg.num_captions, cfg.top_p,
                   cfg.max_length, cfg.min_length, cfg.repetition_penalty, cfg.itm_threshold, cfg.filter_web,
                   cfg.filter_synthetic, cfg.device, cfg.batch_size, cfg.seed, threads)

    def bundles(self):
        """(captioner, filter) loaded once per worker process (``setup_once``)."""
        device = cluster.worker_device(self.device)
        cap = cluster.setup_once(("blip-captioner", self.captioner, device, self.threads),
                         partial(_load, "captioner", self.captioner, device, self.threads, None))
        filt = cluster.setup_once(("blip-filter", self.filter, device, self.threads, self.itm_first_token),
                          partial(_load, "filter", self.filter, device, self.threads, self.itm_first_token))
        return cap, filt


def _load(role: str, name: str, device: str, threads: int | None, itm_first_token: str | None):
    import torch

    from models import blip as B

    if threads and device == "cpu":
        torch.set_num_threads(threads)
    path = local_model(name)  # a model in a remote run directory: copied to this machine's cache first
    if role == "captioner":
        bundle = B.load_captioner(path, device)
    else:
        bundle = B.load_filter(path, device, itm_first_token=itm_first_token)
        tok = bundle.tokenizer
        if bundle.itm_first_token == "enc" and B.enc_token_id(tok) == tok.unk_token_id:
            raise StageError(f"capfilt.itm_first_token is 'enc' but the tokenizer of {name} has no [ENC] token; "
                             "use itm_first_token=cls or a tokenizer with BLIP's [ENC]")
    log.info("capfilt: loaded %s %s on %s (%d torch threads)", role, name, device, torch.get_num_threads())
    return bundle


def _preflight(spec: CapfiltSpec) -> dict:
    cap, filt = spec.bundles()
    return {"captioner_image_size": cap.pixel_transform().size, "filter_image_size": filt.pixel_transform().size,
            "prompt": spec.prompt if spec.prompt is not None else cap.prompt, "itm_first_token": filt.itm_first_token,
            "device": cap.device}


def picture_id(key: str, url: str | None, sha256: str | None) -> str:
    """What makes two pairs the same picture: the image's sha256, else its URL, else the pair itself."""
    return f"sha256:{sha256}" if sha256 else (f"url:{url}" if url else f"key:{key}")


def picture_seed(base: int, picture: str) -> int:
    """The sampling seed of a picture's synthetic captions: the same on any cluster, shard or order."""
    return int(hashlib.sha256(f"{base}:{picture}".encode()).hexdigest()[:15], 16)


def picture_bucket(picture: str, n: int) -> int:
    """The picture shard of a picture: a hash of its id, the same on any worker and run."""
    return int(hashlib.sha256(picture.encode()).hexdigest()[:15], 16) % n


@dataclass(frozen=True)
class PictureShard:
    """Every pair of the pictures hashed to one bucket: row group ``parts[i][1]`` of file ``parts[i][0]``
    for each input shard holding some, in input order (so rows come in the input's order)."""

    id: str
    rows: int
    parts: tuple[tuple[str, int], ...]


def read_rows(shard: Shard | PictureShard, columns: list[str], schema: pa.Schema) -> pa.Table:
    """A shard's rows (an input shard, or a picture shard's parts), cast to ``schema``."""
    if isinstance(shard, Shard):
        return cluster.read_shard(shard, columns, schema=schema)
    tables = []
    for path, rg in shard.parts:
        fs, p = url_to_fs(path)
        with fs.open(p, "rb") as fh:
            tables.append(pq.ParquetFile(fh).read_row_group(rg, columns=columns))
    wanted = pa.schema([schema.field(n) for n in columns])
    return pa.concat_tables([t.select(columns).cast(wanted) for t in tables]) if tables else wanted.empty_table()


def by_picture_shard(n_buckets: int, shard: Shard, _payload: Any, out: ShardOutput) -> dict:
    """Phase 0: the input shard's rows ordered by picture bucket (stable), one row group per bucket."""
    t = cluster.read_shard(shard, SCORED_PAIRS.names, schema=SCORED_PAIRS)
    ids = [picture_id(k, u, h) for k, u, h in zip(t.column("key").to_pylist(), t.column("url").to_pylist(),
                                                  t.column("sha256").to_pylist())]
    bucket = np.array([picture_bucket(p, n_buckets) for p in ids], dtype=np.int64)
    order = np.argsort(bucket, kind="stable")
    t = t.take(pa.array(order, pa.int64()))
    present, counts = out.write_grouped("by_picture", t, bucket[order], SCORED_PAIRS)
    return {"rows": t.num_rows, "path": out.path("by_picture", ".parquet"), "buckets": present.tolist(),
            "counts": counts.tolist()}


def plan_picture_shards(shards: list[Shard], scattered: dict[str, dict], n_buckets: int) -> list[PictureShard]:
    """The picture shards of phase 0's files (only buckets with rows), from its summaries (counts only)."""
    parts: dict[int, list[tuple[str, int]]] = defaultdict(list)
    rows: Counter = Counter()
    for s in shards:
        summ = scattered[s.id]
        for rg, (b, c) in enumerate(zip(summ["buckets"], summ["counts"])):
            parts[b].append((summ["path"], rg))
            rows[b] += c
    width = max(5, len(str(n_buckets)))
    return [PictureShard(f"pictures-{b:0{width}d}", int(rows[b]), tuple(parts[b])) for b in sorted(parts)]


def image_keys_in(keys: list[str], urls: list[str | None], shas: list[str | None]) -> list[str]:
    """Each row's ``image_key``: the smallest key among the rows showing the same picture
    (:func:`picture_id`); exact when every row of a picture is in the list (a picture shard)."""
    ids = [picture_id(k, u, h) for k, u, h in zip(keys, urls, shas)]
    smallest: dict[str, str] = {}
    for pic, key in zip(ids, keys):
        if pic not in smallest or key < smallest[pic]:
            smallest[pic] = key
    return [smallest[p] for p in ids]


def _autocast(device: str):
    import contextlib

    import torch

    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return contextlib.nullcontext()


def _decode(blobs: list, draft: int) -> list:
    """Each blob as an RGB PIL image, or the ImageDecodeError saying why not (runs in a thread)."""
    from curation.image_decode import ImageDecodeError, decode_image

    out = []
    for blob in blobs:
        try:
            out.append(decode_image(blob, draft_size=draft))
        except ImageDecodeError as exc:
            out.append(exc)
    return out


@dataclass
class ShardPictures:
    """A shard's rows grouped by picture: phase 1 works picture by picture, writes row by row."""

    table: pa.Table
    keys: list[str]
    captions: list[str | None]
    urls: list[str | None]
    shas: list[str | None]
    blobs: list[bytes | None]
    image_keys: list[str]
    rows_of: dict[str, list[int]]  # image_key -> the shard's rows showing it, in row order
    # The row of the picture's image pair (the pair whose key is its image_key) when it is in this
    # shard: its synthetic captions and its picture-level verdict are written here.
    own_row: dict[str, int | None]

    @classmethod
    def read(cls, shard: Shard | PictureShard, image_keys: list[str] | None = None) -> "ShardPictures":
        """A shard's rows; ``image_keys`` computed here when not given (a picture shard holds every
        row of its pictures)."""
        t = read_rows(shard, ["key", "url", "page_url", "caption", "caption_source", "sha256", "image"], SCORED_PAIRS)
        keys = t.column("key").to_pylist()
        if image_keys is None:
            image_keys = image_keys_in(keys, t.column("url").to_pylist(), t.column("sha256").to_pylist())
        if len(image_keys) != t.num_rows:
            raise StageError(f"shard {shard.id}: {len(image_keys)} image keys for {t.num_rows} rows")
        rows_of: dict[str, list[int]] = defaultdict(list)
        for i, ik in enumerate(image_keys):
            rows_of[ik].append(i)
        own_row = {ik: next((i for i in rows if keys[i] == ik), None) for ik, rows in rows_of.items()}
        return cls(t, keys, t.column("caption").to_pylist(), t.column("url").to_pylist(), t.column("sha256").to_pylist(),
                   t.column("image").to_pylist(), image_keys, rows_of, own_row)

    @property
    def pictures(self) -> list[str]:
        """Image keys in first-seen order."""
        return list(self.rows_of)

    def blob_of(self, image_key: str):
        return self.blobs[self.rows_of[image_key][0]]

    def seed_of(self, spec: CapfiltSpec, image_key: str) -> int:
        i = self.own_row[image_key]
        return picture_seed(spec.seed, picture_id(self.keys[i], self.urls[i], self.shas[i]))


@dataclass
class ShardVerdicts:
    """Phase 1's results for a shard, filled chunk by chunk: p(match) and reason of every web row,
    the synthetic captions, the pictures whose image pair is here, and the time spent."""

    web_p: np.ndarray
    web_reason: list[str | None]
    web_detail: list[str | None]
    syn: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    timing: Counter = field(default_factory=Counter)

    @classmethod
    def empty(cls, n: int) -> "ShardVerdicts":
        return cls(np.full(n, np.nan, dtype=np.float32), [None] * n, [None] * n)


@dataclass
class DecodedChunk:
    """The pictures of a chunk that decoded, with their images (for the captioner and the filter)."""

    keys: list[str]
    images: list


def decode_step(pics: ShardPictures, chunk: list[str], decoded: list, res: ShardVerdicts) -> DecodedChunk:
    """Keep the chunk's decoded pictures; a picture that did not decode gives its reason to each
    of its rows, and (where its image pair is here) to the picture."""
    ok = DecodedChunk([], [])
    for ik, im in zip(chunk, decoded):
        own = pics.own_row[ik] is not None
        if isinstance(im, Exception):
            for i in pics.rows_of[ik]:
                res.web_reason[i], res.web_detail[i] = im.reason, im.detail
            if own:
                res.images.append({"image_key": ik, "reason": im.reason, "detail": im.detail})
            continue
        ok.keys.append(ik)
        ok.images.append(im)
        if own:
            res.images.append({"image_key": ik, "reason": None, "detail": None})
    return ok


def caption_step(spec: CapfiltSpec, cap, prompt: str, pics: ShardPictures, ok: DecodedChunk,
                 res: ShardVerdicts) -> list[tuple[int, list[str]]]:
    """Synthetic captions for the decoded pictures whose image pair lives in this shard:
    ``(index in ok, captions)``, each picture's sampling seeded by the picture itself."""
    from models.blip import generate_captions

    gen_idx = [j for j, ik in enumerate(ok.keys) if pics.own_row[ik] is not None] if spec.num_captions else []
    if not gen_idx:
        return []
    t0 = time.perf_counter()
    with _autocast(cap.device):
        generated = generate_captions(
            cap, [ok.images[j] for j in gen_idx], prompt=prompt, num_captions=spec.num_captions,
            top_p=spec.top_p, max_length=spec.max_length, min_length=spec.min_length,
            repetition_penalty=spec.repetition_penalty, batch_size=spec.batch_size,
            image_seeds=[pics.seed_of(spec, ok.keys[j]) for j in gen_idx])
    res.timing["generate"] += time.perf_counter() - t0
    res.timing["generated"] += sum(len(g) for g in generated)
    return list(zip(gen_idx, generated))


def itm_step(spec: CapfiltSpec, filt, pics: ShardPictures, ok: DecodedChunk, generated: list[tuple[int, list[str]]],
             res: ShardVerdicts) -> tuple[list[tuple[str, int]], list[float]]:
    """p(match) of every caption of the decoded pictures against its picture, web rows first, then
    the synthetic captions (added to ``res.syn`` here); empty captions are rejected, not scored.
    Returns the scored captions as ``("web", row)`` / ``("syn", index in res.syn)`` and their p."""
    from models.blip import itm_scores

    texts, index, targets = [], [], []
    for j, ik in enumerate(ok.keys):
        for i in pics.rows_of[ik]:
            if (pics.captions[i] or "").strip():
                texts.append(pics.captions[i])
                index.append(j)
                targets.append(("web", i))
            else:
                res.web_reason[i], res.web_detail[i] = "empty_caption", None
    for j, caps in generated:
        ik = ok.keys[j]
        for k, text in enumerate(caps or []):
            row = {"image_key": ik, "k": k, "caption": text, "url": pics.urls[pics.own_row[ik]],
                   "itm_score": None, "reason": None, "detail": None}
            res.syn.append(row)
            if text.strip():
                texts.append(text)
                index.append(j)
                targets.append(("syn", len(res.syn) - 1))
            else:
                row["reason"] = "empty_caption"
    if not texts:
        return [], []
    t0 = time.perf_counter()
    with _autocast(filt.device):
        p = itm_scores(filt, ok.images, texts, index, batch_size=spec.batch_size)
    res.timing["itm"] += time.perf_counter() - t0
    res.timing["itm_pairs"] += len(texts)
    return targets, p.tolist()


def decide_step(spec: CapfiltSpec, targets: list[tuple[str, int]], scores: list[float], res: ShardVerdicts) -> None:
    """The filter's verdicts: a caption with p(match) < ``itm_threshold`` is removed (web captions
    when ``filter_web``, synthetic ones when ``filter_synthetic``); every score is recorded."""
    for (kind, i), score in zip(targets, scores):
        below = not score >= spec.itm_threshold
        detail = f"p(match) {score:.4f} < {spec.itm_threshold}" if below else None
        if kind == "web":
            res.web_p[i] = score
            if below and spec.filter_web:
                res.web_reason[i], res.web_detail[i] = BELOW, detail
        else:
            row = res.syn[i]
            row["itm_score"] = score
            if below and spec.filter_synthetic:
                row["reason"] = BELOW
                row["detail"] = f"{detail}: {row['caption']}"


def picture_step(pics: ShardPictures, res: ShardVerdicts) -> Counter:
    """The per-picture decision, inside the shard that holds all of a picture's captions: a decoded
    picture with no web or synthetic caption left (reason None) is ``no_surviving_caption``.
    Returns the picture counts (``in``, ``out`` and one per reason) the stage's stats sum."""
    kept = {ik for ik, r in zip(pics.image_keys, res.web_reason) if r is None}
    kept.update(row["image_key"] for row in res.syn if row["reason"] is None)
    counts: Counter = Counter()
    for img in res.images:
        counts["in"] += 1
        if img["reason"] is None and img["image_key"] not in kept:
            img["reason"] = NO_CAPTION
        counts[img["reason"] or "out"] += 1
    return counts


def caption_and_filter_shard(spec: CapfiltSpec, shard: Shard | PictureShard, image_keys: list[str] | None,
                             out: ShardOutput) -> dict:
    """Phase 1: synthetic captions for the shard's image pairs, p(match) for every web and synthetic
    caption, then (a picture shard holding every caption of its pictures) each picture's verdict.

    Chunks of ``batch_size`` pictures go decode -> caption -> ITM -> decide; the next chunk is
    decoded in a thread while the models work on this one (:func:`curation.prefetch.prefetch`).
    ``image_keys`` None: computed from the shard's rows (a picture shard); given, for a shard that
    holds only some rows of its pictures, the picture verdicts are left to the caller.
    """
    whole_pictures = image_keys is None
    start = time.perf_counter()
    pics = ShardPictures.read(shard, image_keys)
    cap, filt = spec.bundles()
    prompt = spec.prompt if spec.prompt is not None else cap.prompt
    draft = max(cap.pixel_transform().size, filt.pixel_transform().size)
    res = ShardVerdicts.empty(pics.table.num_rows)
    pictures = pics.pictures
    chunks = [pictures[i:i + spec.batch_size] for i in range(0, len(pictures), spec.batch_size)]
    decoding = prefetch(lambda chunk: _decode([pics.blob_of(ik) for ik in chunk], draft), chunks,
                        thread_name_prefix="capfilt-decode")
    for chunk, (decoded, waited) in zip(chunks, decoding):
        res.timing["wait_decode"] += waited
        ok = decode_step(pics, chunk, decoded, res)
        generated = caption_step(spec, cap, prompt, pics, ok, res)
        targets, scores = itm_step(spec, filt, pics, ok, generated, res)
        decide_step(spec, targets, scores, res)
    images = picture_step(pics, res) if whole_pictures else Counter()
    write_verdicts(out, pics, res)
    timing = res.timing
    return {
        "rows": pics.table.num_rows, "pictures": len(pictures), "image_pairs_here": len(res.images),
        "images": dict(images),
        "generated": int(timing["generated"]), "itm_pairs": int(timing["itm_pairs"]),
        "seconds_generate": round(timing["generate"], 3), "seconds_itm": round(timing["itm"], 3),
        "seconds_wait_decode": round(timing["wait_decode"], 3), "seconds": round(time.perf_counter() - start, 3),
    }


def write_verdicts(out: ShardOutput, pics: ShardPictures, res: ShardVerdicts) -> None:
    """Phase 1's per-shard outputs: ``web`` (one row per input row), ``synthetic``, ``images``."""
    t = pics.table
    out.write_table(WEB, pa.table({
        "key": pa.array(pics.keys, pa.string()), "image_key": pa.array(pics.image_keys, pa.string()),
        "itm_score": pa.array(res.web_p, pa.float32()), "reason": pa.array(res.web_reason, pa.string()),
        "detail": pa.array(res.web_detail, pa.string()), "page_url": t.column("page_url"), "url": t.column("url"),
        "caption_source": t.column("caption_source"),
    }))
    out.write_table(SYNTHETIC, pa.Table.from_pylist(res.syn, schema=_SYN_SCHEMA))
    out.write_table("images", pa.Table.from_pylist(res.images, schema=_IMG_SCHEMA))


_SYN_SCHEMA = pa.schema([("image_key", pa.string()), ("k", pa.int32()), ("caption", pa.string()), ("url", pa.string()),
                         ("itm_score", pa.float32()), ("reason", pa.string()), ("detail", pa.string())])
_IMG_SCHEMA = pa.schema([("image_key", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


def _read_work(path: str, columns: list[str] | None = None) -> pa.Table:
    """A per-shard intermediate of the work dir, local or remote (``OUT=s3://...``)."""
    fs, p = url_to_fs(path)
    with fs.open(p, "rb") as fh:
        return pq.read_table(fh, columns=columns)


def write_shard(work_dir: str, caption_model: str, shard: Shard | PictureShard, dropped: dict[str, str] | None,
                out: ShardOutput) -> dict:
    """Phase 2: BOOTSTRAPPED_PAIRS (kept web rows, then kept synthetic captions) and every reject of
    the shard; returns the counts the stage's stats sum (no rows go to the client). ``dropped``:
    pictures decided elsewhere (None for a picture shard: phase 1 decided them)."""
    dropped = dropped or {}
    t = read_rows(shard, SCORED_PAIRS.names, SCORED_PAIRS)
    web = _read_work(f"{work_dir}/{WEB}/{shard.id}.parquet")
    syn = _read_work(f"{work_dir}/{SYNTHETIC}/{shard.id}.parquet")
    imgs = _read_work(f"{work_dir}/images/{shard.id}.parquet")
    if web.num_rows != t.num_rows:
        raise StageError(f"shard {shard.id}: {web.num_rows} filter results for {t.num_rows} rows")
    reason = web.column("reason").to_pylist()
    keep = np.array([r is None for r in reason], dtype=bool)
    web_out = t.append_column("image_key", web.column("image_key")).append_column(
        "itm_score", web.column("itm_score")).append_column("caption_model", pa.array(["web"] * t.num_rows, pa.string()))
    parts = [web_out.filter(pa.array(keep)).cast(BOOTSTRAPPED_PAIRS)]
    syn_keep = [r is None for r in syn.column("reason").to_pylist()]
    if any(syn_keep):
        kept = syn.filter(pa.array(syn_keep))
        keys = t.column("key").to_pylist()
        row_of = {k: i for i, k in enumerate(keys)}
        take = pa.array([row_of[ik] for ik in kept.column("image_key").to_pylist()], pa.int64())
        base = t.take(take)
        cols = {name: base.column(name) for name in SCORED_PAIRS.names}
        m = kept.num_rows
        cols["key"] = pa.array([f"{ik}-syn{k}" for ik, k in zip(kept.column("image_key").to_pylist(),
                                                                 kept.column("k").to_pylist())], pa.string())
        cols["caption"] = kept.column("caption")
        cols["caption_source"] = pa.array([SYNTHETIC] * m, pa.string())
        cols["clip_score"] = pa.nulls(m, pa.float32())
        cols["embedding_row"] = pa.nulls(m, pa.int64())
        cols["image_key"] = kept.column("image_key")
        cols["itm_score"] = kept.column("itm_score")
        cols["caption_model"] = pa.array([caption_model] * m, pa.string())
        parts.append(pa.table([cols[f.name] for f in BOOTSTRAPPED_PAIRS], schema=BOOTSTRAPPED_PAIRS))
    out.write_table("pairs", pa.concat_tables(parts))
    web_keys = web.column("key").to_pylist()
    details = web.column("detail").to_pylist()
    rej_rows = np.flatnonzero(~keep).tolist()
    syn_rej = [i for i, k in enumerate(syn_keep) if not k]
    syn_ik, syn_k = syn.column("image_key").to_pylist(), syn.column("k").to_pylist()
    syn_reason, syn_detail = syn.column("reason").to_pylist(), syn.column("detail").to_pylist()
    img_rows = imgs.to_pylist()
    img_rej = [(r["image_key"], r["reason"], r["detail"]) for r in img_rows if r["reason"] is not None]
    img_rej += [(r["image_key"], dropped[r["image_key"]], None) for r in img_rows
                if r["reason"] is None and r["image_key"] in dropped]
    out.write_table("rejects", concat_rejects([
        rejects_table([web_keys[i] for i in rej_rows], "pairs", STAGE, [reason[i] for i in rej_rows],
                      [details[i] for i in rej_rows]),
        rejects_table([f"{syn_ik[i]}-syn{syn_k[i]}" for i in syn_rej], SYNTHETIC_TABLE, STAGE,
                      [syn_reason[i] for i in syn_rej], [syn_detail[i] for i in syn_rej]),
        rejects_table([r[0] for r in img_rej], "images", STAGE, [r[1] for r in img_rej], [r[2] for r in img_rej]),
    ]))
    web_p = web.column("itm_score").to_numpy(zero_copy_only=False).astype(np.float64)
    syn_p = syn.column("itm_score").to_numpy(zero_copy_only=False).astype(np.float64) if syn.num_rows else np.zeros(0)
    return {"rows": t.num_rows, "rows_out": int(keep.sum()), "synthetic_out": int(sum(syn_keep)),
            "images_rejected": dict(Counter(r[1] for r in img_rej)),
            "rejected": dict(Counter(r for r in reason if r is not None)),
            "synthetic_in": syn.num_rows, "synthetic_rejected": dict(Counter(r for r in syn_reason if r is not None)),
            "itm_sum": {"web": _finite_sum(web_p), "synthetic": _finite_sum(syn_p)}}


def _finite_sum(a: np.ndarray) -> list:
    """[sum, count] of the finite values (means summed over shards on the client)."""
    f = a[np.isfinite(a)]
    return [float(f.sum()), int(f.size)]


# --------------------------------------------------------------------------- client side


@dataclass(frozen=True)
class CapfiltPlan:
    """What CapFilt decides before its client opens: the input, the resolved models, the shards."""

    pairs: str
    root: str  # the run directory the pairs came from (its bootstrap models, its planted truth)
    captioner: str
    filter: str
    caption_model: str
    shards: tuple[Shard, ...]


class CapFiltStage(DaskStage):
    """``curate capfilt``: inputs {"pairs": score/pairs, "models": bootstrap/models (when models are ``bootstrap``)}.

    Its phases on :class:`curation.dask_stage.DaskStage` (client, preflight, setup on every worker,
    work dir and its clean-up, empty outputs are the base's): by-picture, caption (+ decide), write.
    """

    name = STAGE
    outputs = ("pairs",)
    config_sections = ("capfilt",)
    output_schemas = {"pairs": BOOTSTRAPPED_PAIRS}
    # Two BLIP-base models (captioner, filter: ~0.9 GB each in fp32) plus a batch's activations.
    resources = Resources(cpus=1.0, memory_gb=3.0)

    def resources_for(self, ctx: StageContext) -> Resources:
        """A GPU per task when the config asks for CUDA; ``auto`` and ``cpu`` run anywhere."""
        cfg: CapfiltConfig = ctx.config.capfilt
        return replace(self.resources, gpus=1.0) if cfg.device.startswith("cuda") else self.resources

    def plan(self, ctx: StageContext) -> CapfiltPlan:
        cfg: CapfiltConfig = ctx.config.capfilt
        pairs = ctx.inputs["pairs"]
        fs, p = url_to_fs(pairs)
        if not fs.exists(p):
            raise StageError(f"capfilt: input pairs not found at {pairs}; run the score stage first")
        root = source_root_of(pairs)
        models_dir = ctx.inputs.get("models") or models_dir_of(root)
        plan = CapfiltPlan(pairs, root, resolve_model(cfg.captioner, "captioner", models_dir),
                           resolve_model(cfg.filter, "filter", models_dir),
                           model_label(cfg.captioner, "captioner", models_dir),
                           tuple(cluster.plan_shards(pairs, cfg.shard_rows, prefix="pairs-")))
        log.info("capfilt: %d pairs in %d shards, captioner %s, filter %s",
                 sum(s.rows for s in plan.shards), len(plan.shards), plan.captioner, plan.filter)
        return plan

    def work_key(self, ctx: StageContext, plan: CapfiltPlan) -> dict[str, Any]:
        return {"capfilt": ctx.config.section("capfilt"), "models": [plan.captioner, plan.filter],
                "inputs": ctx.input_run_ids}

    def worker_spec(self, ctx: StageContext, plan: CapfiltPlan, client: Any) -> CapfiltSpec:
        cfg: CapfiltConfig = ctx.config.capfilt
        return CapfiltSpec.of(cfg, plan.captioner, plan.filter, plan.caption_model,
                              cfg.threads or cluster.cpu_threads_per_worker(client))

    def setup(self, spec: CapfiltSpec):
        return spec.bundles()

    def preflight_info(self, spec: CapfiltSpec, models) -> dict:
        return _preflight(spec)

    def phases(self, run: DaskRun, plan: CapfiltPlan) -> StageStats:
        shards, spec = list(plan.shards), run.spec
        n_buckets = max(1, len(shards))
        scattered = run.map("by-picture", partial(by_picture_shard, n_buckets), shards, f"{run.work_dir}/by_picture",
                            uses_model=False)
        pshards = plan_picture_shards(shards, scattered, n_buckets)
        phase1 = run.map("caption", partial(caption_and_filter_shard, spec), pshards)
        img_counts = self._pictures(phase1)
        written = run.map("write", partial(write_shard, run.work_dir, plan.caption_model), pshards, run.ctx.stage_dir,
                          uses_model=False)
        return self._stats(run.ctx.config.capfilt, spec, run.info, run.work_dir, shards, pshards, phase1, written,
                           img_counts, plan.root)

    def _pictures(self, phase1: dict[str, dict]) -> Counter:
        """The picture counts (in, out, per reason): summed from phase 1, which decided each picture
        in the shard holding all its captions (the client sees counts, never picture sets)."""
        counts: Counter = Counter()
        for summ in phase1.values():
            counts.update(summ.get("images", {}))
        return counts

    def _stats(self, cfg: CapfiltConfig, spec: CapfiltSpec, info: dict, work_dir: str, shards: list[Shard],
               pshards: list[PictureShard], phase1: dict, written: dict, img_counts: Counter, root: str) -> StageStats:
        rows_in = sum(s.rows for s in shards)
        reasons = _sum_counts(w.get("rejected", {}) for w in written.values())
        web_out = sum(w["rows_out"] for w in written.values())
        syn_in = sum(w.get("synthetic_in", 0) for w in written.values())
        syn_reasons = _sum_counts(w.get("synthetic_rejected", {}) for w in written.values())
        syn_out = syn_in - sum(syn_reasons.values())
        stats = StageStats(stage=STAGE, rows_in=rows_in, rows_out=web_out, rejected=dict(reasons))
        stats.tables["images"] = {"rows_in": img_counts["in"], "rows_out": img_counts["out"],
                                  "rejected": {k: v for k, v in img_counts.items() if k not in ("in", "out")}}
        stats.tables[SYNTHETIC_TABLE] = {"rows_in": syn_in, "rows_out": syn_out, "rejected": dict(syn_reasons)}
        stats.outputs = {"pairs": web_out + syn_out, WEB: web_out, SYNTHETIC: syn_out}
        gen_s = sum(v.get("seconds_generate", 0) for v in phase1.values())
        itm_s = sum(v.get("seconds_itm", 0) for v in phase1.values())
        generated = sum(v.get("generated", 0) for v in phase1.values())
        itm_pairs = sum(v.get("itm_pairs", 0) for v in phase1.values())

        def itm_mean(kind: str) -> float | None:
            total = sum(w["itm_sum"][kind][0] for w in written.values() if "itm_sum" in w)
            n = sum(w["itm_sum"][kind][1] for w in written.values() if "itm_sum" in w)
            return round(total / n, 4) if n else None

        c: dict[str, Any] = {
            "captioner": spec.captioner, "filter": spec.filter, "caption_model": spec.caption_model, **info,
            "num_captions": cfg.num_captions, "itm_threshold": cfg.itm_threshold,
            "filter_web": cfg.filter_web, "filter_synthetic": cfg.filter_synthetic,
            "synthetic_share": round(syn_out / (web_out + syn_out), 4) if web_out + syn_out else None,
            "synthetic_kept_rate": round(syn_out / syn_in, 4) if syn_in else None,
            "web_kept_rate": round(web_out / rows_in, 4) if rows_in else None,
            "itm_mean": {"web": itm_mean("web"), "synthetic": itm_mean("synthetic")},
            "captions_per_second": round(generated / gen_s, 2) if gen_s else None,
            "itm_pairs_per_second": round(itm_pairs / itm_s, 2) if itm_s else None,
            "seconds": {"generate": round(gen_s, 3), "itm": round(itm_s, 3)},
            "shards": len(pshards), "input_shards": len(shards),
            "shards_skipped": sum(bool(v.get("_resumed")) for v in phase1.values()),
            "work_dir": work_dir,
        }
        if pshards and _is_sample_run(root):  # a sample run: the planted truth needs every web row
            web = pa.concat_tables([_read_work(f"{work_dir}/{WEB}/{s.id}.parquet") for s in pshards])
            syn = pa.concat_tables([_read_work(f"{work_dir}/{SYNTHETIC}/{s.id}.parquet") for s in pshards])
            c.update(truth_counters(root, web, syn, cfg.itm_threshold))
        stats.counters = c
        return stats


def _sum_counts(parts) -> Counter:
    total: Counter = Counter()
    for p in parts:
        total.update(p)
    return total


def _is_sample_run(run_root: str) -> bool:
    """Whether ``run_root`` is a sample run with planted truth (pipelines/sample_truth.py)."""
    from pipelines.sample_truth import SampleTruth

    return SampleTruth.find(run_root) is not None


def truth_counters(run_root: str, web: pa.Table | None, syn: pa.Table, threshold: float) -> dict:
    """On a sample run: the filter against the planted noisy web captions, and the synthetic captions' truth."""
    from pipelines.sample_truth import SampleTruth, filter_quality

    truth = SampleTruth.find(run_root)
    if truth is None or web is None:
        return {}
    p = web.column("itm_score").to_numpy(zero_copy_only=False)
    scored = np.isfinite(p)
    labels, removed = [], []
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for i, (page, url, src) in enumerate(zip(web.column("page_url").to_pylist(), web.column("url").to_pylist(),
                                             web.column("caption_source").to_pylist())):
        if not scored[i]:
            continue
        labels.append(truth.web_label(page, url, src))
        removed.append(bool(p[i] < threshold))
        kind = f"{src}:{truth.web_kind(page, url, src)}"
        by_kind[kind]["n"] += 1
        by_kind[kind]["removed"] += removed[-1]
    fq = filter_quality(labels, removed)
    fq["removed_share_by_kind"] = {k: round(v["removed"] / v["n"], 4) for k, v in sorted(by_kind.items())}
    fq["rule"] = ("noisy = wrong/boilerplate alt text or credit/generic figcaption (ground_truth/alt_texts.jsonl, "
                  "matched by page URL + image URL); removed = p(match) < itm_threshold")
    out: dict[str, Any] = {"filter_vs_ground_truth": fq}
    if syn.num_rows:
        caps, urls = syn.column("caption").to_pylist(), syn.column("url").to_pylist()
        kept = [r is None for r in syn.column("reason").to_pylist()]
        verdict = [truth.synthetic_correct(cap, u) for cap, u in zip(caps, urls)]
        judged = [(v, k) for v, k in zip(verdict, kept) if v is not None]
        n_kept = sum(1 for _, k in judged if k)
        sp = syn.column("itm_score").to_numpy(zero_copy_only=False).astype(np.float64)
        ok = np.array([v is True for v in verdict]) & np.isfinite(sp)
        bad = np.array([v is False for v in verdict]) & np.isfinite(sp)
        out["synthetic_vs_ground_truth"] = {
            "judged": len(judged),
            "correct_share_generated": round(sum(v for v, _ in judged) / len(judged), 4) if judged else None,
            "correct_share_kept": round(sum(v for v, k in judged if k) / n_kept, 4) if n_kept else None,
            "kept_rate_correct": round(float(np.mean(sp[ok] >= threshold)), 4) if ok.any() else None,
            "kept_rate_wrong": round(float(np.mean(sp[bad] >= threshold)), 4) if bad.any() else None,
            "rule": "correct = names the picture's true colour and shape (ground_truth/images.jsonl) and no other",
        }
    return out

