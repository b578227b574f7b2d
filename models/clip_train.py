"""CLIP as a :class:`models.trainer.TrainTask`: an open_clip model, InfoNCE or SigLIP loss.

The model is any open_clip name (the project's ``vlc-tiny-clip`` for CPU, ``ViT-B-32`` and up on
GPU), optionally started from a pretrained tag or checkpoint (``train.pretrained``), or a
``local-dir:`` export of an earlier run. Losses are open_clip's own: ``ClipLoss`` (InfoNCE with
the model's learnable ``logit_scale``, clamped at 100 as open_clip's trainer does) and
``SigLipLoss`` (sigmoid loss with a learnable bias, initialised at scale 10 / bias -10 as in the
SigLIP paper). Images get open_clip's evaluation transform (resize, centre crop, normalise):
no random augmentation, so runs are reproducible and resumable exactly.

The export is an open_clip ``local-dir`` (``open_clip_config.json`` + ``open_clip_model.safetensors``),
loadable with ``models.clip.load_clip("local-dir:" + path)``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from curation.errors import ModelLoadError
from models.clip import _offline_hint, register_project_configs
from models.data import PairSource
from models.train_config import TrainConfig
from models.trainer import TrainTask

CLIP_DIR = "clip"


class ClipTask(TrainTask):
    name = "clip"

    def setup(self, cfg: TrainConfig, sources: list[PairSource], out_dir: Path, device: str) -> None:
        import open_clip

        register_project_configs()
        self.cfg = cfg
        kwargs = {}
        if cfg.loss == "siglip":
            kwargs = {"init_logit_scale": math.log(10), "init_logit_bias": -10.0}
        pretrained = cfg.pretrained if not cfg.model.startswith(("local-dir:", "hf-hub:")) else None
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                cfg.model, pretrained=pretrained, device=device, **kwargs)
        except Exception as exc:  # unknown names and unreachable weights: say what to pass instead
            if pretrained and not Path(pretrained).exists():
                raise ModelLoadError(_offline_hint(cfg.model, pretrained, exc).replace("score.", "train.")) from None
            raise ModelLoadError(f"cannot build open_clip model {cfg.model!r}: {exc}") from None
        self.tokenizer = open_clip.get_tokenizer(cfg.model)
        self.model_cfg = self._model_cfg(cfg.model, kwargs)
        from open_clip.loss import ClipLoss, SigLipLoss

        self.loss_fn = SigLipLoss() if cfg.loss == "siglip" else ClipLoss()
        self.device = device

    @staticmethod
    def _model_cfg(name: str, overrides: dict) -> dict:
        import open_clip

        mc = open_clip.get_model_config(name)
        if mc is None:
            raise ValueError(f"open_clip has no config for {name!r}")
        mc = dict(mc)
        mc.update(overrides)
        return mc

    def module(self):
        return self.model

    def image_transform(self):
        return self.preprocess

    def text_transform(self):
        return self.tokenizer

    def draft_size(self) -> int | None:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def loss(self, batch: dict, device: str):
        img = self.model.encode_image(batch["pixels"], normalize=True)
        txt = self.model.encode_text(batch["text_inputs"], normalize=True)
        scale = self.model.logit_scale.exp()
        if self.cfg.loss == "siglip":
            loss = self.loss_fn(img, txt, scale, self.model.logit_bias)
        else:
            loss = self.loss_fn(img, txt, scale)
        return loss, {"logit_scale": float(scale.detach())}

    def after_step(self) -> None:
        import torch

        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))

    def export(self, out_dir: Path) -> dict[str, str]:
        return {"clip": save_clip_dir(self.model, self.model_cfg, Path(out_dir) / CLIP_DIR)}


def save_clip_dir(model, model_cfg: dict, out: Path) -> str:
    """An open_clip ``local-dir``: config (model + preprocessing) and safetensors weights."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pp}, indent=1) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return str(out)


def train_clip(data, out_dir: str | Path, cfg: TrainConfig | None = None, **train_kwargs) -> str:
    """Train a CLIP (``cfg.model``, ``cfg.loss``) on ``data``; returns the open_clip local-dir
    (load it with ``models.clip.load_clip("local-dir:" + path)``)."""
    from dataclasses import replace

    from models.trainer import train

    cfg = replace(cfg or TrainConfig(), task="clip")
    return train(ClipTask(), data, out_dir, cfg, **train_kwargs).exported["clip"]
