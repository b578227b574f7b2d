"""``curate images``: fetch every image once, safely, filter it, and join the bytes back.

Input: dedup's ``documents/`` (DOCUMENTS) and ``pairs/`` (PAIRS). Steps:

1. Unique image URLs of documents and pairs, sorted (the fetch work directory is
   keyed on this list, so an interrupted run resumes its finished shards).
2. Refusals without a request: non-http(s) schemes and literal private/loopback/...
   addresses (``unsafe_scheme``/``unsafe_address``, :func:`curation.safe_http.precheck_url`),
   the opt-out list (``opted_out``), the URL banlist (``banned_url``).
3. img2dataset fetches the rest (:mod:`curation.fetch`): the checked opener refuses
   unsafe addresses at connect time and on every redirect, ``X-Robots-Tag``
   noai/noimageai (``robots_noai``), oversized bodies (``too_large``); each body is
   checked in the worker (:mod:`curation.image_check`): ``empty_body``, ``format``,
   ``decompression_bomb``, ``too_small``/``too_big``, ``bad_aspect``, ``animated``,
   ``undecodable``; failed fetches are ``fetch_error:<status|timeout|dns|connection|...>``.
4. After the fetch everything runs in Spark over the fetch shards (:mod:`pipelines.images_spark`;
   the driver holds the URL list, counts and file names, never an image's bytes). With
   ``dedup.state_dir`` set, images an earlier snapshot kept (same sha256, or pHash within
   ``image_filters.phash_max_hamming``) are ``seen_in:<snapshot>``
   (:meth:`pipelines.dedup_state.DedupState.image_matches`, given url/sha256/pHash, no bytes);
   then exact duplicates by sha256 (``exact_duplicate``), then near duplicates by pHash Hamming
   distance (``near_duplicate``, a banded LSH join), keeping the image with most pixels, then the
   smallest URL; ``duplicate_of`` names the kept URL. After the outputs are written the kept
   images join the state (:meth:`~pipelines.dedup_state.DedupState.record_images`).
5. Joins (Spark): pairs get their image (``pairs/``, IMAGE_PAIRS) or are rejected with the
   image's reason; documents lose the positions of images not kept (texts, images and
   metadata stay aligned: :func:`curation.layout.cut_positions`) and get ``image_bytes``
   aligned with the positions (``documents/``, INTERLEAVED); a document left without
   images is dropped (``no_images``) unless ``images.drop_documents_without_images`` is false.
6. ``webdataset/``: the pairs as tar shards open_clip's loader reads, written by the Spark
   tasks (:mod:`curation.wds_writer`).

:func:`fetch_and_filter` is the same decision path in one process (bytes read back into it): what
``bench/images.py`` times and the reference the Spark duplicate steps are tested against.

On a sample run (``snapshot: sample``) the stage serves ``<run>/_sample/images`` on
``127.0.0.1:<sample_image_port>`` for the duration of the fetch and allowlists exactly
that address and port.

Main table of ``stats.json``: unique image URLs; ``tables``: ``pairs`` and ``documents``.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fsspec.core import url_to_fs

from curation.config import ImagesConfig, PipelineConfig, SparkConfig
from curation.safe_http import FetchPolicy, precheck_url
from curation.schemas import DOCUMENTS, IMAGES, PAIRS
from curation.stage import Stage, StageContext, StageError, StageStats
from filters.blocklists import HashList, takedown_filter, with_takedown_hashes
from filters.config import ImageFilterConfig
from pipelines.dedup_state import SEEN_IN, DedupState
from filters.image import (
    UrlListFilter,
    exact_duplicates,
    load_url_list,
    near_duplicates,
    preference_order,
    url_filters,
)

log = logging.getLogger(__name__)

STAGE = "images"
DUPLICATE_REASONS = ("exact_duplicate", "near_duplicate")


# --------------------------------------------------------------------------- reading


def unique_image_urls(docs, pairs) -> list[str]:
    """Every distinct non-empty image URL of documents and pairs (Spark DataFrames), sorted.

    The URL list is the one list the driver holds: the fetch work directory is keyed on it."""
    from pyspark.sql import functions as F

    urls = (docs.select(F.explode("images").alias("url")).unionByName(pairs.select("url"))
            .where(F.col("url").isNotNull() & (F.col("url") != "")).distinct())
    return sorted(r[0] for r in urls.toLocalIterator())


# --------------------------------------------------------------------------- fetch + filter


@dataclass
class ImageDecisions:
    """What happened to every unique URL: ``kept`` (IMAGES rows) or one reject each."""

    kept: pa.Table
    rejected: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)  # url -> (reason, detail, duplicate_of)
    counters: dict[str, Any] = field(default_factory=dict)

    def reasons(self) -> Counter:
        return Counter(r for r, _, _ in self.rejected.values())


def make_policy(images_cfg: ImagesConfig, filter_cfg: ImageFilterConfig, extra_allow: tuple[str, ...] = (),
                honour_tdm: bool = True) -> FetchPolicy:
    return FetchPolicy(
        honour_tdm=honour_tdm,
        allow=tuple(images_cfg.allow_addresses) + tuple(extra_allow),
        max_bytes=filter_cfg.max_bytes,
        max_seconds=images_cfg.max_fetch_seconds,
        max_redirects=images_cfg.max_redirects,
    )


@dataclass
class FetchOutcome:
    """Refusals and the fetch, without reading a byte back: where the fetch shards are and what was refused."""

    to_fetch: list[str]
    refused: dict[str, tuple[str, str, str | None]]  # url -> (reason, detail, duplicate_of)
    work_dir: str
    shard_ids: list[int]
    counters: dict[str, Any] = field(default_factory=dict)


def refuse_and_fetch(urls: list[str], work_root: str, policy: FetchPolicy, filter_cfg: ImageFilterConfig,
                     images_cfg: ImagesConfig, spark_cfg: SparkConfig | None = None, hash_list=None,
                     robots=None, extra_filters=()) -> FetchOutcome:
    """Steps 2-3 for ``urls``: refusals without a request, then img2dataset into ``<work>/shards``.

    ``spark_cfg`` picks the distributor (``images.distributor: auto``: pyspark when its master is
    not local) and is the session img2dataset's pyspark distributor runs on.
    """
    from curation.fetch import FetchSettings, done_shards, run_img2dataset, work_dir_for

    rejected: dict[str, tuple[str, str, str | None]] = {}
    pre_filters = []
    if images_cfg.opt_out_file:
        pre_filters.append(UrlListFilter(load_url_list(images_cfg.opt_out_file), "opted_out"))
    pre_filters += url_filters(filter_cfg) + list(extra_filters)
    to_fetch = []
    for url in urls:
        refusal = precheck_url(url, policy)
        if refusal is None:
            for f in pre_filters:
                if f.match(url):
                    refusal = (f.reason, "on the list")
                    break
        if refusal is None:
            to_fetch.append(url)
        else:
            rejected[url] = (refusal[0], refusal[1], None)

    robots_hosts = robots.prefetch(to_fetch) if robots is not None else 0  # consent (curation/robots.py)
    if robots is not None:
        verdicts = {url: robots.verdict(url) for url in to_fetch}
        rejected.update({url: (v[0], v[1], None) for url, v in verdicts.items() if v})
        to_fetch = [url for url in to_fetch if not verdicts[url]]
    spark_cfg = spark_cfg or SparkConfig()
    settings = FetchSettings.from_config(images_cfg, spark_cfg.master)
    if settings.distributor == "pyspark" and to_fetch:
        from curation.spark import get_spark

        get_spark(spark_cfg)  # the session img2dataset's pyspark distributor picks up
    fingerprint = {"filters": asdict(filter_cfg), "policy": asdict(policy), "settings": asdict(settings)}
    if hash_list is not None:  # a new list refetches: a cached shard may hold bytes it now lists
        fingerprint["hash_list"] = sorted(hash_list.sha256 | hash_list.md5)
    work_dir = work_dir_for(work_root, to_fetch, fingerprint)
    counters: dict[str, Any] = {"urls": len(urls), "refused_before_fetch": len(rejected), "fetch_work_dir": work_dir}
    if robots is not None:
        counters["robots_txt_fetched"] = robots_hosts
    t0 = time.perf_counter()
    if to_fetch:
        counters.update(run_img2dataset(to_fetch, work_dir, policy, filter_cfg, settings, hash_list))
    counters["fetch_seconds"] = round(time.perf_counter() - t0, 3)
    shard_ids = sorted(done_shards(f"{work_dir}/shards")) if to_fetch else []
    return FetchOutcome(to_fetch, rejected, work_dir, shard_ids, counters)


def fetched_with_bytes(fetched: pa.Table, to_fetch: list[str], rejected: dict) -> pa.Table:
    """The fetched rows of ``to_fetch`` that came back with bytes; each other one is recorded in
    ``rejected`` (url -> (reason, detail, duplicate_of)) with img2dataset's reason."""
    fetched = fetched.filter(pc.is_in(fetched.column("url"), pa.array(to_fetch, pa.string())))
    bad = fetched.filter(pc.invert(pc.is_valid(fetched.column("image"))))
    for url, reason, detail in zip(*(bad.column(c).to_pylist() for c in ("url", "reason", "detail"))):
        rejected[url] = (reason or "fetch_error:other", detail or "", None)
    return fetched.filter(pc.is_valid(fetched.column("image")))


def fetch_and_filter(urls: list[str], work_root: str, policy: FetchPolicy, filter_cfg: ImageFilterConfig,
                     images_cfg: ImagesConfig, spark_cfg: SparkConfig | None = None, hash_list=None,
                     robots=None, extra_filters=(), seen: Callable[[list[str], np.ndarray], list] | None = None
                     ) -> ImageDecisions:
    """Steps 2-4 for ``urls`` in this process, the fetched bytes read back (``bench/images.py`` times it,
    and it is the reference the stage's Spark steps are checked against: :mod:`pipelines.images_spark`).

    ``seen``: for the fetched images' (sha256s, pHashes), the earlier snapshot's (snapshot, url,
    detail) of each, or None (``dedup.state_dir``: :meth:`pipelines.dedup_state.DedupState.image_matches`).
    """
    from curation.fetch import read_shards

    outcome = refuse_and_fetch(urls, work_root, policy, filter_cfg, images_cfg, spark_cfg, hash_list, robots,
                               extra_filters)
    rejected, to_fetch, counters = dict(outcome.refused), outcome.to_fetch, outcome.counters
    fetched, summary = read_shards(outcome.work_dir) if to_fetch else (None, {})
    counters["img2dataset"] = summary

    kept = IMAGES.empty_table()
    if fetched is not None and fetched.num_rows:
        ok = fetched_with_bytes(fetched, to_fetch, rejected)
        counters["reencoded"] = dict(Counter(r for r in ok.column("reencoded").to_pylist() if r))
        kept = _deduplicate(ok, filter_cfg, rejected, seen)
    if seen is not None:
        counters["seen_in_earlier_snapshots"] = sum(1 for r, _, _ in rejected.values() if r.startswith(SEEN_IN))
    decided = set(rejected) | set(kept.column("url").to_pylist())
    for url in to_fetch:  # a shard that failed every retry, or a sample img2dataset dropped
        if url not in decided:
            rejected[url] = ("fetch_error:lost", "no result from img2dataset", None)
    return ImageDecisions(kept=kept, rejected=rejected, counters=counters)


def _deduplicate(ok: pa.Table, filter_cfg: ImageFilterConfig,
                 rejected: dict[str, tuple[str, str, str | None]], seen=None) -> pa.Table:
    """Images seen in earlier snapshots, then exact (sha256) then near (pHash) duplicates among
    fetched images; returns the kept IMAGES rows."""
    urls = ok.column("url").to_pylist()
    width = ok.column("width").to_numpy(zero_copy_only=False).astype(np.int64)
    height = ok.column("height").to_numpy(zero_copy_only=False).astype(np.int64)
    order = preference_order(width * height, urls)
    digests = ok.column("sha256").to_pylist()
    hashes = np.array([int(h, 16) for h in ok.column("phash").to_pylist()], dtype=np.uint64)
    if seen is not None:  # before the in-run steps: an image seen before never becomes this run's keeper
        earlier = seen(digests, hashes)
        for i, m in enumerate(earlier):
            if m is not None:
                rejected[urls[i]] = (SEEN_IN + m[0], m[2], m[1])
        order = [i for i in order if earlier[i] is None]
    exact = exact_duplicates(digests, order)
    for i in np.nonzero(exact >= 0)[0]:
        rejected[urls[i]] = ("exact_duplicate", f"same sha256 as {urls[exact[i]]}", urls[exact[i]])
    alive = [i for i in order if exact[i] < 0]
    near = near_duplicates(hashes, alive, filter_cfg.phash_max_hamming) if filter_cfg.phash_max_hamming >= 0 \
        else np.full(len(urls), -1)
    for i in np.nonzero(near >= 0)[0]:
        d = int(np.bitwise_count(hashes[i] ^ hashes[near[i]]))
        rejected[urls[i]] = ("near_duplicate", f"pHash distance {d} to {urls[near[i]]}", urls[near[i]])
    keep = np.zeros(len(urls), dtype=bool)
    keep[[i for i in alive if near[i] < 0]] = True
    kept = ok.filter(pa.array(keep)).sort_by("url")
    return pa.table({name: kept.column(name) for name in IMAGES.names}).cast(IMAGES)


# --------------------------------------------------------------------------- sample server


@contextmanager
def sample_image_server(config: PipelineConfig, source_root: str) -> Iterator[tuple[str, ...]]:
    """Serve the sample's images on loopback while fetching; yields the allowlist entries it needs."""
    from curation.pipeline import sample_dir_of, sample_image_base_url

    if config.snapshot != "sample" or "://" in source_root:
        yield ()
        return
    sample = sample_dir_of(source_root)
    if not (sample / "images").is_dir():
        yield ()
        return
    from curation.sample import ImageServer

    expected = sample_image_base_url(config)
    manifest = sample / "manifest.json"
    if manifest.exists():
        base = json.loads(manifest.read_text()).get("image_base_url")
        if base and base != expected:
            raise StageError(
                f"the sample in {sample} points its images at {base} but sample_image_port={config.sample_image_port} "
                f"serves {expected}: rerun extract (--force extract) or set sample_image_port to match"
            )
    server = ImageServer(sample / "images", host="127.0.0.1", port=config.sample_image_port)
    try:
        server.start()
    except OSError as exc:
        raise StageError(
            f"cannot serve the sample images on 127.0.0.1:{config.sample_image_port} ({exc}); another run may be "
            "using the port: set sample_image_port to a free port"
        ) from exc
    log.info("images: serving %s at %s", sample / "images", server.base_url)
    try:
        yield (f"127.0.0.1:{config.sample_image_port}",)
    finally:
        server.stop()


# --------------------------------------------------------------------------- the stage


def _robots_cache(ctx: StageContext, policy: FetchPolicy, run_root: str):
    """robots.txt verdicts for the run (``safety.honour_robots_txt``), kept in ``<run>/_work/robots.json`` when local."""
    if not ctx.config.safety.honour_robots_txt:
        return None
    from curation.robots import RobotsCache

    cfg = ctx.config.images
    path = None if "://" in run_root else f"{run_root}/_work/robots.json"
    return RobotsCache(policy, cfg.user_agent_token or "img2dataset", cfg.timeout, path)


def _source_root(ctx: StageContext) -> str:
    docs = ctx.inputs["documents"].rstrip("/")
    return docs.rsplit("/", 2)[0] if docs.count("/") >= 2 else "."


class ImageStage(Stage):
    """``curate images``: inputs {"documents": path, "pairs": path (optional)}."""

    name = STAGE
    outputs = ("images", "pairs", "documents", "webdataset")
    config_sections = ("images", "image_filters", "safety.image_hash_blocklist_file", "safety.honour_tdm_reservation",
                       "safety.honour_robots_txt")
    # Fingerprinted only when set: runs without a state keep their fingerprints.
    config_sections_if_set = ("dedup.state_dir",)

    def run(self, ctx: StageContext) -> StageStats:
        from curation.spark import get_spark
        from pipelines.images_spark import images_after_fetch, read_fetched, read_table, shard_stats

        cfg, fcfg = ctx.config.images, ctx.config.image_filters
        spark = get_spark(ctx.config.spark)
        docs = read_table(spark, ctx.inputs["documents"], DOCUMENTS)
        pairs = read_table(spark, ctx.inputs.get("pairs"), PAIRS)
        urls = unique_image_urls(docs, pairs)
        n_docs, n_pairs = docs.count(), pairs.count()
        log.info("images: %d documents, %d pairs, %d unique image URLs", n_docs, n_pairs, len(urls))
        run_root = ctx.run_root
        state_dir = ctx.config.dedup.state_dir
        state = DedupState(state_dir, ctx.config.snapshot, ctx.run_id) if state_dir else None
        seen = (lambda d, h: state.image_matches(d, h, fcfg.phash_max_hamming)) if state is not None else None
        record = ((lambda d, h, u: state.record_images(d, h, u, fcfg.phash_max_hamming))
                  if state is not None else None)
        with sample_image_server(ctx.config, _source_root(ctx)) as extra_allow:
            policy = make_policy(cfg, fcfg, extra_allow, ctx.config.safety.honour_tdm_reservation)
            hashes = ctx.config.safety.image_hash_blocklist_file
            fetch = refuse_and_fetch(urls, run_root, policy, fcfg, cfg, ctx.config.spark,
                                     with_takedown_hashes(HashList.load(hashes) if hashes else None, run_root),
                                     _robots_cache(ctx, policy, run_root),
                                     [f for f in [takedown_filter(run_root)] if f is not None])
        refused = spark.createDataFrame([(u, r, d, dup) for u, (r, d, dup) in sorted(fetch.refused.items())],
                                        "url string, reason string, detail string, duplicate_of string")
        to_fetch = (spark.read.parquet(f"{fetch.work_dir}/urls.parquet").select("url") if fetch.to_fetch
                    else spark.createDataFrame([], "url string"))
        counters = dict(fetch.counters)
        counters["img2dataset"] = shard_stats(fetch.work_dir, fetch.shard_ids) if fetch.to_fetch else {}
        wds = ({"dir": ctx.output_path("webdataset"), "samples_per_tar": cfg.samples_per_tar,
                "image_format": cfg.webdataset_image_format} if cfg.webdataset else None)
        res = images_after_fetch(
            spark, fetched=read_fetched(spark, fetch.work_dir, fetch.shard_ids), to_fetch=to_fetch, refused=refused,
            docs=docs, pairs=pairs,
            outputs={k: ctx.output_path(k) for k in ("images", "pairs", "documents")}, rejects_path=ctx.rejects_path,
            max_distance=fcfg.phash_max_hamming, drop_documents_without_images=cfg.drop_documents_without_images,
            seen=seen, state_record=record, webdataset=wds)
        counters.update(res.counters)
        if not cfg.keep_fetch_cache and counters.get("fetch_work_dir"):
            fs, wpath = url_to_fs(counters["fetch_work_dir"])
            if fs.exists(wpath):
                fs.rm(wpath, recursive=True)
            parent = wpath.rsplit("/", 1)[0]
            if fs.exists(parent) and not fs.ls(parent):
                fs.rm(parent, recursive=True)
            counters.pop("fetch_work_dir")
        counters["formats_kept"] = res.formats
        counters["webdataset_shards"] = len(res.webdataset)
        return StageStats(
            stage=STAGE,
            rows_in=len(urls),
            rows_out=res.kept,
            rejected=res.reasons,
            outputs={"images": res.kept, "pairs": res.pairs_out, "documents": res.docs_out,
                     "webdataset": sum(res.webdataset.values())},
            counters=counters,
            tables={
                "pairs": {"rows_in": n_pairs, "rows_out": res.pairs_out, "rejected": res.pair_reasons},
                "documents": {"rows_in": n_docs, "rows_out": res.docs_out, "rejected": res.doc_reasons},
            },
        )
