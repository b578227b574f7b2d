"""The safety layer end to end on a tiny hand-made crawl (extract -> dedup -> images -> score):
a page on a blocked domain, an image on the hash list, an image its host's robots.txt disallows, an image
served with ``tdm-reservation: 1`` and a caption with an e-mail address are each handled with their reason;
nothing else is lost. Each reason reaches the stats, the rejects, the report's funnel and the card. Then, on
the finished run, ``curate takedown`` of one page URL and one image SHA-256 (issue 15's must-show)."""
from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.config import PipelineConfig
from curation.pipeline import run_all
from curation.sample.warc_writer import WarcWriter, http_response
from tests.support.image_payloads import Route, ScriptedServer, jpeg

pytestmark = pytest.mark.slow

PARAGRAPHS = [
    ("The small village sits at the edge of a quiet river, and in the summer the children of the town walk down "
     "to the water to watch the boats go by in the late afternoon light. Most of the houses were built of local "
     "stone more than two hundred years ago, and many of them have been restored by families who have lived "
     "there for several generations."),
    ("A narrow road climbs from the old bridge to the church, where a market is held every Saturday morning and "
     "farmers from the nearby hills sell bread, cheese and fresh vegetables to visitors and neighbours alike. "
     "In the autumn the same road fills with walkers who come to see the forests change colour on the slopes."),
    ("The railway reached the valley late in the nineteenth century, and the station building still stands "
     "beside the line with its painted timber canopy and a clock that the stationmaster winds every morning. "
     "Trains run twice an hour in the summer and carry cyclists up to the pass at the head of the valley."),
]


BLOCKED_TEXT = ("This page sits on a domain of the blocklist, so none of these words may reach any output of the run: "
                "not the documents, not the pairs, not the shards. Its picture must not even be requested from "
                "its server, because the page is dropped before it is parsed.")


def _page(first: str, second: str, images: list[tuple[str, str]]) -> bytes:
    imgs = "".join(f"<img src='{src}' alt='{alt}'>" for src, alt in images)
    return (f"<html><head><title>Village notes</title></head><body><p>{first}</p>{imgs}"
            f"<p>{second}</p></body></html>").encode()


def _warc(path: Path, pages: list[tuple[str, bytes]]) -> None:
    with path.open("wb") as fh:
        w = WarcWriter(fh)
        for url, body in pages:
            block = http_response(200, "OK", [("Content-Type", "text/html; charset=utf-8")], body)
            w.write_record("response", [("WARC-Record-ID", f"<urn:uuid:{uuid.uuid4()}>"),
                                        ("WARC-Date", "2026-01-01T00:00:00Z"), ("WARC-Target-URI", url)],
                           block, "application/http; msgtype=response", body)


def test_blocked_page_listed_image_tdm_image_and_email_caption(tmp_path):
    listed, ok1 = jpeg(seed=41), jpeg(seed=40)
    routes = {"/ok1.jpg": Route(ok1), "/listed.jpg": Route(listed),
              "/tdm.jpg": Route(jpeg(seed=42), headers={"tdm-reservation": "1"}),
              "/ok2.jpg": Route(jpeg(seed=43)), "/b.jpg": Route(jpeg(seed=44)), "/ok3.jpg": Route(jpeg(seed=46)),
              "/private/p.jpg": Route(jpeg(seed=45)),
              "/robots.txt": Route(b"User-agent: img2dataset\nDisallow: /private/\n", content_type="text/plain")}
    (tmp_path / "blocked.txt").write_text("# UT1-style\nblocked.example\n")
    (tmp_path / "hashes.txt").write_text(hashlib.sha256(listed).hexdigest() + "\n")
    run = tmp_path / "run"
    with ScriptedServer(routes) as server:
        img = server.url
        pages = [
            ("https://village.example/a.html", _page(PARAGRAPHS[0], PARAGRAPHS[1], [
                (img("/ok1.jpg"), "the stone bridge at dusk, photo by anna.berg@photos-example.com"),
                (img("/listed.jpg"), "a picture that is on the hash list"),
                (img("/tdm.jpg"), "a picture whose server reserves text and data mining"),
                (img("/private/p.jpg"), "a picture in a folder robots.txt closes to img2dataset"),
                (img("/ok3.jpg"), "the river below the mill at noon")])),
            ("https://www.blocked.example/b.html", _page(BLOCKED_TEXT, PARAGRAPHS[2], [(img("/b.jpg"), "a picture on a blocked page")])),
            ("https://village.example/c.html", _page(PARAGRAPHS[2], PARAGRAPHS[0], [(img("/ok2.jpg"), "the station clock in the morning")])),
        ]
        (tmp_path / "warc").mkdir()
        _warc(tmp_path / "warc" / "tiny.warc.gz", pages)
        cfg = PipelineConfig.load(overrides={
            "snapshot": "CC-MAIN-2026-01", "out": str(run), "spark.master": "local[2]", "spark.show_progress": False,
            "dask.processes": False, "dask.n_workers": 1, "images.allow_addresses": [server.allow],
            "images.processes": 1, "images.threads_per_process": 4, "images.timeout": 3.0,
            "score.model": "vlc-tiny-clip", "score.pretrained": None, "score.filter_mode": "none",
            "score.semantic_dedup": False, "score.mmc4_min_sim": -1.0, "score.filters.enabled": False,
            "safety.blocked_domains_file": str(tmp_path / "blocked.txt"),
            "safety.image_hash_blocklist_file": str(tmp_path / "hashes.txt"),
        })
        stats = run_all(cfg, input_spec=str(tmp_path / "warc"), stages=("extract", "dedup", "images", "score"))
        requested = list(server.requests)

    ex, im, sc = stats["extract"], stats["images"], stats["score"]
    # extract: the blocked page is one reject with its reason, the two others are documents.
    assert ex.rows_in == 3 and ex.rows_out == 2 and ex.rejected == {"blocked_domain": 1}
    assert ex.counters["pii_email"] >= 2  # the caption and the alt text in the document's metadata
    rej = pq.read_table(run / "extract" / "rejects").to_pylist()
    assert [r["reason"] for r in rej] == ["blocked_domain"] and "blocked.example" in rej[0]["detail"]
    docs = pq.read_table(run / "extract" / "documents").to_pylist()
    assert sorted(d["url"] for d in docs) == ["https://village.example/a.html", "https://village.example/c.html"]
    assert "/b.jpg" not in requested  # the blocked page's image was never even fetched

    # images: the listed image and the TDM-reserved one are rejects with their reasons, the others kept.
    img_rej = {r["row_id"].rsplit("/", 1)[1]: r["reason"] for r in pq.read_table(run / "images" / "rejects").to_pylist()
               if r["table"] == "images"}
    assert img_rej == {"listed.jpg": "hash_listed", "tdm.jpg": "tdm_reserved", "p.jpg": "robots_disallowed"}
    assert im.rejected == {"hash_listed": 1, "tdm_reserved": 1, "robots_disallowed": 1} and im.rows_out == 3
    assert "/private/p.jpg" not in requested and requested.count("/robots.txt") == 1
    assert im.counters["robots_txt_fetched"] == 1
    kept = sorted(u.rsplit("/", 1)[1] for u in pq.read_table(run / "images" / "images").column("url").to_pylist())
    assert kept == ["ok1.jpg", "ok2.jpg", "ok3.jpg"]

    # score: the three kept pairs, the e-mail replaced in the caption; every stage conserved its rows.
    pairs = pq.read_table(run / "score" / "pairs").to_pylist()
    captions = {p["url"].rsplit("/", 1)[1]: p["caption"] for p in pairs}
    assert set(captions) == {"ok1.jpg", "ok2.jpg", "ok3.jpg"} and sc.rows_out == 3 and not sc.rejected
    assert "anna.berg" not in captions["ok1.jpg"] and "@example." in captions["ok1.jpg"]
    assert captions["ok2.jpg"] == "the station clock in the morning"
    for s in stats.values():
        assert s.conserved(), s.stage
    # The listed bytes and the blocked page's text are in no file of the run.
    needle = BLOCKED_TEXT[:40].encode()
    # (the scan has teeth: a kept picture's bytes are found as they are, in the WebDataset tar)
    assert any(ok1 in f.read_bytes() for f in run.rglob("*.tar"))
    for f in run.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert listed not in data, f
            assert b"anna.berg" not in data, f
            assert needle not in data, f
    card = (run / "DATASET_CARD.md").read_text()
    assert "blocked_domain" in card and "hash_listed" in card and "tdm_reserved" in card and "email" in card
    assert "robots_disallowed" in card
    safety = card.split("## Safety", 1)[1].split("\n## ", 1)[0]
    for reason in ("blocked_domain", "hash_listed", "robots_disallowed", "tdm_reserved"):
        assert f"`{reason}`" in safety, reason

    # The report's funnel (data and HTML) shows each reason with the stats' count, and the PII and robots.txt counters.
    from curation.report import RunCatalog, funnel
    from curation.report_html import _funnel_section

    rows = funnel(RunCatalog.scan(str(run)))
    main = {r["stage"]: r for r in rows if r["table"] is None and r.get("complete")}
    assert main["extract"]["rejected"]["blocked_domain"] == 1
    assert {k: main["images"]["rejected"][k] for k in ("hash_listed", "tdm_reserved", "robots_disallowed")} == \
        {"hash_listed": 1, "tdm_reserved": 1, "robots_disallowed": 1}
    assert main["extract"]["safety"]["pii_email"] == ex.counters["pii_email"]
    assert main["images"]["safety"]["robots_txt_fetched"] == 1
    html = _funnel_section({"funnel": rows})
    assert all(k in html for k in ("blocked_domain", "hash_listed", "tdm_reserved", "robots_disallowed", "pii_email"))

    _takedown_on_the_finished_run(run, "https://village.example/c.html", ok1, tmp_path)


def _rows(run: Path) -> dict[str, list[dict]]:
    return {str(f.relative_to(run)): pq.read_table(f).to_pylist() for f in sorted(run.rglob("*.parquet"))
            if not any(p.startswith(("_", ".")) or p == "takedowns" for p in f.relative_to(run).parts)}


def _takedown_on_the_finished_run(run: Path, page: str, picture: bytes, tmp_path: Path) -> None:
    """Issue 15's must-show on a real finished run (extract, dedup, images, score: Parquet, tars, embeddings,
    MMC4): one page URL and one image SHA-256 leave every output; every other row is as it was; the
    counts in stats.json and the card add up."""
    import json

    import numpy as np

    from curation.card import build_card
    from pipelines.dask_score import load_embeddings
    from pipelines.takedown import TakedownLists, takedown

    digest = hashlib.sha256(picture).hexdigest()
    images = pq.read_table(run / "images" / "images").to_pylist()
    image_url = next(r["url"] for r in images if r["sha256"] == digest)
    ipairs = pq.read_table(run / "images" / "pairs").to_pylist()
    gone_keys = {p["key"] for p in ipairs if p["page_url"] == page or p["sha256"] == digest}
    gone_rows = [j for j, p in enumerate(ipairs) if p["key"] in gone_keys]
    assert gone_keys and len(gone_keys) < len(ipairs)
    before, emb_before = _rows(run), load_embeddings(str(run / "score"))
    (tmp_path / "u.txt").write_text(page + "\n")
    (tmp_path / "s.txt").write_text(digest + "\n")
    summary = takedown(str(run), TakedownLists.load(str(tmp_path / "u.txt"), None, str(tmp_path / "s.txt")))
    assert summary["rows_removed"] > 0 and summary["embedding_rows_of_rejected_pairs"]

    needles = (page, image_url, digest)

    def names(row: dict) -> bool:
        text = repr(row)
        return any(n in text for n in needles) or any(picture == v for v in row.values() if isinstance(v, bytes)) \
            or any(picture == v for v in (row.get("image_bytes") or []))

    def holds_the_image(row: dict) -> bool:  # a document (or MMC4 document) that stays, less the image
        return row.get("url") != page and (image_url in (row.get("images") or [])
                                           or image_url in [i.get("raw_url") for i in (row.get("image_info") or [])])

    after = _rows(run)
    for rel, rows in after.items():
        assert not any(names(r) for r in rows), rel
        kept = [r for r in before[rel] if r.get("key") not in gone_keys and r.get("row_id") not in gone_keys
                and (not names(r) or holds_the_image(r))]
        assert len(kept) == len(rows), (rel, len(kept), len(rows))
        for o, n in zip(kept, rows):  # every other row as it was; a document only lost the image's position
            if o != n:
                assert holds_the_image(o) and o.get("doc_id") == n.get("doc_id"), rel
    for f in run.rglob("*"):  # tars, JSON, .npy: read raw
        rel = f.relative_to(run)
        if f.is_file() and f.suffix != ".parquet" and not rel.parts[0].startswith(("_", "takedowns")):
            data = f.read_bytes()
            assert picture not in data and not any(n.encode() in data for n in needles), rel
    emb = load_embeddings(str(run / "score"))
    assert not emb[gone_rows].any()
    others = [j for j in range(len(ipairs)) if j not in gone_rows]
    assert np.array_equal(emb[others], emb_before[others])
    for stage in ("extract", "dedup", "images", "score"):
        st = json.loads((run / stage / "stats.json").read_text())
        for t in [st, *(st.get("tables") or {}).values()]:
            assert t["rows_in"] == t["rows_out"] + sum(t["rejected"].values()), stage
        for out, n in st["outputs"].items():
            d = run / stage / out
            if d.is_dir() and list(d.glob("*.parquet")) and out != "mmc4":
                assert n == sum(len(r) for k, r in after.items() if k.startswith(f"{stage}/{out}/")), (stage, out)
    assert json.loads((run / "score" / "stats.json").read_text())["rows_out"] == len(pq.read_table(run / "score" / "pairs"))
    from curation.config import PipelineConfig

    card = build_card(str(run), PipelineConfig.load())
    assert "`takedown`" in card.split("## Safety", 1)[1].split("\n## ", 1)[0]
