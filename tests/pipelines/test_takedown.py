"""``curate takedown`` on a finished run: one page URL and one image SHA-256 leave every output; the rest stays."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

from curation.cli import main
from pipelines.takedown import TakedownLists, takedown
from tests.support.synthetic_run import make_run

# One threaded Dask worker: the per-file tasks run through run_shards as in production, without
# starting worker processes on a shared 2-core machine.
LOCAL_DASK = ["--set", "dask.processes=false", "--set", "dask.n_workers=1"]


def _tars_like_the_writer(root: Path, ipairs: list[dict]) -> None:
    """The synthetic run's tars with curation/wds_writer.py's .json fields (url, page_url, sha256)."""
    by_key = {p["key"]: p for p in ipairs}
    for f in sorted((root / "images" / "webdataset").glob("*.tar")):
        with tarfile.open(f) as tf:
            members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
        with tarfile.open(f, "w") as tf:
            for m, data in members:
                if m.name.endswith(".json"):
                    p = by_key[m.name[:-5]]
                    data = json.dumps({k: p[k] for k in ("key", "url", "page_url", "doc_id", "sha256")}).encode()
                    m.size = len(data)
                tf.addfile(m, io.BytesIO(data))


def _files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*") if f.is_file()}


def test_takedown_removes_one_page_and_one_image_from_every_output(tmp_path):
    root = tmp_path / "run"
    truth = make_run(root)
    _tars_like_the_writer(root, truth["image_pairs"])
    page = "http://site.test/5"
    target = next(p for p in truth["image_pairs"] if p["doc_id"] == "d0")
    (tmp_path / "urls.txt").write_text(page + "\n")
    (tmp_path / "sha.txt").write_text(target["sha256"] + "\n")
    before = _files(root)

    assert main(["takedown", "--run", str(root), "--urls", str(tmp_path / "urls.txt"),
                 "--sha256", str(tmp_path / "sha.txt"), *LOCAL_DASK]) == 0
    after = _files(root)

    gone = {page, target["url"]}

    def hit(row: dict) -> bool:
        return bool({row.get("url"), row.get("page_url"), row.get("row_id")} & gone) or row.get("sha256") == target["sha256"] \
            or any(u in (row.get("detail") or "") for u in gone)

    changed = set()
    for rel in before:
        if not rel.endswith(".parquet") or rel.startswith(("train/", "takedowns/")) or "/_" in rel:
            continue
        old = pq.read_table(io.BytesIO(before[rel])).to_pylist()
        new = pq.read_table(root / rel).to_pylist()
        for row in new:  # nothing names the page or the image any more
            assert not hit(row), (rel, row)
            assert target["url"] not in (row.get("images") or []), rel
        kept_old = [r for r in old if not hit(r)]
        docs_with_image = [r for r in kept_old if target["url"] in (r.get("images") or [])]
        if docs_with_image:  # the document keeps everything but that image position
            assert len(new) == len(kept_old)
            for o, n in zip(kept_old, new):
                if o in docs_with_image:
                    assert [u for u in o["images"] if u and u != target["url"]] == [u for u in n["images"] if u], rel
                    assert o["doc_id"] == n["doc_id"] and o["url"] == n["url"]
                    if "image_bytes" in n:
                        assert [b is None for b in n["image_bytes"]] == [u is None for u in n["images"]]
                else:
                    assert o == n, rel
        else:
            assert new == kept_old, rel  # every other row as it was
        if old != new:
            changed.add(rel)
        else:
            assert before[rel] == after[rel], f"{rel} rewritten without a match"
    assert {"extract/documents", "extract/pairs", "dedup/documents", "images/images", "images/pairs",
            "score/pairs"} <= {c.rsplit("/", 1)[0] for c in changed}
    for f in (root / "images" / "webdataset").glob("*.tar"):  # the image's sample left its tar
        with tarfile.open(f) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(tf.extractfile(m).read())
                    assert meta["url"] not in gone and meta["page_url"] != page and meta["sha256"] != target["sha256"]
    sizes = json.loads((root / "images" / "webdataset" / "sizes.json").read_text())
    assert sum(sizes.values()) == len(truth["image_pairs"]) - sum(
        1 for p in truth["image_pairs"] if p["page_url"] == page or p["sha256"] == target["sha256"])
    # stats.json: outputs lowered by what left, the takedown counted per file; the log lists every removal.
    st = json.loads((root / "images" / "stats.json").read_text())
    n_pairs = len(pq.read_table(root / "images" / "pairs"))
    assert st["outputs"]["pairs"] == n_pairs and "takedown" in st["counters"]
    for stage in ("extract", "dedup", "images", "score", "capfilt"):  # counts still add up
        s = json.loads((root / stage / "stats.json").read_text())
        for t in [s, *(s.get("tables") or {}).values()]:
            assert t["rows_in"] == t["rows_out"] + sum(t["rejected"].values()), stage
    sc = json.loads((root / "score" / "stats.json").read_text())
    assert sc["rows_out"] == len(pq.read_table(root / "score" / "pairs")) and sc["rejected"]["takedown"] >= 2
    from curation.card import build_card
    from curation.config import PipelineConfig

    card = build_card(str(root), PipelineConfig.load())
    assert "`takedown`" in card and "takedown" in card.split("## Safety", 1)[1].split("\n## ", 1)[0]
    log = [json.loads(line) for f in (root / "takedowns").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert log and {r["matched"] for r in log} >= {"url", "webdataset sample", "document image"}
    assert any(r["file"].startswith("extract/documents") for r in log)


def test_lists_and_errors(tmp_path):
    (tmp_path / "d.txt").write_text("site.test\n")
    lists = TakedownLists.load(None, str(tmp_path / "d.txt"))
    assert lists.url_hit("http://www.site.test/3") and not lists.url_hit("http://other.test/")
    (tmp_path / "bad.txt").write_text("abc\n")
    import pytest

    from curation.errors import InputError

    with pytest.raises(InputError, match="SHA-256"):
        TakedownLists.load(None, None, str(tmp_path / "bad.txt"))
    with pytest.raises(InputError, match="no complete stage"):
        takedown(str(tmp_path), lists)


def test_reruns_refuse_what_was_taken_down(tmp_path):
    """The lists land in <run>/takedowns/lists/: extract's record path and the image fetch refuse them."""
    from curation.config import PipelineConfig
    from curation.extract import RecordProcessor
    from filters.blocklists import takedown_filter, with_takedown_hashes
    from filters.text_pipeline import TextFilterPipeline
    from tests.curation.test_extract import ENGLISH, _record

    root = tmp_path / "run"
    make_run(root)
    (tmp_path / "u.txt").write_text("http://site.test/5\n")
    (tmp_path / "d.txt").write_text("gone.example\n")
    (tmp_path / "s.txt").write_text("ab" * 32 + "\n")
    takedown(str(root), TakedownLists.load(str(tmp_path / "u.txt"), str(tmp_path / "d.txt"), str(tmp_path / "s.txt")))
    tk = takedown_filter(str(root))
    assert tk.match("http://site.test/5") and not tk.match("http://site.test/50")  # exact URLs, not prefixes
    assert tk.match("https://www.gone.example/x")
    assert ("ab" * 32) in with_takedown_hashes(None, str(root)).sha256
    cfg = PipelineConfig.load()
    proc = RecordProcessor(cfg.extract, TextFilterPipeline(cfg.paragraph_filters, cfg.document_filters), "t", cfg.safety, tk)
    html = f"<html><body>{ENGLISH}</body></html>".encode()
    assert proc.process(_record(html, uri="http://site.test/5")).reason == "takedown"
    assert proc.process(_record(html, uri="http://site.test/6")).reason != "takedown"  # (a later filter may still act)
    assert takedown_filter(str(tmp_path / "elsewhere")) is None


def test_image_fetch_refuses_taken_down_urls_without_a_request(tmp_path):
    from curation.config import ImagesConfig
    from filters.blocklists import takedown_filter
    from filters.config import ImageFilterConfig
    from pipelines.images import fetch_and_filter, make_policy

    root = tmp_path / "run"
    make_run(root)
    (tmp_path / "u.txt").write_text("http://127.0.0.1:9/gone.jpg\n")
    takedown(str(root), TakedownLists.load(str(tmp_path / "u.txt")))
    policy = make_policy(ImagesConfig(), ImageFilterConfig(), ("127.0.0.1:9",))
    d = fetch_and_filter(["http://127.0.0.1:9/gone.jpg"], str(tmp_path / "w"), policy, ImageFilterConfig(),
                         ImagesConfig(), extra_filters=[takedown_filter(str(root))])
    assert d.rejected == {"http://127.0.0.1:9/gone.jpg": ("takedown", "on the list", None)} and d.kept.num_rows == 0
