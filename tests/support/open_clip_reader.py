"""Read WebDataset pair tars the way a trainer would: through open_clip's own loader."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest


def open_clip_sample_count(wds_dir: Path, n_shards: int) -> int:
    """Pictures open_clip's ``get_wds_dataset`` yields from ``wds_dir/{00000..n-1}.tar`` (skips
    the test when open_clip's training package is absent)."""
    data = pytest.importorskip("open_clip_train.data")
    import torch
    import torchvision.transforms as T

    args = argparse.Namespace(val_data=f"{wds_dir}/{{00000..{n_shards - 1:05d}}}.tar", val_num_samples=None,
                              batch_size=4, workers=0, world_size=1, seed=0, dataset_resampled=False,
                              train_data_upsampling_factors=None)
    loaded = data.get_wds_dataset(args, T.Compose([T.Resize((16, 16)), T.ToTensor()]), is_train=False,
                                  tokenizer=lambda texts: torch.zeros(len(texts), 4, dtype=torch.long))
    return sum(len(images) for images, _ in loaded.dataloader)
