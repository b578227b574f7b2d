"""``curate images``: every URL, pair and document accounted for; bytes land where they belong.

* synthetic inputs against a scripted loopback server: hostile inputs are counted rejections,
  duplicates keep a deterministic image, documents stay aligned, WebDataset shards load in
  open_clip's loader;
* the embedded sample end to end (extract -> dedup -> images, what ``curate run`` runs): the
  stage serves the sample's images itself and rejects the planted images for the right reason;
* the real Wikipedia capture: every page image's alt text lands with the WARC's bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.config import PipelineConfig
from curation.schemas import DOCUMENTS, PAIRS
from curation.stage import StageRunner, read_stats
from pipelines.images import ImageStage
from tests.support.realdata import realdata_path
from tests.support.image_payloads import HOSTILE_EXPECTED, Route, ScriptedServer, hostile_routes, jpeg, png, scene
from tests.support.net import free_port
from tests.support.open_clip_reader import open_clip_sample_count

pytestmark = pytest.mark.slow

FAST = {"images.timeout": 3.0, "images.threads_per_process": 8, "images.processes": 1, "snapshot": "local"}


def _write_inputs(root: Path, docs: list[dict], pairs: list[dict]) -> dict[str, str]:
    for name, rows, schema in (("documents", docs, DOCUMENTS), ("pairs", pairs, PAIRS)):
        d = root / "dedup" / name
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "part-0.parquet")
    return {"documents": str(root / "dedup" / "documents"), "pairs": str(root / "dedup" / "pairs")}


def _doc(doc_id: str, items: list) -> dict:
    texts, images, meta = [], [], []
    for it in items:
        if it.startswith("http") or it.startswith("data:") or it.startswith("file:"):
            texts.append(None)
            images.append(it)
            meta.append({"src": it, "alt_text": f"alt of {it.rsplit('/', 1)[-1]}"})
        else:
            texts.append(it)
            images.append(None)
            meta.append(None)
    return {"doc_id": doc_id, "url": f"https://site.example/{doc_id}", "texts": texts, "images": images,
            "metadata": json.dumps(meta), "general_metadata": "{}", "lang": "en", "lang_score": 0.99}


def _read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# --------------------------------------------------------------------------- synthetic run


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("images-run")
    big = scene(400, 320, seed=50)
    routes = {
        "/a.jpg": Route(jpeg(seed=31)),
        "/b.png": Route(png(seed=32), content_type="image/png"),
        "/copy-2.jpg": Route(jpeg(seed=33)),
        "/copy-1.jpg": Route(jpeg(seed=33)),  # same bytes: exact duplicate, smaller URL kept
        "/large.jpg": Route(_enc(big, "JPEG")),
        "/small.jpg": Route(_enc(big.resize((200, 160)), "JPEG")),  # near duplicate of large.jpg
        "/optout/c.jpg": Route(jpeg(seed=34)),
        "/banned/d.jpg": Route(jpeg(seed=35)),
        **hostile_routes(),
    }
    opt_out = root / "opt_out.txt"
    banlist = root / "banlist.txt"
    with ScriptedServer(routes) as server:
        opt_out.write_text(f"# site owners who opted out\n{server.url('/optout/')}\n")
        banlist.write_text("re:/banned/\n")
        u = server.url
        docs = [
            _doc("d1", ["intro", u("/a.jpg"), "middle", u("/tiny.jpg"), "more", u("/copy-2.jpg"), "end"]),
            _doc("d2", ["only lost images", u("/missing.jpg"), u("/image.svg")]),
            _doc("d3", ["text only"]),
            _doc("d4", [u("/small.jpg"), "caption-ish text", u("/large.jpg"), u("/b.png")]),
        ]
        pair_urls = [u(p) for p in HOSTILE_EXPECTED] + [u("/a.jpg"), u("/copy-1.jpg"), u("/copy-2.jpg"),
                                                        u("/small.jpg"), u("/large.jpg"), u("/optout/c.jpg"),
                                                        u("/banned/d.jpg"), "http://169.254.169.254/latest/meta-data/",
                                                        "http://10.0.0.1/a.jpg", "file:///etc/passwd",
                                                        "data:image/png;base64,iVBORw0KGgo="]
        pairs = [{"key": f"p{i:03d}", "url": url, "caption": f"caption {i}", "caption_source": "alt",
                  "page_url": "https://site.example/", "doc_id": "d1"} for i, url in enumerate(pair_urls)]
        inputs = _write_inputs(root, docs, pairs)
        cfg = PipelineConfig.load(None, {**FAST, "out": str(root), "images.allow_addresses": [server.allow],
                                         "images.opt_out_file": str(opt_out),
                                         "image_filters.url_banlist_file": str(banlist),
                                         "images.samples_per_tar": 10})
        stats = StageRunner(str(root), cfg).run(ImageStage(), inputs)
    return root, server, routes, stats, docs, pairs, cfg, inputs


def _enc(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, quality=90)
    return buf.getvalue()


def test_every_url_kept_or_rejected_for_the_expected_reason(synthetic):
    root, server, routes, stats, *_ = synthetic
    rejects = {r["row_id"]: r for r in _read(root / "images" / "rejects") if r["table"] == "images"}
    kept = {r["url"]: r for r in _read(root / "images" / "images")}
    assert stats.rows_in == len(kept) + len(rejects)
    for path, reason in HOSTILE_EXPECTED.items():
        url = server.url(path)
        if reason is None:
            assert url in kept, (path, rejects.get(url))
        else:
            assert rejects[url]["reason"] == reason, (path, rejects[url])
    assert rejects["http://169.254.169.254/latest/meta-data/"]["reason"] == "unsafe_address"
    assert rejects["http://10.0.0.1/a.jpg"]["reason"] == "unsafe_address"
    assert rejects["file:///etc/passwd"]["reason"] == "unsafe_scheme"
    assert rejects["data:image/png;base64,iVBORw0KGgo="]["reason"] == "unsafe_scheme"
    assert rejects[server.url("/optout/c.jpg")]["reason"] == "opted_out"
    assert rejects[server.url("/banned/d.jpg")]["reason"] == "banned_url"
    # refused without a request: opted-out, banned, private, metadata
    assert not any(p.startswith(("/optout/", "/banned/")) for p in server.requests)
    for url, row in kept.items():
        assert row["image"] == routes[url[len(server.url("")):]].body or row["format"] == "png"
        assert row["sha256"] == hashlib.sha256(row["image"]).hexdigest()
        assert (row["width"], row["height"]) == Image.open(io.BytesIO(row["image"])).size
    assert stats.rejected == dict(__import__("collections").Counter(r["reason"] for r in rejects.values()))


def test_duplicates_keep_a_deterministic_image(synthetic):
    root, server, *_ = synthetic
    rejects = {r["row_id"]: r for r in _read(root / "images" / "rejects") if r["table"] == "images"}
    dup = rejects[server.url("/copy-2.jpg")]
    assert (dup["reason"], dup["duplicate_of"]) == ("exact_duplicate", server.url("/copy-1.jpg"))
    near = rejects[server.url("/small.jpg")]
    assert (near["reason"], near["duplicate_of"]) == ("near_duplicate", server.url("/large.jpg"))


def test_pairs_get_their_own_bytes_or_the_image_reason(synthetic):
    root, server, routes, stats, docs, pairs, *_ = synthetic
    out = {p["key"]: p for p in _read(root / "images" / "pairs")}
    rejects = {r["row_id"]: r for r in _read(root / "images" / "rejects")}
    for p in pairs:
        if p["key"] in out:
            got = out[p["key"]]
            assert got["url"] == p["url"] and got["caption"] == p["caption"]
            assert got["sha256"] == hashlib.sha256(got["image"]).hexdigest()
        else:
            rej = rejects[p["key"]]
            assert rej["table"] == "pairs"
            assert rej["reason"] == rejects[p["url"]]["reason"]
    assert stats.tables["pairs"]["rows_in"] == len(pairs)
    assert stats.tables["pairs"]["rows_out"] == len(out)
    assert out[[k for k, p in out.items() if p["url"] == server.url("/a.jpg")][0]]["image"] == routes["/a.jpg"].body


def test_documents_stay_aligned_with_bytes_in_place(synthetic):
    root, server, routes, stats, *_ = synthetic
    docs = {d["doc_id"]: d for d in _read(root / "images" / "documents")}
    assert set(docs) == {"d1", "d4"}
    d1 = docs["d1"]
    # the texts around a removed image are joined, as extract writes them
    assert d1["texts"] == ["intro", None, "middle\n\nmore\n\nend"]
    assert d1["images"] == [None, server.url("/a.jpg"), None]
    assert d1["image_bytes"] == [None, routes["/a.jpg"].body, None]
    meta = json.loads(d1["metadata"])
    assert len(meta) == 3 and meta[1]["src"] == server.url("/a.jpg") and meta[0] is None
    d4 = docs["d4"]
    assert d4["texts"] == ["caption-ish text", None, None]
    assert d4["images"] == [None, server.url("/large.jpg"), server.url("/b.png")]
    assert d4["image_bytes"][1] == routes["/large.jpg"].body
    rejects = {r["row_id"]: r for r in _read(root / "images" / "rejects") if r["table"] == "documents"}
    assert rejects["d2"]["reason"] == "no_images" and "none kept" in rejects["d2"]["detail"]
    assert rejects["d3"]["reason"] == "no_images"
    assert stats.tables["documents"] == {"rows_in": 4, "rows_out": 2, "rejected": {"no_images": 2}}


def test_documents_without_images_can_be_kept(synthetic, tmp_path):
    root, server, routes, stats, docs, pairs, cfg, inputs = synthetic
    with ScriptedServer(routes) as srv:
        cfg2 = PipelineConfig.load(None, {**FAST, "out": str(tmp_path), "images.drop_documents_without_images": False,
                                          "images.allow_addresses": [srv.allow], "images.webdataset": False})
        docs2 = [_doc("x1", ["t", srv.url("/missing.jpg")]), _doc("x2", ["t", srv.url("/a.jpg")])]
        inputs2 = _write_inputs(tmp_path / "in", docs2, [])
        st = StageRunner(str(tmp_path), cfg2).run(ImageStage(), inputs2)
    out = {d["doc_id"]: d for d in _read(tmp_path / "images" / "documents")}
    assert set(out) == {"x1", "x2"} and out["x1"]["images"] == [None] and out["x1"]["image_bytes"] == [None]
    assert out["x2"]["image_bytes"][1] == routes["/a.jpg"].body
    assert st.tables["pairs"] == {"rows_in": 0, "rows_out": 0, "rejected": {}}


def test_webdataset_shards_load_in_open_clip(synthetic):
    root, server, routes, stats, *_ = synthetic
    wds_dir = root / "images" / "webdataset"
    sizes = json.loads((wds_dir / "sizes.json").read_text())
    # written by the Spark tasks: one or more tars per partition, none over samples_per_tar
    assert sum(sizes.values()) == stats.outputs["pairs"] and all(0 < n <= 10 for n in sizes.values())
    assert sorted(sizes) == [f"{i:05d}.tar" for i in range(len(sizes))]
    names = [m.name for t in sorted(wds_dir.glob("*.tar")) for m in tarfile.open(t)]
    exts = {n.split(".", 1)[1] for n in names}
    assert {"txt", "json", "jpg", "png", "webp"} <= exts
    assert all("." not in n.split(".", 1)[0] for n in names)
    assert open_clip_sample_count(wds_dir, len(sizes)) == stats.outputs["pairs"]


def test_rerun_is_skipped(synthetic):
    root, server, routes, stats, docs, pairs, cfg, inputs = synthetic
    marker = (root / "images" / "_STAGE_COMPLETE").read_text()
    again = StageRunner(str(root), cfg).run(ImageStage(), inputs)
    assert (root / "images" / "_STAGE_COMPLETE").read_text() == marker
    assert again.rows_out == stats.rows_out
    assert not list((root / "_work").glob("images-*"))  # fetch cache removed after success


# --------------------------------------------------------------------------- the embedded sample


def _expected_for_size(row: dict) -> str | None:
    w, h = row["width"], row["height"]
    if row["format"] not in ("jpeg", "png", "webp"):
        return "format"
    if min(w, h) < 150:
        return "too_small"
    if not 0.5 <= w / h <= 2.0:
        return "bad_aspect"
    return None


@pytest.fixture(scope="module")
def sample_run(spark, tmp_path_factory):
    from curation.pipeline import run_all

    out = tmp_path_factory.mktemp("sample-run") / "run"
    port = free_port()
    cfg = PipelineConfig.load(None, {"out": str(out), "sample_pages": 80, "sample_image_port": port,
                                     "spark.master": "local[2]", "images.processes": 1})
    # what `curate run` runs, up to this stage (later stages have their own tests)
    run_all(cfg, stages=("extract", "dedup", "images"))
    return out, port, cfg


def test_sample_images_come_from_the_loopback_server(sample_run):
    out, port, cfg = sample_run
    truth = {json.loads(line)["url"]: json.loads(line) for line in (out / "_sample/ground_truth/images.jsonl").open()}
    manifest = json.loads((out / "_sample/manifest.json").read_text())
    assert manifest["image_base_url"] == f"http://127.0.0.1:{port}/"
    stats = read_stats(str(out / "images"))
    assert stats.rows_in > 50 and stats.rows_out > 0.8 * stats.rows_in
    kept = {r["url"]: r for r in _read(out / "images" / "images")}
    rejects = {r["row_id"]: r for r in _read(out / "images" / "rejects") if r["table"] == "images"}
    assert len(kept) + len(rejects) == stats.rows_in
    for url in set(kept) | set(rejects):
        gt = truth[url]
        expected = _expected_for_size(gt)
        got = None if url in kept else rejects[url]["reason"]
        if expected is None:
            assert got in (None, "near_duplicate"), (url, gt, got)
        else:
            assert got == expected, (url, gt, got)
    for url, row in kept.items():
        on_disk = (out / "_sample" / truth[url]["file"]).read_bytes()
        assert row["image"] == on_disk
        assert (row["width"], row["height"]) == (truth[url]["width"], truth[url]["height"])
    assert stats.rejected.get("too_small", 0) + stats.rejected.get("bad_aspect", 0) > 0
    with socket.socket() as s:  # the server was stopped (nothing listens; TIME_WAIT is fine)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_sample_rows_equal_the_single_process_stage(sample_run):
    """The Spark stage keeps and rejects exactly what the single-process stage did on this sample
    (kept images, every reject with its reason/detail/duplicate_of, pairs, documents, the bytes).
    The snapshot comes from the single-process stage (62bd2a3's, run on the current extract and
    dedup output of the sample), never from the Spark stage: tests/support/regen_images_snapshot.py
    remakes it when a change upstream changes which documents reach this stage."""
    from tests.support.images_snapshot import BEFORE, images_snapshot

    out, port, cfg = sample_run
    before = json.loads(BEFORE.read_text())
    after = json.loads(json.dumps(images_snapshot(out)))  # tuples -> lists, as the stored JSON
    for table in ("images", "rejects", "pairs", "documents"):
        assert after[table] == before[table], table


def test_every_planted_image_gets_the_right_verdict(sample_run, tmp_path):
    """All images of the sample (logos, icons, pixels, sponsors, srcset variants; most never reach this
    stage because extract and dedup drop them) through the stage's fetch path."""
    from curation.sample import ImageServer
    from pipelines.images import fetch_and_filter, make_policy

    out, port, cfg = sample_run
    truth = [json.loads(line) for line in (out / "_sample/ground_truth/images.jsonl").open()]
    with ImageServer(out / "_sample" / "images", port=port):
        decisions = fetch_and_filter(sorted(t["url"] for t in truth), str(tmp_path),
                                     make_policy(cfg.images, cfg.image_filters, (f"127.0.0.1:{port}",)),
                                     cfg.image_filters, cfg.images)
    kept = set(decisions.kept.column("url").to_pylist())
    by_role: dict[str, set] = {}
    for t in truth:
        got = None if t["url"] in kept else decisions.rejected[t["url"]][0]
        by_role.setdefault(t["role"], set()).add(got)
        if t["role"] in ("logo", "icon"):
            assert got == "too_small", t
        elif t["role"] == "pixel":
            assert got == "format", t
        elif t["role"] == "variant":
            expected = _expected_for_size(t)
            if expected is None:
                assert got == "near_duplicate", t
                assert decisions.rejected[t["url"]][2] == t["variant_of"]
            else:
                assert got == expected, t
        elif t["role"] == "content":
            assert got == _expected_for_size(t), t
        elif t["role"] == "sponsor":
            assert got is None, t
    assert by_role["content"] >= {None, "too_small", "bad_aspect"}


# --------------------------------------------------------------------------- real Wikipedia capture


@pytest.mark.realdata
def test_wikipedia_alt_texts_land_with_the_warc_bytes(tmp_path):
    from urllib.parse import quote

    from curation.html_extract import ExtractedImage, extract_page
    from curation.warc_reader import ResponseRecord, iter_warc

    warc = realdata_path("warc", "ukwa_wikipedia-post-blackout_main-page.warc.gz")
    records = [r for r in iter_warc(str(warc)) if isinstance(r, ResponseRecord) and r.http_status == 200]
    payloads = {r.target_uri: r.payload for r in records if (r.content_type or "").startswith("image/")}
    page = next(r for r in records if r.target_uri == "http://en.wikipedia.org/wiki/Main_Page")
    extracted = extract_page(page.payload.decode("utf-8"), page.target_uri, frozenset(), 256)
    images = [it for it in extracted.items if isinstance(it, ExtractedImage)]
    assert len(images) >= 5

    with ScriptedServer() as server:
        def local(url: str) -> str:
            return server.url("/w/" + quote(url, safe=""))

        for url, body in payloads.items():
            server.routes["/w/" + quote(url, safe="")] = Route(body, content_type="image/any")
        docs, pairs = [], []
        items = []
        for pos, it in enumerate(images):
            items += [f"text before image {pos}", local(it.url)]
            if it.alt:
                pairs.append({"key": f"wiki-{pos:04d}", "url": local(it.url), "caption": it.alt, "caption_source": "alt",
                              "page_url": page.target_uri, "doc_id": "wiki"})
        docs.append(_doc("wiki", items))
        original_of = {local(it.url): it.url for it in images}
        inputs = _write_inputs(tmp_path / "in", docs, pairs)
        # Wikipedia's main page shows thumbnails and icons: let every size and shape through, keep
        # duplicates, so each alt text can be checked against its own image.
        cfg = PipelineConfig.load(None, {**FAST, "out": str(tmp_path), "images.allow_addresses": [server.allow],
                                         "image_filters.min_side": 1, "image_filters.min_aspect_ratio": 0.01,
                                         "image_filters.max_aspect_ratio": 100.0,
                                         "image_filters.formats": ["jpeg", "png", "webp", "gif"],
                                         "image_filters.phash_max_hamming": -1})
        StageRunner(str(tmp_path), cfg).run(ImageStage(), inputs)

    out = {p["key"]: p for p in _read(tmp_path / "images" / "pairs")}
    rejects = {r["row_id"]: r for r in _read(tmp_path / "images" / "rejects")}
    checked = 0
    for pos, it in enumerate(images):
        if not it.alt:
            continue
        key = f"wiki-{pos:04d}"
        if it.url in payloads:
            if key not in out:
                assert rejects[key]["reason"] in ("exact_duplicate", "animated"), (it.url, rejects[key])
                continue
            assert out[key]["caption"] == it.alt
            assert out[key]["sha256"] == hashlib.sha256(payloads[it.url]).hexdigest(), it.url
            checked += 1
        else:  # not captured in the WARC: the loopback server answers 404
            assert rejects[key]["reason"] == "fetch_error:404"
    assert checked >= 5
    # The interleaved document: each kept image at its page position carries that URL's WARC bytes,
    # the texts around it stay in order.
    (doc,) = _read(tmp_path / "images" / "documents")
    kept = [(i, original_of[u]) for i, u in enumerate(doc["images"]) if u is not None]
    assert len(kept) >= 5
    page_order = [it.url for it in images]
    assert [u for _, u in kept] == [u for u in page_order if u in {v for _, v in kept}]  # page order kept
    for i, url in kept:
        assert doc["image_bytes"][i] is not None
        assert hashlib.sha256(doc["image_bytes"][i]).digest() == hashlib.sha256(payloads[url]).digest(), url
        assert doc["texts"][i] is None and doc["texts"][i - 1] is not None and "text before image" in doc["texts"][i - 1]
