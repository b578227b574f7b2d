"""Where a run's self-trained models are, and what name each model goes by in the data it writes.

A model set to ``bootstrap`` (``score.pretrained``, ``capfilt.captioner``, ``capfilt.filter``)
is the one the run trained itself: the bootstrap stage (pipelines/bootstrap.py) publishes it to
``<run>/bootstrap/models/{clip,captioner,filter}/`` with a ``manifest.json``. The stages that
load models (score, capfilt) resolve the name here, so neither imports the stage that trains
them (nor the bootstrap loop, which imports them).

Run directories may be remote (``OUT=s3://...``, as the README documents): every path here goes
through fsspec. torch, open_clip and transformers load weights only from local files, so
:func:`local_model` copies a remote model into a local cache directory first, on the machine
that loads it (a Dask worker), keyed by the remote files' names, sizes and versions, so a
republished model is copied again and an unchanged one once.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from fsspec.core import url_to_fs

from curation.config import BOOTSTRAP_MODELS
from curation.errors import ModelLoadError

STAGE = "bootstrap"  # the stage that trains and publishes the models
MODELS = "models"  # its output directory
MANIFEST = "manifest.json"  # what was trained, on what, in which round
CLIP_CHECKPOINT = "open_clip_model.safetensors"
# Where remote models are copied to be loaded (override with CURATE_MODEL_CACHE).
CACHE_ENV = "CURATE_MODEL_CACHE"


def source_root_of(input_path: str) -> str:
    """The run directory an input like ``RUN/images/pairs`` belongs to."""
    return input_path.rstrip("/").rsplit("/", 2)[0]


def models_dir_of(run_root: str) -> str:
    """``<run>/bootstrap/models``: where the bootstrap stage publishes a run's models."""
    return f"{run_root.rstrip('/')}/{STAGE}/{MODELS}"


def resolve_model(value: str | None, role: str, models_dir: str | None) -> str | None:
    """``value`` itself, or for ``bootstrap`` the self-trained model in ``models_dir``: the
    captioner/filter directory, or the CLIP's open_clip checkpoint file (``score.pretrained``
    takes a checkpoint). A remote ``models_dir`` gives a remote location: pass it through
    :func:`local_model` where the weights are loaded."""
    if value != BOOTSTRAP_MODELS:
        return value
    if models_dir:
        fs, base = url_to_fs(models_dir)
        found = fs.isdir(f"{base.rstrip('/')}/{role}")
    else:
        found = False
    if not found:
        raise ModelLoadError(
            f"the {role} is set to '{BOOTSTRAP_MODELS}' (trained by this run) but {models_dir}/{role} does not exist: "
            "run the bootstrap stage first (curate run does; or curate bootstrap --input RUN --out RUN), or name a "
            "model (a Hugging Face id, a local directory or checkpoint)"
        )
    path = f"{models_dir.rstrip('/')}/{role}"
    return f"{path}/{CLIP_CHECKPOINT}" if role == "clip" else path


def model_label(value: str, role: str, models_dir: str | None) -> str:
    """A run-independent name of a model for the data it writes (``caption_model``):
    ``value`` itself, or ``bootstrap-round<r>/<role>`` (the round from the manifest)."""
    if value != BOOTSTRAP_MODELS:
        return value
    rnd = 0
    if models_dir:
        fs, base = url_to_fs(models_dir)
        manifest = f"{base.rstrip('/')}/{MANIFEST}"
        if fs.isfile(manifest):
            with fs.open(manifest, "r") as fh:
                rnd = json.load(fh).get("round", 0)
    return f"bootstrap-round{rnd}/{role}"


def is_remote(location: str) -> bool:
    """A URL with a protocol other than the local filesystem's (``s3://``, ``memory://``, ...)."""
    if "://" not in location:
        return False
    return location.split("://", 1)[0] not in ("file", "local")


def cache_root() -> Path:
    """The local directory remote models are copied to (``$CURATE_MODEL_CACHE``, else
    ``~/.cache/vl-curation/models``)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "vl-curation" / "models"


def local_model(location: str, cache_dir: str | Path | None = None) -> str:
    """A path torch/transformers can load ``location`` from.

    A local path or a Hugging Face id is returned as it is. A remote file or directory (a model
    in a run directory on s3, ...) is copied into ``cache_dir`` (default :func:`cache_root`)
    under a name made of its files' names, sizes and versions, once: a later call with the same
    remote files reuses the copy, a republished model gets a fresh one. The copy is made in a
    temporary directory and renamed, so a crash leaves no half model to be loaded.
    """
    if not is_remote(location):
        return location
    fs, path = url_to_fs(location)
    path = path.rstrip("/")
    if not fs.exists(path):
        raise ModelLoadError(f"model {location} does not exist")
    single = fs.isfile(path)
    files = [path] if single else sorted(fs.find(path))
    ident = [location]
    for f in files:
        info = fs.info(f)
        version = next((str(info[k]) for k in ("ETag", "etag", "mtime", "LastModified", "created") if info.get(k)), "")
        ident.append(f"{f[len(path):]}:{info.get('size')}:{version}")
    digest = hashlib.sha256("\n".join(ident).encode()).hexdigest()[:16]
    name = path.rsplit("/", 1)[-1]
    target = Path(cache_dir) if cache_dir is not None else cache_root()
    target = target / digest
    final = target / name
    if final.exists():
        return str(final)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if single:
        fs.get(path, str(tmp))
    else:
        tmp.mkdir()
        for f in files:
            dest = tmp / f[len(path):].lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get(f, str(dest))
    try:
        os.replace(tmp, final)
    except OSError:  # another process copied it first (a directory rename does not replace)
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)
