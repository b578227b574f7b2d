"""``make experiment``'s pieces that decide the table: the held-out split, the noise rules, the verdict.

The experiment itself (curate the sample, train 21 CLIPs) takes tens of minutes and runs as
``make experiment``; these tests check what its numbers mean on small inputs built here.
"""
from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines.experiment import ROWS, compare, held_out, markdown, noise_rate, verdict
from pipelines.sample_truth import SampleTruth, filter_quality


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    from curation.sample import generate_sample

    d = tmp_path_factory.mktemp("exp") / "s"
    generate_sample(str(d), n_pages=40, seed=0)
    return SampleTruth(d)


def _occ(truth: SampleTruth, kind: str, source: str = "alt") -> tuple[str, str, dict]:
    for (page, url), o in truth.occurrences.items():
        if o["role"] == "content" and (o["alt_kind"] if source == "alt" else o["figcaption_kind"]) == kind:
            return page, url, o
    raise LookupError(kind)


def test_web_labels_follow_the_planted_kind_of_the_extracted_text(truth):
    for kind, label in (("correct", "clean"), ("wrong", "noisy"), ("boilerplate", "noisy")):
        page, url, _ = _occ(truth, kind)
        assert truth.web_label(page, url, "alt") == label
    page, url, _ = _occ(truth, "credit", "figcaption")
    assert truth.web_label(page, url, "figcaption") == "noisy"
    assert truth.web_label(page, url, "title") == "unknown" and truth.web_label("x", "y", "alt") == "unknown"


def test_synthetic_captions_must_name_the_true_colour_and_shape_and_no_other(truth):
    page, url, o = _occ(truth, "correct")
    scene = truth.scene_of(url)
    plural = {"circle": "circles", "cross": "crosses"}.get(scene.shape, scene.shape + "s")
    assert truth.synthetic_correct(f"two {scene.colour} {plural} on grey", url)
    assert truth.synthetic_correct(f"a {scene.colour} {scene.shape}", url)
    other = "red" if scene.colour != "red" else "blue"
    assert not truth.synthetic_correct(f"a {scene.colour} and {other} {scene.shape}", url)
    assert not truth.synthetic_correct(f"a {scene.colour} thing", url)
    assert truth.synthetic_correct("anything", "http://not-a-sample-image/") is None


def test_filter_quality_counts():
    q = filter_quality(["noisy", "noisy", "clean", "clean", "unknown"], [True, False, True, False, True])
    assert (q["precision"], q["recall"], q["removed"], q["noisy"], q["unknown_label"]) == (0.5, 0.5, 2, 2, 1)
    assert filter_quality(["clean"], [False])["precision"] is None


def test_noise_rate_counts_web_and_synthetic_captions(truth):
    rows = []
    for kind in ("correct", "wrong", "boilerplate"):
        page, url, o = _occ(truth, kind)
        rows.append({"page_url": page, "url": url, "caption": o["alt"], "caption_source": "alt"})
    page, url, _ = _occ(truth, "correct")
    s = truth.scene_of(url)
    rows.append({"page_url": page, "url": url, "caption": f"one {s.colour} {s.shape}", "caption_source": "synthetic"})
    rows.append({"page_url": page, "url": url, "caption": "a picture of nothing", "caption_source": "synthetic"})
    n = noise_rate(pa.Table.from_pylist(rows), truth)
    assert (n["web_noisy"], n["web_judged"], n["synthetic_noisy"], n["synthetic_judged"]) == (2, 3, 1, 2)
    assert n["rate"] == pytest.approx(3 / 5)


def test_held_out_split_is_a_stable_fifth():
    urls = [f"http://127.0.0.1:8417/content/{i:05d}.jpg" for i in range(2000)]
    share = sum(map(held_out, urls)) / len(urls)
    assert 0.17 < share < 0.23 and [held_out(u) for u in urls[:50]] == [held_out(u) for u in urls[:50]]


def _row(name, label, r1, spread=0.01):
    stat = {"mean": r1, "std": spread, "values": [r1]}
    return {"dataset": name, "label": label, "pairs": 100, "eval_images": 50,
            "noise": {"rate": 0.2, "web_noisy": 2, "web_judged": 10, "synthetic_noisy": 0, "synthetic_judged": 0},
            "i2t_r@1": stat, "i2t_r@5": stat, "t2i_r@1": stat, "t2i_r@5": stat, "zero_shot": stat}


def _results(r1: dict[str, list[list[float]]]) -> dict[str, list[dict]]:
    """Per row, per seed, per picture R@1 as evaluate_models stores it."""
    return {name: [{"clip": {"per_picture_r1": {f"sha{j}": v for j, v in enumerate(seed)}}} for seed in seeds]
            for name, seeds in r1.items()}


def test_table_has_a_row_per_dataset_and_an_honest_verdict():
    rows = [_row(n, label, 0.10) for n, label in ROWS]
    rows[[n for n, _ in ROWS].index("capfilt")] = _row("capfilt", "captioner + filter (CapFilt)", 0.20)
    base = [[0.0] * 30 + [1.0] * 10] * 3  # 10 of 40 pictures found, every seed
    better = [[0.0] * 15 + [1.0] * 25] * 3
    res = _results({n: base for n, _ in ROWS} | {"capfilt": better})
    comparisons = compare(res)
    assert {(c["a"], c["b"]) for c in comparisons} >= {("capfilt", "raw"), ("capfilt", "clip30"), ("basic", "raw")}
    md = markdown(rows, comparisons, {"pages": 300, "model": "m", "steps": 10, "batch_size": 8, "seeds": [0, 1, 2],
                                      "chance_i2t": 0.02, "chance_t2i": 0.02})
    assert md.count("\n| ") == len(ROWS) + 1 + len(comparisons) + 1 and "20.0 ± 1.0" in md
    assert "captioner + filter (CapFilt) beats raw pairs: +37.5 points" in md
    assert "beats CLIP score (top 30%)" in md
    worse = _results({n: base for n, _ in ROWS} | {"capfilt": [[0.0] * 40] * 3})
    assert "trails raw pairs" in verdict(compare(worse))
    noisy = _results({n: base for n, _ in ROWS} | {"capfilt": [[0.0] * 28 + [1.0] * 12, [0.0] * 32 + [1.0] * 8,
                                                                [0.0] * 30 + [1.0] * 10]})
    assert "vs raw pairs" in verdict(compare(noisy)) and "not separated" in verdict(compare(noisy))


def test_verdict_names_the_best_new_recipe_against_raw_pairs():
    base = [[0.0] * 30 + [1.0] * 10] * 3
    res = _results({n: base for n, _ in ROWS} | {"image_based": [[0.0] * 20 + [1.0] * 20] * 3,
                                                   "metaclip": [[0.0] * 25 + [1.0] * 15] * 3})
    v = verdict(compare(res))
    assert "Best new recipe: image-based (DataComp) beats raw pairs: +25.0 points" in v


def test_coverage_counts_pictures_once_and_their_true_classes(truth):
    from pipelines.experiment import coverage

    variant = next(u for u, b in truth.base_url.items() if b != u and truth.scene_of(b))
    base = truth.base_url[variant]
    other = next(u for u, s in truth.scenes.items() if s != truth.scene_of(base) and truth.base_url[u] == u)
    t = pa.table({"url": [variant, base, other]})
    assert coverage(t, truth) == {"pictures": 2, "classes": 2}
    assert coverage(pa.table({"url": pa.array([], pa.string())}), truth) == {"pictures": 0, "classes": 0}


def test_every_recipe_row_is_a_valid_score_config():
    from curation.config import PipelineConfig
    from pipelines.experiment import SCORE_RECIPES

    for name, overrides in SCORE_RECIPES.items():
        cfg = PipelineConfig.load(overrides={"snapshot": "sample", **overrides})
        assert cfg.score.recipe == overrides["score.recipe"], name


def test_a_busy_port_is_a_clear_error_not_other_data():
    import socket

    from curation.errors import ConfigError
    from pipelines.experiment import _check_port_free

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with pytest.raises(ConfigError, match="--port"):
            _check_port_free(s.getsockname()[1])


def test_random_order_is_a_reproducible_draw_independent_of_table_order():
    from pipelines.experiment import random_order

    keys = [f"k{i:03d}" for i in range(200)]
    first = [keys[i] for i in random_order(keys)[:60]]
    shuffled = keys[::-1]
    assert [shuffled[i] for i in random_order(shuffled)[:60]] == first  # same draw whatever the row order
    assert first != keys[:60] and len(set(first)) == 60
