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
        tmp = f"{out}/.{name}.tmp"
        with fs.open(tmp, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for j, row in enumerate(chunk):
                key = f"{start + j:09d}"
                fmt = formats[start + j]
                data = row["image"]
                if image_format == "jpg" and fmt != "jpeg":
                    data, ext = _to_jpeg(data), "jpg"
                else:
                    ext = EXTENSIONS.get(fmt, fmt)
                _add(tar, f"{key}.{ext}", data, now)
                _add(tar, f"{key}.txt", (row["caption"] or "").encode("utf-8"), now)
                meta = {k: row.get(k) for k in METADATA_FIELDS}
                _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"), now)
        fs.mv(tmp, f"{out}/{name}")
        sizes[name] = len(chunk)
    with fs.open(f"{out}/.sizes.json.tmp", "w") as fh:
        fh.write(json.dumps(sizes, indent=1))
    fs.mv(f"{out}/.sizes.json.tmp", f"{out}/sizes.json")
    return sizes
