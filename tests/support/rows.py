"""Row comparison across runs: values normalised so two runs of one stage compare by content."""
from __future__ import annotations

import hashlib
import math


def norm_value(v):
    """Bytes by digest, floats to 1e-4 (different processes may sum in another order), recursively."""
    if isinstance(v, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(v).hexdigest()
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 4)
    if isinstance(v, dict):
        return {k: norm_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [norm_value(x) for x in v]
    return v
