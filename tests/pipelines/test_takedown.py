"""``curate takedown`` on a finished run: one page URL and one image SHA-256 leave every output; the rest stays."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

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


def _with_score_embeddings(root: Path, ipairs: list[dict]) -> np.ndarray:
    """The score stage's embeddings as dask_score writes them: one float16 row per *input* pair (kept or
    rejected), ``index.json`` mapping row ranges to files; returns the image rows."""
    rng = np.random.default_rng(1)
    emb = root / "score" / "embeddings"
    n = len(ipairs)
    img = rng.normal(size=(n, 8)).astype(np.float16)
    for kind, arr in (("image", img), ("text", rng.normal(size=(n, 8)).astype(np.float16))):
        (emb / kind).mkdir(parents=True)
        np.save(emb / kind / "pairs-part-00000-00000.npy", arr[:10])
        np.save(emb / kind / "pairs-part-00000-00001.npy", arr[10:])
    (emb / "index.json").write_text(json.dumps({"dim": 8, "shards": [
        {"id": "a", "offset": 0, "rows": 10, "image": "image/pairs-part-00000-00000.npy", "text": "text/pairs-part-00000-00000.npy"},
        {"id": "b", "offset": 10, "rows": n - 10, "image": "image/pairs-part-00000-00001.npy",
         "text": "text/pairs-part-00000-00001.npy"}]}))
    return img


def _files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*") if f.is_file()}


def test_takedown_removes_one_page_and_one_image_from_every_output(tmp_path):
    root = tmp_path / "run"
    truth = make_run(root)
    _tars_like_the_writer(root, truth["image_pairs"])
    emb_before = _with_score_embeddings(root, truth["image_pairs"])
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
    # The score stage's embedding rows of the removed pairs are zero, every other row as it was.
    from pipelines.dask_score import load_embeddings

    gone_rows = [j for j, p in enumerate(truth["image_pairs"]) if p["page_url"] == page or p["sha256"] == target["sha256"]]
    emb = load_embeddings(str(root / "score")).astype(np.float16)
    assert not emb[gone_rows].any()
    others = [j for j in range(len(emb)) if j not in gone_rows]
    assert np.array_equal(emb[others], emb_before[others])
    # No file of any stage names the page, the image URL or the digest (tars and JSON read raw; Parquet above).
    for rel, data in after.items():
        if rel.startswith(("takedowns/", "train/")) or rel.endswith(".parquet"):
            continue
        for needle in (page, target["url"], target["sha256"]):
            assert needle.encode() not in data, (rel, needle)


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


def _rows(root: Path) -> dict[str, list[dict]]:
    return {str(f.relative_to(root)): pq.read_table(f).to_pylist() for f in sorted(root.rglob("*.parquet"))
            if not str(f.relative_to(root)).startswith(("takedowns", "_", "train/"))}


def test_a_pair_score_had_rejected_loses_its_embedding_and_its_reject_record(tmp_path):
    """Taken down after score rejected it: no `embedding_row` names it, yet its embedding row is found
    (the input's key order, stored before anything is rewritten) and zeroed; its reject record (which
    names its key) goes, and the stats move that row from its reason to `takedown`."""
    root = tmp_path / "run"
    truth = make_run(root)
    emb_before = _with_score_embeddings(root, truth["image_pairs"])
    kept = {p["key"] for p in truth["scored"]}
    j, rejected = next((j, p) for j, p in enumerate(truth["image_pairs"]) if p["key"] not in kept)
    (tmp_path / "s.txt").write_text(rejected["sha256"] + "\n")
    summary = takedown(str(root), TakedownLists.load(None, None, str(tmp_path / "s.txt")))
    assert summary["embedding_rows_of_rejected_pairs"]
    from pipelines.dask_score import load_embeddings

    for kind in ("image", "text"):
        emb = load_embeddings(str(root / "score"), kind=kind)
        assert not emb[j].any() and emb[[i for i in range(len(emb)) if i != j]].any(axis=1).all()
    assert np.array_equal(load_embeddings(str(root / "score"))[:j], emb_before[:j])
    rej = pq.read_table(root / "score" / "rejects").to_pylist()
    assert rejected["key"] not in {r["row_id"] for r in rej}
    st = json.loads((root / "score" / "stats.json").read_text())
    assert st["rejected"] == {"takedown": 1} and st["rows_in"] == st["rows_out"] + 1
    assert list((root / "takedowns" / "maps").glob("score-*.parquet"))  # later takedowns use the stored order


def test_resumes_per_file_and_a_new_list_is_not_skipped(tmp_path, monkeypatch):
    """Killed after some files: the rerun skips the finished ones (done markers) and the counts come out
    as in an uninterrupted takedown; the same lists again are a no-op; a different list runs."""
    import pipelines.takedown as td

    def fresh(name: str) -> Path:
        root = tmp_path / name
        truth = make_run(root)
        _tars_like_the_writer(root, truth["image_pairs"])
        _with_score_embeddings(root, truth["image_pairs"])
        return root

    (tmp_path / "u.txt").write_text("http://site.test/5\nhttp://img.test/0-0.jpg\n")
    lists = lambda: TakedownLists.load(str(tmp_path / "u.txt"))  # noqa: E731
    straight, killed = fresh("straight"), fresh("killed")
    takedown(str(straight), lists())

    real, seen = td.clean_file, []

    def dies_after_three(*a, **kw):
        if len(seen) == 3:
            raise KeyboardInterrupt("killed")
        out = real(*a, **kw)
        seen.append(out["file"])
        return out

    monkeypatch.setattr(td, "clean_file", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        takedown(str(killed), lists())
    monkeypatch.setattr(td, "clean_file", real)
    work = next((killed / "takedowns" / "_work").iterdir())
    assert len(list((work / "clean" / "_done").glob("*.json"))) == 3
    calls = []
    monkeypatch.setattr(td, "clean_file", lambda *a, **kw: calls.append(a[3].path) or real(*a, **kw))
    takedown(str(killed), lists())
    assert not {str(killed / f) for f in seen} & set(calls)  # finished files were not redone
    assert _rows(killed) == _rows(straight)
    for stage in ("extract", "dedup", "images", "score", "capfilt"):
        a, b = (json.loads((r / stage / "stats.json").read_text()) for r in (straight, killed))
        assert {k: v for k, v in a.items() if k != "counters"} == {k: v for k, v in b.items() if k != "counters"}, stage
        assert list(a["counters"]["takedown"].values()) == list(b["counters"]["takedown"].values()), stage

    before = _files(killed)
    assert takedown(str(killed), lists())["already_applied"]  # the same lists: nothing rewritten, nothing counted twice
    assert _files(killed) == before
    (tmp_path / "u2.txt").write_text("http://site.test/6\n")
    second = takedown(str(killed), TakedownLists.load(str(tmp_path / "u2.txt")))
    assert not second.get("already_applied") and second["rows_removed"] > 0
    assert not any("site.test/6" in str(r) for rows in _rows(killed).values() for r in rows if "rejects" not in str(r))
    st = json.loads((killed / "extract" / "stats.json").read_text())
    assert len(st["counters"]["takedown"]) == 2 and st["rejected"]["takedown"] == 2


def test_document_samples_and_mmc4_entries_lose_only_the_listed_image(tmp_path):
    """The release's one-document-per-sample tars and the score stage's MMC4 documents: the listed image
    (member, position, image_info entry and similarity row) goes, the document stays."""
    from pipelines.takedown import clean_parquet, clean_tar

    lists = TakedownLists({"http://img.test/b.jpg"}, None, set())
    tar = tmp_path / "00000.tar"
    doc = {"doc_id": "x", "url": "http://site.test/x", "texts": ["one", None, "two", None, "three"],
           "images": [None, "1.jpg", None, "3.jpg", None],
           "image_urls": [None, "http://img.test/a.jpg", None, "http://img.test/b.jpg", None],
           "metadata": [None, {"src": "a"}, None, {"src": "b"}, None]}
    with tarfile.open(tar, "w") as tf:
        for name, data in (("000.json", json.dumps(doc).encode()), ("000.1.jpg", b"A"), ("000.3.jpg", b"B")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    kept, entries = clean_tar(tar, "release/interleaved_wds/00000.tar", lists)
    names = {m.name: d for m, d in kept}
    assert set(names) == {"000.json", "000.1.jpg"} and entries[0]["image"] == "http://img.test/b.jpg"
    new = json.loads(names["000.json"])
    assert new["image_urls"] == [None, "http://img.test/a.jpg", None] and new["images"] == [None, "1.jpg", None]
    assert new["texts"] == ["one", None, "two\n\nthree"] and len(new["metadata"]) == 3

    import pyarrow as pa

    info = pa.struct([("raw_url", pa.string()), ("matched_text_index", pa.int64())])
    t = pa.table({"doc_id": ["x", "y"], "url": ["http://site.test/x", "http://site.test/y"],
                  "image_info": pa.array([[{"raw_url": "http://img.test/a.jpg", "matched_text_index": 0},
                                           {"raw_url": "http://img.test/b.jpg", "matched_text_index": 1}],
                                          [{"raw_url": "http://img.test/c.jpg", "matched_text_index": 0}]], pa.list_(info)),
                  "similarity_matrix": [[[0.1, 0.2], [0.3, 0.4]], [[0.5]]]})
    pq.write_table(t, tmp_path / "m.parquet")
    out, entries = clean_parquet(tmp_path / "m.parquet", "score/mmc4/m.parquet", lists)
    rows = out.to_pylist()
    assert [i["raw_url"] for i in rows[0]["image_info"]] == ["http://img.test/a.jpg"]
    assert rows[0]["similarity_matrix"] == [[0.1, 0.2]] and rows[1] == t.to_pylist()[1]
    assert [e["removed"] for e in entries] == ["image"]
