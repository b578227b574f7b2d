"""Model resolution: ``bootstrap`` to the run's published models, local and on a remote filesystem
(fsspec's ``memory://``, standing in for ``OUT=s3://...``), the model's label, the local copy."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest

from curation.config import BOOTSTRAP_MODELS
from curation.errors import ModelLoadError
from models.resolve import (
    CLIP_CHECKPOINT,
    is_remote,
    local_model,
    model_label,
    models_dir_of,
    resolve_model,
    source_root_of,
)


def _publish(fs, models: str, round_index: int = 0) -> None:
    """What the bootstrap stage publishes: clip/ (a checkpoint), captioner/ and filter/, manifest.json."""
    for role in ("clip", "captioner", "filter"):
        fs.makedirs(f"{models}/{role}", exist_ok=True)
    with fs.open(f"{models}/clip/{CLIP_CHECKPOINT}", "wb") as fh:
        fh.write(b"weights")
    for role in ("captioner", "filter"):
        with fs.open(f"{models}/{role}/config.json", "w") as fh:
            fh.write(json.dumps({"role": role}))
        fs.makedirs(f"{models}/{role}/sub", exist_ok=True)
        with fs.open(f"{models}/{role}/sub/tokenizer.json", "w") as fh:
            fh.write("{}")
    with fs.open(f"{models}/manifest.json", "w") as fh:
        fh.write(json.dumps({"round": round_index}))


def test_source_root_and_models_dir_keep_the_url():
    assert source_root_of("s3://bucket/run/score/pairs/") == "s3://bucket/run"
    assert source_root_of("/data/run/images/pairs") == "/data/run"
    assert models_dir_of("s3://bucket/run/") == "s3://bucket/run/bootstrap/models"
    assert models_dir_of("memory://run") == "memory://run/bootstrap/models"


def test_named_models_pass_through():
    assert resolve_model("Salesforce/blip-itm-base-coco", "filter", None) == "Salesforce/blip-itm-base-coco"
    assert resolve_model(None, "clip", "/nowhere") is None
    assert model_label("Salesforce/blip-image-captioning-base", "captioner", None) == "Salesforce/blip-image-captioning-base"


def test_bootstrap_resolves_to_the_local_run_models(tmp_path):
    fs = fsspec.filesystem("file")
    models = models_dir_of(str(tmp_path / "run"))
    _publish(fs, models, round_index=0)
    assert resolve_model(BOOTSTRAP_MODELS, "clip", models) == f"{models}/clip/{CLIP_CHECKPOINT}"
    assert resolve_model(BOOTSTRAP_MODELS, "captioner", models) == f"{models}/captioner"
    assert model_label(BOOTSTRAP_MODELS, "captioner", models) == "bootstrap-round0/captioner"
    assert local_model(f"{models}/filter") == f"{models}/filter"  # local: loaded where it is


def test_missing_bootstrap_models_name_the_fix(tmp_path):
    for models in (str(tmp_path / "nowhere"), None, "memory://no-such-run/bootstrap/models"):
        with pytest.raises(ModelLoadError, match="run the bootstrap stage first"):
            resolve_model(BOOTSTRAP_MODELS, "captioner", models)
    assert model_label(BOOTSTRAP_MODELS, "filter", str(tmp_path / "nowhere")) == "bootstrap-round0/filter"


def test_remote_run_directory_memory_filesystem(tmp_path):
    run = f"memory://run-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    models = models_dir_of(source_root_of(f"{run}/score/pairs"))
    assert models == f"{run}/bootstrap/models"
    _publish(fs, models, round_index=2)
    cap = resolve_model(BOOTSTRAP_MODELS, "captioner", models)
    clip = resolve_model(BOOTSTRAP_MODELS, "clip", models)
    assert cap == f"{models}/captioner" and is_remote(cap)
    assert clip == f"{models}/clip/{CLIP_CHECKPOINT}"
    assert model_label(BOOTSTRAP_MODELS, "captioner", models) == "bootstrap-round2/captioner"

    # torch/transformers need local files: the directory is copied, subdirectories included, once.
    local = Path(local_model(cap, tmp_path / "cache"))
    assert local.is_dir() and local.name == "captioner" and str(local).startswith(str(tmp_path / "cache"))
    assert json.loads((local / "config.json").read_text()) == {"role": "captioner"}
    assert (local / "sub" / "tokenizer.json").read_text() == "{}"
    assert not list(local.parent.glob(".tmp-*"))
    assert local_model(cap, tmp_path / "cache") == str(local)
    ckpt = Path(local_model(clip, tmp_path / "cache"))
    assert ckpt.is_file() and ckpt.read_bytes() == b"weights" and ckpt.name == CLIP_CHECKPOINT

    # Republished (other weights): a fresh copy, not the stale one.
    with fs.open(f"{models}/clip/{CLIP_CHECKPOINT}", "wb") as fh:
        fh.write(b"new weights!")
    again = Path(local_model(clip, tmp_path / "cache"))
    assert again != ckpt and again.read_bytes() == b"new weights!"
    with pytest.raises(ModelLoadError, match="does not exist"):
        local_model(f"{run}/bootstrap/models/nothing", tmp_path / "cache")


def test_is_remote():
    assert is_remote("s3://b/k") and is_remote("memory://x")
    assert not is_remote("/tmp/x") and not is_remote("file:///tmp/x") and not is_remote("Salesforce/blip")
