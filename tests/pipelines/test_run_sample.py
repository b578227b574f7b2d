"""`curate run` on the embedded sample: the planted ground truth comes out where it should."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.stage import MARKER
from tests.support.net import free_port

pytestmark = pytest.mark.spark

# Which extract outcome each planted page family must get.
EXPECTED_REASONS = {
    "http_status": {"http_status"},
    "not_html": {"not_html"},
    "empty": {"empty_payload", "no_content"},
    "language": {"doc_too_few_words", "doc_lang_not_allowed", "doc_lang_score_too_low", "doc_stopword_ratio"},
    "spam": {"doc_too_few_words", "doc_word_repetition_ratio", "doc_char_repetition_ratio", "doc_lang_score_too_low",
             "doc_stopword_ratio"},
    "too_short": {"doc_too_few_words"},
}


@pytest.fixture(scope="module")
def sample_run(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "sample"
    # bootstrap.max_steps: the sample's self-trained models (bootstrap stage) for a few steps only.
    # A free image port (it is part of every sample image URL): another run on this machine may hold the default.
    args = ["run", "--out", str(out), "--master", "local[2]", "--set", "sample_pages=80", "--set", "bootstrap.max_steps=8",
            "--set", f"sample_image_port={free_port()}"]
    assert main(args) == 0
    return out, args


def test_every_planted_page_gets_its_expected_outcome(sample_run):
    out, _ = sample_run
    truth = [json.loads(line) for line in (out / "_sample" / "ground_truth" / "pages.jsonl").open()]
    docs = pq.read_table(out / "extract" / "documents").to_pylist()
    rejects = {r["row_id"]: r["reason"] for r in pq.read_table(out / "extract" / "rejects").to_pylist()}
    kept = set()
    for d in docs:
        gm = json.loads(d["general_metadata"])
        kept.add(f"{gm['warc_filename']}@{gm['warc_record_offset']}")
    outcomes = Counter()
    for page in truth:
        row_id = f"sample/{Path(page['warc_file']).name}@{page['offset']}"
        got = "document" if row_id in kept else rejects.get(row_id, "MISSING")
        assert got != "MISSING", f"{page['url']} was lost"
        if page["expect"] == "document":
            assert got == "document", (page["url"], got)
        elif page["expect"] in EXPECTED_REASONS:
            assert got in EXPECTED_REASONS[page["expect"]], (page["url"], page["expect"], got)
        outcomes[(page["expect"], got)] += 1
    stats = json.loads((out / "extract" / "stats.json").read_text())
    assert stats["rows_in"] == len(truth)
    assert stats["outputs"]["pairs"] > stats["outputs"]["documents"]


def test_pairs_keep_correct_alt_texts_and_skip_empty_ones(sample_run):
    out, _ = sample_run
    truth = [json.loads(line) for line in (out / "_sample" / "ground_truth" / "alt_texts.jsonl").open()]
    pairs = pq.read_table(out / "extract" / "pairs").to_pylist()
    by_key = {(p["page_url"], p["url"]): p for p in pairs}
    correct = [t for t in truth if t.get("alt_kind") == "correct" and t.get("role") == "content"]
    found = [t for t in correct if (t["page_url"], t["image_url"]) in by_key]
    assert len(found) >= 0.6 * len(correct)  # pages rejected by filters carry no pairs
    for t in found:
        assert by_key[(t["page_url"], t["image_url"])]["caption"] == t["alt"]
    empty = [t for t in truth if t.get("alt_kind") in ("empty", "none")]
    assert all(
        by_key.get((t["page_url"], t["image_url"]), {}).get("caption_source") != "alt" for t in empty
    )


def test_rerun_skips_and_status_reports_complete(sample_run, capsys):
    out, args = sample_run
    markers = {s: (out / s / MARKER).read_text() for s in ("extract", "dedup")}
    assert main(args) == 0
    assert {s: (out / s / MARKER).read_text() for s in markers} == markers  # neither rerun
    main(["status", "--out", str(out)])
    assert "complete" in capsys.readouterr().out
    # --force dedup redoes dedup only; extract stays as it was.
    assert main(args + ["--force", "dedup"]) == 0
    assert (out / "extract" / MARKER).read_text() == markers["extract"]
    assert (out / "dedup" / MARKER).read_text() != markers["dedup"]
    stats = json.loads((out / "dedup" / "stats.json").read_text())
    assert stats["rows_in"] == stats["rows_out"] + sum(stats["rejected"].values())
    assert stats["rows_in"] == json.loads((out / "extract" / "stats.json").read_text())["rows_out"]


def test_dedup_subcommand_on_a_run_directory_gives_the_same_rows(sample_run, tmp_path):
    """`curate dedup --input RUN --out OTHER` reads RUN/extract and writes OTHER/dedup, row for row as `curate run`."""
    out, _ = sample_run
    assert main(["dedup", "--input", str(out), "--out", str(tmp_path), "--master", "local[2]"]) == 0
    for name, key in (("documents", "doc_id"), ("pairs", "key"), ("rejects", "row_id")):
        a = sorted(pq.read_table(out / "dedup" / name).to_pylist(), key=lambda r: (r.get("table", ""), r[key]))
        b = sorted(pq.read_table(tmp_path / "dedup" / name).to_pylist(), key=lambda r: (r.get("table", ""), r[key]))
        assert a == b, name
