"""BLIP captioner and filter: build, load, save, train losses, caption generation and ITM scores.

Two Hugging Face models, as BLIP's CapFilt uses them:

- the **captioner**, ``BlipForConditionalGeneration``: image encoder + causal text decoder,
  trained with the language-modelling loss on ``prompt + caption`` (prompt tokens not scored,
  the first token replaced by ``[DEC]``, as BLIP does);
- the **filter**, ``BlipForImageTextRetrieval``: image encoder + text encoder with image
  cross-attention, trained with the image-text contrastive loss (ITC, learnable temperature,
  positives = same picture) and the matching loss (ITM) on the positive pairs plus one hard
  negative text per image and one hard negative image per text, sampled in proportion to the
  contrastive similarity (ALBEF/BLIP).

Models are built from small :class:`~transformers.BlipConfig` presets (``tiny``: 128-wide,
2 layers, 64-pixel images; learns on CPU in minutes) or loaded with ``from_pretrained`` from a
HF id (``Salesforce/blip-image-captioning-base``, ``Salesforce/blip-itm-base-coco``) or a local
directory. Nothing can be downloaded offline, so a model built here gets its own tokenizer: a
BERT WordPiece vocabulary learnt from the training captions, with BLIP's ``[DEC]`` (bos) and
``[ENC]`` tokens, saved with the model as a ``BlipProcessor`` so ``from_pretrained(dir)``
round-trips both.

ITM text's first token: the original BLIP replaces ``[CLS]`` by ``[ENC]`` for ITM while
transformers' ``BlipForImageTextRetrieval.forward`` keeps ``[CLS]`` (transformers#25629).
``itm_first_token`` ("cls" | "enc") chooses; the Salesforce checkpoints were trained with "enc".
The choice a model was trained with is recorded in ``vlc_blip.json`` beside its weights.

Joint pretraining (:class:`BlipPretrainModel`) shares the vision encoder between captioner and
filter and, like BLIP's MED, the text embeddings, cross-attention and feed-forward layers
between the filter's encoder and the captioner's decoder (self-attention stays separate); the
two are then exported and fine-tuned separately (BLIP: sharing them during CapFilt hurts).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.errors import ModelLoadError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BOS_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"
META_FILE = "vlc_blip.json"
DEFAULT_PROMPT = "a picture of "

# Tower sizes of models built from scratch (vision and text share width/depth).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden": 128, "layers": 2, "heads": 4, "intermediate": 512, "patch": 8, "embed": 64},
    "small": {"hidden": 256, "layers": 4, "heads": 4, "intermediate": 1024, "patch": 16, "embed": 128},
    "base": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072, "patch": 16, "embed": 256},
}
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------- tokenizer and config


def _bert_tokenizer(vocab_path: Path):
    """A BERT tokenizer over ``vocab.txt`` (transformers 5 takes ``vocab``, 4.x ``vocab_file``)."""
    from transformers import BertTokenizerFast

    params = inspect.signature(BertTokenizerFast.__init__).parameters
    if "vocab" in params:
        return BertTokenizerFast(vocab=str(vocab_path), do_lower_case=True)
    return BertTokenizerFast(vocab_file=str(vocab_path), do_lower_case=True)


def build_tokenizer(captions: Iterable[str], out_dir: str | Path, vocab_size: int = 2000,
                    prompt: str = DEFAULT_PROMPT, min_frequency: int = 2):
    """A lower-cased BERT WordPiece tokenizer whose vocabulary is learnt from ``captions``; BLIP's tokens added.

    The vocabulary is deterministic (the same captions always give the same ids, which a resumed
    or repeated run needs; the ``tokenizers`` WordPiece trainer breaks ties differently from run to
    run): ids 0-4 are ``[PAD] [UNK] [CLS] [SEP] [MASK]``, then every ASCII letter, digit and
    punctuation mark as a word start and as a ``##`` continuation (so any English caption
    tokenizes without ``[UNK]``), then the most frequent words (BERT's normalisation and
    pre-tokenisation; ties by spelling) up to ``vocab_size``. ``[DEC]`` and ``[ENC]`` are added
    last, as in BLIP's ``init_tokenizer``. Writes ``out_dir/vocab.txt``.
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    norm = normalizers.BertNormalizer(clean_text=True, lowercase=True, strip_accents=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    for text in [prompt] * min_frequency + [c for c in captions if c]:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    tokens = list(SPECIAL_TOKENS)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens += list(chars) + ["##" + ch for ch in chars]
    have = set(tokens)
    words = sorted((w for w, n in counts.items() if n >= min_frequency and w not in have), key=lambda w: (-counts[w], w))
    tokens += words[:max(0, vocab_size - len(tokens))]
    (out / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    tok = _bert_tokenizer(out / "vocab.txt")
    tok.add_special_tokens({"bos_token": BOS_TOKEN, "additional_special_tokens": [ENC_TOKEN]})
    return tok


def enc_token_id(tokenizer) -> int:
    return int(tokenizer.convert_tokens_to_ids(ENC_TOKEN))


def tiny_blip_config(tokenizer, preset: str = "tiny", image_size: int = 64, max_text_tokens: int = 32):
    """A :class:`~transformers.BlipConfig` of ``preset`` size for ``tokenizer``'s vocabulary."""
    from transformers import BlipConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown BLIP preset {preset!r}; presets: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if image_size % p["patch"]:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {p['patch']}")
    sep = tokenizer.sep_token_id
    text = dict(vocab_size=len(tokenizer), hidden_size=p["hidden"], encoder_hidden_size=p["hidden"],
                intermediate_size=p["intermediate"], num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
                max_position_embeddings=max(64, max_text_tokens), bos_token_id=tokenizer.bos_token_id,
                pad_token_id=tokenizer.pad_token_id, sep_token_id=sep, eos_token_id=sep)
    vision = dict(hidden_size=p["hidden"], intermediate_size=p["intermediate"], num_hidden_layers=p["layers"],
                  num_attention_heads=p["heads"], image_size=image_size, patch_size=p["patch"],
                  # BlipVisionConfig's 1e-10 default suits loading checkpoints, not training from scratch.
                  initializer_range=0.02)
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=p["embed"])


def make_processor(tokenizer, image_size: int, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
    from transformers import BlipImageProcessor, BlipProcessor

    ip = BlipImageProcessor(size={"height": image_size, "width": image_size}, image_mean=list(mean), image_std=list(std))
    return BlipProcessor(image_processor=ip, tokenizer=tokenizer)


# --------------------------------------------------------------------------- transforms (picklable, for loader workers)


class BlipPixelTransform:
    """RGB PIL image -> normalised tensor, as ``BlipImageProcessor`` does it (bicubic resize to the
    square size, rescale to [0, 1], normalise), without the processor's per-call overhead."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        self.size = int(size)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    @classmethod
    def of(cls, processor) -> "BlipPixelTransform":
        ip = processor.image_processor
        size = ip.size
        h = size["height"] if isinstance(size, dict) else getattr(size, "height")
        return cls(h, ip.image_mean, ip.image_std)

    def __call__(self, im):
        import torch
        from PIL import Image

        im = im.convert("RGB").resize((self.size, self.size), resample=Image.BICUBIC)
        arr = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((arr - self.mean) / self.std)


class BlipTextTransform:
    """Captions -> token tensors for the encoder (``enc_*``) and/or the decoder (``dec_*``, with the prompt)."""

    def __init__(self, tokenizer, max_tokens: int, prompt: str = DEFAULT_PROMPT, encoder: bool = True,
                 decoder: bool = True):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.prompt = prompt
        self.encoder, self.decoder = encoder, decoder

    def __call__(self, texts: list[str]) -> dict:
        out = {}
        tok = self.tokenizer
        if self.encoder:
            e = tok(texts, padding="longest", truncation=True, max_length=self.max_tokens, return_tensors="pt")
            out["enc_ids"], out["enc_mask"] = e["input_ids"], e["attention_mask"]
        if self.decoder:
            d = tok([self.prompt + t for t in texts], padding="longest", truncation=True, max_length=self.max_tokens,
                    return_tensors="pt")
            out["dec_ids"], out["dec_mask"] = d["input_ids"], d["attention_mask"]
        return out


def prompt_length(tokenizer, prompt: str) -> int:
    """Tokens of ``[CLS] + prompt`` (the positions the LM loss does not score)."""
    return len(tokenizer(prompt).input_ids) - 1


# --------------------------------------------------------------------------- losses


def lm_loss(text_decoder, image_embeds, dec_ids, dec_mask, bos_id: int, pad_id: int, prompt_len: int):
    """Captioning loss: predict ``caption [SEP]`` after ``[DEC] prompt`` (BLIP's decoder targets)."""
    ids = dec_ids.clone()
    ids[:, 0] = bos_id
    labels = ids.masked_fill(ids == pad_id, -100)
    labels[:, :prompt_len] = -100
    out = text_decoder(input_ids=ids, attention_mask=dec_mask, encoder_hidden_states=image_embeds,
                       labels=labels, reduction="mean")
    return out.loss


def itc_itm_loss(filt, image_embeds, enc_ids, enc_mask, image_ids, temp, itm_first_id: int | None = None,
                 easy_negatives: float = 0.0):
    """ITC (positives = same picture) and ITM with contrastive hard negatives; returns (itc, itm, itm_acc).

    Negatives are drawn in proportion to softmax(similarity / temp) over the other pictures of the
    batch (BLIP); ``easy_negatives`` moves that share of the probability to a uniform draw.
    """
    import torch
    import torch.nn.functional as F

    bsz = enc_ids.shape[0]
    image_feat = F.normalize(filt.vision_proj(image_embeds[:, 0, :]), dim=-1)
    text_out = filt.text_encoder(input_ids=enc_ids, attention_mask=enc_mask).last_hidden_state
    text_feat = F.normalize(filt.text_proj(text_out[:, 0, :]), dim=-1)
    sim_i2t = image_feat @ text_feat.t() / temp
    sim_t2i = sim_i2t.t()
    pos = (image_ids[:, None] == image_ids[None, :]).to(sim_i2t.dtype)
    targets = pos / pos.sum(dim=1, keepdim=True)
    itc = (-(F.log_softmax(sim_i2t, dim=1) * targets).sum(1).mean()
           - (F.log_softmax(sim_t2i, dim=1) * targets).sum(1).mean()) / 2

    with torch.no_grad():
        same = pos.bool()
        w_i2t = F.softmax(sim_i2t.float(), dim=1).masked_fill(same, 0)
        w_t2i = F.softmax(sim_t2i.float(), dim=1).masked_fill(same, 0)
        # Rows whose batch holds no other picture have no negative: they only give positives.
        has_neg = (~same).any(dim=1)
        w_i2t[~has_neg] = 1.0
        w_t2i[~has_neg] = 1.0
        w_i2t = torch.nan_to_num(w_i2t, nan=0.0) + 1e-12 * (~same)
        w_t2i = torch.nan_to_num(w_t2i, nan=0.0) + 1e-12 * (~same)
        if easy_negatives > 0:
            uniform = (~same).float() / (~same).float().sum(1, keepdim=True).clamp(min=1)
            w_i2t = (1 - easy_negatives) * w_i2t / w_i2t.sum(1, keepdim=True) + easy_negatives * uniform
            w_t2i = (1 - easy_negatives) * w_t2i / w_t2i.sum(1, keepdim=True) + easy_negatives * uniform
        neg_text = torch.multinomial(w_i2t, 1).squeeze(1)  # a hard negative text for every image
        neg_image = torch.multinomial(w_t2i, 1).squeeze(1)  # a hard negative image for every text

    ids = enc_ids.clone()
    if itm_first_id is not None:
        ids[:, 0] = itm_first_id
    keep = has_neg
    all_ids = torch.cat([ids, ids[neg_text][keep], ids[keep]])
    all_mask = torch.cat([enc_mask, enc_mask[neg_text][keep], enc_mask[keep]])
    all_img = torch.cat([image_embeds, image_embeds[keep], image_embeds[neg_image][keep]])
    n_neg = int(keep.sum())
    labels = torch.cat([torch.ones(bsz, dtype=torch.long), torch.zeros(2 * n_neg, dtype=torch.long)]).to(ids.device)
    img_mask = torch.ones(all_img.shape[:-1], dtype=torch.long, device=all_img.device)
    hidden = filt.text_encoder(input_ids=all_ids, attention_mask=all_mask, encoder_hidden_states=all_img,
                               encoder_attention_mask=img_mask).last_hidden_state
    logits = filt.itm_head(hidden[:, 0, :])
    itm = F.cross_entropy(logits.float(), labels)
    acc = (logits.argmax(1) == labels).float().mean()
    return itc, itm, acc


def _torch_module():
    import torch

    return torch.nn.Module


class BlipPretrainModel(_torch_module()):
    """Captioner + filter trained jointly on pairs (ITC + ITM + LM), sharing as BLIP's MED does."""

    def __init__(self, captioner, filt, share_text_layers: bool = True, init_temperature: float = 0.07):
        import torch

        super().__init__()
        self.captioner = captioner
        self.filter = filt
        captioner.vision_model = filt.vision_model
        if share_text_layers:
            enc, dec = filt.text_encoder, captioner.text_decoder.bert
            dec.embeddings = enc.embeddings
            for le, ld in zip(enc.encoder.layer, dec.encoder.layer):
                ld.crossattention, ld.intermediate, ld.output = le.crossattention, le.intermediate, le.output
            captioner.text_decoder.cls.predictions.decoder.weight = enc.embeddings.word_embeddings.weight
        self.temp = torch.nn.Parameter(torch.tensor(float(init_temperature)))


# --------------------------------------------------------------------------- loading and saving


@dataclass
class BlipBundle:
    """A loaded BLIP model with its processor and how it is to be used."""

    model: Any
    processor: Any
    device: str
    path: str
    role: str  # captioner | filter
    prompt: str = DEFAULT_PROMPT
    itm_first_token: str = "cls"

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def pixel_transform(self) -> BlipPixelTransform:
        return BlipPixelTransform.of(self.processor)

    def pixels(self, images: Sequence) -> "Any":
        import torch

        t = self.pixel_transform()
        return torch.stack([t(im) for im in images]).to(self.device)


def read_meta(path: str | Path) -> dict:
    p = Path(path) / META_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def save_blip(model, processor, out_dir: str | Path, meta: dict) -> str:
    """``save_pretrained`` of model and processor, plus ``vlc_blip.json`` (role, prompt, ITM token)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return str(out)


def _load(cls_name: str, name_or_dir: str, device: str | None):
    import transformers

    from models.clip import default_device

    device = device or default_device()
    cls = getattr(transformers, cls_name)
    local = Path(name_or_dir).expanduser()
    if str(name_or_dir).startswith(("/", "./", "~")) and not local.exists():
        raise ModelLoadError(f"BLIP model directory not found: {name_or_dir}")
    try:
        model = cls.from_pretrained(str(local) if local.exists() else name_or_dir)
        processor = transformers.BlipProcessor.from_pretrained(str(local) if local.exists() else name_or_dir)
    except OSError as exc:
        raise ModelLoadError(
            f"could not load {cls_name} {name_or_dir!r} ({exc}). Offline, download the model directory "
            "(config.json, model.safetensors, processor and tokenizer files) on a connected machine and pass "
            "its path, or train one here with `curate train --task blip`."
        ) from None
    model.to(device).eval()
    return model, processor, device


def load_captioner(name_or_dir: str, device: str | None = None) -> BlipBundle:
    """A ``BlipForConditionalGeneration`` from a HF id or a local directory, ready for :func:`generate_captions`."""
    model, processor, device = _load("BlipForConditionalGeneration", name_or_dir, device)
    meta = read_meta(name_or_dir) if Path(name_or_dir).exists() else {}
    return BlipBundle(model, processor, device, str(name_or_dir), "captioner", meta.get("prompt", DEFAULT_PROMPT))


def load_filter(name_or_dir: str, device: str | None = None, itm_first_token: str | None = None) -> BlipBundle:
    """A ``BlipForImageTextRetrieval`` for :func:`itm_scores`. ``itm_first_token`` defaults to what the
    model was trained with (``vlc_blip.json``), else "cls" (transformers' behaviour)."""
    model, processor, device = _load("BlipForImageTextRetrieval", name_or_dir, device)
    meta = read_meta(name_or_dir) if Path(name_or_dir).exists() else {}
    first = itm_first_token or meta.get("itm_first_token", "cls")
    if first not in ("cls", "enc"):
        raise ValueError(f"itm_first_token must be 'cls' or 'enc', got {first!r}")
    return BlipBundle(model, processor, device, str(name_or_dir), "filter", itm_first_token=first)


# --------------------------------------------------------------------------- inference


def _decoded_batches(images: Sequence, batch_size: int):
    """``(indices, PIL images)`` batches of the decodable inputs (PIL images as given, bytes decoded
    one batch at a time so memory holds one batch of pictures); undecodable ones are left out."""
    from models.data import ImageDecodeError, decode_image

    idx, ims = [], []
    for i, im in enumerate(images):
        if im is None:
            continue
        if isinstance(im, (bytes, bytearray, memoryview)):
            try:
                im = decode_image(bytes(im))
            except ImageDecodeError:
                continue
        idx.append(i)
        ims.append(im)
        if len(idx) == batch_size:
            yield idx, ims
            idx, ims = [], []
    if idx:
        yield idx, ims


@contextlib.contextmanager
def _seeded(seed: int | None, device: str):
    import torch

    if seed is None:
        yield
        return
    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def generate_captions(captioner: BlipBundle, images: Sequence, *, prompt: str | None = None, num_captions: int = 1,
                      sample: bool = True, top_p: float = 0.9, max_length: int = 30, min_length: int = 10,
                      repetition_penalty: float = 1.1, num_beams: int = 3, batch_size: int = 32,
                      seed: int | None = None, image_seeds: Sequence[int] | None = None) -> list[list[str] | None]:
    """Captions for each image (PIL images or encoded bytes), batched; None for an undecodable image.

    Defaults are BLIP's CapFilt settings: nucleus sampling (top_p 0.9), 30/10 max/min length
    (counted in tokens including the prompt, as BLIP), repetition penalty 1.1, ``num_captions``
    samples per image. ``sample=False`` is beam search (``num_beams``), BLIP's caption evaluation.
    The prompt is stripped from the returned text. ``seed`` makes sampling reproducible.

    ``image_seeds`` (one per image): each (image, caption k) draws its own sampling noise from a
    generator seeded by (that image's seed, k), so an image's captions do not depend on which images share its
    batch or in which order images come (a pipeline's shards are not the same on every cluster).
    The draw is the Gumbel-max trick on the nucleus (top_k 50 as transformers' sampling default,
    then top_p): the same distribution as ``do_sample=True``, not the same random numbers.
    """
    import torch

    prompt = captioner.prompt if prompt is None else prompt
    out: list[list[str] | None] = [None] * len(images)
    model, tok = captioner.model, captioner.tokenizer
    # [CLS] prompt [SEP]: generate() turns [CLS] into [DEC] and drops the [SEP].
    prompt_ids = tok(prompt.strip(), return_tensors="pt").input_ids
    prompt_words = tok.decode(prompt_ids[0], skip_special_tokens=True).strip()
    with torch.inference_mode(), _seeded(seed, captioner.device):
        for idx, batch in _decoded_batches(images, batch_size):
            px = captioner.pixels(batch)
            n_ret = num_captions
            kwargs: dict[str, Any] = dict(max_length=max_length, min_length=min_length,
                                          repetition_penalty=repetition_penalty)
            if sample:
                kwargs.update(do_sample=True, top_p=top_p, num_return_sequences=n_ret)
            else:
                kwargs.update(do_sample=False, num_beams=max(num_beams, n_ret), num_return_sequences=n_ret)
            if sample and image_seeds is not None:
                from transformers import LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper

                rows = [_row_seed(image_seeds[i], k) for i in idx for k in range(n_ret)]
                px = px.repeat_interleave(n_ret, dim=0)
                kwargs.update(do_sample=False, num_beams=1, num_return_sequences=1, logits_processor=LogitsProcessorList(
                    [TopKLogitsWarper(50), TopPLogitsWarper(top_p), _RowGumbelNoise(rows)]))
                kwargs.pop("top_p", None)
            ids = prompt_ids.repeat(px.shape[0], 1).to(captioner.device)
            gen = model.generate(pixel_values=px, input_ids=ids, **kwargs)
            texts = tok.batch_decode(gen, skip_special_tokens=True)
            for j, i in enumerate(idx):
                caps = []
                for t in texts[j * n_ret:(j + 1) * n_ret]:
                    t = t.strip()
                    if prompt_words and t.startswith(prompt_words):
                        t = t[len(prompt_words):].strip()
                    caps.append(t)
                out[i] = caps
    return out


def _row_seed(image_seed: int, k: int) -> int:
    import hashlib

    return int(hashlib.sha256(f"{int(image_seed)}:{k}".encode()).hexdigest()[:15], 16)


class _RowGumbelNoise:
    """A logits processor adding Gumbel(0, 1) noise drawn from one CPU generator per batch row:
    argmax of (filtered logits + noise) is a sample of softmax(filtered logits), row by row."""

    def __init__(self, seeds: Sequence[int]):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        u = torch.stack([torch.rand(scores.shape[-1], generator=g, dtype=torch.float64) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)


def itm_scores(filt: BlipBundle, images: Sequence, texts: Sequence[str], image_index: Sequence[int] | None = None,
               *, batch_size: int = 64, first_token: str | None = None) -> np.ndarray:
    """The filter's p(match) for each text with its image.

    Without ``image_index`` texts[i] goes with images[i]; with it, text ``i`` goes with
    ``images[image_index[i]]`` and each image is encoded once however many captions it has.
    Undecodable images give NaN. ``first_token`` overrides the bundle's ITM first token.
    """
    import torch

    first = first_token or filt.itm_first_token
    index = np.arange(len(texts)) if image_index is None else np.asarray(image_index, dtype=np.int64)
    if len(index) != len(texts):
        raise ValueError("image_index must have one entry per text")
    scores = np.full(len(texts), np.nan, dtype=np.float32)
    model, tok = filt.model, filt.tokenizer
    enc_first = enc_token_id(tok) if first == "enc" else None
    max_len = min(getattr(model.config.text_config, "max_position_embeddings", 512), 512)
    texts_of: dict[int, list[int]] = {}
    for j, i in enumerate(index.tolist()):
        texts_of.setdefault(i, []).append(j)
    with torch.inference_mode():
        # One batch of pictures at a time: their vision tokens, then every text paired with them.
        for idx, batch in _decoded_batches(images, batch_size):
            e = model.vision_model(pixel_values=filt.pixels(batch)).last_hidden_state
            row_of = {i: r for r, i in enumerate(idx)}
            todo = [j for i in idx for j in texts_of.get(i, [])]
            for start in range(0, len(todo), batch_size):
                js = todo[start:start + batch_size]
                enc = tok([texts[j] or "" for j in js], padding="longest", truncation=True, max_length=max_len,
                          return_tensors="pt").to(filt.device)
                ids = enc.input_ids
                if enc_first is not None:
                    ids = ids.clone()
                    ids[:, 0] = enc_first
                img = e[[row_of[int(index[j])] for j in js]]
                img_mask = torch.ones(img.shape[:-1], dtype=torch.long, device=img.device)
                hidden = model.text_encoder(input_ids=ids, attention_mask=enc.attention_mask,
                                            encoder_hidden_states=img, encoder_attention_mask=img_mask).last_hidden_state
                p = torch.softmax(model.itm_head(hidden[:, 0, :]).float(), dim=1)[:, 1]
                scores[js] = p.cpu().numpy()
    return scores


def itc_image_embeddings(filt: BlipBundle, images: Sequence, batch_size: int = 64) -> np.ndarray:
    """L2-normalised ITC image features (``vision_proj`` of the [CLS] token); zeros where undecodable."""
    import torch
    import torch.nn.functional as F

    dim = filt.model.config.image_text_hidden_size
    out = np.zeros((len(images), dim), dtype=np.float32)
    with torch.inference_mode():
        for idx, batch in _decoded_batches(images, batch_size):
            e = filt.model.vision_model(pixel_values=filt.pixels(batch)).last_hidden_state
            out[idx] = F.normalize(filt.model.vision_proj(e[:, 0, :]).float(), dim=-1).cpu().numpy()
    return out


def itc_text_embeddings(filt: BlipBundle, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """L2-normalised ITC text features (``text_proj`` of the unimodal encoder's [CLS])."""
    import torch
    import torch.nn.functional as F

    dim = filt.model.config.image_text_hidden_size
    out = np.zeros((len(texts), dim), dtype=np.float32)
    max_len = min(getattr(filt.model.config.text_config, "max_position_embeddings", 512), 512)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = [t or "" for t in texts[start:start + batch_size]]
            enc = filt.tokenizer(chunk, padding="longest", truncation=True, max_length=max_len,
                                 return_tensors="pt").to(filt.device)
            h = filt.model.text_encoder(input_ids=enc.input_ids, attention_mask=enc.attention_mask).last_hidden_state
            out[start:start + len(chunk)] = F.normalize(filt.model.text_proj(h[:, 0, :]).float(), dim=-1).cpu().numpy()
    return out

