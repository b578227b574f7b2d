"""Image-text pairs -> WebDataset tar shards that open_clip's training loader reads.

open_clip (``open_clip_train/data.py``, ``get_wds_dataset``) keeps a sample when it
has one of ``jpg``/``png``/``jpeg``/``webp`` and a ``txt``, decodes with
webdataset's ``pilrgb`` and reads its size from ``sizes.json`` beside the
shards (``{"00000.tar": n, ...}``). So each sample is ``<key>.<ext>`` (the
image's own format: jpg, png or webp; or jpg for all by config), ``<key>.txt``
(the caption) and ``<key>.json`` (pair metadata). Keys are zero-padded
sample numbers: webdataset splits a file name at its first dot, so a key must
not contain one (pair keys and URLs may).

Each shard is written to a temporary name and renamed, so a reader never sees
half a tar.
"""
from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Sequence

import fsspec
import pyarrow as pa

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
METADATA_FIELDS = ("key", "url", "caption_source", "page_url", "doc_id", "width", "height", "sha256")


def _to_jpeg(data: bytes, quality: int = 95) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(payload))


def _write_tar(fs, path: str, rows: Sequence[dict], formats: Sequence[str], keys: Sequence[str],
               image_format: str, mtime: float) -> None:
    """One tar of ``rows`` (IMAGE_PAIRS dicts) at ``path``, written to a temporary name and renamed."""
    tmp = f"{path.rsplit('/', 1)[0]}/.{path.rsplit('/', 1)[1]}.tmp"
    with fs.open(tmp, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for row, fmt, key in zip(rows, formats, keys):
            data = row["image"]
            if image_format == "jpg" and fmt != "jpeg":
                data, ext = _to_jpeg(data), "jpg"
            else:
                ext = EXTENSIONS.get(fmt, fmt)
            _add(tar, f"{key}.{ext}", data, mtime)
            _add(tar, f"{key}.txt", (row["caption"] or "").encode("utf-8"), mtime)
            meta = {k: row.get(k) for k in METADATA_FIELDS}
            _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"), mtime)
    fs.mv(tmp, path)


def _write_sizes(fs, out: str, sizes: dict[str, int]) -> None:
    with fs.open(f"{out}/.sizes.json.tmp", "w") as fh:
        fh.write(json.dumps(sizes, indent=1))
    fs.mv(f"{out}/.sizes.json.tmp", f"{out}/sizes.json")


def write_webdataset(pairs: pa.Table, formats: Sequence[str], out_dir: str,
                     samples_per_tar: int = 10000, image_format: str = "original") -> dict[str, int]:
    """Write ``pairs`` (IMAGE_PAIRS rows) as tar shards in ``out_dir``; ``formats[i]`` is row i's image format.

    Returns ``{shard name: samples}`` (also written as ``sizes.json``).
    """
    fs, out = fsspec.core.url_to_fs(str(out_dir))
    fs.makedirs(out, exist_ok=True)
    sizes: dict[str, int] = {}
    now = time.time()
    n = pairs.num_rows
    for shard, start in enumerate(range(0, n, samples_per_tar)):
        chunk = pairs.slice(start, samples_per_tar).to_pylist()
        name = f"{shard:05d}.tar"
        _write_tar(fs, f"{out}/{name}", chunk, formats[start:start + len(chunk)],
                   [f"{start + j:09d}" for j in range(len(chunk))], image_format, now)
        sizes[name] = len(chunk)
    _write_sizes(fs, out, sizes)
    return sizes


def write_partition_shards_fn(out_dir: str, samples_per_tar: int = 10000, image_format: str = "original"):
    """A Spark ``mapInArrow`` body: each task writes its partition's pairs (IMAGE_PAIRS columns plus
    ``format``) as ``_part-PPPPP-NNNN.tar`` in ``out_dir`` and yields (name, samples) per tar.

    Keys are ``PPPPPNNNNNNNNN`` (partition, then the sample's number in it): unique in the run, and
    without a dot. :func:`publish_shards` then gives the tars their final names on the driver.
    """

    def fn(batches):
        from pyspark import TaskContext

        fs, out = fsspec.core.url_to_fs(str(out_dir))
        fs.makedirs(out, exist_ok=True)
        part = TaskContext.get().partitionId()
        now = time.time()
        buf: list[dict] = []
        written = [0, 0]  # tars, samples

        def flush():
            name = f"_part-{part:05d}-{written[0]:04d}.tar"
            start = written[1]
            _write_tar(fs, f"{out}/{name}", buf, [r["format"] for r in buf],
                       [f"{part:05d}{start + j:09d}" for j in range(len(buf))], image_format, now)
            written[0] += 1
            written[1] += len(buf)
            n = len(buf)
            buf.clear()
            return pa.RecordBatch.from_pydict({"name": [name], "samples": [n]},
                                              schema=pa.schema([("name", pa.string()), ("samples", pa.int64())]))

        for batch in batches:
            for row in batch.to_pylist():
                buf.append(row)
                if len(buf) >= samples_per_tar:
                    yield flush()
        if buf:
            yield flush()

    return fn


def publish_shards(out_dir: str, parts: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Rename the tasks' tars (sorted by name: partition order) to ``NNNNN.tar`` and write ``sizes.json``."""
    fs, out = fsspec.core.url_to_fs(str(out_dir))
    fs.makedirs(out, exist_ok=True)
    sizes: dict[str, int] = {}
    for i, (src, samples) in enumerate(sorted(parts)):
        name = f"{i:05d}.tar"
        fs.mv(f"{out}/{src}", f"{out}/{name}")
        sizes[name] = samples
    _write_sizes(fs, out, sizes)
    return sizes
