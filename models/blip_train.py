"""BLIP as :class:`models.trainer.TrainTask`s: joint pretraining, then captioner and filter fine-tuning.

- :class:`BlipPretrainTask` (``train.task = blip``): captioner + filter from scratch (a
  ``train.blip.preset`` config and a vocabulary learnt from the training captions), trained
  jointly on web pairs with ITC + ITM + LM, sharing layers as BLIP's MED; exports
  ``captioner/`` and ``filter/`` (HF format, each with its processor).
- :class:`BlipCaptionerTask` (``blip-captioner``): fine-tunes a captioner (``init``: a directory
  or HF id; from scratch when None) with the LM loss on a clean set; exports ``captioner/``.
- :class:`BlipFilterTask` (``blip-filter``): fine-tunes a filter with ITC + ITM (hard negatives);
  exports ``filter/``.

BLIP fine-tunes captioner and filter separately from the same pretrained model; CapFilt runs
the first on web images and the second on web and synthetic captions.
"""
from __future__ import annotations

import logging
from pathlib import Path

from models import blip as B
from models.data import PairSource
from models.train_config import TrainConfig
from models.trainer import TrainTask

log = logging.getLogger(__name__)

CAPTIONER_DIR = "captioner"
FILTER_DIR = "filter"
TOKENIZER_DIR = "tokenizer"


def _vocab_tokenizer(cfg: TrainConfig, sources: list[PairSource], out_dir: Path):
    """The run's tokenizer: learnt once from the training captions, reused when resuming."""
    tdir = out_dir / TOKENIZER_DIR
    if (tdir / "vocab.txt").is_file():
        tok = B._bert_tokenizer(tdir / "vocab.txt")
        tok.add_special_tokens({"bos_token": B.BOS_TOKEN, "additional_special_tokens": [B.ENC_TOKEN]})
        return tok
    captions = (c for s in sources for c in s.captions())
    return B.build_tokenizer(captions, tdir, vocab_size=cfg.blip.vocab_size, prompt=cfg.blip.prompt)


def _meta(role: str, cfg: TrainConfig, task: str, **extra) -> dict:
    return {"role": role, "prompt": cfg.blip.prompt, "itm_first_token": cfg.blip.itm_first_token,
            "trained_by": f"vl-curation curate train --task {task}", **extra}


class _BlipTask(TrainTask):
    def image_transform(self):
        return B.BlipPixelTransform.of(self.processor)

    def draft_size(self) -> int | None:
        return self.image_transform().size

    def _itm_first(self) -> int | None:
        return B.enc_token_id(self.processor.tokenizer) if self.cfg.blip.itm_first_token == "enc" else None

    def after_step(self) -> None:
        import torch

        temp = getattr(self._holder(), "temp", None)
        if temp is not None:
            with torch.no_grad():
                temp.clamp_(0.001, 0.5)

    def _holder(self):
        return self.module()


class BlipPretrainTask(_BlipTask):
    name = "blip"

    def setup(self, cfg: TrainConfig, sources: list[PairSource], out_dir: Path, device: str) -> None:
        from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

        self.cfg = cfg
        tok = _vocab_tokenizer(cfg, sources, out_dir)
        config = B.tiny_blip_config(tok, cfg.blip.preset, cfg.blip.image_size, cfg.blip.max_text_tokens)
        self.processor = B.make_processor(tok, cfg.blip.image_size)
        self.model = B.BlipPretrainModel(BlipForConditionalGeneration(config), BlipForImageTextRetrieval(config),
                                         cfg.blip.share_text_layers, cfg.blip.init_temperature).to(device)
        self.prompt_len = B.prompt_length(tok, cfg.blip.prompt)

    def module(self):
        return self.model

    def text_transform(self):
        return B.BlipTextTransform(self.processor.tokenizer, self.cfg.blip.max_text_tokens, self.cfg.blip.prompt)

    def loss(self, batch: dict, device: str):
        m, b, t = self.model, self.cfg.blip, batch["text_inputs"]
        tok = self.processor.tokenizer
        image_embeds = m.filter.vision_model(pixel_values=batch["pixels"]).last_hidden_state
        itc, itm, acc = B.itc_itm_loss(m.filter, image_embeds, t["enc_ids"], t["enc_mask"], batch["image_ids"],
                                       m.temp, self._itm_first(), b.itm_easy_negatives)
        lm = B.lm_loss(m.captioner.text_decoder, image_embeds, t["dec_ids"], t["dec_mask"], tok.bos_token_id,
                       tok.pad_token_id, self.prompt_len)
        loss = b.itc_weight * itc + b.itm_weight * itm + b.lm_weight * lm
        return loss, {"itc": float(itc.detach()), "itm": float(itm.detach()), "lm": float(lm.detach()),
                      "itm_acc": float(acc), "temp": float(m.temp.detach())}

    def export(self, out_dir: Path) -> dict[str, str]:
        out = Path(out_dir)
        return {
            "captioner": B.save_blip(self.model.captioner, self.processor, out / CAPTIONER_DIR,
                                     _meta("captioner", self.cfg, self.name)),
            "filter": B.save_blip(self.model.filter, self.processor, out / FILTER_DIR,
                                  _meta("filter", self.cfg, self.name, temperature=float(self.model.temp.detach()))),
        }


def _from_scratch_or(init: str | None, role: str, cfg: TrainConfig, sources, out_dir: Path, device: str):
    """(model, processor) loaded from ``init`` or built from the preset and a learnt vocabulary."""
    import transformers

    cls = getattr(transformers, "BlipForConditionalGeneration" if role == CAPTIONER_DIR else "BlipForImageTextRetrieval")
    if init:
        bundle = B.load_captioner(init, device) if role == CAPTIONER_DIR else B.load_filter(init, device)
        return bundle.model, bundle.processor
    tok = _vocab_tokenizer(cfg, sources, out_dir)
    config = B.tiny_blip_config(tok, cfg.blip.preset, cfg.blip.image_size, cfg.blip.max_text_tokens)
    return cls(config).to(device), B.make_processor(tok, cfg.blip.image_size)


class BlipCaptionerTask(_BlipTask):
    name = "blip-captioner"

    def __init__(self, init: str | None = None):
        self.init = init

    def setup(self, cfg: TrainConfig, sources: list[PairSource], out_dir: Path, device: str) -> None:
        self.cfg = cfg
        self.model, self.processor = _from_scratch_or(self.init, CAPTIONER_DIR, cfg, sources, out_dir, device)
        self.model.train()
        self.prompt_len = B.prompt_length(self.processor.tokenizer, cfg.blip.prompt)

    def module(self):
        return self.model

    def text_transform(self):
        return B.BlipTextTransform(self.processor.tokenizer, self.cfg.blip.max_text_tokens, self.cfg.blip.prompt,
                                   encoder=False, decoder=True)

    def loss(self, batch: dict, device: str):
        t, tok = batch["text_inputs"], self.processor.tokenizer
        image_embeds = self.model.vision_model(pixel_values=batch["pixels"]).last_hidden_state
        lm = B.lm_loss(self.model.text_decoder, image_embeds, t["dec_ids"], t["dec_mask"],
                       self.model.config.text_config.bos_token_id, tok.pad_token_id, self.prompt_len)
        return lm, {"lm": float(lm.detach())}

    def export(self, out_dir: Path) -> dict[str, str]:
        return {"captioner": B.save_blip(self.model, self.processor, Path(out_dir) / CAPTIONER_DIR,
                                         _meta("captioner", self.cfg, self.name, init=self.init))}


def _filter_holder(filt, temperature: float):
    import torch

    class FilterWithTemp(torch.nn.Module):
        """The filter plus ITC's learnable temperature (not part of the HF model)."""

        def __init__(self):
            super().__init__()
            self.filter = filt
            self.temp = torch.nn.Parameter(torch.tensor(float(temperature)))

    return FilterWithTemp()


class BlipFilterTask(_BlipTask):
    name = "blip-filter"

    def __init__(self, init: str | None = None):
        self.init = init

    def setup(self, cfg: TrainConfig, sources: list[PairSource], out_dir: Path, device: str) -> None:
        self.cfg = cfg
        filt, self.processor = _from_scratch_or(self.init, FILTER_DIR, cfg, sources, out_dir, device)
        temp = B.read_meta(self.init).get("temperature", cfg.blip.init_temperature) if self.init and Path(self.init).exists() \
            else cfg.blip.init_temperature
        self.model = _filter_holder(filt, temp).to(device)
        self.model.train()

    def module(self):
        return self.model

    def text_transform(self):
        return B.BlipTextTransform(self.processor.tokenizer, self.cfg.blip.max_text_tokens, self.cfg.blip.prompt,
                                   encoder=True, decoder=False)

    def loss(self, batch: dict, device: str):
        t, filt = batch["text_inputs"], self.model.filter
        image_embeds = filt.vision_model(pixel_values=batch["pixels"]).last_hidden_state
        itc, itm, acc = B.itc_itm_loss(filt, image_embeds, t["enc_ids"], t["enc_mask"], batch["image_ids"],
                                       self.model.temp, self._itm_first(),
                                       self.cfg.blip.itm_easy_negatives)
        w = self.cfg.blip
        return w.itc_weight * itc + w.itm_weight * itm, {"itc": float(itc.detach()), "itm": float(itm.detach()),
                                                         "itm_acc": float(acc), "temp": float(self.model.temp.detach())}

    def export(self, out_dir: Path) -> dict[str, str]:
        return {"filter": B.save_blip(self.model.filter, self.processor, Path(out_dir) / FILTER_DIR,
                                      _meta("filter", self.cfg, self.name, init=self.init,
                                            temperature=float(self.model.temp.detach())))}


def make_task(cfg: TrainConfig, init: str | None = None):
    """The task ``cfg.task`` names (CLIP tasks import open_clip, BLIP tasks transformers, lazily)."""
    if cfg.task == "clip":
        from models.clip_train import ClipTask

        return ClipTask()
    if cfg.task == "blip":
        if init:
            raise ValueError("task blip pretrains from scratch; to start from a checkpoint fine-tune with "
                             "--task blip-captioner / blip-filter --init DIR")
        return BlipPretrainTask()
    if cfg.task == "blip-captioner":
        return BlipCaptionerTask(init)
    if cfg.task == "blip-filter":
        return BlipFilterTask(init)
    raise ValueError(f"unknown task {cfg.task!r}")


# --------------------------------------------------------------------------- entry points (CapFilt's bootstrap loop)


def _with_task(cfg: TrainConfig, task: str) -> TrainConfig:
    from dataclasses import replace

    return replace(cfg, task=task)


def pretrain_blip(data, out_dir: str | Path, cfg: TrainConfig | None = None, **train_kwargs) -> dict[str, str]:
    """Joint BLIP pretraining on web pairs; returns ``{"captioner": dir, "filter": dir}``.

    ``data``: shard directory/glob/files, an Arrow table or ``PairSource`` list; ``train_kwargs``
    go to :func:`models.trainer.train` (``resume``, ``on_step``, ``progress``).
    """
    from models.trainer import train

    cfg = _with_task(cfg or TrainConfig(), "blip")
    return train(BlipPretrainTask(), data, out_dir, cfg, **train_kwargs).exported


def finetune_captioner(init: str | None, data, out_dir: str | Path, cfg: TrainConfig | None = None,
                       **train_kwargs) -> str:
    """Fine-tune a captioner (``init``: a directory or HF id; None: from scratch); returns its directory."""
    from models.trainer import train

    cfg = _with_task(cfg or TrainConfig(), "blip-captioner")
    return train(BlipCaptionerTask(init), data, out_dir, cfg, **train_kwargs).exported["captioner"]


def finetune_filter(init: str | None, data, out_dir: str | Path, cfg: TrainConfig | None = None,
                    **train_kwargs) -> str:
    """Fine-tune a filter (ITC + ITM); returns its directory."""
    from models.trainer import train

    cfg = _with_task(cfg or TrainConfig(), "blip-filter")
    return train(BlipFilterTask(init), data, out_dir, cfg, **train_kwargs).exported["filter"]
