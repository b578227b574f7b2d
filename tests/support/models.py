"""Tiny models the tests build offline (no weights can be downloaded here)."""
from __future__ import annotations

from pathlib import Path


def tiny_clip_checkpoint(directory: Path, seed: int) -> str:
    """A seeded random ``vlc-tiny-clip`` saved as a local checkpoint (what a stage and its test both load)."""
    import torch

    from models.clip import load_clip

    torch.manual_seed(seed)
    clip = load_clip("vlc-tiny-clip", None, "cpu")
    path = Path(directory) / "tiny.pt"
    torch.save(clip.model.state_dict(), path)
    return str(path)
