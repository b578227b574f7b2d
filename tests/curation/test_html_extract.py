"""DOM walk: text and images in page order, lazy-load sources, furniture dropped."""
from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest

from curation.config import ExtractConfig
from curation.html_extract import (
    REMOVED_TAGS,
    ExtractedImage,
    HtmlTooDeep,
    _is_boilerplate_container,
    banned_word_in_url,
    estimated_depth,
    extract_page,
    pick_image_src,
)
from curation.warc_reader import iter_warc
from tests.support.realdata import realdata_path

BANNED = frozenset(ExtractConfig().image_url_banned_words)

PAGE = """<html><head><title>Shapes</title><base href="https://cdn.example/base/"></head><body>
<header><nav><a href="/">Home</a> <a href="/x">Menu item</a></nav></header>
<div class="menu">Menu text that must go</div>
<article><h1>Three red circles</h1>
<p>The first paragraph has <b>bold</b> and <a href="#">a link</a> inline.</p>
<figure><img src="img/one.jpg" alt="three red circles" width="300" height="200px">
<figcaption>A figure caption</figcaption></figure>
<p>Second paragraph<br>with a line break.</p>
<img src="data:image/gif;base64,R0lGOD" data-src="https://images.example/abc123" alt="lazy">
<img srcset="small.jpg 320w, large.jpg 1280w, mid.jpg 640w" alt="srcset">
<img src="/static/site-logo.png" alt="logo"><img src="/icons/favicon32.png">
<script>var x = "<p>not text</p>";</script><style>p {color: red}</style>
</article><footer>Copyright footer</footer></body></html>"""


def test_order_text_and_images_and_sources():
    page = extract_page(PAGE, "https://www.example.org/a/page.html", BANNED)
    kinds = ["img" if isinstance(it, ExtractedImage) else "txt" for it in page.items]
    assert kinds == ["txt", "img", "txt", "img", "img"]
    first = page.items[0]
    assert first[0] == "Three red circles"
    assert first[1] == "The first paragraph has bold and a link inline."
    img = page.items[1]
    assert img.url == "https://cdn.example/base/img/one.jpg"  # <base href> wins over the page URL
    assert (img.alt, img.width, img.height, img.figcaption) == ("three red circles", 300, 200, "A figure caption")
    assert page.items[2] == ["A figure caption", "Second paragraph\nwith a line break."]
    assert page.items[3].url == "https://images.example/abc123"  # extension-less CDN URL kept
    assert page.items[4].url == "https://cdn.example/base/large.jpg"  # largest srcset candidate
    text = " ".join(p for it in page.items if not isinstance(it, ExtractedImage) for p in it)
    for gone in ("Home", "Menu text", "not text", "color", "Copyright"):
        assert gone not in text
    assert page.dropped_images == {"url_logo": 1, "url_icon": 1}
    assert page.title == "Shapes"


def test_banned_words_match_tokens_not_substrings():
    assert banned_word_in_url("https://a.b/img/logo_small2x.png", BANNED) == "logo"
    assert banned_word_in_url("https://a.b/favicon.ico", BANNED) == "icon"
    assert banned_word_in_url("https://a.b/silicone-mould.jpg", BANNED) is None
    assert banned_word_in_url("https://logo.example/photo.jpg", BANNED) is None  # host is not the path


def test_pick_image_src_prefers_lazy_attributes():
    assert pick_image_src({"src": "data:x", "data-original": "a.jpg"}) == "a.jpg"
    assert pick_image_src({"src": "blank.gif", "data-src": "real.jpg"}) == "real.jpg"
    assert pick_image_src({"src": "plain.jpg"}) == "plain.jpg"
    assert pick_image_src({"src": "data:x"}) is None


def test_deep_nesting_is_refused_quickly():
    deep = "<div>" * 100_000 + "x" + "</div>" * 100_000
    with pytest.raises(HtmlTooDeep):
        extract_page(deep, "http://a/", max_depth=256)
    moderate = "<div>" * 300 + "<p>deep text here</p>" + "</div>" * 300
    with pytest.raises(HtmlTooDeep):
        extract_page(moderate, "http://a/", max_depth=256)
    assert extract_page(moderate, "http://a/", max_depth=1000).items == [["deep text here"]]


class _ImgOrder(HTMLParser):
    """Independent reference (stdlib parser): every <img> of the page in document order, with whether
    it sits inside an element the extractor removes by design (nav, header, footer, form, ... or a
    menu/share/cookie container by class/id/role)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[bool] = []  # per open element: does it (or an ancestor) remove its subtree?
        self.imgs: list[tuple[dict, bool]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        removed = (self.stack[-1] if self.stack else False) or tag in REMOVED_TAGS or _is_boilerplate_container(attrs)
        if tag == "img":
            self.imgs.append((attrs, removed))
        elif tag not in VOID:
            self.stack.append(removed)

    def handle_endtag(self, tag):
        if tag not in VOID and self.stack:
            self.stack.pop()


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


class _BodyContentImgs(HTMLParser):
    """Independent reference: the <img> inside Wikipedia's article body (``id="bodyContent"``), in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[bool] = []
        self.imgs: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        inside = (self.stack[-1] if self.stack else False) or attrs.get("id") == "bodyContent"
        if tag == "img":
            if inside:
                self.imgs.append(attrs)
        elif tag not in VOID:
            self.stack.append(inside)

    def handle_endtag(self, tag):
        if tag not in VOID and self.stack:
            self.stack.pop()


def _wikipedia_record():
    path = realdata_path("warc", "ukwa_wikipedia-post-blackout_main-page.warc.gz")
    return next(r for r in iter_warc(str(path)) if r.content_type == "text/html")


def test_wikipedia_capture_images_follow_html_img_order():
    """OBELICS mode: image order equals the order of <img> in the real page's HTML, image for image."""
    rec = _wikipedia_record()
    html = rec.payload.decode("utf-8")
    ref = _ImgOrder()
    ref.feed(html)
    assert len(ref.imgs) == html.count("<img")
    in_content = [urljoin(rec.target_uri, pick_image_src(a)) for a, removed in ref.imgs if not removed]
    assert len(in_content) >= 15 and len(in_content) == len(ref.imgs) - 1  # only the search box icon is in a <form>
    page = extract_page(html, rec.target_uri, frozenset(), mode="obelics")  # no furniture filter: every <img>
    assert [im.url for im in page.images] == in_content
    # With the furniture filter, the images left are exactly the others, in the same order.
    filtered = [im.url for im in extract_page(html, rec.target_uri, BANNED, mode="obelics").images]
    assert filtered == [u for u in in_content if banned_word_in_url(u, BANNED) is None]


def test_wikipedia_capture_main_content_keeps_every_body_image_in_order():
    """Main-content mode: every <img> of the article body (#bodyContent) is kept, in HTML order; the two
    footer badges outside it are dropped and counted; the extract stage's document carries the same."""
    from curation.config import PipelineConfig
    from curation.extract import RecordProcessor
    from filters.text_pipeline import TextFilterPipeline

    rec = _wikipedia_record()
    html = rec.payload.decode("utf-8")
    ref = _BodyContentImgs()
    ref.feed(html)
    body_imgs = [urljoin(rec.target_uri, pick_image_src(a)) for a in ref.imgs]
    assert len(body_imgs) >= 14
    page = extract_page(html, rec.target_uri, frozenset(), mode="main_content")
    assert [im.url for im in page.images] == body_imgs
    assert page.dropped_images["boilerplate"] == 2  # the footer's "powered by" badges
    cfg = PipelineConfig()
    assert cfg.extract.mode == "main_content"
    res = RecordProcessor(cfg.extract, TextFilterPipeline(cfg.paragraph_filters, cfg.document_filters), "t").process(rec)
    assert res.document is not None, res.reason
    assert [u for u in res.document["images"] if u] == [u for u in body_imgs if banned_word_in_url(u, BANNED) is None]
    assert res.counters["images_dropped_boilerplate"] == 2


def test_dolma_warc_main_content_keeps_trafilaturas_article_images_in_order():
    """On every page of the dolma WARC, each image trafilatura keeps as article content
    (``include_images``) is kept by main-content mode too, in the same relative order."""
    import html as htmllib
    import re

    trafilatura = pytest.importorskip("trafilatura")
    from curation.extract import decode_html
    from curation.warc_reader import ResponseRecord

    kept = theirs = 0
    for rec in iter_warc(str(realdata_path("warc", "dolma_wget_sample-0000.warc.gz"))):
        if not (isinstance(rec, ResponseRecord) and rec.http_status == 200 and rec.payload
                and (rec.content_type or "").startswith("text/html")):
            continue
        html, _, _ = decode_html(rec.payload, rec.charset)
        if not html:
            continue
        ours = [im.url for im in extract_page(html, rec.target_uri, frozenset(), mode="main_content").images]
        xml = trafilatura.extract(html, url=rec.target_uri, output_format="xml", include_images=True) or ""
        ref = [urljoin(rec.target_uri, htmllib.unescape(s)) for s in re.findall(r'<graphic src="([^"]*)"', xml)]
        positions = [ours.index(u) for u in ref if u in ours]
        assert len(positions) == len(ref), (rec.target_uri, [u for u in ref if u not in ours])
        assert positions == sorted(positions), rec.target_uri
        kept += len(ours)
        theirs += len(ref)
    assert theirs >= 40 and kept >= theirs


def test_depth_estimate_ignores_script_style_and_comment_bodies():
    """A real news page (html_eval 24ora.com) builds <span> strings in scripts: 1,294 <span> opened in
    the raw text, 56 closed, a DOM 25 deep. The pre-parse estimate must not refuse such a page."""
    script = "<script>var s = '" + "<span class=x>" * 6000 + "';</script>"
    html = f"<html><head><style>/* <div> */</style></head><body><!-- <div><div> -->{script}<p>kept text</p></body></html>"
    assert html.count("<") > 5000
    assert estimated_depth(html) < 10
    assert extract_page(html, "http://a/").items == [["kept text"]]
    # Unclosed script openings cost linear time, not a rescan per opening.
    assert estimated_depth("<script " * 200_000) == 0
