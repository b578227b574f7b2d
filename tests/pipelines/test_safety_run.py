"""The safety layer end to end on a tiny hand-made crawl (extract -> dedup -> images -> score):
a page on a blocked domain, an image on the hash list, an image its host's robots.txt disallows, an image
served with ``tdm-reservation: 1`` and a caption with an e-mail address are each handled with their reason;
nothing else is lost."""
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
              "/ok2.jpg": Route(jpeg(seed=43)), "/b.jpg": Route(jpeg(seed=44)),
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
                (img("/private/p.jpg"), "a picture in a folder robots.txt closes to img2dataset")])),
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
    assert im.rejected == {"hash_listed": 1, "tdm_reserved": 1, "robots_disallowed": 1} and im.rows_out == 2
    assert "/private/p.jpg" not in requested and requested.count("/robots.txt") == 1
    assert im.counters["robots_txt_fetched"] == 1
    kept = sorted(u.rsplit("/", 1)[1] for u in pq.read_table(run / "images" / "images").column("url").to_pylist())
    assert kept == ["ok1.jpg", "ok2.jpg"]

    # score: the two kept pairs, the e-mail replaced in the caption; every stage conserved its rows.
    pairs = pq.read_table(run / "score" / "pairs").to_pylist()
    captions = {p["url"].rsplit("/", 1)[1]: p["caption"] for p in pairs}
    assert set(captions) == {"ok1.jpg", "ok2.jpg"} and sc.rows_out == 2 and not sc.rejected
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
