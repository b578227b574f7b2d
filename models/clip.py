"""Loading CLIP models through open_clip: pretrained tags, local checkpoints, tiny configs.

Three ways to name a model, one code path:

- ``ViT-B-32`` + ``pretrained="laion2b_s34b_b79k"``: open_clip's registry (downloads into the
  Hugging Face cache, or reads it from there offline);
- ``ViT-B-32`` + ``pretrained="/path/open_clip_model.safetensors"``: a local checkpoint;
- ``vlc-tiny-clip`` (``models/configs/*.json``): small configs this project registers with
  open_clip, trained from scratch on CPU by the thin trainer and used by the tests.

Offline with a remote tag and nothing cached, loading fails with a message that says how to pass
a local checkpoint instead of open_clip's network traceback.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from curation.errors import ModelLoadError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_registered = False


def register_project_configs() -> None:
    """Make ``models/configs/*.json`` known to open_clip (idempotent)."""
    global _registered
    if _registered:
        return
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    _registered = True


@dataclass
class ClipModel:
    """A loaded CLIP: the model in eval mode, its image preprocessing and its tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    name: str
    pretrained: str | None

    def encode_images(self, pixels):
        import torch

        with torch.inference_mode(), self.autocast():
            feats = self.model.encode_image(pixels.to(self.device))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    def encode_texts(self, texts: list[str]):
        import torch

        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode(), self.autocast():
            feats = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    def autocast(self):
        """bf16/fp16 autocast on GPU, nothing on CPU (fp32 there)."""
        import contextlib

        import torch

        if self.device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _is_local(pretrained: str | None) -> bool:
    return bool(pretrained) and (Path(pretrained).expanduser().exists() or pretrained.startswith(("/", "./", "~")))


def load_clip(name: str, pretrained: str | None = None, device: str | None = None) -> ClipModel:
    """Build ``name`` with weights from a pretrained tag, a local checkpoint, or none (random init)."""
    import open_clip

    register_project_configs()
    device = device or default_device()
    if pretrained and _is_local(pretrained) and not Path(pretrained).expanduser().exists():
        raise ModelLoadError(f"checkpoint not found: {pretrained}")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=str(Path(pretrained).expanduser()) if _is_local(pretrained) else pretrained, device=device
        )
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Model config" in str(exc):
            known = ", ".join(sorted(open_clip.list_models())[:8])
            raise ModelLoadError(f"unknown open_clip model {name!r} (e.g. {known}, ... or vlc-tiny-clip)") from None
        if pretrained and not _is_local(pretrained):
            raise ModelLoadError(_offline_hint(name, pretrained, exc)) from None
        raise
    except Exception as exc:  # network errors from the hub client come in many types
        if pretrained and not _is_local(pretrained):
            raise ModelLoadError(_offline_hint(name, pretrained, exc)) from None
        raise
    model.eval()
    return ClipModel(model, preprocess, open_clip.get_tokenizer(name), device, name, pretrained)


def _offline_hint(name: str, pretrained: str, exc: Exception) -> str:
    return (
        f"could not fetch pretrained weights {name}/{pretrained} ({type(exc).__name__}: {exc}). "
        "Offline, pass a local checkpoint instead: download open_clip_model.safetensors (or the .bin) "
        "on a connected machine and set pretrained to its path, e.g. "
        f"--set score.model={name} --set score.pretrained=/models/{name}/open_clip_model.safetensors"
    )
