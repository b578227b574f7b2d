"""curation/report.py (+ report_html, report_plots): metrics from sql/report_*.sql over a run, one safe HTML page.

The run is synthetic (tests/curation/synthetic_run.py) so the numbers are known, and it holds
every stage in the schemas of curation/schemas.py, including those not yet registered. The page
is rendered in a real headless Chromium (Debian's package, installed by `make test`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from curation.cli import main
from curation.config import PipelineConfig
from curation.report import (
    BLOCK_PREFIX, KINDS, METRIC_PREFIX, Need, ReportError, RunCatalog, build_report, json_path_for,
    load_metric_specs, parse_metric, report_json, write_report,
)
from curation.report_html import CSP, render_html
from curation.spark import java_available
from curation.sql import SQL_DIR, load_sql
from tests.support.synthetic_run import BLUE, RED, SCRIPT_CAPTION, make_run

pytestmark = [pytest.mark.spark, pytest.mark.skipif(not java_available(), reason="Spark needs Java 17")]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "run"
    truth = make_run(root)
    return root, truth


@pytest.fixture(scope="module")
def report(spark, run, tmp_path_factory):
    root, _ = run
    cfg = PipelineConfig.load(overrides={"report.samples_per_band": 3})
    out = tmp_path_factory.mktemp("html") / "report.html"
    rep = write_report(str(root), str(out), cfg, spark=spark)
    return rep, out


# --------------------------------------------------------------------------- metric files
def test_every_metric_file_parses_and_binds():
    specs = load_metric_specs()
    names = {s.name for s in specs}
    assert {"clip_score", "itm_score", "text_length", "images_per_document", "language", "image_size",
            "image_aspect_ratio", "duplicate_cluster_sizes", "samples_clip_score", "samples_itm_score"} <= names
    for spec in specs:
        assert spec.kind in KINDS and spec.needs and spec.title
        # every placeholder is one of the needs' aliases or k (load_sql raises on an unbound one)
        load_sql(spec.sql_name, k=3, **{n.alias: f"view_{n.alias}" for n in spec.needs})
    blocks = {p.stem for p in SQL_DIR.glob(f"{BLOCK_PREFIX}*.sql")}
    assert {"report__histogram", "report__summary"} <= blocks
    assert not {METRIC_PREFIX + s.name for s in specs} & blocks  # building blocks are not metrics


def test_header_syntax_and_errors():
    spec = parse_metric("x", "-- title: T\n-- kind: numeric\n-- needs: src=images(width, height) | src=pairs(width)\n"
                            "-- pick: first\n-- about it\nSELECT 1")
    assert spec.needs == [Need("src", (("images", ("width", "height")), ("pairs", ("width",))))]
    assert (spec.title, spec.pick, spec.description) == ("T", "first", "about it")
    with pytest.raises(ReportError, match="kind"):
        parse_metric("x", "-- kind: pie\n-- needs: pairs\nSELECT 1")
    with pytest.raises(ReportError, match="needs"):
        parse_metric("x", "-- kind: numeric\nSELECT 1")


def test_catalog_follows_registry_then_finish_time_and_ignores_partial_stages(run):
    root, _ = run
    cat = RunCatalog.scan(str(root))
    names = [s.name for s in cat.stages]
    assert names[:2] == ["extract", "dedup"]
    assert [n for n in names if n in ("images", "score", "capfilt")] == ["images", "score", "capfilt"]
    train = next(s for s in cat.stages if s.name == "train")
    assert not train.complete
    assert not any(t.stage == "train" for t in cat.tables)
    need = Need("pairs", (("pairs", ("clip_score",)),))
    assert [t.label for t in cat.resolve(need, "first")] == ["score/pairs"]
    assert [t.label for t in cat.resolve(need, "last")] == ["capfilt/pairs"]
    rejects = cat.resolve(Need("rejects", (("rejects", ("reason",)),)), "last")
    assert {t.stage for t in rejects} == {"extract", "dedup", "images", "score", "capfilt"}


# --------------------------------------------------------------------------- the numbers
def test_funnel_comes_from_every_stats_json(report, run):
    rep, _ = report
    rows = {(r["stage"], r["table"]): r for r in rep["funnel"]}
    assert rows[("extract", None)]["rows_in"] == 12 and rows[("extract", None)]["rejected"] == {"http_status": 1, "not_html": 1}
    assert rows[("dedup", "pairs")]["rejected"]["doc_removed"] > 0
    assert rows[("capfilt", "captions")]["rejected"]["itm_below_threshold"] >= 0
    assert rows[("train", None)]["complete"] is False
    order = [r["stage"] for r in rep["funnel"] if r["table"] is None]
    assert order.index("extract") < order.index("dedup") < order.index("images") < order.index("score") < order.index("capfilt")


def test_numeric_metrics_match_the_data(report, run):
    rep, truth = report[0], run[1]
    m = rep["metrics"]
    clip = m["clip_score"]
    assert clip["status"] == "ok" and clip["sources"] == {"pairs": ["score/pairs"]}
    scores = np.array([p["clip_score"] for p in truth["scored"]])
    assert clip["summary"]["all"]["n"] == len(scores)
    assert clip["summary"]["all"]["mean"] == pytest.approx(scores.mean(), rel=1e-6)
    assert sum(sum(c) for c in clip["histogram"]["counts"].values()) == len(scores)
    assert clip["histogram"]["edges"][0] == pytest.approx(scores.min(), rel=1e-5)
    assert clip["histogram"]["edges"][-1] == pytest.approx(scores.max(), rel=1e-5)

    itm = m["itm_score"]
    assert itm["sources"] == {"pairs": ["capfilt/pairs"]}
    assert set(itm["summary"]) == {"all", "web", "synthetic"}
    assert itm["summary"]["synthetic"]["n"] == sum(p["caption_source"] == "synthetic" for p in truth["bootstrapped"])

    # text length on a log scale, from the latest documents (the image stage's interleaved docs)
    tl = m["text_length"]
    assert tl["sources"] == {"documents": ["images/documents"]} and tl["scale"] == "log"
    lengths = [sum(len(t) for t in d["texts"] if t) for d in truth["interleaved"]]
    assert tl["summary"]["all"]["max"] == max(lengths) and tl["summary"]["all"]["min"] == min(lengths)
    assert tl["histogram"]["edges"][-1] == pytest.approx(max(lengths), rel=1e-6)

    ipd = m["images_per_document"]["integer_counts"]["documents"]
    expect = {}
    for d in truth["interleaved"]:
        k = sum(1 for u in d["images"] if u)
        expect[k] = expect.get(k, 0) + 1
    assert dict(ipd) == expect

    size = m["image_size"]
    assert size["sources"] == {"src": ["images/images"]}
    assert size["summary"]["width"]["max"] == max(r["width"] for r in truth["images"])
    aspect = m["image_aspect_ratio"]["summary"]["all"]
    assert aspect["min"] == pytest.approx(min(r["width"] / r["height"] for r in truth["images"]))


def test_categories_clusters_and_reject_table(report, run):
    rep, truth = report[0], run[1]
    m = rep["metrics"]
    langs = dict(m["language"]["counts"])
    assert langs == {"en": sum(d["lang"] == "en" for d in truth["interleaved"]),
                     "fr": sum(d["lang"] == "fr" for d in truth["interleaved"])}
    assert dict(m["caption_source"]["counts"]).keys() == {"web", "synthetic"}
    clusters = dict(m["duplicate_cluster_sizes"]["integer_counts"]["dedup documents"])
    assert clusters == {3: 1, 2: 1}
    table = m["reject_reasons"]
    rows = {(r[0], r[1], r[2]): r[3] for r in table["rows"]}
    assert rows[("dedup", "documents", "near_duplicate")] == 2
    assert rows[("score", "pairs", "clip_score_below_threshold")] == 1


def test_samples_by_band(report, run):
    rep, truth = report[0], run[1]
    s = rep["metrics"]["samples_clip_score"]["samples"]
    bands = {b: [x for x in s if x["band"] == b] for b in ("best", "median", "worst")}
    assert all(len(v) == 3 for v in bands.values())
    assert bands["best"][0]["caption"] == SCRIPT_CAPTION
    best_scores = sorted((p["clip_score"] for p in truth["scored"]), reverse=True)[:3]
    assert [x["score"] for x in bands["best"]] == pytest.approx(best_scores)
    assert min(x["score"] for x in bands["best"]) > max(x["score"] for x in bands["worst"])
    med = float(np.median([p["clip_score"] for p in truth["scored"]]))
    assert all(abs(x["score"] - med) < 0.1 for x in bands["median"])
    assert rep["metrics"]["samples_itm_score"]["status"] == "ok"


def test_json_beside_html_is_strict_and_has_no_bytes(report):
    _, out = report
    text = Path(json_path_for(str(out))).read_text()
    data = json.loads(text)  # strict JSON: allow_nan=False when written
    assert "metrics" in data and "funnel" in data
    assert all("image" not in x for x in data["metrics"]["samples_clip_score"]["samples"])
    assert "NaN" not in text


def test_metrics_skip_when_their_table_is_absent(spark, tmp_path):
    root = tmp_path / "run"
    make_run(root)
    for stage in ("images", "score", "capfilt"):
        shutil.rmtree(root / stage)
    rep = build_report(spark, str(root), PipelineConfig())
    m = rep["metrics"]
    assert m["clip_score"]["status"] == "skipped" and "pairs(clip_score)" in m["clip_score"]["reason"]
    assert m["samples_itm_score"]["status"] == "skipped"
    assert m["text_length"]["status"] == "ok" and m["text_length"]["sources"] == {"documents": ["dedup/documents"]}
    assert m["image_size"]["status"] == "skipped"
    html = render_html(rep, PipelineConfig().report)
    assert "no complete stage output has pairs(clip_score)" in html
    assert "has no scored pairs" in html


def test_cli_report_and_clear_error(tmp_path, capsys):
    assert main(["report", "--input", str(tmp_path / "nothing")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", "--input", str(tmp_path / "empty")]) == 2
    assert "no complete stage" in capsys.readouterr().err


# --------------------------------------------------------------------------- the page
def test_html_escapes_crawl_text_and_forbids_scripts(report):
    rep, out = report
    page = out.read_text()
    assert "<script" not in page.lower()
    assert "onerror=" not in page.replace("onerror=&quot;", "")  # the attribute only appears escaped
    assert "&lt;script&gt;document.title=" in page
    assert "&lt;img src=x onerror=&quot;document.title=" in page
    assert f'content="{CSP}"' in page and "default-src 'none'" in CSP
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)  # self-contained
    assert "http://" not in " ".join(srcs)
    assert "image does not decode" in page  # the planted undecodable image
    assert json.loads(report_json({"x": float("nan")}))["x"] is None


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        msg = "chromium not installed: `make test` installs Debian's package (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _chrome(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def _near(px: np.ndarray, color, tol: int = 40) -> int:
    return int((np.abs(px[..., :3].astype(int) - np.array(color)).max(axis=-1) <= tol).sum())


def test_report_renders_in_headless_chromium_with_no_script_run(report, tmp_path):
    from PIL import Image

    exe = _chromium()
    rep, out = report
    url = out.resolve().as_uri()

    # Control: the planted caption is a working attack when not escaped and no policy stops it.
    control = tmp_path / "control.html"
    control.write_text(f"<html><head><title>control</title></head><body><p>{SCRIPT_CAPTION}</p></body></html>")
    proc = _chrome(exe, tmp_path, "--dump-dom", control.resolve().as_uri())
    assert "PWNED" in proc.stdout, proc.stderr[-2000:]

    proc = _chrome(exe, tmp_path, "--dump-dom", "--virtual-time-budget=2000", url)
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, proc.stderr[-2000:]
    assert "<title>Quality report: run</title>" in dom
    assert "PWNED" not in re.sub(r"&lt;script&gt;.*?&lt;/script&gt;|&lt;img src=x onerror=.*?&gt;", "", dom)
    assert "data-pwned" not in dom.split("<body")[0] and 'id="pwned"' not in dom
    assert "&lt;script&gt;document.title='PWNED'" in dom  # shown as text
    ok = [m for m in rep["metrics"].values() if m["status"] == "ok" and m["kind"] in ("numeric", "categorical")]
    # One plot per distribution with rows, plus the funnel; a metric whose column is all null here
    # (the safety heads' scores on a run without heads) says "no rows" instead.
    plotted = [m for m in ok if not m.get("empty")]
    assert len(ok) > len(plotted) and "no rows" in dom
    plots = re.findall(r'<img src="data:image/png;base64,', dom)
    assert len(plots) == len(plotted) + 1
    thumbs = re.findall(r'<figure class="sample"[^>]*><img src="data:image/jpeg;base64,', dom)
    samples = rep["metrics"]["samples_clip_score"]["samples"] + rep["metrics"]["samples_itm_score"]["samples"]
    assert len(thumbs) == sum(1 for s in samples if s["image"][:4] == b"\x89PNG")

    shot = tmp_path / "report.png"
    proc = _chrome(exe, tmp_path, f"--screenshot={shot}", "--window-size=1280,9000", "--virtual-time-budget=2000", url)
    assert shot.exists(), proc.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB"))
    assert px.shape[:2] == (9000, 1280)
    assert _near(px, RED) > 3 * 100 * 70  # several red sample thumbnails drawn
    assert _near(px, BLUE) > 100 * 70  # and blue ones
    assert _near(px, (31, 119, 180), tol=12) > 20_000  # matplotlib plot bars drawn
    assert _near(px, (42, 157, 143), tol=12) > 2_000  # the funnel's "kept" bars
    assert _near(px, (38, 70, 83), tol=6) > 1280 * 40  # the header band: the stylesheet applied


def test_a_new_metric_is_one_sql_file(spark, run, tmp_path, monkeypatch):
    import curation.report as report_mod
    import curation.sql as sql_mod

    for p in SQL_DIR.glob("report_*.sql"):
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "report_caption_chars.sql").write_text(
        "-- title: Caption characters\n-- kind: numeric\n-- needs: pairs(caption, image_key)\n"
        "SELECT length(caption) AS value FROM {pairs}\n")
    monkeypatch.setattr(report_mod, "SQL_DIR", tmp_path)
    monkeypatch.setattr(sql_mod, "SQL_DIR", tmp_path)
    sql_mod._read.cache_clear()
    try:
        spec = next(s for s in load_metric_specs() if s.name == "caption_chars")
        m = report_mod.run_metric(spark, spec, RunCatalog.scan(str(run[0])), PipelineConfig().report)
    finally:
        sql_mod._read.cache_clear()
    assert m["status"] == "ok" and m["sources"] == {"pairs": ["capfilt/pairs"]}
    assert m["summary"]["all"]["n"] == len(run[1]["bootstrapped"])
