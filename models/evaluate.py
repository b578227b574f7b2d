"""Evaluation of trained models on a held-out split that is deduplicated and decontaminated.

:func:`build_eval_set` reads pair shards (or a table) into images with all their captions:
rows of the same picture (same sha256) are merged into one image with several captions
(dedup), pictures that occur in the training data are dropped (decontamination, by sha256),
and bad rows are skipped with a counted reason. Then, by model kind:

- CLIP (open_clip ``local-dir``) and the BLIP filter's contrastive (ITC) features: image->text
  and text->image recall@k (several captions per image handled as in COCO retrieval),
  zero-shot classification from prompt templates ("a photo of a {c}.") over class groups,
  and the ROC-AUC of the cosine on true vs mismatched captions;
- BLIP filter: ROC-AUC of ITM p(match) on true vs mismatched captions (one mismatched caption
  per image, another image's caption that none of its own captions equals);
- BLIP captioner: BLEU-1..4 and CIDEr-D of beam-search captions against the image's captions.

Results are one JSON-able dict per model; :func:`format_table` prints them.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curation.image_decode import ImageDecodeError, decode_image
from models import metrics as M
from models.data import Unit, open_sources
from models.train_config import EvalConfig

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """Unique images (encoded bytes, checked decodable) with their captions; ``caption_image[j]`` is
    caption j's image. Pictures are decoded batch by batch when a model needs them."""

    images: list[bytes]
    image_keys: list[str]
    sha256: list[str]
    captions: list[str]
    caption_image: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)

    def captions_of(self) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in self.images]
        for c, i in zip(self.captions, self.caption_image):
            out[int(i)].append(c)
        return out


def build_eval_set(data, exclude_sha256: set[str] | frozenset[str] | None = None, max_images: int | None = None) -> EvalSet:
    """Held-out images with their captions: deduplicated by sha256, decontaminated against
    ``exclude_sha256`` (the training data's images), bad rows skipped and counted."""
    import hashlib

    sources = open_sources(data)
    rows_in = 0
    skipped: Counter = Counter()
    by_sha: dict[str, dict] = {}
    order: list[str] = []
    contaminated: set[str] = set()
    for src in sources:
        for part, n in enumerate(src.parts()):
            for raw in src.read(Unit(0, part, 0, n)):
                rows_in += 1
                caption = (raw.caption or "").strip()
                if not caption:
                    skipped["empty_caption"] += 1
                    continue
                if not raw.image:
                    skipped["no_image_bytes"] += 1
                    continue
                sha = raw.sha256 or hashlib.sha256(raw.image).hexdigest()
                if exclude_sha256 and sha in exclude_sha256:
                    contaminated.add(sha)
                    skipped["in_training_data"] += 1
                    continue
                entry = by_sha.get(sha)
                if entry is None:
                    if max_images is not None and len(order) >= max_images:
                        skipped["over_max_images"] += 1
                        continue
                    entry = by_sha[sha] = {"key": raw.key, "blob": raw.image, "captions": []}
                    order.append(sha)
                if caption in entry["captions"]:
                    skipped["duplicate_caption"] += 1
                    continue
                entry["captions"].append(caption)
    images, keys, shas, captions, owner = [], [], [], [], []
    for sha in order:
        e = by_sha[sha]
        try:
            decode_image(e["blob"], draft_size=64)  # bad bytes are skipped here, not in a model's batch
        except ImageDecodeError as exc:
            skipped[exc.reason] += len(e["captions"])
            continue
        idx = len(images)
        images.append(e["blob"])
        keys.append(e["key"])
        shas.append(sha)
        for c in e["captions"]:
            captions.append(c)
            owner.append(idx)
    report = {"rows_in": rows_in, "images": len(images), "captions": len(captions),
              # rows whose picture an earlier row already had: merged as extra captions of one image
              "duplicate_image_rows_merged": sum(len(by_sha[s]["captions"]) for s in order) - len(order),
              "contaminated_images_dropped": len(contaminated), "skipped": dict(skipped)}
    return EvalSet(images, keys, shas, captions, np.asarray(owner, dtype=np.int64), report)


def training_sha256(data) -> set[str]:
    """The sha256 of every image in the training data (the decontamination set)."""
    return {s for src in open_sources(data) for s in src.sha256s()}


# --------------------------------------------------------------------------- embedders


class ClipEmbedder:
    """L2-normalised image/text embeddings of an open_clip model (``models.clip.ClipModel``)."""

    def __init__(self, clip, batch_size: int = 128):
        self.clip = clip
        self.batch_size = batch_size

    def images(self, images: list[bytes]) -> np.ndarray:
        import torch

        out = []
        for s in range(0, len(images), self.batch_size):
            px = torch.stack([self.clip.preprocess(decode_image(b)) for b in images[s:s + self.batch_size]])
            out.append(self.clip.encode_images(px).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def texts(self, texts: list[str]) -> np.ndarray:
        out = [self.clip.encode_texts(texts[s:s + self.batch_size]).cpu().numpy()
               for s in range(0, len(texts), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


class BlipItcEmbedder:
    """The BLIP filter's contrastive (ITC) features, for retrieval and zero-shot like CLIP."""

    def __init__(self, bundle, batch_size: int = 128):
        self.bundle = bundle
        self.batch_size = batch_size

    def images(self, images: list) -> np.ndarray:
        from models.blip import itc_image_embeddings

        return itc_image_embeddings(self.bundle, images, self.batch_size)

    def texts(self, texts: list[str]) -> np.ndarray:
        from models.blip import itc_text_embeddings

        return itc_text_embeddings(self.bundle, texts, self.batch_size)


# --------------------------------------------------------------------------- metrics per model kind


def mismatched_captions(es: EvalSet, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """One mismatched caption per image: a caption of another image, equal to none of its own."""
    rng = random.Random(f"mismatch:{seed}")
    own = es.captions_of()
    own_sets = [{c.lower().strip(" .") for c in caps} for caps in own]
    img_idx, caps = [], []
    n = len(es.captions)
    for i in range(len(es.images)):
        for _ in range(100):
            j = rng.randrange(n)
            c = es.captions[j]
            if int(es.caption_image[j]) != i and c.lower().strip(" .") not in own_sets[i]:
                img_idx.append(i)
                caps.append(c)
                break
    return np.asarray(img_idx, dtype=np.int64), caps


def embedding_metrics(embedder, es: EvalSet, cfg: EvalConfig, classes: dict[str, list[str]] | None) -> dict:
    """Retrieval recall@k, zero-shot accuracy per class group, and cosine ROC-AUC true vs mismatched."""
    img = embedder.images(es.images)
    txt = embedder.texts(es.captions)
    out: dict[str, Any] = {}
    sim = img @ txt.T
    out["retrieval"] = M.retrieval_recall(sim, es.caption_image, cfg.ks)
    # Per picture (by sha256), for paired comparisons of models on the same pictures.
    out["per_picture_r1"] = dict(zip(es.sha256, np.round(M.per_picture_r1(sim, es.caption_image), 6).tolist()))
    zs = {}
    caps_of = es.captions_of()
    for group, names in (classes or {}).items():
        labels = M.labels_from_captions(caps_of, names)
        prompts = [t.format(c=c) for c in names for t in cfg.templates]
        pe = embedder.texts(prompts).reshape(len(names), len(cfg.templates), -1).mean(axis=1)
        pe /= np.linalg.norm(pe, axis=1, keepdims=True) + 1e-12
        zs[group] = M.zero_shot_accuracy(img, pe, labels)
    if zs:
        out["zero_shot"] = zs
        accs = [v["accuracy"] for v in zs.values() if v["n"]]
        out["zero_shot_mean_accuracy"] = float(np.mean(accs)) if accs else float("nan")
    mi, mc = mismatched_captions(es, cfg.seed)
    true_cos = np.sum(img[es.caption_image] * txt, axis=1)
    mis_cos = np.sum(img[mi] * embedder.texts(mc), axis=1) if len(mc) else np.zeros(0)
    out["pair_auc_cosine"] = M.roc_auc(np.concatenate([true_cos, mis_cos]),
                                       np.concatenate([np.ones(len(true_cos)), np.zeros(len(mis_cos))]))
    return out


def filter_metrics(bundle, es: EvalSet, cfg: EvalConfig, classes: dict[str, list[str]] | None) -> dict:
    from models.blip import itm_scores

    mi, mc = mismatched_captions(es, cfg.seed)
    texts = list(es.captions) + mc
    index = np.concatenate([es.caption_image, mi])
    p = itm_scores(bundle, es.images, texts, index, batch_size=cfg.batch_size)
    labels = np.concatenate([np.ones(len(es.captions)), np.zeros(len(mc))])
    out = embedding_metrics(BlipItcEmbedder(bundle, cfg.batch_size), es, cfg, classes)
    out.update({
        "itm_roc_auc": M.roc_auc(p, labels),
        "itm_mean_p_true": float(np.nanmean(p[labels == 1])),
        "itm_mean_p_mismatched": float(np.nanmean(p[labels == 0])) if len(mc) else float("nan"),
        "itm_accept_rate_true": float(np.mean(p[labels == 1] >= 0.5)),
        "itm_accept_rate_mismatched": float(np.mean(p[labels == 0] >= 0.5)) if len(mc) else float("nan"),
        "n_true": int(labels.sum()), "n_mismatched": len(mc),
    })
    return out


def captioner_metrics(bundle, es: EvalSet, cfg: EvalConfig) -> dict:
    from models.blip import generate_captions

    gen = generate_captions(bundle, es.images, sample=False, num_beams=cfg.num_beams, max_length=cfg.max_length,
                            min_length=cfg.min_length, repetition_penalty=1.0, batch_size=cfg.batch_size)
    caps_of = es.captions_of()
    hyps = {str(i): (g[0] if g else "") for i, g in enumerate(gen)}
    refs = {str(i): caps_of[i] for i in range(len(caps_of))}
    b = M.bleu(hyps, refs)
    cider, _ = M.cider_d(hyps, refs)
    return {"bleu_1": b[0], "bleu_2": b[1], "bleu_3": b[2], "bleu_4": b[3], "cider": cider,
            "examples": [{"key": es.image_keys[i], "generated": hyps[str(i)], "reference": caps_of[i][0]}
                         for i in range(min(5, len(caps_of)))]}


# --------------------------------------------------------------------------- model directories


def model_kind(path: str | Path) -> str | None:
    """clip | captioner | filter for a model directory, None otherwise."""
    p = Path(path)
    if (p / "open_clip_config.json").is_file():
        return "clip"
    cfg = p / "config.json"
    if cfg.is_file():
        import json

        arch = json.loads(cfg.read_text()).get("architectures") or []
        if "BlipForConditionalGeneration" in arch:
            return "captioner"
        if "BlipForImageTextRetrieval" in arch:
            return "filter"
    return None


def find_models(path: str | Path) -> dict[str, str]:
    """Model directories at ``path`` or one level below it (a ``curate train`` output)."""
    p = Path(path)
    kind = model_kind(p)
    if kind:
        return {kind: str(p)}
    found = {}
    for sub in sorted(p.iterdir()) if p.is_dir() else []:
        k = model_kind(sub)
        if k and k not in found:
            found[k] = str(sub)
    return found


def evaluate_models(models: dict[str, str], es: EvalSet, cfg: EvalConfig, classes: dict[str, list[str]] | None = None,
                    device: str | None = None) -> dict:
    """Metrics of every model in ``models`` (kind -> directory) on ``es``.

    ``classes`` (group -> class names) are the zero-shot tasks; none, no zero-shot scores. The
    caller knows the data's vocabulary (``curate eval`` passes the sample's shapes and colours by
    default, pipelines/train.py), so this module depends on no dataset.
    """
    from models.clip import load_clip

    dev = None if (device or cfg.device) == "auto" else (device or cfg.device)
    results: dict[str, Any] = {"eval_set": es.report}
    for kind, path in models.items():
        log.info("evaluating %s %s on %d images / %d captions", kind, path, len(es.images), len(es.captions))
        if kind == "clip":
            clip = load_clip("local-dir:" + str(Path(path).resolve()), device=dev)
            results["clip"] = {"path": path, **embedding_metrics(ClipEmbedder(clip, cfg.batch_size), es, cfg, classes)}
        elif kind == "filter":
            from models.blip import load_filter

            results["filter"] = {"path": path, **filter_metrics(load_filter(path, dev), es, cfg, classes)}
        elif kind == "captioner":
            from models.blip import load_captioner

            results["captioner"] = {"path": path, **captioner_metrics(load_captioner(path, dev), es, cfg)}
    return results


def format_table(results: dict) -> str:
    """A plain-text table of the headline numbers of :func:`evaluate_models`' result."""
    rows = []
    rep = results.get("eval_set", {})
    rows.append(("eval set", f"{rep.get('images', 0)} images, {rep.get('captions', 0)} captions; "
                             f"{rep.get('contaminated_images_dropped', 0)} contaminated images dropped, "
                             f"{rep.get('duplicate_image_rows_merged', 0)} rows were more captions of an earlier picture, "
                             f"skipped {rep.get('skipped', {})}"))
    for kind in ("clip", "filter", "captioner"):
        r = results.get(kind)
        if not r:
            continue
        if "retrieval" in r:
            rt = r["retrieval"]
            ks = sorted({int(k.split("@")[1]) for k in rt if k.startswith("i2t_r@")})
            rows.append((f"{kind} image->text R@" + "/".join(map(str, ks)),
                         " / ".join(f"{rt[f'i2t_r@{k}']:.3f}" for k in ks) + f"  (chance R@1 {rt['i2t_chance_r@1']:.3f})"))
            rows.append((f"{kind} text->image R@" + "/".join(map(str, ks)),
                         " / ".join(f"{rt[f't2i_r@{k}']:.3f}" for k in ks) + f"  (chance R@1 {rt['t2i_chance_r@1']:.3f})"))
        for group, z in r.get("zero_shot", {}).items():
            rows.append((f"{kind} zero-shot {group}", f"{z['accuracy']:.3f} on {z['n']} images (chance {z['chance']:.3f})"))
        if "pair_auc_cosine" in r:
            rows.append((f"{kind} cosine ROC-AUC true vs mismatched", f"{r['pair_auc_cosine']:.3f}"))
        if "itm_roc_auc" in r:
            rows.append((f"{kind} ITM ROC-AUC true vs mismatched", f"{r['itm_roc_auc']:.3f} "
                         f"(p>=0.5: true {r['itm_accept_rate_true']:.2f}, mismatched {r['itm_accept_rate_mismatched']:.2f})"))
        if "bleu_4" in r:
            rows.append((f"{kind} BLEU-4 / CIDEr", f"{r['bleu_4']:.3f} / {r['cider']:.3f}"))
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)
