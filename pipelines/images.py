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
4. With ``dedup.state_dir`` set, images an earlier snapshot kept (same sha256, or pHash
   within ``image_filters.phash_max_hamming``) are ``seen_in:<snapshot>``
   (:meth:`pipelines.dedup_state.DedupState.image_matches`); then exact duplicates by
   sha256 (``exact_duplicate``), then near duplicates by pHash Hamming distance
   (``near_duplicate``), keeping the image with most pixels, then the smallest URL;
   ``duplicate_of`` names the kept URL. After the outputs are written the kept images
   join the state (:meth:`~pipelines.dedup_state.DedupState.record_images`).
5. Joins: pairs get their image (``pairs/``, IMAGE_PAIRS) or are rejected with the
   image's reason; documents lose the positions of images not kept (texts, images and
   metadata stay aligned: :func:`curation.layout.cut_positions`) and get ``image_bytes``
   aligned with the positions (``documents/``, INTERLEAVED); a document left without
   images is dropped (``no_images``) unless ``images.drop_documents_without_images`` is false.
6. ``webdataset/``: the pairs as tar shards open_clip's loader reads (:mod:`curation.wds_writer`).

On a sample run (``snapshot: sample``) the stage serves ``<run>/_sample/images`` on
``127.0.0.1:<sample_image_port>`` for the duration of the fetch and allowlists exactly
that address and port.

Main table of ``stats.json``: unique image URLs; ``tables``: ``pairs`` and ``documents``.
The kept images are held in the driver's memory for the joins.
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
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from curation.config import ImagesConfig, PipelineConfig, SparkConfig
from curation.layout import cut_positions, drop_images, load_metadata
from curation.safe_http import FetchPolicy, precheck_url
from curation.schemas import DOCUMENTS, IMAGE_PAIRS, IMAGES, INTERLEAVED, PAIRS, REJECTS
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


def read_dataset(path: str | None, schema: pa.Schema) -> pa.Table:
    """A Parquet dataset with ``schema`` (empty table when the path is missing or holds no file)."""
    if not path:
        return schema.empty_table()
    fs, p = url_to_fs(path)
    if not fs.exists(p):
        return schema.empty_table()
    files = sorted(f for f in fs.find(p) if f.endswith(".parquet") and "/." not in f and "/_" not in f[len(p):])
    if not files:
        return schema.empty_table()
    tables = []
    for f in files:
        with fs.open(f, "rb") as fh:
            t = pq.read_table(fh, columns=schema.names)
        tables.append(t.select(schema.names).cast(schema))
    return pa.concat_tables(tables)


def unique_image_urls(docs: pa.Table, pairs: pa.Table) -> list[str]:
    """Every distinct non-empty image URL of documents and pairs, sorted."""
    parts = [pc.list_flatten(docs.column("images")), pairs.column("url")]
    arrays = [c for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
    if not arrays:
        return []
    allurls = pa.chunked_array(arrays, pa.string()).drop_null()
    allurls = allurls.filter(pc.not_equal(allurls, ""))
    return sorted(pc.unique(allurls).to_pylist())


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


def fetch_and_filter(urls: list[str], work_root: str, policy: FetchPolicy, filter_cfg: ImageFilterConfig,
                     images_cfg: ImagesConfig, spark_cfg: SparkConfig | None = None, hash_list=None,
                     robots=None, extra_filters=(), seen: Callable[[list[str], np.ndarray], list] | None = None
                     ) -> ImageDecisions:
    """Steps 2-4 for ``urls``: the stage's whole fetch path (also what ``bench/images.py`` times).

    ``spark_cfg`` picks the distributor (``images.distributor: auto``: pyspark when its master is
    not local) and is the session img2dataset's pyspark distributor runs on. ``seen``: for the
    fetched images' (sha256s, pHashes), the earlier snapshot's (snapshot, url, detail) of each, or
    None (``dedup.state_dir``: :meth:`pipelines.dedup_state.DedupState.image_matches`).
    """
    from curation.fetch import FetchSettings, read_shards, run_img2dataset, work_dir_for

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
    fetched, summary = read_shards(work_dir) if to_fetch else (None, {})
    counters["fetch_seconds"] = round(time.perf_counter() - t0, 3)
    counters["img2dataset"] = summary

    kept = IMAGES.empty_table()
    if fetched is not None and fetched.num_rows:
        fetched = fetched.filter(pc.is_in(fetched.column("url"), pa.array(to_fetch, pa.string())))
        ok = fetched.filter(pc.is_valid(fetched.column("image")))
        bad = fetched.filter(pc.invert(pc.is_valid(fetched.column("image"))))
        for url, reason, detail in zip(*(bad.column(c).to_pylist() for c in ("url", "reason", "detail"))):
            rejected[url] = (reason or "fetch_error:other", detail or "", None)
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


# --------------------------------------------------------------------------- joins


def join_pairs(pairs: pa.Table, kept: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Pairs whose image was kept, with its bytes (IMAGE_PAIRS), and the index of the rejected ones."""
    idx = pc.index_in(pairs.column("url").combine_chunks(), value_set=kept.column("url").combine_chunks())
    mask = pc.is_valid(idx)
    taken = kept.take(idx.filter(mask))
    out = pairs.filter(mask)
    cols = {n: out.column(n) for n in PAIRS.names}
    for n in ("image", "width", "height", "sha256"):
        cols[n] = taken.column(n)
    return pa.table(cols).cast(IMAGE_PAIRS), pairs.filter(pc.invert(mask))


def join_documents(docs: pa.Table, kept: pa.Table) -> tuple[pa.Table, list[int], dict[str, int]]:
    """Documents without the images that were not kept, plus ``image_bytes`` aligned with positions.

    Returns (INTERLEAVED table, images left per document, counters).
    """
    kept_index = {u: i for i, u in enumerate(kept.column("url").to_pylist())}
    kept_bytes = kept.column("image").combine_chunks()
    cols: dict[str, list] = {"texts": [], "images": [], "metadata": []}
    flat_idx: list[int | None] = []
    offsets = [0]
    n_images: list[int] = []
    removed = touched = 0
    metas = docs.column("metadata").to_pylist()
    for texts, images, raw in zip(docs.column("texts").to_pylist(), docs.column("images").to_pylist(), metas):
        texts, images = texts or [], images or []
        keep = {p for p, u in enumerate(images) if u is not None and u in kept_index}
        n_drop = sum(1 for u in images if u is not None) - len(keep)
        removed += n_drop
        touched += n_drop > 0
        t, im, m = cut_positions(texts, images, load_metadata(raw), drop_images(images, keep))
        cols["texts"].append(t)
        cols["images"].append(im)
        cols["metadata"].append(json.dumps(m, ensure_ascii=False) if (n_drop or raw is None) else raw)
        idx = [kept_index[u] if u is not None else None for u in im]
        flat_idx += idx
        offsets.append(len(flat_idx))
        n_images.append(sum(1 for u in im if u is not None))
    taken = kept_bytes.take(pa.array(flat_idx, pa.int64())) if flat_idx else pa.array([], pa.binary())
    out = {name: docs.column(name) for name in DOCUMENTS.names}
    out["texts"] = pa.array(cols["texts"], pa.list_(pa.string()))
    out["images"] = pa.array(cols["images"], pa.list_(pa.string()))
    out["metadata"] = pa.array(cols["metadata"], pa.string())
    out["image_bytes"] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), taken)
    table = pa.table(out).cast(INTERLEAVED) if docs.num_rows else INTERLEAVED.empty_table()
    return table, n_images, {"image_positions_removed": removed, "documents_touched": touched}


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


def _write_parquet(table: pa.Table, directory: str, name: str = "part-00000.parquet") -> None:
    fs, path = url_to_fs(directory)
    fs.makedirs(path, exist_ok=True)
    tmp = f"{path}/.{name}.tmp"
    with fs.open(tmp, "wb") as fh:
        pq.write_table(table, fh, row_group_size=1024)
    fs.mv(tmp, f"{path}/{name}")


def _rejects(rows: list[tuple[str, str, str, str, str | None]]) -> pa.Table:
    cols = list(zip(*rows)) if rows else [[], [], [], [], []]
    row_id, table, reason, detail, dup = cols
    return pa.table({
        "row_id": pa.array(row_id, pa.string()), "table": pa.array(table, pa.string()),
        "stage": pa.array([STAGE] * len(row_id), pa.string()), "reason": pa.array(reason, pa.string()),
        "detail": pa.array(detail, pa.string()), "duplicate_of": pa.array(dup, pa.string()),
    }).cast(REJECTS)


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
        cfg, fcfg = ctx.config.images, ctx.config.image_filters
        docs = read_dataset(ctx.inputs["documents"], DOCUMENTS)
        pairs = read_dataset(ctx.inputs.get("pairs"), PAIRS)
        urls = unique_image_urls(docs, pairs)
        log.info("images: %d documents, %d pairs, %d unique image URLs", docs.num_rows, pairs.num_rows, len(urls))
        run_root = ctx.stage_dir.rstrip("/").rsplit("/", 1)[0]
        state_dir = ctx.config.dedup.state_dir
        state = DedupState(state_dir, ctx.config.snapshot, ctx.run_id) if state_dir else None
        seen = (lambda d, h: state.image_matches(d, h, fcfg.phash_max_hamming)) if state is not None else None
        with sample_image_server(ctx.config, _source_root(ctx)) as extra_allow:
            policy = make_policy(cfg, fcfg, extra_allow, ctx.config.safety.honour_tdm_reservation)
            hashes = ctx.config.safety.image_hash_blocklist_file
            decisions = fetch_and_filter(urls, run_root, policy, fcfg, cfg, ctx.config.spark,
                                         with_takedown_hashes(HashList.load(hashes) if hashes else None, run_root),
                                         _robots_cache(ctx, policy, run_root),
                                         [f for f in [takedown_filter(run_root)] if f is not None], seen)
        kept = decisions.kept
        rejects: list[tuple[str, str, str, str, str | None]] = [
            (url, "images", reason, detail, dup) for url, (reason, detail, dup) in sorted(decisions.rejected.items())
        ]

        image_pairs, lost_pairs = join_pairs(pairs, kept)
        for key, url in zip(lost_pairs.column("key").to_pylist(), lost_pairs.column("url").to_pylist()):
            reason, detail, dup = decisions.rejected.get(url, ("no_image_url", "", None))
            rejects.append((key, "pairs", reason, f"image {url}: {detail}"[:500], dup))

        documents, n_images, doc_counters = join_documents(docs, kept)
        doc_rejected: Counter = Counter()
        if cfg.drop_documents_without_images and documents.num_rows:
            had = [sum(1 for u in (imgs or ()) if u is not None) for imgs in docs.column("images").to_pylist()]
            empty = np.array([n == 0 for n in n_images], dtype=bool)
            for doc_id, n_had in zip(documents.filter(pa.array(empty)).column("doc_id").to_pylist(),
                                     np.array(had)[empty].tolist()):
                detail = f"{n_had} image(s), none kept" if n_had else "no image in input"
                rejects.append((doc_id, "documents", "no_images", detail, None))
                doc_rejected["no_images"] += 1
            documents = documents.filter(pa.array(~empty))

        formats = dict(zip(kept.column("url").to_pylist(), kept.column("format").to_pylist()))
        _write_parquet(kept, ctx.output_path("images"))
        _write_parquet(image_pairs, ctx.output_path("pairs"))
        _write_parquet(documents, ctx.output_path("documents"))
        _write_parquet(_rejects(rejects), ctx.rejects_path)
        wds_sizes: dict[str, int] = {}
        if cfg.webdataset:
            from curation.wds_writer import write_webdataset

            wds_sizes = write_webdataset(
                image_pairs, [formats[u] for u in image_pairs.column("url").to_pylist()],
                ctx.output_path("webdataset"), cfg.samples_per_tar, cfg.webdataset_image_format,
            )

        counters = dict(decisions.counters)
        if state is not None:  # after the outputs: this run's kept images join the cross-snapshot state
            counters["state_entries"] = state.record_images(
                kept.column("sha256").to_pylist(),
                np.array([int(h, 16) for h in kept.column("phash").to_pylist()], dtype=np.uint64),
                kept.column("url").to_pylist(), fcfg.phash_max_hamming)
        if not cfg.keep_fetch_cache and counters.get("fetch_work_dir"):
            fs, wpath = url_to_fs(counters["fetch_work_dir"])
            if fs.exists(wpath):
                fs.rm(wpath, recursive=True)
            parent = wpath.rsplit("/", 1)[0]
            if fs.exists(parent) and not fs.ls(parent):
                fs.rm(parent, recursive=True)
            counters.pop("fetch_work_dir")
        counters.update(doc_counters)
        counters["formats_kept"] = dict(Counter(formats.values()))
        counters["webdataset_shards"] = len(wds_sizes)
        pair_rejected = Counter(r[2] for r in rejects if r[1] == "pairs")
        return StageStats(
            stage=STAGE,
            rows_in=len(urls),
            rows_out=kept.num_rows,
            rejected=dict(decisions.reasons()),
            outputs={"images": kept.num_rows, "pairs": image_pairs.num_rows, "documents": documents.num_rows,
                     "webdataset": sum(wds_sizes.values())},
            counters=counters,
            tables={
                "pairs": {"rows_in": pairs.num_rows, "rows_out": image_pairs.num_rows, "rejected": dict(pair_rejected)},
                "documents": {"rows_in": docs.num_rows, "rows_out": documents.num_rows, "rejected": dict(doc_rejected)},
            },
        )
