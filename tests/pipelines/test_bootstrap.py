"""The bootstrap stage's run-directory paths through fsspec (``memory://`` standing in for
``OUT=s3://...``): rows counted and read from a remote run, the clean set found there, models
published there and resolved back, training kept on local disk. The training itself is covered
end to end by tests/pipelines/test_dask_capfilt.py."""
from __future__ import annotations

import json
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import BOOTSTRAP_MODELS, PipelineConfig
from curation.schemas import IMAGE_PAIRS, REJECTS
from models.resolve import cache_root, local_model, model_label, models_dir_of, resolve_model
from pipelines.bootstrap import (
    canonical_pairs,
    clean_data_of,
    count_rows,
    publish_models,
    training_dir,
)


def _run() -> str:
    return f"memory://boot-{uuid.uuid4().hex}"


def _pairs(keys: list[str]) -> pa.Table:
    rows = [{"key": k, "url": f"http://x/{k}.png", "caption": f"caption {k}", "image": b"img-" + k.encode()}
            for k in keys]
    return pa.Table.from_pylist(rows, schema=IMAGE_PAIRS)


def _write(url: str, t: pa.Table) -> None:
    fs, p = fsspec.core.url_to_fs(url)
    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(p, "wb") as fh:
        pq.write_table(t, fh)


def test_web_pairs_in_a_remote_run_are_counted_and_read_sorted(tmp_path):
    run = _run()
    _write(f"{run}/images/pairs/part-00001.parquet", _pairs(["k3", "k1"]))
    _write(f"{run}/images/pairs/part-00000.parquet", _pairs(["k2"]))
    assert count_rows(f"{run}/images/pairs") == 3
    out = canonical_pairs(f"{run}/images/pairs", str(tmp_path / "web_pairs"))
    assert pq.read_table(out).column("key").to_pylist() == ["k1", "k2", "k3"]


def test_clean_set_of_a_remote_sample_run():
    cfg = PipelineConfig.load()
    run = _run()
    assert clean_data_of(cfg, run) is None
    fs = fsspec.filesystem("memory")
    with fs.open(f"{run}/_sample/clean/captions.json", "w") as fh:
        fh.write("{}")
    assert clean_data_of(cfg, run + "/") == f"{run}/_sample/clean"


def test_training_stays_on_local_disk():
    assert training_dir("/data/out/_work/bootstrap-abc") == "/data/out/_work/bootstrap-abc"
    local = training_dir("s3://bucket/out/_work/bootstrap-abc")
    assert "://" not in local and local.endswith("/bootstrap-abc") and local.startswith(str(cache_root().parent))


def _exported(tmp_path, tag: str) -> dict[str, dict]:
    """What train_round returns: per role a local export directory beside a train_manifest.json."""
    trained = {}
    for role in ("clip", "captioner", "filter"):
        d = tmp_path / tag / role / "export" / role
        (d / "sub").mkdir(parents=True)
        name = "open_clip_model.safetensors" if role == "clip" else "config.json"
        (d / name).write_text(f"{tag} {role}")
        (d / "sub" / "extra.txt").write_text(tag)
        (d.parent / "train_manifest.json").write_text(json.dumps({"task": role, "data": [tag]}))
        trained[role] = {"path": str(d), "task": role, "steps": 3, "rows_seen": 9, "skipped": {},
                         "final_loss": 1.0, "seconds": 0.1}
    return trained


def test_models_published_to_a_remote_run_resolve_back(tmp_path):
    run = _run()
    fs = fsspec.filesystem("memory")
    models = models_dir_of(run)
    old = _exported(tmp_path, "old")
    (tmp_path / "old" / "filter" / "export" / "filter" / "stale.txt").write_text("only in the old model")
    publish_models(old, models, 0, {"web_pairs": "x"})
    assert fs.exists(fsspec.core.url_to_fs(f"{models}/filter/stale.txt")[1])
    manifest = publish_models(_exported(tmp_path, "new"), models, 1, {"web_pairs": "y"})
    assert manifest["round"] == 1 and set(manifest["models"]) == {"clip", "captioner", "filter"}
    base = fsspec.core.url_to_fs(models)[1]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)) == ["captioner", "clip", "filter", "manifest.json"]
    filt = resolve_model(BOOTSTRAP_MODELS, "filter", models)
    assert sorted(f[len(fsspec.core.url_to_fs(filt)[1]):] for f in fs.find(fsspec.core.url_to_fs(filt)[1])) == \
        ["/config.json", "/sub/extra.txt", "/train_manifest.json"]  # replaced whole: no file of an older model
    assert model_label(BOOTSTRAP_MODELS, "captioner", models) == "bootstrap-round1/captioner"
    local = local_model(filt, tmp_path / "cache")
    assert open(f"{local}/config.json").read() == "new filter"
    assert json.load(open(f"{local}/train_manifest.json"))["data"] == ["new"]  # what curate eval decontaminates against
    ckpt = local_model(resolve_model(BOOTSTRAP_MODELS, "clip", models), tmp_path / "cache")
    assert open(ckpt).read() == "new clip"


def test_models_published_locally_have_the_same_layout(tmp_path):
    models = str(tmp_path / "run" / "bootstrap" / "models")
    publish_models(_exported(tmp_path, "a"), models, 0, {})
    publish_models(_exported(tmp_path, "b"), models, 0, {})
    cap = tmp_path / "run" / "bootstrap" / "models" / "captioner"
    assert (cap / "config.json").read_text() == "b captioner" and (cap / "sub" / "extra.txt").is_file()
    assert not list(cap.parent.glob(".tmp-*"))
    assert json.loads((cap.parent / "manifest.json").read_text())["round"] == 0


def test_empty_rejects_in_a_remote_stage():
    """The stage's empty rejects go through StageContext.write_empty_outputs (one place for all stages)."""
    from curation.stage import REJECTS_DIR, StageContext

    run = _run()
    ctx = StageContext(f"{run}/bootstrap", {}, PipelineConfig.load(), "run-1")
    assert ctx.run_root == run
    assert ctx.write_empty_outputs({REJECTS_DIR: REJECTS}) == [REJECTS_DIR]
    fs, p = fsspec.core.url_to_fs(f"{run}/bootstrap/rejects/empty.parquet")
    with fs.open(p, "rb") as fh:
        assert pq.read_table(fh).schema.equals(REJECTS)


def test_training_cluster_runs_two_trainings_at_once_on_a_cpu_host(monkeypatch):
    """An automatic shape on a 2-core CPU host becomes two one-core workers (CLIP beside BLIP, the
    filter beside the captioner); a set shape, a scheduler or a GPU host is left alone."""
    import curation.dask_cluster as dc
    from curation.config import DaskConfig
    from pipelines.bootstrap import training_dask_config

    monkeypatch.setattr(dc, "gpu_count", lambda: 0)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    auto = training_dask_config(DaskConfig())
    assert auto.n_workers == 2
    assert dc.local_cluster_shape(auto)["n_workers"] == 2
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert training_dask_config(DaskConfig()).n_workers == 1
    assert training_dask_config(DaskConfig(n_workers=3)).n_workers == 3
    assert training_dask_config(DaskConfig(scheduler="tcp://h:8786")).n_workers is None
    monkeypatch.setattr(dc, "gpu_count", lambda: 1)
    assert training_dask_config(DaskConfig()).n_workers is None
