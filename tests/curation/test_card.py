"""curation/card.py: DATASET_CARD.md from the run directory and the config; its load snippets work."""
from __future__ import annotations

import re

import pytest

from curation import pipeline
from curation.card import CARD, build_card
from curation.cli import main
from curation.config import PipelineConfig
from curation.stage import StageStats
from tests.support.synthetic_run import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("card") / "run"
    truth = make_run(root)
    return root, truth


def _section(card: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, re.S | re.M)
    assert m, f"no section {title!r}"
    return m.group(1)


def test_card_describes_stages_shards_schemas_config_and_models(run):
    root, truth = run
    cfg = PipelineConfig.load(overrides={"snapshot": "CC-MAIN-2026-01", "dedup.jaccard_threshold": 0.8,
                                         "spark.conf": {"spark.hadoop.fs.s3a.secret.key": "hunter2",
                                                        "spark.executor.memory": "3g"}})
    card = build_card(str(root), cfg)
    assert "snapshot: `CC-MAIN-2026-01`" in card
    assert "WARC files read: 2" in card
    stages = _section(card, "Stages")
    assert "| extract | complete | 12 | 10 | 2 |" in stages
    assert "| dedup | complete | 10 | 7 | 3 |" in stages
    assert "| train | not complete |" in stages  # partial stage: listed, not counted
    assert "`near_duplicate` 2" in stages and "doc_removed" in stages
    shards = _section(card, "Shards")
    for path, schema in (("dedup/documents", "DOCUMENTS"), ("images/images", "IMAGES"), ("images/pairs", "IMAGE_PAIRS"),
                         ("images/documents", "INTERLEAVED"), ("score/pairs", "SCORED_PAIRS"),
                         ("capfilt/pairs", "BOOTSTRAPPED_PAIRS"), ("capfilt/rejects", "REJECTS")):
        assert re.search(rf"\| `{path}/` \| [\d,]* \| `{schema}` \|", shards), (path, schema)
    assert f"| `capfilt/pairs/` | {len(truth['bootstrapped'])} |" in shards
    assert "2 tar shards" in shards
    schemas = _section(card, "Schemas")
    assert "### BOOTSTRAPPED_PAIRS" in schemas and "| `itm_score` | `float` | yes |" in schemas
    assert "| `doc_id` | `string` | no |" in schemas
    settings = _section(card, "Filters, thresholds and settings")
    assert "jaccard_threshold: 0.8" in settings and "### `dedup` (used by dedup)" in settings
    assert "### `report`" in settings
    assert "hunter2" not in card and "<redacted>" in card and "spark.executor.memory: 3g" in settings
    models = _section(card, "Models")
    assert "lid.176" in models and "`vlc-tiny-blip`" in models and "`web`" in models
    lic = _section(card, "Licence and opt-out")
    assert "Common Crawl" in lic and "noai" in lic


def test_load_snippets_work(run, tmp_path, monkeypatch):
    """The card's `datasets.load_dataset("parquet", ...)` lines and its WebDataset pattern load the shards."""
    import webdataset as wds

    root, truth = run
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    card = build_card(str(root), PipelineConfig())
    loading = _section(card, "Loading")
    code = re.search(r"```python\n(.*?)```", loading, re.S).group(1)
    assert 'load_dataset("parquet"' in code
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - our own generated snippet
    assert len(scope["pairs"]) == len(truth["bootstrapped"])  # the final pairs: capfilt's
    assert len(scope["documents"]) == len(truth["interleaved"])
    assert "itm_score" in scope["pairs"].column_names
    pattern = re.search(r"--train-data '([^']+)'", loading).group(1)
    assert pattern.endswith("webdataset/{00000..00001}.tar")
    samples = list(wds.WebDataset(pattern, shardshuffle=False, empty_check=False))
    assert len(samples) == len(truth["image_pairs"]) and {"jpg", "txt", "json"} <= set(samples[0])
    # The sample count comes from sizes.json, and the card says which stage's pairs the tars hold.
    assert f"--train-num-samples {len(samples)} " in loading and "of the `images` stage" in loading


def test_local_input_run_is_not_called_a_snapshot(run):
    root, _ = run
    card = build_card(str(root), PipelineConfig(), input_spec="/data/warcs/")
    assert "input: `/data/warcs/` (not a snapshot)" in card


def test_curate_card_cli_and_run_all_write_the_card(run, monkeypatch, tmp_path):
    root, _ = run
    assert main(["card", "--input", str(root), "--set", "dedup.num_bands=7"]) == 0
    text = (root / CARD).read_text()
    assert "num_bands: 7" in text and f"run directory: `{root}`" in text
    (root / CARD).unlink()

    # run_all ends by writing the card (stages stubbed: they are complete in this run directory).
    calls = []
    monkeypatch.setattr(pipeline, "prepare_inputs", lambda cfg, spec=None: None)
    monkeypatch.setattr(pipeline, "run_stage", lambda runner, name, root, source=None: calls.append(name) or StageStats(name))
    cfg = PipelineConfig.load(overrides={"out": str(root)})
    pipeline.run_all(cfg)
    assert calls == [s.name for s in pipeline.STAGES if s.when(cfg)] and calls[0] == "extract"
    assert "| extract | complete | 12 | 10 | 2 |" in (root / CARD).read_text()


def test_snapshot_comes_from_the_warc_paths_when_they_name_one(tmp_path):
    import json

    root = tmp_path / "run"
    make_run(root)
    marker = root / "extract" / "_STAGE_COMPLETE"
    body = json.loads(marker.read_text())
    body["inputs"]["warcs"] = ("https://data.commoncrawl.org/crawl-data/CC-MAIN-2025-13/segments/1/warc/a.warc.gz,"
                               "https://data.commoncrawl.org/crawl-data/CC-MAIN-2025-13/segments/1/warc/b.warc.gz")
    marker.write_text(json.dumps(body))
    assert "snapshot: `CC-MAIN-2025-13`" in build_card(str(root), PipelineConfig())  # config says sample


def test_shard_paths_and_stage_named_from_a_relative_run_directory(run, monkeypatch):
    root, _ = run
    monkeypatch.chdir(root.parent)
    loading_and_shards = build_card(root.name, PipelineConfig())
    assert "| `images/webdataset/` | 2 tar shards |" in loading_and_shards
    assert "WebDataset shards of the `images` stage" in loading_and_shards
