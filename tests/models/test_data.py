"""The streaming loaders: bad rows counted, deterministic order, exact resume, tars, interleaved docs."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.schemas import IMAGE_PAIRS, INTERLEAVED
from models.data import DataError, InterleavedStream, LoaderState, PairStream, TarSource, open_sources

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def _image(colour: str, size=(40, 30), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, COLOURS[colour]).save(buf, format=fmt)
    return buf.getvalue()


def _rows(n: int, bad: bool = True) -> list[dict]:
    rows = []
    names = list(COLOURS)
    for i in range(n):
        c = names[i % len(names)]
        blob = _image(c, size=(40 + i % 7, 30 + i % 5), fmt="PNG" if i % 3 == 0 else "JPEG")
        rows.append({"key": f"k{i:04d}", "url": f"http://x/{i}.jpg", "caption": f"a {c} square number {i}",
                     "caption_source": "alt", "page_url": None, "doc_id": None, "image": blob,
                     "width": 40, "height": 30, "sha256": hashlib.sha256(blob).hexdigest()})
    if bad:
        rows[3]["image"] = b"\xff\xd8\xff this is not a jpeg"
        rows[3]["sha256"] = None
        rows[7]["caption"] = "   "
        rows[11]["image"] = None
        rows[11]["sha256"] = None
    return rows


def _to_tensor(im):
    import torch

    arr = np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    rows = _rows(120)
    table = pa.Table.from_pylist(rows, schema=IMAGE_PAIRS)
    # An extra column a later stage adds is ignored.
    table = table.append_column("clip_score", pa.array(np.linspace(0, 1, len(rows)), pa.float32()))
    pq.write_table(table.slice(0, 70), d / "part-00000.parquet", row_group_size=25)
    pq.write_table(table.slice(70), d / "part-00001.parquet", row_group_size=25)
    (d / "rejects").mkdir()
    pq.write_table(pa.table({"row_id": ["x"]}), d / "rejects" / "r.parquet")  # never read as pairs
    return d, rows


def _stream(path, **kw):
    args = dict(seed=3, shuffle_buffer=16, rows_per_unit=10, num_workers=2)
    args.update(kw)
    return PairStream(str(path), 8, _to_tensor, **args)


def _keys(batches):
    return [k for b in batches for k in b["keys"]]


def test_one_pass_yields_every_good_row_once_and_counts_bad_rows(shards):
    d, rows = shards
    ps = _stream(d, infinite=False)
    batches = list(ps)
    keys = _keys(batches)
    skipped = Counter()
    for b in batches:
        skipped.update(b["_skipped"])
    assert skipped == {"undecodable": 1, "empty_caption": 1, "no_image_bytes": 1}
    assert sorted(keys) == sorted(r["key"] for i, r in enumerate(rows) if i not in (3, 7, 11))
    assert len(keys) + sum(skipped.values()) == len(rows)
    b = batches[0]
    assert b["pixels"].shape == (8, 3, 8, 8)
    assert len(b["texts"]) == 8 and b["image_ids"].dtype.is_floating_point is False


def test_same_seed_same_order_other_seed_other_order(shards):
    d, _ = shards
    a = _keys(_stream(d, infinite=False))
    assert a == _keys(_stream(d, infinite=False))
    assert a != _keys(_stream(d, infinite=False, seed=4))


def test_dataloader_workers_give_the_single_process_order(shards):
    d, _ = shards
    ps = _stream(d)
    ref = [b["keys"] for _, b in zip(range(25), ps)]
    got = [b["keys"] for _, b in zip(range(25), ps.loader())]
    assert got == ref  # 25 batches of 8 = 200 rows: the streams cross into epoch 1


def test_resume_from_loader_state_continues_the_same_sequence(shards):
    d, _ = shards
    ps = _stream(d)
    ref = [b["keys"] for _, b in zip(range(30), ps.loader())]
    state = LoaderState.fresh(ps.streams_per_rank)
    first = []
    for _, b in zip(range(13), ps.loader(state)):
        state.advance(b)
        first.append(b["keys"])
    saved = LoaderState.from_dict(json.loads(json.dumps(state.to_dict())))
    rest = [b["keys"] for _, b in zip(range(17), _stream(d).loader(saved))]
    assert first + rest == ref
    assert saved.rows_seen == 13 * 8
    assert sum(saved.skipped.values()) >= 1  # the bad rows passed so far are remembered


def test_resume_refuses_another_worker_count(shards):
    d, _ = shards
    state = LoaderState.fresh(2)
    with pytest.raises(DataError, match="num_workers"):
        _stream(d, num_workers=1).loader(state)


def test_epochs_cover_all_rows_and_reshuffle(shards):
    d, rows = shards
    ps = _stream(d, num_workers=0, shuffle_buffer=0)
    good = len(rows) - 3
    it = iter(ps)
    seen = [k for _, b in zip(range(2 * good // 8 + 2), it) for k in b["keys"]]
    e0, e1 = seen[:good], seen[good:2 * good]
    assert sorted(e0) == sorted(e1) and len(set(e0)) == good
    assert e0 != e1  # units are shuffled per epoch


def test_sources_skip_rejects_and_need_pair_columns(shards, tmp_path):
    d, _ = shards
    assert [s.path.rsplit("/", 1)[-1] for s in open_sources(str(d))] == ["part-00000.parquet", "part-00001.parquet"]
    pq.write_table(pa.table({"key": ["a"], "caption": ["b"]}), tmp_path / "x.parquet")
    with pytest.raises(DataError, match="missing column"):
        open_sources(str(tmp_path / "x.parquet"))
    with pytest.raises(DataError, match="no .parquet"):
        open_sources(str(tmp_path / "nothing-here"))
    # A stage directory stands for its pairs/ output (documents/ beside it are not pairs).
    stage = tmp_path / "images"
    (stage / "pairs").mkdir(parents=True)
    (stage / "documents").mkdir()
    pq.write_table(pa.table({"doc_id": ["d"]}), stage / "documents" / "d.parquet")
    pq.write_table(pa.Table.from_pylist(_rows(2, bad=False), schema=IMAGE_PAIRS), stage / "pairs" / "p.parquet")
    assert [s.path for s in open_sources(str(stage))] == [str(stage / "pairs" / "p.parquet")]


def test_webdataset_tar_reads_like_parquet(tmp_path):
    rows = _rows(30)
    path = tmp_path / "shard-000.tar"
    with tarfile.open(path, "w") as tf:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        for r in rows:
            if r["image"] is not None:
                add(f"{r['key']}.jpg", r["image"])
            add(f"{r['key']}.txt", r["caption"].encode())
            add(f"{r['key']}.json", json.dumps({"key": r["key"], "sha256": r["sha256"]}).encode())
    src = TarSource(str(path))
    assert src.parts() == [30]
    ps = PairStream(str(path), 4, _to_tensor, seed=0, shuffle_buffer=0, num_workers=0, infinite=False)
    batches = list(ps)
    skipped = Counter()
    for b in batches:
        skipped.update(b["_skipped"])
    assert skipped == {"undecodable": 1, "empty_caption": 1, "no_image_bytes": 1}
    assert _keys(batches) == [r["key"] for i, r in enumerate(rows) if i not in (3, 7, 11)]
    assert batches[0]["texts"][0] == rows[0]["caption"]


def test_interleaved_stream_yields_page_order_and_counts_bad_images(tmp_path):
    docs = [
        {"doc_id": "d1", "url": "http://a", "texts": ["intro", None, "middle", None], "images": [None, "u1", None, "u2"],
         "metadata": "[]", "general_metadata": "{}", "lang": "en", "lang_score": 0.9,
         "image_bytes": [None, _image("red"), None, b"broken"]},
        {"doc_id": "d2", "url": "http://b", "texts": [None, "caption text"], "images": ["u3", None],
         "metadata": "[]", "general_metadata": "{}", "lang": "en", "lang_score": 0.9,
         "image_bytes": [_image("blue", fmt="PNG"), None]},
        {"doc_id": "d3", "url": "http://c", "texts": [None], "images": ["u4"],  # nothing left once decoded
         "metadata": "[]", "general_metadata": "{}", "lang": "en", "lang_score": 0.9, "image_bytes": [b"broken"]},
    ]
    pq.write_table(pa.Table.from_pylist(docs, schema=INTERLEAVED), tmp_path / "docs.parquet")
    stream = InterleavedStream(str(tmp_path), _to_tensor)
    out = list(stream)
    assert [d.doc_id for d in out] == ["d1", "d2"]
    assert stream.skipped_documents == {"empty_document": 1}
    assert [k for k, _ in out[0].items] == ["text", "image", "text"]
    assert out[0].items[0][1] == "intro" and out[0].items[1][1].shape == (3, 8, 8)
    assert out[0].skipped == {"undecodable": 1}
    assert [k for k, _ in out[1].items] == ["image", "text"]
    # Through a DataLoader with two workers (one per row group here: one group, so one worker serves it).
    from torch.utils.data import DataLoader

    got = [d.doc_id for d in DataLoader(InterleavedStream(str(tmp_path), _to_tensor), batch_size=None, num_workers=2,
                                        collate_fn=lambda x: x)]
    assert sorted(got) == ["d1", "d2"]


def test_reads_the_images_stage_webdataset_shards(tmp_path):
    from curation.wds_writer import write_webdataset

    rows = _rows(25, bad=False)
    table = pa.Table.from_pylist(rows, schema=IMAGE_PAIRS)
    formats = ["png" if i % 3 == 0 else "jpeg" for i in range(len(rows))]
    write_webdataset(table, formats, str(tmp_path), samples_per_tar=10)
    batches = list(PairStream(str(tmp_path), 8, _to_tensor, num_workers=0, infinite=False))
    got = {k: t for b in batches for k, t in zip(b["keys"], b["texts"])}
    assert got == {r["key"]: r["caption"] for r in rows}
    assert sum(b["_rows"] for b in batches) == 25


def test_decode_cache_gives_the_same_batches_and_decodes_each_picture_once(shards):
    """Three epochs with the cache: the same pixels, captions and skip counts as without it, and
    every picture (bad ones included) goes through decode + transform once, not once per epoch."""
    import torch

    d, rows = shards
    calls = Counter()

    def counting(im):
        calls[im.size] += 1
        return _to_tensor(im)

    n_batches = 3 * len(rows) // 8
    plain = PairStream(str(d), 8, _to_tensor, seed=3, shuffle_buffer=16, rows_per_unit=10)
    cached = PairStream(str(d), 8, counting, seed=3, shuffle_buffer=16, rows_per_unit=10, decode_cache_mb=16)
    skipped_plain, skipped_cached = Counter(), Counter()
    for _, a, b in zip(range(n_batches), plain, cached):
        assert a["keys"] == b["keys"] and a["texts"] == b["texts"]
        assert torch.equal(a["pixels"], b["pixels"])
        skipped_plain.update(a["_skipped"])
        skipped_cached.update(b["_skipped"])
    assert skipped_cached == skipped_plain and skipped_plain["undecodable"] >= 2  # bad rows still counted each epoch
    decodable = {r["sha256"] for i, r in enumerate(rows) if i not in (3, 7, 11)}  # bad image, empty caption, no bytes
    assert sum(calls.values()) == len(decodable)


def test_decode_cache_stops_filling_at_its_bound(shards):
    d, _ = shards
    one = 3 * 8 * 8 * 4  # bytes of one 3x8x8 float32 tensor
    ps = PairStream(str(d), 8, _to_tensor, seed=3, rows_per_unit=10, decode_cache_mb=10 * one / 2**20)
    for _, _b in zip(range(20), ps):
        pass
    assert 0 < ps._decoded_bytes <= 10 * one
