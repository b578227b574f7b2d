"""Typed configuration of the thin trainer (``train``) and of evaluation (``eval``).

Plain dataclasses without torch imports, so ``curation.config`` can hold them as the
``train`` and ``eval`` sections of :class:`curation.config.PipelineConfig` and validate
them (unknown keys, wrong types, out-of-range values) before any work starts. CLI flags of
``curate train`` / ``curate eval`` and ``--set train.lr=...`` override single keys.

Defaults train the tiny CPU models (``vlc-tiny-clip``, the ``tiny`` BLIP preset) in minutes;
a GPU run names a bigger model (``--set train.model=ViT-B-32``) and a bigger batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TASKS = ("clip", "blip", "blip-captioner", "blip-filter")
LOSSES = ("infonce", "siglip")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class BlipTrainConfig:
    """BLIP-specific settings (tasks ``blip``, ``blip-captioner``, ``blip-filter``)."""

    # Size of the models built from scratch (``preset`` of models.blip.tiny_blip_config);
    # ignored when ``train.model`` / ``--init`` names an HF id or a local directory.
    preset: str = "tiny"
    image_size: int = 64
    # The captioner is trained (and prompted at generation) with this prefix, as BLIP does.
    prompt: str = "a picture of "
    max_text_tokens: int = 32
    # WordPiece vocabulary built from the training captions when no tokenizer is given.
    vocab_size: int = 2000
    # Original BLIP puts [ENC] as the first token of the ITM text; transformers keeps [CLS]
    # (transformers#25629). "cls" matches BlipForImageTextRetrieval.forward as shipped.
    itm_first_token: str = "cls"
    # Joint pretraining shares the vision encoder, and (as BLIP's MED) the text embeddings,
    # cross-attention and feed-forward layers between the filter's encoder and the captioner's decoder.
    share_text_layers: bool = True
    # Loss weights of joint pretraining: ITC + ITM + LM.
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    lm_weight: float = 1.0
    init_temperature: float = 0.07
    # Share of ITM negatives drawn uniformly from the batch's other pictures instead of in proportion
    # to the contrastive similarity (0 is BLIP's pure hard negatives: use it to fine-tune a pretrained
    # BLIP). From scratch on little data the hardest negatives (same colour and shape, another count)
    # keep ITM at chance: on the sample, 200 steps of pure hard negatives left ITM at its prior,
    # half easy ones gave a held-out ROC-AUC of 0.78.
    itm_easy_negatives: float = 0.5

    def validate(self) -> None:
        if self.itm_first_token not in ("cls", "enc"):
            raise ValueError(f"itm_first_token must be 'cls' or 'enc', got {self.itm_first_token!r}")
        if self.image_size < 8 or self.max_text_tokens < 4 or self.vocab_size < 100:
            raise ValueError("image_size >= 8, max_text_tokens >= 4 and vocab_size >= 100 are required")
        if self.init_temperature <= 0:
            raise ValueError("init_temperature must be > 0")
        if not 0.0 <= self.itm_easy_negatives <= 1.0:
            raise ValueError("itm_easy_negatives must be in [0, 1]")


@dataclass
class TrainConfig:
    """What ``curate train`` does: which model, which loss, how long, how often to checkpoint."""

    task: str = "clip"  # clip | blip (joint pretraining) | blip-captioner | blip-filter (fine-tuning)
    # clip: an open_clip name (vlc-tiny-clip, ViT-B-32, ...) or local-dir:PATH;
    # blip*: "tiny" (build from config) or an HF id / local directory (``--init``).
    model: str = "vlc-tiny-clip"
    # clip: an open_clip pretrained tag or a local checkpoint to start from (null: random init).
    pretrained: str | None = None
    loss: str = "infonce"  # infonce (CLIP, learnable temperature) | siglip (sigmoid, learnable bias)
    batch_size: int = 64
    # Training length: ``steps`` when > 0, else ``epochs`` passes over the data.
    steps: int = 0
    epochs: float = 1.0
    # For tiny models from scratch; fine-tuning a pretrained CLIP/BLIP wants 1e-5 or so.
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 20
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto: bf16 (or fp16 + GradScaler) autocast on GPU, fp32 on CPU
    # Loader: decode in this many DataLoader worker processes (0: in the training process).
    num_workers: int = 1
    shuffle_buffer: int = 512
    # Parquet row groups / tar shards are split into units of at most this many rows; units are
    # what workers are handed, so small units spread small datasets over workers.
    rows_per_unit: int = 256
    # Decoded pictures kept in memory per loader worker (MiB; 0 disables): a dataset smaller than
    # this is decoded once per worker instead of once per epoch. Exact (no random augmentation).
    decode_cache_mb: float = 1024
    checkpoint_every: int = 100  # steps; a final checkpoint is always written
    keep_checkpoints: int = 2
    log_every: int = 10
    # torch intra-op threads of the training process (0: the cores left after the loader workers).
    threads: int = 0
    blip: BlipTrainConfig = field(default_factory=BlipTrainConfig)

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (contrastive losses need negatives)")
        if self.steps < 0 or self.epochs <= 0:
            raise ValueError("steps must be >= 0 and epochs > 0")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError("need 0 <= min_lr <= lr and lr > 0")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("warmup_steps, weight_decay and grad_clip must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.decode_cache_mb < 0:
            raise ValueError("decode_cache_mb must be >= 0")
        if self.num_workers < 0 or self.shuffle_buffer < 0 or self.rows_per_unit < 1:
            raise ValueError("num_workers >= 0, shuffle_buffer >= 0 and rows_per_unit >= 1 are required")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every, keep_checkpoints and log_every must be >= 1")
        self.blip.validate()


@dataclass
class EvalConfig:
    """What ``curate eval`` measures and against what it decontaminates."""

    batch_size: int = 128
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    # Zero-shot classification: class groups (name -> class names). Empty: the sample's shapes
    # and colours (curation/sample/text.py). An image's label is the one class of a group its
    # captions name (images whose captions name none or several are not scored for that group).
    classes: dict[str, list[str]] = field(default_factory=dict)
    templates: list[str] = field(default_factory=lambda: [
        "a photo of a {c}.", "a picture of a {c}.", "an image of a {c}.", "a drawing of a {c}.",
        "a photo of something {c}.",
    ])
    # Drop held-out images that occur (same sha256) in the model's training data.
    decontaminate: bool = True
    # Captioner decoding for BLEU/CIDEr (deterministic beam search, as BLIP's caption evaluation).
    num_beams: int = 3
    max_length: int = 30
    min_length: int = 5
    # Mismatched captions for the filter's ROC-AUC: one per image, drawn with this seed.
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        if self.batch_size < 1 or not self.ks or any(k < 1 for k in self.ks):
            raise ValueError("batch_size >= 1 and ks (>= 1 each) are required")
        if not self.templates or any("{c}" not in t for t in self.templates):
            raise ValueError("templates must be non-empty and each must contain {c}")
        if self.num_beams < 1 or self.max_length < 2 or self.min_length < 0:
            raise ValueError("num_beams >= 1, max_length >= 2, min_length >= 0 are required")
