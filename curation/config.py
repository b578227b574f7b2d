"""Typed configuration of the whole pipeline, validated before any work starts.

One YAML file (or none: every field has a default) holds cluster addresses,
paths, thresholds and models. CLI flags and Make variables override single
keys with dotted names (``--set dedup.num_bands=20``). Unknown keys and values
of the wrong type fail with a message naming the key, so a typo never silently
falls back to a default on a cluster run.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from filters.config import DocumentFilterConfig, ImageFilterConfig, PairFilterConfig, ParagraphFilterConfig
from models.train_config import EvalConfig, TrainConfig
from curation.errors import ConfigError


@dataclass
class SparkConfig:
    """Where Spark stages run: ``local[*]`` embedded by default, ``spark://host:7077`` for a cluster."""

    master: str = "local[*]"
    app_name: str = "vl-curation"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    # Large-star/small-star connected components checkpoint here to cut lineage.
    checkpoint_dir: str | None = None
    show_progress: bool = True
    conf: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.shuffle_partitions < 1:
            raise ValueError(f"shuffle_partitions must be >= 1, got {self.shuffle_partitions}")


@dataclass
class DaskConfig:
    """Where Dask stages run: a LocalCluster when ``scheduler`` is empty (see curation/dask_cluster.py)."""

    scheduler: str | None = None
    # LocalCluster size; default one worker per GPU, else one per 8 CPU cores (at least one).
    n_workers: int | None = None
    threads_per_worker: int = 1
    # LocalCluster workers as processes (a model per process, no GIL contention); false runs
    # threads inside this process (quick to start: tests, debugging).
    processes: bool = True
    memory_limit: str = "auto"

    def validate(self) -> None:
        if self.n_workers is not None and self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {self.n_workers}")
        if self.threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be >= 1, got {self.threads_per_worker}")


@dataclass
class ExtractConfig:
    """WARC -> interleaved documents and pair candidates."""

    # Records whose HTTP payload is larger than this are rejected (``payload_too_large``):
    # a 20 MB page costs more to parse than it is worth and is almost never prose.
    max_payload_bytes: int = 5_000_000
    # DOM deeper than this is rejected (``html_too_deep``) rather than recursed into.
    max_dom_depth: int = 256
    # Image URLs whose path names one of these words are dropped as page furniture.
    image_url_banned_words: list[str] = field(
        default_factory=lambda: ["logo", "icon", "button", "widget", "sprite", "avatar", "badge", "banner", "pixel", "spacer", "emoji"]
    )
    # Caption text sources for pair candidates, in priority order.
    caption_sources: list[str] = field(default_factory=lambda: ["alt", "figcaption", "title"])
    min_caption_chars: int = 5
    # Files per Spark task (1 = one WARC file per task).
    files_per_task: int = 1
    # Tolerate this many gzip-member resyncs in a corrupt file before giving up on it.
    max_resyncs_per_file: int = 100
    # main_content: the article's blocks only (curation/main_content.py, docs/extraction.md);
    # obelics: every text node that survives OBELICS's DOM simplification (the previous behaviour).
    mode: str = "main_content"
    # main_content mode: keep images outside the content in place (else dropped, counted as
    # images_dropped_boilerplate).
    keep_boilerplate_images: bool = False

    def validate(self) -> None:
        if self.mode not in ("main_content", "obelics"):
            raise ValueError(f"mode must be main_content or obelics, got {self.mode!r}")
        # 0 or less would reject every page (payload_too_large / html_too_deep): never what was meant.
        for name in ("max_payload_bytes", "max_dom_depth", "files_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_caption_chars < 0 or self.max_resyncs_per_file < 0:
            raise ValueError("min_caption_chars and max_resyncs_per_file must be >= 0")


@dataclass
class DedupConfig:
    """Web-scale deduplication (see pipelines/spark_dedup.py)."""

    url_dedup: bool = True
    exact_dedup: bool = True
    near_dedup: bool = True
    ngram_size: int = 5
    num_bands: int = 14
    rows_per_band: int = 8
    seed: int = 1
    # MinHash permutation family, bit-identical to datasketch's scheme of the same name:
    # affine64 (64-bit hashes end to end), affine32 (datasketch's default) or legacy (datatrove, datasketch < 2).
    minhash_scheme: str = "affine64"
    # Exact Jaccard check of candidate pairs (drops LSH false positives below the threshold).
    # 0.8 as NeMo Curator: the 14 x 8 bands find pairs from ~0.72 up, verification keeps J >= 0.8.
    verify_jaccard: bool = True
    jaccard_threshold: float = 0.8
    # With verification, each member of a band bucket is checked against the bucket's first
    # this-many documents (all pairs in buckets up to this size + 1), so a false candidate
    # anchor cannot hide a true pair; edges grow as anchors x bucket size, not quadratically.
    lsh_bucket_anchors: int = 32
    max_cc_iterations: int = 40
    paragraph_dedup: bool = True
    paragraph_max_per_domain: int = 2
    image_dedup: bool = True
    image_max_docs: int = 10
    image_set_dedup: bool = True
    drop_docs_without_text: bool = True
    drop_docs_without_images: bool = False
    # Cross-snapshot state (pipelines/dedup_state.py): a Parquet index every run reads and appends its
    # kept documents to; null = each snapshot is deduplicated against itself only.
    state_dir: str | None = None
    # first_seen: reject what an earlier snapshot curated (seen_in:<snapshot>); newer_wins: keep it and
    # list the earlier document in <run>/dedup/removals/
    state_policy: str = "first_seen"

    def validate(self) -> None:
        if self.state_policy not in ("first_seen", "newer_wins"):
            raise ValueError(f"state_policy must be first_seen or newer_wins, got {self.state_policy!r}")
        if self.minhash_scheme not in ("affine64", "affine32", "legacy"):
            raise ValueError(f"minhash_scheme must be affine64, affine32 or legacy, got {self.minhash_scheme!r}")
        for name in ("ngram_size", "num_bands", "rows_per_band", "max_cc_iterations", "lsh_bucket_anchors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.jaccard_threshold <= 1.0:
            raise ValueError(f"jaccard_threshold must be in [0, 1], got {self.jaccard_threshold}")
        if self.paragraph_max_per_domain < 1 or self.image_max_docs < 1:
            raise ValueError("paragraph_max_per_domain and image_max_docs must be >= 1")


@dataclass
class TextBasedConfig:
    """DataComp's text-based step (filters/text_based.py): captions naming an ImageNet-21k synset."""

    # One word per line (words whose first WordNet sense is an ImageNet-21k synset; docs/recipes.md
    # says how to build DataComp's); null: the small packaged list (filters/resources/imagenet21k_words_small.txt).
    synsets: str | None = None


@dataclass
class ImageBasedConfig:
    """DataComp's image-based step (filters/image_based.py): images in a cluster of some target image."""

    # Target images: a .npy of unit embeddings from the run's CLIP, or a directory / Parquet
    # (``image`` column) of images the run's CLIP encodes (ImageNet-1k train for real runs), or
    # ``clean``: the pictures of the run's clean captioned set (bootstrap.clean_data; the sample's own).
    targets: str | None = None
    clusters: int = 100_000  # DataComp's small scale (12.8M pairs)
    # k = min(clusters, ceil(pool / rows_per_cluster)): DataComp's small scale has 12.8M / 100k = 128
    # pool images a cluster; without it a small pool (the sample) would get one cluster per image.
    rows_per_cluster: int = 128
    sample_size: int = 1_000_000  # pool embeddings the client fits k-means on (bounds its memory)
    niter: int = 20
    seed: int = 0

    def validate(self) -> None:
        if min(self.clusters, self.rows_per_cluster, self.sample_size, self.niter) < 1:
            raise ValueError("clusters, rows_per_cluster, sample_size and niter must be >= 1")


@dataclass
class MetaclipConfig:
    """MetaCLIP's metadata curation step (filters/metaclip.py): substring matches, balanced by ``t``."""

    # MetaCLIP's metadata.json (a JSON list of strings) or a .txt, one entry a line; null: the shipped
    # WordNet 3.0 part of MetaCLIP's list (filters/resources/metaclip_wordnet30.txt, docs/recipes.md).
    metadata: str | None = None
    t: int = 20_000  # MetaCLIP at 400M pairs; entries matched more often are sub-sampled to about t
    seed: int = 0  # the per-pair draw is seeded by (seed, key): the same on any cluster shape

    def validate(self) -> None:
        if self.t < 1:
            raise ValueError(f"t must be >= 1, got {self.t}")


@dataclass
class ScoreConfig:
    """CLIP scoring on Dask (pipelines/dask_score.py): model, batching, filters, semantic dedup.

    Real defaults: ViT-B-32 with LAION-2B weights and LAION's 0.28 threshold. ``pretrained``
    is an open_clip tag, a local checkpoint path, or null for random weights (scores are then
    meaningless; the stage warns in the log and in stats). ``SNAPSHOT=sample`` runs use
    :data:`SAMPLE_DEFAULTS` for keys the user did not set.
    """

    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:N
    batch_size: int = 64
    loader_threads: int = 2  # image decode + preprocess threads per worker, overlapped with the model
    seed: int = 0  # random-init weights (pretrained null) are seeded so every worker has the same model
    shard_rows: int = 2048  # rows per Dask task (input files are split by row groups)
    # none | threshold (LAION: clip_score >= min_clip_score) | top_fraction (DataComp: global quantile)
    filter_mode: str = "threshold"
    min_clip_score: float = 0.28  # LAION-400M, ViT-B/32 cosine
    top_fraction: float = 0.3  # DataComp "CLIP score (30%)"
    filters: PairFilterConfig = field(default_factory=PairFilterConfig)
    # Composable steps applied in order, a pair kept when all keep it (filters.pairs.RECIPE_STEPS):
    # basic, clip_threshold, clip_top_fraction, text_based, image_based, metaclip. DataComp-1B is
    # [basic, image_based, clip_top_fraction]. Null: ``filter_mode`` as before (docs/recipes.md).
    recipe: list[str] | None = None
    text_based: TextBasedConfig = field(default_factory=TextBasedConfig)
    image_based: ImageBasedConfig = field(default_factory=ImageBasedConfig)
    metaclip: MetaclipConfig = field(default_factory=MetaclipConfig)
    mmc4: bool = True
    mmc4_min_sim: float = 0.15  # MMC4: images whose best sentence is below this are dropped
    semantic_dedup: bool = True
    semantic_dedup_threshold: float = 0.95  # cosine of image embeddings; one pair per cluster is kept
    # Eval set to decontaminate against: a directory of images, a Parquet file/dir with an ``image``
    # column, or a .npy of L2-normalised embeddings from the same model. Null: no decontamination.
    decontaminate_eval: str | None = None
    decontaminate_threshold: float = 0.95
    keep_work: bool = False  # keep <out>/_work/score-*/ (per-shard intermediates) after success

    def validate(self) -> None:
        if self.filter_mode not in ("none", "threshold", "top_fraction"):
            raise ValueError(f"filter_mode must be none, threshold or top_fraction, got {self.filter_mode!r}")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if self.batch_size < 1 or self.shard_rows < 1 or self.loader_threads < 0:
            raise ValueError("batch_size and shard_rows must be >= 1, loader_threads >= 0")
        for name in ("min_clip_score", "mmc4_min_sim", "semantic_dedup_threshold", "decontaminate_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a cosine in [-1, 1], got {getattr(self, name)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.recipe is not None:
            from filters.pairs import check_recipe

            check_recipe(self.recipe)
            if "image_based" in self.recipe and not self.image_based.targets:
                raise ValueError("recipe image_based needs image_based.targets (target-image embeddings or images)")


# ``score.pretrained``, ``capfilt.captioner`` or ``capfilt.filter`` set to this means "the models this
# run trains itself": the ``bootstrap`` stage (pipelines/bootstrap.py) trains them before ``score``
# and saves them under ``<run>/bootstrap/models/``; score and capfilt load them from there
# (resolved by models/resolve.py).
BOOTSTRAP_MODELS = "bootstrap"


@dataclass
class CapfiltConfig:
    """BLIP's Captioner + Filter on Dask (pipelines/dask_capfilt.py).

    Defaults are BLIP's CapFilt settings (Li et al. 2022): nucleus sampling with top_p 0.9,
    30/10 max/min tokens (prompt included), repetition penalty 1.1, the prompt "a picture of ",
    one synthetic caption per image, and a caption kept when the ITM head's p(match) >= 0.5.
    ``captioner``/``filter``: a Hugging Face id, a local directory (``curate train`` exports), or
    ``bootstrap`` (the models this run's bootstrap stage trained).
    """

    captioner: str = "Salesforce/blip-image-captioning-base"
    filter: str = "Salesforce/blip-itm-base-coco"
    # First token of the ITM text: "enc" is the original BLIP ([ENC], what the Salesforce checkpoints
    # were trained with), "cls" is transformers' BlipForImageTextRetrieval (transformers#25629);
    # null: what the model's vlc_blip.json records, else "cls".
    itm_first_token: str | None = None
    prompt: str | None = None  # null: the captioner's own (vlc_blip.json), else "a picture of "
    num_captions: int = 1  # synthetic captions per image (K); 0 = filter the web captions only
    top_p: float = 0.9
    max_length: int = 30
    min_length: int = 10
    repetition_penalty: float = 1.1
    itm_threshold: float = 0.5
    filter_web: bool = True  # false keeps every web caption (no ITM decision on them)
    filter_synthetic: bool = True  # false keeps every synthetic caption ("captioner only")
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:N
    batch_size: int = 32  # images per generate() call and per ITM image batch
    threads: int = 0  # torch threads per CPU worker (0: the host's cores divided among its workers)
    seed: int = 0  # sampling noise is seeded per picture from this: reruns give the same captions
    shard_rows: int = 1024  # input pairs per Dask task
    keep_work: bool = False  # keep <out>/_work/capfilt-*/ (per-shard outputs) after success

    def validate(self) -> None:
        if self.itm_first_token not in (None, "cls", "enc"):
            raise ValueError(f"itm_first_token must be cls, enc or null, got {self.itm_first_token!r}")
        if self.num_captions < 0 or self.batch_size < 1 or self.shard_rows < 1 or self.threads < 0:
            raise ValueError("num_captions and threads must be >= 0, batch_size and shard_rows >= 1")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_length < self.max_length:
            raise ValueError(f"need 0 <= min_length < max_length, got {self.min_length}, {self.max_length}")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if not 0.0 <= self.itm_threshold <= 1.0:
            raise ValueError(f"itm_threshold must be in [0, 1], got {self.itm_threshold}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class BootstrapConfig:
    """Models a run trains itself when none can be downloaded (pipelines/bootstrap.py; the
    ``--rounds`` loop: pipelines/bootstrap_loop.py).

    BLIP's round 0 with the thin trainer (``train`` section for everything not set here): a CLIP
    (``score.model``) and a BLIP are trained on the run's web pairs, then the captioner and the
    filter are fine-tuned separately on a clean human-annotated set. ``curate bootstrap --rounds R``
    goes on: CapFilt rewrites the web pairs, the next round's BLIP is trained on them, and so on.
    Each training runs ``epochs`` (web pairs) or ``finetune_epochs`` (clean set) passes, at most
    ``max_steps`` steps (0: no cap).
    """

    # The clean set: a COCO-format directory (captions*.json + images/), its json, or IMAGE_PAIRS
    # Parquet. Null on a sample run: the sample's own clean split (<run>/_sample/clean).
    clean_data: str | None = None
    rounds: int = 2  # CapFilt passes of `curate bootstrap --rounds` given without a number (the run's capfilt is pass 1)
    epochs: float = 10.0
    finetune_epochs: float = 5.0
    captioner_epochs: float | None = None  # null: finetune_epochs (the captioner learns to see slowest)
    max_steps: int = 0
    batch_size: int = 64
    lr: float | None = None  # null: train.lr
    blip_preset: str | None = None  # null: train.blip.preset
    blip_image_size: int | None = None  # null: train.blip.image_size
    # Share of uniformly drawn ITM negatives (null: train.blip.itm_easy_negatives). A filter trained
    # from scratch on little data learns ITM only from easy negatives: on the sample, 300 filter
    # fine-tuning steps left ITM accuracy at its 2/3 prior with 0.5, and reached 0.9 by step 200 with 1.0.
    itm_easy_negatives: float | None = None
    # torch threads of each training task (0: the Dask worker's share of its host's cores). Fixed,
    # the same run gives the same models on any cluster shape.
    threads: int = 0
    device: str = "auto"
    seed: int = 0

    def validate(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.epochs <= 0 or self.finetune_epochs < 0 or self.max_steps < 0 or (self.captioner_epochs or 0) < 0:
            raise ValueError("epochs must be > 0, finetune_epochs, captioner_epochs and max_steps >= 0")
        if self.batch_size < 2 or self.threads < 0:
            raise ValueError("batch_size must be >= 2 and threads >= 0")
        if self.itm_easy_negatives is not None and not 0.0 <= self.itm_easy_negatives <= 1.0:
            raise ValueError(f"itm_easy_negatives must be in [0, 1], got {self.itm_easy_negatives}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def uses_bootstrap_models(cfg: "PipelineConfig") -> bool:
    """Whether any model of the run is the self-trained ``bootstrap`` one (the bootstrap stage's ``when``)."""
    return BOOTSTRAP_MODELS in (cfg.score.pretrained, cfg.capfilt.captioner, cfg.capfilt.filter)

# Defaults of ``snapshot: sample`` runs, applied by PipelineConfig.load to keys the user did not
# set (one place). The sample has no downloadable weights: the bootstrap stage trains a tiny CLIP
# and a tiny BLIP on the run's own pairs (step budgets below keep ``make curate`` to minutes on two
# cores) and score and capfilt load them. A CLIP that saw a few hundred pairs gives scores on no
# known scale: no score filter, no semantic dedup, no image dropped by MMC4's min_sim.
# Text-filter thresholds of the main-content extraction mode (the default), measured on html_eval's
# dev split (docs/benchmarks.md, "Paragraph and document filters in main-content mode"). Once the
# extractor keeps only the article, OBELICS's paragraph filters remove more article text than furniture
# (the English stopword list alone: 1,469 article snippets vs 157 furniture ones; flagged words 1 vs 0),
# so the paragraph chain is off (``enabled: false``; the values below are what it runs with when switched
# back on: each rule off but the word count and flagged words); the flagged-word check stays at document
# level. Document bounds are set to reject about 1% of real articles at most (OBELICS's 2,000-word and
# 30-image caps rejected 6% and 2% of them). ``extract.mode: obelics`` keeps OBELICS's published values
# (the filters' own defaults, filters/text.py).
MAIN_CONTENT_FILTER_DEFAULTS: dict[str, Any] = {
    "paragraph_filters.enabled": False,
    "paragraph_filters.min_words": 1,
    "paragraph_filters.max_char_repetition_ratio": 1.0,
    "paragraph_filters.max_word_repetition_ratio": 1.0,
    "paragraph_filters.max_special_character_ratio": 1.0,
    "paragraph_filters.min_stopword_ratio": 0.0,
    "paragraph_filters.min_punctuation_ratio": 0.0,
    "document_filters.max_words": 20000,
    "document_filters.max_images": 100,
    "document_filters.max_char_repetition_ratio": 0.15,
    "document_filters.max_word_repetition_ratio": 0.35,
    "document_filters.max_special_character_ratio": 0.3,
    "document_filters.min_stopword_ratio": 0.2,
}
OBELICS_FILTER_DEFAULTS: dict[str, Any] = {
    key: getattr(ParagraphFilterConfig() if key.startswith("paragraph_filters.") else DocumentFilterConfig(),
                 key.split(".", 1)[1])
    for key in MAIN_CONTENT_FILTER_DEFAULTS
}


def _section_defaults(defaults: dict[str, Any], section: str) -> dict[str, Any]:
    return {k.split(".", 1)[1]: v for k, v in defaults.items() if k.startswith(section + ".")}


SAMPLE_DEFAULTS: dict[str, Any] = {
    "score.model": "vlc-tiny-clip",
    "score.pretrained": BOOTSTRAP_MODELS,
    "score.filter_mode": "none",
    "score.semantic_dedup": False,
    "score.mmc4_min_sim": -1.0,
    "score.batch_size": 32,
    "capfilt.captioner": BOOTSTRAP_MODELS,
    "capfilt.filter": BOOTSTRAP_MODELS,
    # ~75 CLIP/BLIP steps over the ~480 web pairs; over the 750 clean captions 118 filter steps and
    # 586 captioner steps (at 118 it named the true shape of 1 picture in 10, at 600 of 1 in 3).
    "bootstrap.epochs": 10.0,
    "bootstrap.finetune_epochs": 10.0,
    "bootstrap.captioner_epochs": 50.0,
    "bootstrap.max_steps": 600,
    "bootstrap.batch_size": 64,
    "bootstrap.blip_image_size": 32,
    "bootstrap.itm_easy_negatives": 1.0,
    "bootstrap.threads": 1,
}


@dataclass
class ReportConfig:
    """The quality report (``curate report``): how much of each distribution and sample to show."""

    histogram_bins: int = 30
    # Largest number of categories drawn (language, caption source, ...); the rest are "other".
    max_categories: int = 20
    # Sample pairs shown per score band (best / median / worst).
    samples_per_band: int = 4
    # Sample images are re-encoded as thumbnails no larger than this (px) before embedding.
    thumbnail_px: int = 160

    def validate(self) -> None:
        for name in ("histogram_bins", "max_categories", "samples_per_band", "thumbnail_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class ImagesConfig:
    """Image acquisition (pipelines/images.py): img2dataset fetch, safety policy, joins and shards.

    Image thresholds (formats, sizes, aspect, bytes, pixels, pHash distance) are in ``image_filters``.
    """

    # multiprocessing | pyspark | auto (pyspark when spark.master is not local, else multiprocessing)
    distributor: str = "auto"
    processes: int = 0  # multiprocessing workers; 0 = one per CPU core (never more than shards)
    threads_per_process: int = 32
    urls_per_shard: int = 1000
    timeout: float = 10.0  # seconds per socket operation (connect, each read)
    max_fetch_seconds: float = 60.0  # a body still arriving after this is abandoned
    retries: int = 0
    max_redirects: int = 5
    # IP, IP:port, CIDR or CIDR:port let through the private-address refusal (the sample's
    # loopback server is added automatically for sample runs).
    allow_addresses: list[str] = field(default_factory=list)
    user_agent_token: str | None = "img2dataset"
    # X-Robots-Tag directives that forbid use (img2dataset's default list).
    disallowed_header_directives: list[str] = field(
        default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"]
    )
    opt_out_file: str | None = None  # domains / URL prefixes / re:regex, one per line
    # img2dataset resize modes: no (keep original bytes) | keep_ratio | center_crop | border | keep_ratio_largest
    resize_mode: str = "no"
    image_size: int = 256
    encode_format: str = "jpg"  # used only when resizing
    encode_quality: int = 95
    normalize_high_bit_depth: bool = True  # 16-bit grey PNGs -> 8-bit (loaders clip them otherwise)
    drop_documents_without_images: bool = True
    webdataset: bool = True
    webdataset_image_format: str = "original"  # original (jpg/png/webp) | jpg (re-encode the others)
    samples_per_tar: int = 10000
    keep_fetch_cache: bool = False  # keep <out>/_work/images-*/ (img2dataset shards) after success

    def validate(self) -> None:
        if self.distributor not in ("auto", "multiprocessing", "pyspark"):
            raise ValueError(f"distributor must be auto, multiprocessing or pyspark, got {self.distributor!r}")
        if self.resize_mode not in ("no", "keep_ratio", "center_crop", "border", "keep_ratio_largest"):
            raise ValueError(f"unknown resize_mode {self.resize_mode!r}")
        if self.encode_format not in ("jpg", "png", "webp"):
            raise ValueError(f"encode_format must be jpg, png or webp, got {self.encode_format!r}")
        if self.webdataset_image_format not in ("original", "jpg"):
            raise ValueError(f"webdataset_image_format must be original or jpg, got {self.webdataset_image_format!r}")
        for name in ("threads_per_process", "urls_per_shard", "samples_per_tar", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.processes < 0 or self.retries < 0 or self.max_redirects < 0:
            raise ValueError("processes, retries and max_redirects must be >= 0")
        if self.timeout <= 0 or self.max_fetch_seconds <= 0:
            raise ValueError("timeout and max_fetch_seconds must be > 0")
        if not 1 <= self.encode_quality <= 100:
            raise ValueError(f"encode_quality must be in [1, 100], got {self.encode_quality}")
        for entry in self.allow_addresses:
            _check_allow_entry(entry)


def _check_allow_entry(entry: str) -> None:
    """One ``images.allow_addresses`` entry, parsed as the fetch policy will parse it (at load, not at fetch)."""
    from curation.safe_http import _parse_allow  # stdlib only: the one parser of allowlist entries

    try:
        _, port = _parse_allow(entry)
    except ValueError as exc:
        raise ValueError(f"allow_addresses entry {entry!r} is not an IP, IP:port, CIDR or CIDR:port ({exc})") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"allow_addresses entry {entry!r}: port {port} is not in 1..65535")


@dataclass
class SafetyConfig:
    """The release-safety layer (docs/safety.md): scores on CLIP embeddings, faces, PII, blocklists.

    Read by extract (PII, blocked domains), images (image hash list, TDM reservation) and score
    (heads, faces). The heads are LAION's released files: ``auto`` picks the one for the score model
    (``ViT-B-32``/``ViT-L-14`` with ``pretrained: openai``) under ``heads_dir``; a path names a head
    trained for another CLIP; null, or no head for the model, leaves the column null.
    """

    heads_dir: str | None = None  # folder with nsfw/ and aesthetic/ as LAION released them
    nsfw_head: str | None = "auto"  # auto | path to a .pth state dict | null
    aesthetic_head: str | None = "auto"
    max_nsfw: float | None = 0.5  # P(NSFW) above this is rejected (``nsfw``); null keeps every score
    min_aesthetic: float | None = None  # off by default; e.g. 5.0 for LAION-Aesthetics-like subsets
    faces: bool = True  # OpenCV Haar cascade face count + boxes per kept image (models/faces.py)
    pii_emails: bool = True  # replace in document texts and captions (filters/pii.py)
    pii_phones: bool = True
    pii_ips: bool = True
    blocked_domains_file: str | None = None  # domains / URLs, one per line (UT1 lists): pages ``blocked_domain``
    image_hash_blocklist_file: str | None = None  # sha256 or MD5 hex per line: images ``hash_listed``
    honour_tdm_reservation: bool = True  # ``tdm-reservation: 1`` response header -> ``tdm_reserved``
    honour_robots_txt: bool = True  # robots.txt of each image host, once per host (curation/robots.py): ``robots_disallowed``
    # DataComp blurred every detected face in the images it released: the release stage blurs the boxes the
    # score stage stored (needs ``faces``) in the bytes it writes, keeping the original's ``original_sha256``.
    # Off by default (issue 15): the Haar detector misses many faces (docs/safety.md), so blurring is a
    # choice the publisher makes knowingly, not a guarantee the defaults imply.
    blur_faces: bool = False

    def validate(self) -> None:
        if self.max_nsfw is not None and not 0.0 <= self.max_nsfw <= 1.0:
            raise ValueError(f"max_nsfw must be a probability in [0, 1] or null, got {self.max_nsfw}")


@dataclass
class ReleaseConfig:
    """The release stage (pipelines/release.py): the curated result as its consumers read it."""

    # pairs_wds (open_clip tars), interleaved_wds (one sample per document), interleaved (Parquet
    # with image_bytes), hf (Parquet with datasets.Image structs + README.md)
    formats: list[str] = field(default_factory=lambda: ["pairs_wds", "interleaved_wds", "interleaved", "hf"])
    samples_per_shard: int = 10000  # pairs per output tar / HF shard (about: buckets of a seeded hash)
    seed: int = 0  # of the key hash that shuffles pairs across and within shards
    shard_rows: int = 20000  # final pairs per pass-1 task (row groups of the input)
    documents_per_shard: int = 2000  # documents per task = per interleaved tar / Parquet file
    license: str = "cc-by-4.0"  # the HF README's licence id (as OBELICS, DataComp, MINT-1T)
    keep_work: bool = False  # keep <out>/_work/release-*/ after success

    def validate(self) -> None:
        unknown = sorted(set(self.formats) - {"pairs_wds", "interleaved_wds", "interleaved", "hf"})
        if unknown:
            raise ValueError(f"unknown formats {unknown}; known: pairs_wds, interleaved_wds, interleaved, hf")
        for name in ("samples_per_shard", "shard_rows", "documents_per_shard"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class PipelineConfig:
    """Everything one run of ``curate`` needs."""

    snapshot: str = "sample"
    # Base of ``crawl-data/<SNAPSHOT>/warc.paths.gz``: https, s3 or a local mirror directory.
    cc_base: str = "https://data.commoncrawl.org/"
    limit: int | None = None
    out: str = "out/sample"
    sample_pages: int = 300
    sample_seed: int = 0
    # Port of the sample's loopback image server (its image URLs point at it; the images stage serves it).
    sample_image_port: int = 8417
    spark: SparkConfig = field(default_factory=SparkConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    paragraph_filters: ParagraphFilterConfig = field(
        default_factory=lambda: ParagraphFilterConfig(**_section_defaults(MAIN_CONTENT_FILTER_DEFAULTS, "paragraph_filters")))
    document_filters: DocumentFilterConfig = field(
        default_factory=lambda: DocumentFilterConfig(**_section_defaults(MAIN_CONTENT_FILTER_DEFAULTS, "document_filters")))
    image_filters: ImageFilterConfig = field(default_factory=ImageFilterConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    capfilt: CapfiltConfig = field(default_factory=CapfiltConfig)  # pipelines/dask_capfilt.py
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)  # pipelines/bootstrap.py
    release: ReleaseConfig = field(default_factory=ReleaseConfig)  # pipelines/release.py
    train: TrainConfig = field(default_factory=TrainConfig)  # curate train (models/train_config.py)
    eval: EvalConfig = field(default_factory=EvalConfig)  # curate eval
    safety: SafetyConfig = field(default_factory=SafetyConfig)  # docs/safety.md

    def validate(self) -> None:
        if self.sample_pages < 1:
            raise ValueError(f"sample_pages must be >= 1, got {self.sample_pages}")
        if not 1 <= self.sample_image_port <= 65535:
            raise ValueError(f"sample_image_port must be a port in 1..65535, got {self.sample_image_port}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or null for every file), got {self.limit}")

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> "PipelineConfig":
        """Read a YAML file (optional) then apply dotted-key overrides; validate everything."""
        data: dict[str, Any] = {}
        if path:
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {path}") from None
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"config file {path} must hold a mapping at top level")
        for key, value in (overrides or {}).items():
            _set_dotted(data, key, value)
        # Text-filter thresholds follow the extraction mode unless given (see MAIN_CONTENT_FILTER_DEFAULTS).
        extract = data.get("extract")
        mode = extract.get("mode", "main_content") if isinstance(extract, dict) else "main_content"
        filter_defaults = MAIN_CONTENT_FILTER_DEFAULTS if mode == "main_content" else OBELICS_FILTER_DEFAULTS
        for key, value in filter_defaults.items():
            if not _has_dotted(data, key):
                _set_dotted(data, key, value)
        if data.get("snapshot", cls.snapshot) == "sample":
            for key, value in SAMPLE_DEFAULTS.items():
                if not _has_dotted(data, key):
                    _set_dotted(data, key, value)
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section(self, name: str) -> Any:
        """A section as a dict, or one key of it (``safety.max_nsfw``): a stage fingerprints only what it reads."""
        head, _, key = name.partition(".")
        data = dataclasses.asdict(getattr(self, head))
        return data[key] if key else data


def _has_dotted(data: dict[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(_join(where, k) for k in unknown)}; "
            f"known keys{' under ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    return obj


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value or {}, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") if args else v for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value
