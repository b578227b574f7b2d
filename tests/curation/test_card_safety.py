"""The dataset card's Safety section says whether the heads applied (and so whether null scores mean 'no score')."""
from __future__ import annotations

import json

from curation.card import build_card
from curation.config import PipelineConfig
from tests.support.synthetic_run import make_run


def test_card_says_the_heads_did_not_apply_and_counts_pii(tmp_path):
    root = tmp_path / "run"
    make_run(root)
    for stage, counters in (("score", {"safety_heads": "nsfw: no released head for vlc-tiny-clip (/m/clip)"}),
                            ("extract", {"pii_email": 3, "pii_ip": 1})):
        path = root / stage / "stats.json"
        stats = json.loads(path.read_text())
        stats.setdefault("counters", {}).update(counters)
        path.write_text(json.dumps(stats))
    card = build_card(str(root), PipelineConfig.load())
    safety = card.split("## Safety", 1)[1].split("\n## ", 1)[0]
    assert "no released head for vlc-tiny-clip" in safety and "column null" in safety
    assert "email 3, ip 1" in safety
