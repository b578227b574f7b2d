"""The release stage on a small synthetic run: each format read by its real consumer (open_clip's
WebDataset loader, the trainer's InterleavedStream, ``datasets.load_dataset``), counts equal to the
final stage's kept rows, seeded shuffle across shards, accounting, resume per shard, score fallback."""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import PipelineConfig
from curation.registry import spec, stage_order
from curation.stage import StageRunner
from pipelines.release import ReleaseStage, image_format, key_hash, picture_reason
from tests.support.synthetic_run import make_run
from tests.support.open_clip_reader import open_clip_sample_count


def _config(root: Path, **extra) -> PipelineConfig:
    return PipelineConfig.load(overrides={"out": str(root), "dask.processes": False, "dask.n_workers": 1,
                                          "release.samples_per_shard": 6, "release.shard_rows": 10,
                                          "release.documents_per_shard": 3, **extra})


def _valid(rows: list[dict]) -> list[dict]:
    return [r for r in rows if image_format(r["image"]) in ("jpeg", "png", "webp")]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    truth = make_run(root)
    cfg = _config(root)
    stats = StageRunner(str(root), cfg).run(ReleaseStage(), spec("release").resolve_inputs(str(root)))
    return root, truth, stats, cfg


def test_registry_runs_release_last():
    assert stage_order()[-1] == "release"
    assert spec("release").upstream() == ["capfilt", "images", "score"]


def test_accounting_and_counts(released):
    root, truth, stats, _ = released
    final = truth["bootstrapped"]  # capfilt/pairs: the final stage's kept rows
    good = _valid(final)
    assert stats.rows_in == len(final) and stats.rows_out == len(good)
    assert stats.rejected == {"undecodable": len(final) - len(good)} and len(final) > len(good)
    assert stats.outputs["pairs_wds"] == stats.outputs["hf"] == len(good)
    assert stats.tables["documents"] == {"rows_in": len(truth["interleaved"]),
                                         "rows_out": len(truth["interleaved"]), "rejected": {}}
    rej = pq.read_table(root / "release" / "rejects").to_pylist()
    assert Counter(r["reason"] for r in rej) == Counter(stats.rejected)
    assert {r["row_id"] for r in rej} == {r["key"] for r in final} - {r["key"] for r in good}
    assert not list((root / "_work").glob("release-*"))  # work folder removed after success


def test_pairs_wds_read_by_open_clip(released):
    root, truth, stats, _ = released
    wds_dir = root / "release" / "pairs_wds"
    sizes = json.loads((wds_dir / "sizes.json").read_text())
    info = json.loads((wds_dir / "_info.json").read_text())
    assert sum(sizes.values()) == stats.rows_out == info["total_samples"]
    assert len(sizes) == info["output_shard_count"] >= 2 and list(sizes) == [f"{i:05d}.tar" for i in range(len(sizes))]
    # Shuffled across shards by the seeded key hash: each shard's keys in hash order, not the input's order.
    order = [json.loads(t.extractfile(m).read())["key"] for n in sizes for t in [tarfile.open(wds_dir / n)]
             for m in t if m.name.endswith(".json")]
    assert sorted(order) == sorted(r["key"] for r in _valid(truth["bootstrapped"]))
    in_order = [r["key"] for r in _valid(truth["bootstrapped"])]
    assert order != in_order
    assert open_clip_sample_count(wds_dir, len(sizes)) == stats.rows_out


def test_interleaved_read_by_the_trainer(released):
    root, truth, stats, _ = released
    from models.data import InterleavedStream

    expected = {d["doc_id"]: d for d in truth["interleaved"]}
    for fmt in ("interleaved", "interleaved_wds"):
        docs = list(InterleavedStream(str(root / "release" / fmt)))
        assert sorted(d.doc_id for d in docs) == sorted(expected), fmt
        for d in docs:
            src = expected[d.doc_id]
            kinds = ["text" if t is not None else "image" for t in src["texts"]]
            assert [k for k, _ in d.items] == kinds and d.skipped == {}, fmt
            assert [v for k, v in d.items if k == "text"] == [t for t in src["texts"] if t is not None]
    # The tar's json: texts and images aligned by position, images named as members.
    first = sorted((root / "release" / "interleaved_wds").glob("*.tar"))[0]
    with tarfile.open(first) as tf:
        names = tf.getnames()
        doc = json.loads(tf.extractfile(names[0]).read())
    key = names[0].split(".", 1)[0]
    assert len(doc["texts"]) == len(doc["images"]) == len(doc["image_urls"])
    assert all(f"{key}.{n}" in names for n in doc["images"] if n is not None)
    assert all((t is None) != (n is None) for t, n in zip(doc["texts"], doc["images"]))


def test_hf_layout_read_by_datasets(released):
    root, truth, stats, _ = released
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(str(root / "release" / "hf"), split="train")
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["caption"].dtype == "string" and ds.features["itm_score"].dtype == "float32"
    assert ds.num_rows == stats.rows_out
    row = ds[0]
    assert row["image"].size[0] > 0 and row["image"].mode in ("RGB", "RGBA", "L", "P")
    readme = (root / "release" / "hf" / "README.md").read_text()
    assert readme.startswith("---\nlicense: cc-by-4.0\n") and "config_name: default" in readme
    assert sorted(ds["key"]) == sorted(r["key"] for r in _valid(truth["bootstrapped"]))


def test_rerun_skipped_and_resume_per_shard(released, tmp_path):
    root, truth, stats, cfg = released
    marker = (root / "release" / "_STAGE_COMPLETE").read_text()
    StageRunner(str(root), cfg).run(ReleaseStage(), spec("release").resolve_inputs(str(root)))
    assert (root / "release" / "_STAGE_COMPLETE").read_text() == marker
    # A run killed after some shards: keep_work leaves the done-markers; a rerun computes nothing again.
    run2 = tmp_path / "run2"
    make_run(run2)
    cfg2 = _config(run2, **{"release.keep_work": True})
    first = StageRunner(str(run2), cfg2).run(ReleaseStage(), spec("release").resolve_inputs(str(run2)))
    work = next((run2 / "_work").glob("release-*"))
    done = sorted(p.name for p in (work / "_done").glob("*.json"))
    assert done and any(n.startswith("pairs-") for n in done) and any(n.startswith("docs-") for n in done)
    again = StageRunner(str(run2), cfg2, force={"release"}).run(
        ReleaseStage(), spec("release").resolve_inputs(str(run2)))
    assert (again.rows_in, again.rows_out, again.rejected, again.outputs) == \
        (first.rows_in, first.rows_out, first.rejected, first.outputs)
    # Killed while publishing: done-markers of shards whose tars already moved; those are recomputed.
    for done in [*(work / "pairs_wds").glob("*.tar"), *(work / "hf").glob("*.parquet")]:
        done.unlink()
    third = StageRunner(str(run2), cfg2, force={"release"}).run(
        ReleaseStage(), spec("release").resolve_inputs(str(run2)))
    assert third.outputs == first.outputs
    assert sum(json.loads((run2 / "release" / "pairs_wds" / "sizes.json").read_text()).values()) == first.rows_out


def test_score_pairs_when_capfilt_did_not_run(tmp_path):
    root = tmp_path / "run"
    truth = make_run(root)
    inputs = {k: v for k, v in spec("release").resolve_inputs(str(root)).items() if k != "pairs"}
    stats = StageRunner(str(root), _config(root, **{"release.formats": ["pairs_wds"]})).run(ReleaseStage(), inputs)
    assert stats.rows_in == len(truth["scored"]) and stats.rows_out == len(_valid(truth["scored"]))
    assert stats.counters["pairs_from"] == "score/pairs" and stats.tables["documents"]["rows_in"] == 0
    assert not (root / "release" / "hf").exists()


def test_helpers():
    assert picture_reason(None) == (None, "no_image_bytes") and picture_reason(b"") == (None, "no_image_bytes")
    assert picture_reason(b"GIF89a....") == (None, "unsupported_format")
    assert picture_reason(b"not an image") == (None, "undecodable")
    assert picture_reason(b"\xff\xd8\xff\xe0rest") == ("jpg", None)
    assert key_hash(0, "a") == key_hash(0, "a") != key_hash(1, "a") and 0 <= key_hash(0, "a") < 2**63


def test_card_trains_on_the_release(released, tmp_path, monkeypatch):
    import re

    from curation.card import build_card

    root, truth, stats, cfg = released
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    loading = build_card(str(root), cfg).split("## Loading", 1)[1]
    assert re.search(r"--train-data '[^']*release/pairs_wds/\{00000\.\.\d{5}\}\.tar'", loading)
    assert f"--train-num-samples {stats.rows_out} " in loading and "release's WebDataset shards" in loading
    code = re.search(r"```python\n(.*?)```", loading, re.S).group(1)
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - our own generated snippet
    assert len(scope["hf"]) == stats.rows_out and len(scope["interleaved"]) == len(truth["interleaved"])


def test_every_pair_and_document_released_or_rejected_with_a_reason(tmp_path):
    root = tmp_path / "run"
    truth = make_run(root)
    pairs = pq.read_table(root / "capfilt" / "pairs")
    base = pairs.slice(0, 1).to_pylist()[0]
    extra = [{**base, "key": "nobytes", "image": None}, {**base, "key": "empty", "image": b""},
             {**base, "key": "gif", "image": b"GIF89a" + b"\0" * 20}]
    pq.write_table(pa.concat_tables([pairs, pa.Table.from_pylist(extra, schema=pairs.schema)]),
                   root / "capfilt" / "pairs" / "part-00000.parquet")
    docs = pq.read_table(root / "images" / "documents").to_pylist()
    d = next(x for x in docs if any(u is not None for u in x["images"]))
    i = next(k for k, u in enumerate(d["images"]) if u is not None)
    d["image_bytes"] = [None if k == i else b for k, b in enumerate(d["image_bytes"])]
    pq.write_table(pa.Table.from_pylist(docs, schema=pq.read_schema(root / "images" / "documents" / "part-00000.parquet")),
                   root / "images" / "documents" / "part-00000.parquet")
    stats = StageRunner(str(root), _config(root)).run(ReleaseStage(), spec("release").resolve_inputs(str(root)))
    good = _valid(truth["bootstrapped"])
    assert stats.rows_in == len(truth["bootstrapped"]) + 3 and stats.rows_out == len(good)
    assert stats.rejected == {"undecodable": len(truth["bootstrapped"]) - len(good), "no_image_bytes": 2,
                              "unsupported_format": 1}
    assert stats.tables["documents"] == {"rows_in": len(docs), "rows_out": len(docs) - 1,
                                         "rejected": {"no_image_bytes": 1}}
    rej = pq.read_table(root / "release" / "rejects").to_pylist()
    assert {(r["row_id"], r["table"], r["reason"]) for r in rej if r["table"] == "documents"} == \
        {(d["doc_id"], "documents", "no_image_bytes")}
    assert {r["row_id"] for r in rej if r["reason"] != "undecodable" and r["table"] == "pairs"} == {"nobytes", "empty", "gif"}


def test_release_is_a_dask_stage_and_an_empty_rejects_comes_from_the_base(tmp_path):
    """No pair or document rejected: ``rejects/`` still holds one valid empty file of REJECTS
    (ctx.write_empty_outputs, run by the DaskStage base), and the work dir is removed."""
    from curation.dask_stage import DaskStage
    from curation.schemas import REJECTS

    assert isinstance(ReleaseStage(), DaskStage) and "run" not in vars(ReleaseStage)
    root = tmp_path / "run"
    truth = make_run(root)
    pairs = pq.read_table(root / "capfilt" / "pairs")
    good = pairs.filter(pa.array([image_format(b) in ("jpeg", "png", "webp") for b in pairs.column("image").to_pylist()]))
    for f in (root / "capfilt" / "pairs").glob("*.parquet"):
        f.unlink()
    pq.write_table(good, root / "capfilt" / "pairs" / "part-00000.parquet")
    stats = StageRunner(str(root), _config(root)).run(ReleaseStage(), spec("release").resolve_inputs(str(root)))
    assert stats.rejected == {} and stats.rows_out == good.num_rows == len(_valid(truth["bootstrapped"]))
    rej = pq.read_table(root / "release" / "rejects")
    assert rej.num_rows == 0 and rej.schema.equals(REJECTS)
    assert [p.name for p in (root / "release" / "rejects").iterdir()] == ["empty.parquet"]
    assert not list((root / "_work").glob("release-*"))
