"""What the sample's planted ground truth says about a caption: is a web caption noise, does a
synthetic caption describe its picture.

The sample generator (curation/sample/) records every ``<img>`` occurrence with the kind of its alt
text and figcaption (``ground_truth/alt_texts.jsonl``) and every picture's scene
(``ground_truth/images.jsonl``). CapFilt's stats and ``make experiment`` judge captions with it:

- a web caption is matched to its occurrence by (page URL, image URL) and judged by the kind of
  the text the extractor took (``caption_source``): ``alt`` -> ``alt_kind``, ``figcaption`` ->
  ``figcaption_kind``. Noise: ``wrong`` and ``boilerplate`` alt texts, ``credit`` and ``generic``
  figcaptions ("Photo: ...", "Figure 3."). Correct: ``correct`` of either. Anything else (a title,
  an occurrence the ground truth does not list) is ``unknown`` and left out of precision/recall.
- a synthetic caption is correct when it names the picture's true colour and true shape (singular
  or plural, as whole words) and no other colour or shape of the sample's vocabulary; it is not
  asked to get the count or the background right.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

NOISY_KINDS = {"alt": {"wrong", "boilerplate"}, "figcaption": {"credit", "generic"}}
CLEAN_KINDS = {"alt": {"correct"}, "figcaption": {"correct"}}


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str


class SampleTruth:
    """Ground truth of one generated sample directory (``<run>/_sample``)."""

    def __init__(self, sample_dir: str | Path):
        root = Path(sample_dir) / "ground_truth"
        self.occurrences: dict[tuple[str, str], dict] = {}
        with (root / "alt_texts.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    o = json.loads(line)
                    self.occurrences.setdefault((o["page_url"], o["image_url"]), o)
        self.scenes: dict[str, Scene] = {}
        self.base_url: dict[str, str] = {}  # a srcset variant's URL -> the picture it was resized from
        with (root / "images.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    if r.get("shape") and r.get("colour"):
                        self.scenes[r["url"]] = Scene(r["shape"], r["colour"])
                    self.base_url[r["url"]] = r.get("variant_of") or r["url"]
        from curation.sample.text import COLOURS, SHAPE_PLURALS, SHAPES

        self._shape_words = {s: {s, SHAPE_PLURALS[s]} for s in SHAPES}
        self._colours = set(COLOURS)

    @classmethod
    def find(cls, run_root: str | Path) -> "SampleTruth | None":
        """The truth of a sample run directory, or None when the run has none (not a sample run)."""
        d = Path(str(run_root)) / "_sample"
        if (d / "ground_truth" / "alt_texts.jsonl").is_file() and (d / "ground_truth" / "images.jsonl").is_file():
            return cls(d)
        return None

    def web_label(self, page_url: str | None, image_url: str | None, caption_source: str | None) -> str:
        """``noisy``, ``clean`` or ``unknown`` for a web caption (see the module docstring)."""
        o = self.occurrences.get((page_url, image_url))
        if o is None or caption_source not in NOISY_KINDS:
            return "unknown"
        kind = o.get("alt_kind") if caption_source == "alt" else o.get("figcaption_kind")
        if kind in NOISY_KINDS[caption_source]:
            return "noisy"
        if kind in CLEAN_KINDS[caption_source]:
            return "clean"
        return "unknown"

    def web_kind(self, page_url: str | None, image_url: str | None, caption_source: str | None) -> str | None:
        o = self.occurrences.get((page_url, image_url))
        if o is None:
            return None
        return o.get("alt_kind") if caption_source == "alt" else o.get("figcaption_kind") if caption_source == "figcaption" else None

    def scene_of(self, image_url: str | None) -> Scene | None:
        return self.scenes.get(image_url) if image_url else None

    def synthetic_correct(self, caption: str, image_url: str | None) -> bool | None:
        """Whether ``caption`` names the picture's colour and shape and no other; None when the
        picture has no scene (furniture, unknown URL)."""
        scene = self.scene_of(image_url)
        if scene is None:
            return None
        words = set(re.findall(r"[a-z]+", (caption or "").lower()))
        shapes = {s for s, forms in self._shape_words.items() if words & forms}
        colours = words & self._colours
        return shapes == {scene.shape} and colours == {scene.colour}


def filter_quality(labels: list[str], removed: list[bool]) -> dict:
    """Precision and recall of "removed" against "noisy" over the web captions with a known label."""
    known = [(lab == "noisy", rem) for lab, rem in zip(labels, removed) if lab in ("noisy", "clean")]
    tp = sum(1 for noisy, rem in known if noisy and rem)
    fp = sum(1 for noisy, rem in known if not noisy and rem)
    fn = sum(1 for noisy, rem in known if noisy and not rem)
    return {
        "web_captions_judged": len(known),
        "noisy": tp + fn,
        "removed": tp + fp,
        "removed_noisy": tp,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "clean_removed_share": round(fp / max(1, sum(1 for noisy, _ in known if not noisy)), 4),
        "unknown_label": sum(1 for lab in labels if lab not in ("noisy", "clean")),
    }
