"""The offline sample mini-crawl: determinism, WARC validity, ground-truth consistency, image server."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType
from PIL import Image
from selectolax.lexbor import LexborHTMLParser

from curation.sample import ImageServer, generate_sample
from curation.sample.text import jaccard

N = 60
LAZY = ("data-src", "data-original")


def _jsonl(root: Path, name: str) -> list[dict]:
    with open(root / "ground_truth" / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample") / "s"
    manifest = generate_sample(str(out), n_pages=N, seed=0)
    return out, manifest


@pytest.fixture(scope="module")
def records(sample) -> dict[str, dict]:
    """Response records keyed by WARC-Record-ID: url, status, headers, body, offset, file."""
    out, manifest = sample
    recs = {}
    for wf in manifest["files"]["warc"]:
        with open(out / wf, "rb") as fh:
            for rec in ArchiveIterator(fh, parse_http=True):
                if rec.record_type != WarcRecordType.response:
                    continue
                recs[rec.headers.get("WARC-Record-ID")] = {
                    "url": rec.headers.get("WARC-Target-URI"), "status": rec.http_headers.status_code,
                    "ctype": rec.http_headers.get("Content-Type"), "body": rec.reader.read(),
                    "offset": rec.stream_pos, "file": wf, "date": rec.headers.get("WARC-Date")}
    return recs


def _decode(rec: dict) -> str:
    ctype = rec["ctype"] or ""
    charset = ctype.split("charset=")[1].strip() if "charset=" in ctype else "utf-8"
    return rec["body"].decode(charset)


def _article_text(html_text: str) -> str:
    tree = LexborHTMLParser(html_text)
    return tree.css_first("article").text(separator=" ")


def test_deterministic_bytes(sample, tmp_path):
    out, manifest = sample
    again = generate_sample(str(tmp_path / "again"), n_pages=N, seed=0)
    assert again == manifest
    for wf in manifest["files"]["warc"]:
        assert (out / wf).read_bytes() == (tmp_path / "again" / wf).read_bytes()
    for gt in manifest["files"]["ground_truth"]:
        assert (out / gt).read_bytes() == (tmp_path / "again" / gt).read_bytes()
    other = generate_sample(str(tmp_path / "other"), n_pages=N, seed=1)
    wf = manifest["files"]["warc"][0]
    assert (tmp_path / "other" / wf).read_bytes() != (out / wf).read_bytes()
    assert other["parameters"]["seed"] == 1


def test_idempotent_and_atomic(sample):
    out, manifest = sample
    stamp = {p: os.stat(out / p).st_mtime_ns for p in ["manifest.json", *manifest["files"]["warc"]]}
    assert generate_sample(str(out), n_pages=N, seed=0) == manifest
    assert {p: os.stat(out / p).st_mtime_ns for p in stamp} == stamp
    assert not [p for p in os.listdir(out.parent) if ".tmp-" in p]  # temp dir cleaned up
    assert len(manifest["files"]["warc"]) == 4
    for rel in [*manifest["files"]["warc"], *manifest["files"]["ground_truth"], manifest["paths"]["clean_captions"]]:
        assert (out / rel).is_file(), rel


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("not a sample")
    with pytest.raises(FileExistsError):
        generate_sample(str(tmp_path / "busy"), n_pages=N)


def test_warc_records_parse(sample, records):
    out, manifest = sample
    types = Counter()
    for wf in manifest["files"]["warc"]:
        with open(out / wf, "rb") as fh:
            first = True
            for rec in ArchiveIterator(fh, parse_http=False):
                types[rec.headers.get("WARC-Type")] += 1
                assert rec.headers.get("WARC-Record-ID").startswith("<urn:uuid:")
                assert rec.headers.get("WARC-Date")
                if first:
                    assert rec.record_type == WarcRecordType.warcinfo
                    first = False
                if rec.record_type in (WarcRecordType.request, WarcRecordType.response):
                    assert rec.headers.get("WARC-Target-URI").startswith("https://")
                assert rec.verify_block_digest()
    assert dict(types) == manifest["counts"]["warc_records"]

    pages = _jsonl(out, "pages.jsonl")
    assert len(pages) == len(records) == manifest["counts"]["response_records"]
    for p in pages:
        rec = records[p["record_id"]]
        assert (rec["url"], rec["file"], rec["offset"], rec["status"]) == (p["url"], p["warc_file"], p["offset"], p["http_status"])
        if p["record_kind"] == "http_404":
            assert rec["status"] == 404
        elif p["record_kind"] == "non_html":
            assert rec["ctype"] in ("image/jpeg", "application/pdf") and rec["body"]
        elif p["record_kind"] == "empty":
            assert rec["status"] == 200 and rec["body"] == b""
        else:
            assert rec["status"] == 200 and rec["ctype"].startswith("text/html")
    cp = [p for p in pages if p["charset"] == "windows-1252"]
    assert len(cp) == 1
    rec = records[cp[0]["record_id"]]
    assert "charset=windows-1252" in rec["ctype"]
    with pytest.raises(UnicodeDecodeError):
        rec["body"].decode("utf-8")
    text = _decode(rec)
    assert "café" in text and "naïve" in text and "“a room for ideas”" in text and "€4" in text
    # a url_duplicate is the same URL crawled later
    for p in pages:
        if p["kind"] == "url_duplicate":
            first = [q for q in pages if q["url"] == p["url"] and q["kind"] == "normal"]
            assert len(first) == 1 and first[0]["warc_date"] < p["warc_date"]


def _resolve(img, page_url: str, base: str | None) -> str | None:
    a = img.attributes
    raw = next((a[k] for k in LAZY if a.get(k)), None)
    if raw is None and a.get("src") and not a["src"].startswith("data:"):
        raw = a["src"]
    if raw is None and a.get("srcset"):
        raw = a["srcset"].split(",")[-1].split()[0]  # generator writes 1x first, 2x last
    return urljoin(base or page_url, raw) if raw else None


def test_images_in_html_exist_and_match_ground_truth(sample, records):
    out, manifest = sample
    images = {r["url"]: r for r in _jsonl(out, "images.jsonl")}
    occ = Counter()
    by_page: dict[str, list[dict]] = {}
    for o in _jsonl(out, "alt_texts.jsonl"):
        by_page.setdefault(o["record_id"], []).append(o)
        occ[o["image_url"]] += 1
    base_url = manifest["image_base_url"]
    n_content = 0
    for p in _jsonl(out, "pages.jsonl"):
        if p["record_kind"] != "page":
            continue
        tree = LexborHTMLParser(_decode(records[p["record_id"]]))
        base = tree.css_first("base[href]")
        base = base.attributes["href"] if base else None
        resolved = [_resolve(img, p["url"], base) for img in tree.css("img")]
        truth = sorted(by_page[p["record_id"]], key=lambda o: o["position"])
        assert resolved == [o["image_url"] for o in truth], p["url"]
        alts = [img.attributes.get("alt") for img in tree.css("img")]
        assert alts == [o["alt"] for o in truth]
        for o in truth:
            assert o["image_url"].startswith(base_url)
            row = images[o["image_url"]]
            assert (out / row["file"]).is_file()
            if o["role"] == "content":
                n_content += 1
                assert o["true_caption"] == row["caption"]
                if p["lang"] == "en" and o["sentence"]:
                    assert row["shape"] in o["sentence"] or row["shape"] + "s" in o["sentence"] or "crosses" in o["sentence"]
                    assert row["colour"] in o["sentence"] and o["sentence"] in p["article_text"]
        assert sum(o["role"] == "content" for o in truth) == p["n_content_images"]
    assert n_content == manifest["counts"]["img_occurrences_by_role"]["content"]
    # every image file on disk is described, with the right size and format
    files = {str(q.relative_to(out)) for q in (out / "images").rglob("*") if q.is_file()}
    assert files == {r["file"] for r in images.values()}
    for r in list(images.values())[:: max(1, len(images) // 40)]:
        with Image.open(out / r["file"]) as im:
            assert im.size == (r["width"], r["height"])
            assert im.format.lower() == r["format"]
    # sponsor images repeat across many documents, so image dedup (max 10 docs) drops them
    sponsors = [r for r in images.values() if r["role"] == "sponsor"]
    assert sponsors and all(r["n_documents"] > 10 for r in sponsors)
    kinds = manifest["counts"]["content_alt_kind"]
    total = sum(kinds.values())
    assert 0.45 < kinds["correct"] / total < 0.75 and kinds["wrong"] > 0 and kinds["boilerplate"] > 0
    assert set(manifest["counts"]["content_lazy_attr"]) == {"src", "data-src", "data-original", "srcset"}


def test_image_server(sample):
    out, _ = sample
    row = next(r for r in _jsonl(out, "images.jsonl") if r["format"] == "png" and r["role"] == "content")
    with ImageServer(out / "images") as srv:
        assert srv.base_url.startswith("http://127.0.0.1:") and srv.base_url.endswith("/")
        rel = row["file"][len("images/"):]
        with urllib.request.urlopen(srv.base_url + rel, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "image/png"
            assert resp.read() == (out / row["file"]).read_bytes()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(srv.base_url + "content/does-not-exist.jpg", timeout=10)
        assert err.value.code == 404
    with pytest.raises(RuntimeError):
        srv.base_url  # stopped


def test_jaccard_ground_truth(sample, records):
    out, manifest = sample
    pages = _jsonl(out, "pages.jsonl")
    by_url = {p["url"]: p for p in pages if p["kind"] == "normal"}
    seen_targets = set()
    for p in pages:
        if p["kind"] not in ("exact_duplicate", "near_duplicate", "url_duplicate"):
            assert p["duplicate_of"] is None and p["jaccard"] is None
            continue
        orig = by_url[p["duplicate_of"]]
        a = _article_text(_decode(records[orig["record_id"]]))
        b = _article_text(_decode(records[p["record_id"]]))
        assert jaccard(a, b) == pytest.approx(p["jaccard"], abs=1e-6), p["url"]
        assert jaccard(orig["article_text"], p["article_text"]) == pytest.approx(p["jaccard"], abs=1e-6)
        if p["kind"] == "exact_duplicate":
            assert p["jaccard"] == 1.0 and a == b and p["url"] != orig["url"]
        elif p["kind"] == "near_duplicate":
            assert abs(p["jaccard"] - p["jaccard_target"]) < 0.08
            seen_targets.add(p["jaccard_target"])
        else:
            assert p["url"] == orig["url"] and 0.6 < p["jaccard"] < 1.0
    assert seen_targets == set(manifest["near_duplicate_jaccard_targets"])


def test_counts_match_manifest(sample):
    out, manifest = sample
    pages = _jsonl(out, "pages.jsonl")
    c = manifest["counts"]
    for key in ("kind", "record_kind", "expect", "warc_file"):
        assert dict(Counter(p[key] for p in pages)) == c[key]
    assert c["record_kind"]["page"] == N
    assert c["kind"]["non_english"] >= 3 and {"fr", "de", "es"} <= set(c["lang"])
    for kind in ("exact_duplicate", "near_duplicate", "url_duplicate", "spam", "boilerplate_heavy", "no_images"):
        assert c["kind"][kind] >= 1
    assert c["record_kind"]["http_404"] >= 1 and c["record_kind"]["non_html"] == 2 and c["record_kind"]["empty"] == 1
    for name, n in c["ground_truth_lines"].items():
        assert len(_jsonl(out, f"{name}.jsonl")) == n
    # the domain boilerplate paragraphs sit in every native article of their domain
    for bp in _jsonl(out, "boilerplate_paragraphs.jsonl"):
        native = [p for p in pages if p["domain"] == bp["domain"] and p["kind"] in ("normal", "url_duplicate", "no_images")]
        assert native and all(bp["text"] in p["article_text"] for p in native)
    clean = json.loads((out / manifest["paths"]["clean_captions"]).read_text())
    assert len(clean["images"]) == c["clean_images"] and len(clean["annotations"]) == c["clean_captions"]
    per_image = Counter(a["image_id"] for a in clean["annotations"])
    assert all(per_image[im["id"]] == 5 for im in clean["images"])
    for im in clean["images"][:10]:
        assert (out / manifest["paths"]["clean_images_dir"] / im["file_name"]).is_file()


def test_english_documents_pass_text_filters(sample):
    text_metrics = pytest.importorskip("filters.text")
    base = pytest.importorskip("filters.base")
    out, _ = sample
    stop = base.stopwords()
    for p in _jsonl(out, "pages.jsonl"):
        if p["expect"] not in ("document", "spam") or not p["article_text"]:
            continue
        t = p["article_text"]
        words = base.TextView.of(t).words
        ok = (10 <= len(words) <= 2000 and text_metrics.word_set_ratio(words, stop) >= 0.35
              and text_metrics.word_repetition_ratio(words, 5) <= 0.1
              and text_metrics.character_repetition_ratio(t, 10) <= 0.1)
        assert ok == (p["expect"] == "document"), (p["kind"], p["url"])
