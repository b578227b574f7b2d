"""Fetch image URLs with img2dataset, safely, checking every image in the fetch workers.

img2dataset does the distribution (its multiprocessing distributor, or its
pyspark distributor on a Spark cluster), the threaded downloads, retries,
``X-Robots-Tag`` handling, per-shard ``*_stats.json`` and incremental resume.
This module plugs three parts into its :class:`~img2dataset.downloader.Downloader`
(composed the way ``img2dataset.main.download`` composes them):

* :class:`SafeDownloader`: before a shard is downloaded, in the worker process
  (a spawned multiprocessing worker or a Spark python worker), installs the
  opener of :mod:`curation.safe_http` with ``urllib.request.install_opener``;
  img2dataset's ``urllib.request.urlopen`` then goes through its checked
  connection class on every request and every redirect;
* :class:`CheckingResizer`: sits in img2dataset's resizer slot and runs
  :class:`curation.image_check.ImageChecker` (header checks before decoding,
  decode, pHash), then img2dataset's own ``Resizer`` when a resize is
  configured; a rejection becomes the sample's error message;
* :class:`FetchShardWriter`: img2dataset's Parquet writer with the columns the
  stage needs (``image`` bytes, ``format``, ``phash``, ``sha256``, ``reason``,
  ``detail``).

Shards are written under ``<work>/shards/`` as ``NNNNN.parquet`` then
``NNNNN_stats.json``; the stats file is the shard's completion marker, so a rerun
in img2dataset's incremental mode skips finished shards and redoes a shard whose
Parquet was cut mid-write. The URL list must be identical between runs (the
stage sorts it and keys the work directory on its hash).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

# img2dataset imports albumentations, which otherwise checks PyPI for updates at import time
# (in this process and in every spawned worker, which inherits the environment).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import fsspec  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from img2dataset.distributor import multiprocessing_distributor, pyspark_distributor  # noqa: E402
from img2dataset.downloader import Downloader  # noqa: E402
from img2dataset.reader import Reader  # noqa: E402
from img2dataset.resizer import Resizer  # noqa: E402
from img2dataset.writer import ParquetSampleWriter  # noqa: E402

from curation.image_check import CheckedImage, ImageChecker  # noqa: E402
from curation.safe_http import FetchPolicy, install_safe_opener  # noqa: E402
from filters.config import ImageFilterConfig  # noqa: E402

log = logging.getLogger(__name__)

SHARD_COUNT_DIGITS = 5  # img2dataset's oom_shard_count: shard files are 00000.parquet, ...
IMAGE_COLUMN = "image"

# What a fetch shard holds per URL (img2dataset's own columns plus ours).
_EXTRA_FIELDS = [
    pa.field("format", pa.string()),
    pa.field("phash", pa.string()),
    pa.field("sha256", pa.string()),
    pa.field("reencoded", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
]


# --------------------------------------------------------------------------- error messages -> reasons

_HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")
# Our refusals (curation.safe_http, possibly wrapped by urllib as "<urlopen error ...>") and
# checks (curation.image_check) put the reason first.
_OWN_REASON = re.compile(
    r"^(?:<urlopen error )?(unsafe_address|unsafe_scheme|too_large|fetch_error:[a-z_0-9]+|empty_body|format|"
    r"tdm_reserved|hash_listed|"  # the safety layer's (docs/safety.md)
    r"decompression_bomb|too_small|too_big|bad_aspect|animated|undecodable)(?::\s*(.*))?$",
    re.S,
)


def classify_error(message: str | None) -> tuple[str, str]:
    """img2dataset's error message of a sample -> ``(reason, detail)``.

    Our own refusals and checks put the reason first in the message; urllib's errors are mapped
    by what they say (HTTP status, timeout, DNS, connection).
    """
    msg = (message or "").strip()
    low = msg.lower()
    if "x-robots-tag" in low:
        return "robots_noai", msg
    m = _HTTP_STATUS.search(msg)
    if m:
        return f"fetch_error:{m.group(1)}", msg
    m = _OWN_REASON.match(msg)
    if m:
        return m.group(1), (m.group(2) or "").strip().rstrip(">")[:300]
    if "unknown url type" in low:
        return "unsafe_scheme", msg
    if "nonnumeric port" in low or "invalid ipv6 url" in low or "no host given" in low \
            or "can't contain control characters" in low:
        # http.client's InvalidURL, e.g. a redirect to http://127.0.0.1:80@10.0.0.1/ (never connected)
        return "bad_url", msg[:300]
    if "timed out" in low or "timeout" in low:
        return "fetch_error:timeout", msg
    if "name or service not known" in low or "nodename nor servname" in low or "getaddrinfo" in low \
            or "name resolution" in low:
        return "fetch_error:dns", msg
    if "refused" in low or "reset" in low or "unreachable" in low or "broken pipe" in low:
        return "fetch_error:connection", msg
    if "remote end closed" in low or "incompleteread" in low or "badstatusline" in low:
        return "fetch_error:protocol", msg
    return "fetch_error:other", msg[:300]


# --------------------------------------------------------------------------- img2dataset parts


class CheckingResizer:
    """img2dataset's resizer slot: our checks, then img2dataset's ``Resizer`` when resizing is configured.

    Returns img2dataset's tuple ``(bytes, width, height, original_width, original_height, error)``;
    the bytes are a :class:`CheckedImage` carrying format and pHash to :class:`FetchShardWriter`.
    """

    def __init__(self, filter_cfg: ImageFilterConfig, normalize_high_bit_depth: bool = True,
                 resize: dict[str, Any] | None = None, hash_list=None):
        self.checker = ImageChecker(filter_cfg, normalize_high_bit_depth)
        self.hash_list = hash_list  # filters.blocklists.HashList: listed images are refused here, never stored
        self.resize = dict(resize) if resize else None
        self._resizer: Resizer | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_resizer"] = None  # rebuilt in the worker
        return state

    def __call__(self, img_stream, blurring_bbox_list=None):
        img_stream.seek(0)
        raw = img_stream.read()
        hit = self.hash_list.match(raw) if self.hash_list is not None else None
        if hit:  # on the worker, before any decode or write: the bytes go nowhere
            return None, None, None, None, None, f"hash_listed: {hit}"
        result = self.checker.check(raw)
        if not isinstance(result, CheckedImage):
            return None, None, None, None, None, result.message()
        if not self.resize:
            return result, result.width, result.height, result.width, result.height, None
        if self._resizer is None:
            self._resizer = Resizer(**self.resize)
        data, width, height, ow, oh, err = self._resizer(io.BytesIO(bytes(result)))
        if err is not None:
            return None, None, None, None, None, f"undecodable: resize: {err}"
        fmt = {"jpg": "jpeg"}.get(self.resize["encode_format"], self.resize["encode_format"])
        out = CheckedImage(data, format=fmt, width=width, height=height, phash=result.phash, reencoded="resized")
        return out, width, height, ow, oh, None


class SafeDownloader(Downloader):
    """img2dataset's Downloader that installs the checked urllib opener in the process it runs in."""

    def __init__(self, policy: FetchPolicy, **kwargs):
        super().__init__(**kwargs)
        self.policy = policy

    def __call__(self, row):
        install_safe_opener(self.policy)
        return super().__call__(row)


class FetchShardWriter(ParquetSampleWriter):
    """img2dataset's Parquet sample writer, with the image bytes in ``image`` and our columns added."""

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
        for f in _EXTRA_FIELDS:
            if f.name not in schema.names:
                schema = schema.append(f)
        super().__init__(shard_id, output_folder, save_caption, oom_shard_count, schema, IMAGE_COLUMN)

    def write(self, img_str, key, caption, meta):
        meta = dict(meta)
        if isinstance(img_str, CheckedImage):
            meta.update(format=img_str.format, phash=f"{img_str.phash:016x}", sha256=img_str.sha256,
                        reencoded=img_str.reencoded, reason=None, detail=None)
            img_str = bytes(img_str)
        else:
            reason, detail = classify_error(meta.get("error_message"))
            meta.update(format=None, phash=None, sha256=None, reencoded=None, reason=reason, detail=detail)
            img_str = None
        super().write(img_str, key, caption, meta)


# --------------------------------------------------------------------------- the driver


@dataclass
class FetchSettings:
    """How to run img2dataset (from ``ImagesConfig``), kept apart from the stage for the bench and tests."""

    distributor: str = "multiprocessing"  # multiprocessing | pyspark
    processes: int = 0
    threads_per_process: int = 32
    urls_per_shard: int = 1000
    timeout: float = 10.0
    retries: int = 0
    user_agent_token: str | None = "img2dataset"
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    normalize_high_bit_depth: bool = True
    resize: dict[str, Any] | None = None
    max_shard_retry: int = 1

    @classmethod
    def from_config(cls, images_cfg, spark_master: str) -> "FetchSettings":
        distributor = images_cfg.distributor
        if distributor == "auto":
            distributor = "multiprocessing" if spark_master.startswith("local") else "pyspark"
        resize = None
        if images_cfg.resize_mode != "no":
            resize = dict(image_size=images_cfg.image_size, resize_mode=images_cfg.resize_mode,
                          resize_only_if_bigger=True, encode_format=images_cfg.encode_format,
                          encode_quality=images_cfg.encode_quality)
        return cls(
            distributor=distributor, processes=images_cfg.processes,
            threads_per_process=images_cfg.threads_per_process, urls_per_shard=images_cfg.urls_per_shard,
            timeout=images_cfg.timeout, retries=images_cfg.retries, user_agent_token=images_cfg.user_agent_token,
            disallowed_header_directives=tuple(images_cfg.disallowed_header_directives),
            normalize_high_bit_depth=images_cfg.normalize_high_bit_depth, resize=resize,
        )


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def done_shards(shards_dir: str) -> set[int]:
    """Shards whose ``*_stats.json`` exists (img2dataset writes it after the shard's Parquet)."""
    fs, path = fsspec.core.url_to_fs(shards_dir)
    if not fs.exists(path):
        return set()
    return {int(p.rsplit("/", 1)[-1].split("_")[0]) for p in fs.glob(_join(path, "*_stats.json"))}


def write_url_list(urls: list[str], work_dir: str) -> str:
    """The img2dataset input (one Parquet file, ``url`` column), written once and atomically."""
    fs, path = fsspec.core.url_to_fs(work_dir)
    fs.makedirs(path, exist_ok=True)
    target = _join(path, "urls.parquet")
    if not fs.exists(target):
        tmp = target + ".tmp"
        with fs.open(tmp, "wb") as fh:
            pq.write_table(pa.table({"url": pa.array(urls, pa.string())}), fh)
        fs.mv(tmp, target)
    return _join(work_dir, "urls.parquet")


def run_img2dataset(urls: list[str], work_dir: str, policy: FetchPolicy, filter_cfg: ImageFilterConfig,
                    settings: FetchSettings, hash_list=None) -> dict[str, Any]:
    """Download ``urls`` into ``<work_dir>/shards`` (resuming finished shards); returns counters."""
    url_list = write_url_list(urls, work_dir)
    shards_dir = _join(work_dir, "shards")
    fs, shards_path = fsspec.core.url_to_fs(shards_dir)
    fs.makedirs(shards_path, exist_ok=True)
    tmp_dir = _join(shards_dir, "_tmp")
    fs.makedirs(_join(shards_path, "_tmp"), exist_ok=True)
    done = done_shards(shards_dir)
    n_shards = -(-len(urls) // settings.urls_per_shard)
    todo = n_shards - len(done & set(range(n_shards)))
    counters: dict[str, Any] = {"shards": n_shards, "shards_resumed": n_shards - todo, "shards_fetched": todo}
    if todo == 0:
        log.info("images: all %d fetch shards already done in %s", n_shards, shards_dir)
        return counters

    reader = Reader(url_list, "parquet", "url", None, None, None, None, settings.urls_per_shard, done, tmp_dir)
    downloader = SafeDownloader(
        policy,
        sample_writer_class=FetchShardWriter,
        resizer=CheckingResizer(filter_cfg, settings.normalize_high_bit_depth, settings.resize, hash_list),
        thread_count=settings.threads_per_process,
        save_caption=False,
        extract_exif=False,
        output_folder=shards_dir,
        column_list=reader.column_list,
        timeout=settings.timeout,
        number_sample_per_shard=settings.urls_per_shard,
        oom_shard_count=SHARD_COUNT_DIGITS,
        compute_hash=None,  # FetchShardWriter hashes the bytes it stores
        verify_hash_type=None,
        encode_format=IMAGE_COLUMN,
        retries=settings.retries,
        user_agent_token=settings.user_agent_token,
        disallowed_header_directives=list(settings.disallowed_header_directives) or None,
    )
    processes = settings.processes or (os.cpu_count() or 1)
    processes = max(1, min(processes, todo))
    log.info("images: fetching %d URLs in %d shards (%d resumed) with img2dataset's %s distributor, %d processes",
             len(urls), todo, n_shards - todo, settings.distributor, processes)
    if settings.distributor == "pyspark":
        pyspark_distributor(processes, downloader, reader, 1000, settings.max_shard_retry)
    elif settings.distributor == "multiprocessing":
        multiprocessing_distributor(processes, downloader, reader, 1000, settings.max_shard_retry)
    else:
        raise ValueError(f"unknown distributor {settings.distributor!r}")
    if fs.exists(_join(shards_path, "_tmp")):
        fs.rm(_join(shards_path, "_tmp"), recursive=True)
    return counters


FETCH_COLUMNS = ["url", "status", "error_message", "width", "height", IMAGE_COLUMN] + [f.name for f in _EXTRA_FIELDS]


def read_shards(work_dir: str) -> tuple[pa.Table, dict[str, Any]]:
    """Every finished shard's rows (``FETCH_COLUMNS``) and img2dataset's summed per-shard stats."""
    import json

    shards_dir = _join(work_dir, "shards")
    fs, path = fsspec.core.url_to_fs(shards_dir)
    tables = []
    summary: dict[str, Any] = {"count": 0, "successes": 0, "failed_to_download": 0, "failed_to_resize": 0}
    for shard in sorted(done_shards(shards_dir)):
        name = f"{shard:0{SHARD_COUNT_DIGITS}d}"
        with fs.open(_join(path, f"{name}_stats.json"), "r") as fh:
            stats = json.load(fh)
        for key in summary:
            summary[key] += int(stats.get(key, 0))
        with fs.open(_join(path, f"{name}.parquet"), "rb") as fh:
            tables.append(pq.read_table(fh, columns=FETCH_COLUMNS))
    if not tables:
        schema = pa.schema([("url", pa.string()), ("status", pa.string()), ("error_message", pa.string()),
                            ("width", pa.int32()), ("height", pa.int32()), (IMAGE_COLUMN, pa.binary())]
                           + _EXTRA_FIELDS)
        return schema.empty_table(), summary
    return pa.concat_tables(tables, promote_options="permissive"), summary


def work_dir_for(root: str, urls: list[str], fingerprint: dict[str, Any]) -> str:
    """``<root>/_work/images-<hash>``: keyed on the URL list and the settings that change a shard."""
    import json

    h = hashlib.sha256()
    for u in urls:
        h.update(u.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    h.update(json.dumps(fingerprint, sort_keys=True, default=str).encode())
    return _join(root, "_work", f"images-{h.hexdigest()[:16]}")
