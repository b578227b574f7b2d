"""WebDataset shards: keys without dots, one image/txt/json per sample, sizes.json, optional jpg re-encoding."""
from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
from PIL import Image

from curation.schemas import IMAGE_PAIRS
from curation.wds_writer import write_webdataset
from tests.support.image_payloads import jpeg, png, webp


def _pairs() -> tuple[pa.Table, list[str]]:
    images = [jpeg(seed=1), png(seed=2), webp(seed=3)]
    rows = [{"key": f"doc.{i}-000{i}", "url": f"http://x/{i}", "caption": f"caption {i}", "caption_source": "alt",
             "page_url": "http://x/", "doc_id": "doc.1", "image": b, "width": 300, "height": 240,
             "sha256": str(i)} for i, b in enumerate(images)]
    return pa.Table.from_pylist(rows, schema=IMAGE_PAIRS), ["jpeg", "png", "webp"]


def test_original_formats_and_sizes(tmp_path):
    table, formats = _pairs()
    sizes = write_webdataset(table, formats, str(tmp_path), samples_per_tar=2)
    assert sizes == {"00000.tar": 2, "00001.tar": 1}
    assert json.loads((tmp_path / "sizes.json").read_text()) == sizes
    names = [m.name for t in ("00000.tar", "00001.tar") for m in tarfile.open(tmp_path / t)]
    assert names == ["000000000.jpg", "000000000.txt", "000000000.json", "000000001.png", "000000001.txt",
                     "000000001.json", "000000002.webp", "000000002.txt", "000000002.json"]
    with tarfile.open(tmp_path / "00000.tar") as tar:
        assert tar.extractfile("000000001.png").read() == table.column("image")[1].as_py()
        assert tar.extractfile("000000001.txt").read().decode() == "caption 1"
        meta = json.loads(tar.extractfile("000000001.json").read())
        assert meta["key"] == "doc.1-0001" and meta["url"] == "http://x/1"
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_reencode_to_jpg(tmp_path):
    table, formats = _pairs()
    write_webdataset(table, formats, str(tmp_path), image_format="jpg")
    with tarfile.open(tmp_path / "00000.tar") as tar:
        images = [m.name for m in tar if m.name.endswith(".jpg")]
        assert len(images) == 3
        assert Image.open(io.BytesIO(tar.extractfile(images[1]).read())).format == "JPEG"
        assert tar.extractfile(images[0]).read() == table.column("image")[0].as_py()  # jpeg untouched
