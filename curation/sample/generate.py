"""Deterministic offline mini-crawl (``SNAPSHOT=sample``) with planted ground truth.

``generate_sample(out_dir)`` writes four Common-Crawl-like ``.warc.gz`` files of
shape-and-colour articles, the images those articles reference (served by
:class:`curation.sample.server.ImageServer` from ``out_dir/images``), a small
human-clean COCO-style caption split, and JSON Lines ground truth that later
stages (extract, filters, dedup, download, CLIP/BLIP) are measured against.

Layout of ``out_dir`` (all paths in the manifest are relative to it)::

    warc/sample-0000{0..3}.warc.gz
    images/{content,logo,icon,track,promo}/...      served at image_base_url
    clean/images/*.jpg, clean/captions.json         COCO captions format
    ground_truth/pages.jsonl                         one line per response record
    ground_truth/images.jsonl                        one line per image file under images/
    ground_truth/alt_texts.jsonl                     one line per <img> occurrence on a page
    ground_truth/boilerplate_paragraphs.jsonl        per-domain repeated article paragraphs
    manifest.json

Expectation families in ``pages.jsonl`` (``expect``): ``document`` (a good
extractor + OBELICS filters keep it before dedup), ``http_status``, ``not_html``,
``empty``, ``language``, ``spam`` (fails the repetition/stopword filters),
``too_short`` (fewer than 10 words once nav/aside/footer are dropped) and
``no_images`` (no image in the article).

Jaccard (``pages.jsonl`` ``jaccard``): over the SETS of word 5-gram shingles of
the text inside ``<article>`` (h1, paragraphs including domain boilerplate,
figcaptions), lower-cased, with every character that is not ``\\w`` or
whitespace deleted, split on whitespace (:func:`curation.sample.text.shingles`).
``jaccard_no_boilerplate`` is the same without the domain boilerplate paragraphs.
"""
from __future__ import annotations

import html
import json
import os
import random
import shutil
import tempfile
import unicodedata
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

from curation.sample import images as imgs
from curation.sample import text as tx
from curation.sample.text import Scene
from curation.sample.warc_writer import WarcWriter, http_request, http_response, record_id, warc_fields

GENERATOR_VERSION = 1
N_WARC_FILES = 4
NEAR_DUP_TARGETS = [0.5, 0.7, 0.8, 0.9, 0.95]
PLACEHOLDER_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
EXPECT_FAMILIES = ["document", "http_status", "not_html", "empty", "language", "spam", "too_short", "no_images"]
CRAWL_START = datetime(2024, 2, 20, 0, 0, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Domain:
    host: str
    name: str
    pattern: str  # {slug} {id} {yyyy} {mm}
    lang: str = "en"
    boilerplate: tuple[str, ...] = ()
    spam: bool = False


EN_DOMAINS = [
    Domain("www.shapes-daily.example", "Shapes Daily", "/articles/{slug}.html", boilerplate=(
        "Subscribe to our newsletter for weekly updates about shapes and colours.",
        "Our weekend edition is delivered to every subscriber on Saturday morning before nine.")),
    Domain("colour-theory-weekly.example", "Colour Theory Weekly", "/{yyyy}/{mm}/{slug}/", boilerplate=(
        "This article is part of our reader-supported series, so if you enjoyed it, please consider becoming a member today.",)),
    Domain("www.geometry-gazette.example", "Geometry Gazette", "/news/{slug}", boilerplate=(
        "Have a story idea or a photograph to share? Write to the editors at any time and we will get back to you.",)),
    Domain("pattern-post.example", "The Pattern Post", "/p/{id}-{slug}.html"),
    Domain("www.the-palette.example", "The Palette", "/blog/{slug}.html", boilerplate=(
        "All opinions expressed here belong to the authors and do not necessarily reflect the views of the publication.",)),
    Domain("polygon-press.example", "Polygon Press", "/stories/{slug}.htm"),
    Domain("hue-and-form.example", "Hue and Form", "/journal/{yyyy}/{slug}.html", boilerplate=(
        "Follow us on social media for pictures from behind the scenes and news about upcoming workshops.",)),
    Domain("www.craft-corner.example", "Craft Corner", "/posts/{slug}/"),
    Domain("classroom-notes.example", "Classroom Notes", "/notes/{slug}.html"),
    Domain("design-digest.example", "Design Digest", "/digest/{id}/{slug}"),
]
FOREIGN_DOMAINS = {
    "fr": Domain("www.formes-et-couleurs.example", "Formes et Couleurs", "/articles/{slug}.html", lang="fr"),
    "de": Domain("formen-und-farben.example", "Formen und Farben", "/artikel/{slug}.html", lang="de"),
    "es": Domain("www.formas-y-colores.example", "Formas y Colores", "/noticias/{slug}.html", lang="es"),
}
SPAM_DOMAINS = [
    Domain("best-cheap-shapes.example", "Best Cheap Shapes", "/deal/{id}.html", spam=True),
    Domain("discount-sticker-deals.example", "Discount Sticker Deals", "/offers/{slug}-{id}.php", spam=True),
]
ALL_DOMAINS = EN_DOMAINS + list(FOREIGN_DOMAINS.values()) + SPAM_DOMAINS
_DOMAIN_BY_HOST = {d.host: d for d in ALL_DOMAINS}

NAV_ITEMS = ["Home", "News", "Features", "Workshops", "Reviews", "Archive", "About us", "Contact", "Events", "Shop"]
SIDEBAR_TITLES = ["Most read this week", "You may also like", "Popular posts", "From the archive"]
PEOPLE = ["Alex Morgan", "Priya Shah", "Tom Becker", "Lucia Ferreira", "Jonas Lind", "Mei Chen", "Sara Okafor", "Ben Ruiz"]

CP1252_PARAGRAPH = ("The café on the corner served as a naïve sort of studio for the group, and the owner liked "
                    "to call it “a room for ideas” — which, in fairness, it was. Nobody minded the crème brûlée "
                    "either, although it cost €4 and was ‘rather small’.")


# --------------------------------------------------------------------------- data model


@dataclass
class ImageFile:
    url: str
    file: str  # relative to out_dir
    role: str
    width: int
    height: int
    format: str
    scene: Scene | None = None
    textured: bool = False
    variant_of: str | None = None
    pages: set = field(default_factory=set)

    def row(self) -> dict:
        s = self.scene
        return {"url": self.url, "file": self.file, "role": self.role,
                "shape": s.shape if s else None, "colour": s.colour if s else None,
                "count": s.count if s else None, "background": s.background if s else None,
                "caption": s.caption if s else None, "width": self.width, "height": self.height,
                "format": self.format, "textured": self.textured, "variant_of": self.variant_of,
                "n_documents": len(self.pages)}


@dataclass
class ImgOcc:
    """One <img> in an article (content or sponsor)."""

    image: ImageFile
    src_attr: str  # src | data-src | data-original | srcset
    raw_url: str  # as written in the HTML (maybe relative)
    alt: str | None
    alt_kind: str
    in_figure: bool = False
    figcaption: str | None = None
    figcaption_kind: str | None = None
    sentence: str | None = None
    srcset_urls: list[str] | None = None
    alt_lang: str = "en"
    content_index: int | None = None


@dataclass
class Para:
    sentences: list[str]
    fixed: set[int] = field(default_factory=set)  # indices not to be edited (describing sentences)
    boilerplate: bool = False
    raw_html: str | None = None  # set for the cp1252 paragraph (no markup)

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass
class Article:
    title: str
    items: list  # ("h1", str) | ("p", Para) | ("img", ImgOcc) | ("sponsor", ImgOcc)
    use_base_href: bool = False


@dataclass
class PageRec:
    idx: int
    url: str
    domain: Domain
    kind: str
    lang: str
    expect: str
    record_kind: str = "page"
    duplicate_of: str | None = None
    jaccard: float | None = None
    jaccard_no_boilerplate: float | None = None
    jaccard_target: float | None = None
    article: Article | None = None
    article_html: str | None = None
    article_occ: list | None = None
    charset: str = "utf-8"
    body: bytes = b""
    http_status: int = 200
    content_type: str = "text/html; charset=utf-8"
    date: datetime = CRAWL_START
    rid: str = ""
    occurrences: list = field(default_factory=list)  # dicts for alt_texts.jsonl
    warc_file: str = ""
    offset: int = -1
    article_text: str | None = None


# --------------------------------------------------------------------------- helpers


def _slugify(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")[:60]


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def _article_text(article: Article, with_boilerplate: bool = True) -> str:
    blocks = []
    for kind, obj in article.items:
        if kind == "h1":
            blocks.append(obj)
        elif kind == "p":
            if with_boilerplate or not obj.boilerplate:
                blocks.append(obj.text)
        elif kind == "img" and obj.figcaption:
            blocks.append(obj.figcaption)
    return "\n".join(blocks)


def _markup(rng: random.Random, text: str, host: str) -> str:
    """Escape ``text`` and wrap 0-2 whole words in inline tags (text content unchanged)."""
    words = text.split(" ")
    cands = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 3]
    chosen = set(rng.sample(cands, min(len(cands), rng.randint(0, 2)))) if cands else set()
    out = []
    for i, w in enumerate(words):
        e = _esc(w)
        if i in chosen:
            tag = rng.choice(["a", "b", "em", "span"])
            if tag == "a":
                e = f'<a href="https://{host}/tag/{w.lower()}">{e}</a>'
            elif tag == "span":
                e = f'<span class="hl">{e}</span>'
            else:
                e = f"<{tag}>{e}</{tag}>"
        out.append(e)
    return " ".join(out)


# --------------------------------------------------------------------------- builder


class _Builder:
    def __init__(self, root: Path, n_pages: int, seed: int, image_base_url: str):
        if n_pages < 20:
            raise ValueError("n_pages must be at least 20 (room for every planted kind)")
        self.root = root
        self.n_pages = n_pages
        self.seed = seed
        self.base = image_base_url if image_base_url.endswith("/") else image_base_url + "/"
        self.rng = random.Random(f"sample:{seed}")
        self.images: dict[str, ImageFile] = {}  # url -> file
        self.pages: list[PageRec] = []
        self.next_image = 0
        self.used_urls: set[str] = set()
        (root / "images").mkdir(parents=True)
        # Root-relative image URLs resolve to the base only when the base has no path.
        self.base_is_root = urlsplit(self.base).path in ("", "/")

    # ------------------------------------------------------------------ images

    def _save(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def _pick_size(self, rng: random.Random) -> tuple[int, int]:
        r = rng.random()
        if r < 0.83:
            while True:
                w, h = rng.randint(224, 400), rng.randint(224, 400)
                if 0.6 <= w / h <= 1.6:
                    return w, h
        if r < 0.91:
            while True:
                w, h = rng.randint(300, 640), rng.randint(300, 640)
                if 0.6 <= w / h <= 1.6:
                    return w, h
        if r < 0.95:
            return rng.randint(150, 223), rng.randint(150, 223)
        if r < 0.98:
            return rng.randint(80, 140), rng.randint(80, 140)
        return (rng.randint(500, 640), rng.randint(150, 200))  # strip: aspect > 2.5

    def new_content_image(self, scene: Scene) -> ImageFile:
        i = self.next_image
        self.next_image += 1
        rng = random.Random(f"sample:{self.seed}:image:{i}")
        r = rng.random()
        fmt = "jpeg" if r < 0.70 else ("png" if r < 0.92 else "webp")
        w, h = self._pick_size(rng)
        textured = rng.random() < 0.3
        im = imgs.render_scene(rng, scene, w, h, textured)
        rel = f"content/{i:05d}.{imgs.ext_of(fmt)}"
        self._save("images/" + rel, imgs.encode(im, fmt))
        f = ImageFile(self.base + rel, "images/" + rel, "content", w, h, fmt, scene, textured)
        self.images[f.url] = f
        return f, im

    def variant_of(self, f: ImageFile, full) -> ImageFile:
        w, h = max(1, f.width // 2), max(1, f.height // 2)
        im = full.resize((w, h), resample=2)
        rel = f.file[len("images/"):].rsplit(".", 1)[0] + "_1x." + imgs.ext_of(f.format)
        self._save("images/" + rel, imgs.encode(im, f.format))
        v = ImageFile(self.base + rel, "images/" + rel, "variant", w, h, f.format, f.scene, f.textured, variant_of=f.url)
        self.images[v.url] = v
        return v

    def make_furniture(self) -> None:
        rng = random.Random(f"sample:{self.seed}:furniture")
        self.logos = {}
        for d in ALL_DOMAINS:
            rel = f"logo/{_slugify(d.host)}-logo.png"
            self._save("images/" + rel, imgs.encode(imgs.render_logo(rng, d.name), "png"))
            self.logos[d.host] = self._add(rel, "logo", 120, 40, "png")
        self.icons = []
        for name, size in [("share-16", 16), ("rss-32", 32), ("print-16", 16), ("mail-32", 32)]:
            rel = f"icon/{name}.png"
            self._save("images/" + rel, imgs.encode(imgs.render_icon(rng, size), "png"))
            self.icons.append(self._add(rel, "icon", size, size, "png"))
        self.pixels = []
        for name in ["track/pixel.gif", "track/p.gif", "stats/t.gif"]:
            self._save("images/" + name, imgs.encode(imgs.render_pixel(), "gif"))
            self.pixels.append(self._add(name, "pixel", 1, 1, "gif"))
        self.sponsors = []
        for k, (w, h) in enumerate([(300, 250), (336, 280), (360, 200)]):
            rel = f"promo/sponsor-{k + 1}.jpg"
            self._save("images/" + rel, imgs.encode(imgs.render_sponsor(rng, w, h, f"PARTNER {k + 1}"), "jpeg"))
            self.sponsors.append(self._add(rel, "sponsor", w, h, "jpeg"))

    def _add(self, rel: str, role: str, w: int, h: int, fmt: str) -> ImageFile:
        f = ImageFile(self.base + rel, "images/" + rel, role, w, h, fmt)
        self.images[f.url] = f
        return f

    # ------------------------------------------------------------------ urls

    def page_url(self, rng: random.Random, domain: Domain, title: str) -> str:
        while True:
            day = CRAWL_START - timedelta(days=rng.randint(3, 700))
            path = domain.pattern.format(slug=_slugify(title) + f"-{rng.randint(100, 9999)}", id=rng.randint(10000, 99999),
                                         yyyy=day.year, mm=f"{day.month:02d}")
            url = f"https://{domain.host}{path}"
            if url not in self.used_urls:
                self.used_urls.add(url)
                return url

    # ------------------------------------------------------------------ image occurrences

    def make_occ(self, rng: random.Random, scene: Scene, lang: str, use_relative: bool, k: int,
                 describe_used: set[int]) -> ImgOcc:
        f, full = self.new_content_image(scene)
        r = rng.random()
        src_attr = "src" if r < 0.62 else ("data-src" if r < 0.78 else ("data-original" if r < 0.9 else "srcset"))
        rel = f.url[len(self.base):]
        raw = rel if use_relative else f.url
        if use_relative and self.base_is_root and rng.random() < 0.5:
            raw = "/" + rel
        srcset_urls = None
        if src_attr == "srcset":
            v = self.variant_of(f, full)
            vraw = v.url[len(self.base):] if use_relative else v.url
            srcset_urls = [v.url, f.url]
            raw = f"{vraw} 1x, {raw} 2x"
        if lang == "en":
            r = rng.random()
            if r < 0.60:
                alt, alt_kind = tx.caption_variant(rng, scene), "correct"
            elif r < 0.75:
                alt, alt_kind = tx.caption_variant(rng, tx.different_scene(rng, scene)), "wrong"
            elif r < 0.85:
                alt, alt_kind = "", "empty"
            else:
                alt, alt_kind = rng.choice(tx.BOILERPLATE_ALTS), "boilerplate"
            sentence = tx.describe_sentence(rng, scene, describe_used)
        else:
            r = rng.random()
            if r < 0.7:
                alt, alt_kind = tx.foreign_caption(lang, scene), "correct"
            elif r < 0.85:
                alt, alt_kind = "", "empty"
            else:
                alt, alt_kind = None, "none"
            sentence = tx.foreign_describe(lang, scene)
        occ = ImgOcc(f, src_attr, raw, alt, alt_kind, sentence=sentence, srcset_urls=srcset_urls, alt_lang=lang,
                     content_index=k)
        if rng.random() < 0.6:
            occ.in_figure = True
            r = rng.random()
            if lang != "en":
                occ.figcaption, occ.figcaption_kind = tx.foreign_caption(lang, scene).capitalize() + ".", "correct"
            elif r < 0.65:
                count = "A single" if scene.count == 1 else tx.COUNT_WORDS[scene.count].capitalize()
                occ.figcaption = rng.choice([f"{count} {scene.colour} {scene.noun}.",
                                             f"Figure {k + 1}: {tx.COUNT_WORDS[scene.count]} {scene.colour} {scene.noun}",
                                             f"{count} {scene.colour} {scene.noun} (photo: {rng.choice(PEOPLE)})"])
                occ.figcaption_kind = "correct"
            elif r < 0.85:
                occ.figcaption, occ.figcaption_kind = f"Photo: {rng.choice(PEOPLE)}", "credit"
            else:
                occ.figcaption, occ.figcaption_kind = f"Figure {k + 1}.", "generic"
        if rng.random() < 0.15 and alt_kind != "none":
            occ.alt = None if occ.alt == "" else occ.alt  # occasionally no alt attribute at all
            if occ.alt is None:
                occ.alt_kind = "none"
        return occ

    def distinct_scenes(self, rng: random.Random, n: int) -> list[Scene]:
        out: list[Scene] = []
        while len(out) < n:
            s = tx.random_scene(rng)
            if all((s.colour, s.shape) != (o.colour, o.shape) for o in out):
                out.append(s)
        return out

    # ------------------------------------------------------------------ articles

    def english_article(self, rng: random.Random, domain: Domain, n_images: int, sponsor: ImageFile | None,
                        cp1252: bool = False) -> Article:
        prose = tx.EnglishProse(rng)
        title = rng.choice(tx.TITLE_TOPICS)
        n_par = rng.randint(max(4, n_images), 12)
        paras = [Para(prose.paragraph(rng.randint(2, 6))) for _ in range(n_par)]
        use_relative = rng.random() < 0.18
        scenes = self.distinct_scenes(rng, n_images)
        positions = sorted(rng.sample(range(n_par), n_images))
        describe_used: set[int] = set()
        items: list = [("h1", title)]
        img_after: dict[int, ImgOcc] = {}
        for k, (pi, scene) in enumerate(zip(positions, scenes)):
            occ = self.make_occ(rng, scene, "en", use_relative, k, describe_used)
            para = paras[pi]
            para.sentences.append(occ.sentence)
            para.fixed.add(len(para.sentences) - 1)
            img_after[pi] = occ
        bp_at: dict[int, list[str]] = {}
        for j, text in enumerate(domain.boilerplate):
            bp_at.setdefault(rng.randint(1, n_par - 1) if j == 0 else n_par - 1, []).append(text)
        sponsor_at = rng.randint(1, n_par - 1) if sponsor else None
        for pi, para in enumerate(paras):
            items.append(("p", para))
            if pi in img_after:
                items.append(("img", img_after[pi]))
            if pi == sponsor_at:
                s_alt = rng.choice(["Sponsored", "Our partner", "Advertisement", ""])
                items.append(("sponsor", ImgOcc(sponsor, "src", sponsor.url, s_alt, "boilerplate" if s_alt else "empty")))
            for text in bp_at.get(pi, ()):
                items.append(("p", Para([text], fixed={0}, boilerplate=True)))
            if cp1252 and pi == 0:
                items.append(("p", Para([CP1252_PARAGRAPH], fixed={0})))
        return Article(title, items, use_base_href=use_relative)

    def foreign_article(self, rng: random.Random, lang: str, n_images: int) -> Article:
        prose = tx.ForeignProse(rng, lang)
        title = prose.title()
        n_par = rng.randint(max(3, n_images), 7)
        paras = [Para(prose.paragraph(rng.randint(2, 4))) for _ in range(n_par)]
        scenes = self.distinct_scenes(rng, n_images)
        positions = sorted(rng.sample(range(n_par), n_images))
        items: list = [("h1", title)]
        occs = {}
        for k, (pi, scene) in enumerate(zip(positions, scenes)):
            occ = self.make_occ(rng, scene, lang, False, k, set())
            paras[pi].sentences.append(occ.sentence)
            paras[pi].fixed.add(len(paras[pi].sentences) - 1)
            occs[pi] = occ
        for pi, para in enumerate(paras):
            items.append(("p", para))
            if pi in occs:
                items.append(("img", occs[pi]))
        return Article(title, items)

    def spam_article(self, rng: random.Random, n_images: int) -> Article:
        title = tx.spam_title(rng)
        paras = [Para([p]) for p in tx.spam_paragraphs(rng, rng.randint(3, 6))]
        items: list = [("h1", title)]
        scenes = self.distinct_scenes(rng, n_images)
        for k, para in enumerate(paras):
            items.append(("p", para))
            if k < n_images:
                occ = self.make_occ(rng, scenes[k], "en", False, k, set())
                occ.sentence = None
                items.append(("img", occ))
        return Article(title, items)

    def thin_article(self, rng: random.Random) -> Article:
        scene = tx.random_scene(rng)
        occ = self.make_occ(rng, scene, "en", False, 0, set())
        occ.sentence, occ.in_figure, occ.figcaption, occ.figcaption_kind = None, False, None, None
        return Article("Gallery", [("h1", "Gallery"), ("p", Para(["Photos from the weekend."])), ("img", occ)])

    # ------------------------------------------------------------------ rendering

    def render_article(self, rng: random.Random, art: Article, host: str) -> tuple[str, list[ImgOcc]]:
        out = ["<article>"]
        occs: list[ImgOcc] = []
        for kind, obj in art.items:
            if kind == "h1":
                out.append(f"<h1>{_esc(obj)}</h1>")
            elif kind == "p":
                cls = ' class="promo-note"' if obj.boilerplate and rng.random() < 0.5 else ""
                body = _esc(obj.text) if (obj.boilerplate or obj.raw_html is not None) else _markup(rng, obj.text, host)
                out.append(f"<p{cls}>{body}</p>")
            elif kind in ("img", "sponsor"):
                occs.append(obj)
                tag = self.img_tag(rng, obj)
                if kind == "sponsor":
                    out.append(f'<div class="partner-box"><a href="https://partner.example/?ref={host}">{tag}</a></div>')
                elif obj.in_figure:
                    cap = f"<figcaption>{_esc(obj.figcaption)}</figcaption>" if obj.figcaption else ""
                    out.append(f"<figure>{tag}{cap}</figure>")
                else:
                    out.append(tag)
        out.append("</article>")
        return "\n".join(out), occs

    def img_tag(self, rng: random.Random, occ: ImgOcc) -> str:
        attrs = []
        if occ.src_attr == "src":
            attrs.append(f'src="{_attr(occ.raw_url)}"')
        elif occ.src_attr in ("data-src", "data-original"):
            attrs.append(f'src="{PLACEHOLDER_GIF}"')
            attrs.append(f'{occ.src_attr}="{_attr(occ.raw_url)}"')
            attrs.append('class="lazyload"')
        else:
            attrs.append(f'srcset="{_attr(occ.raw_url)}"')
        if occ.alt is not None:
            attrs.append(f'alt="{_attr(occ.alt)}"')
        if rng.random() < 0.6:
            attrs.append(f'width="{occ.image.width}" height="{occ.image.height}"')
        if occ.src_attr == "src" and rng.random() < 0.2:
            attrs.append('loading="lazy"')
        return "<img " + " ".join(attrs) + ">"

    def render_page(self, rng: random.Random, page: PageRec) -> str:
        d = page.domain
        art = page.article
        furn: list[tuple[ImageFile, str | None]] = []
        head = [f'<meta charset="{page.charset}">' if rng.random() < 0.8 or page.charset != "utf-8" else
                f'<meta http-equiv="Content-Type" content="text/html; charset={page.charset}">',
                f"<title>{_esc(art.title)} | {_esc(d.name)}</title>",
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f'<meta name="description" content="{_attr(art.title)}">']
        if art.use_base_href:
            head.append(f'<base href="{_attr(self.base)}">')
        head.append(f'<link rel="stylesheet" href="https://{d.host}/static/site.css">')
        head.append("<style>body{font-family:Georgia,serif;margin:0}.partner-box{margin:1em 0}"
                    ".hl{background:#ffd}</style>")
        head.append("<script>window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments);}"
                    "gtag('js',new Date());</script>")
        nav_items = rng.sample(NAV_ITEMS, rng.randint(5, 8))
        if page.kind == "boilerplate_heavy":
            nav_items = NAV_ITEMS
        nav = "".join(f'<li><a href="https://{d.host}/{_slugify(n)}/">{_esc(n)}</a></li>' for n in nav_items)
        logo = self.logos[d.host]
        logo_alt = rng.choice([f"{d.name} logo", d.name, None])
        furn.append((logo, logo_alt))
        logo_tag = f'<img src="{_attr(logo.url)}"' + (f' alt="{_attr(logo_alt)}"' if logo_alt is not None else "") + ' width="120" height="40">'
        header = (f'<header class="site-header"><a href="https://{d.host}/" class="brand">{logo_tag}</a>'
                  f'<nav class="main-menu"><ul>{nav}</ul></nav></header>')
        n_side = 12 if page.kind == "boilerplate_heavy" else rng.randint(3, 6)
        side_links = "".join(
            f'<li><a href="https://{d.host}/more/{k}">{_esc(rng.choice(tx.TITLE_TOPICS))}</a></li>' for k in range(n_side))
        aside = f'<aside class="sidebar"><h3>{rng.choice(SIDEBAR_TITLES)}</h3><ul>{side_links}</ul></aside>'
        icons = rng.sample(self.icons, rng.randint(1, 3))
        share = "".join(f'<a href="https://{d.host}/share"><img src="{_attr(ic.url)}" alt="share" width="{ic.width}" '
                        f'height="{ic.height}"></a>' for ic in icons)
        year = 2024
        footer = (f'<footer><div class="share">{share}</div><p>&copy; {year} {_esc(d.name)}. All rights reserved. '
                  f'<a href="https://{d.host}/privacy">Privacy policy</a></p></footer>')
        pixel = self.pixels[page.idx % len(self.pixels)]
        parts = ["<!DOCTYPE html>", f'<html lang="{page.lang}">', "<head>", *head, "</head>",
                 f'<body class="{_slugify(d.name)}">', header, '<div class="container"><main>']
        if page.article_html is None:
            page.article_html, page.article_occ = self.render_article(rng, art, d.host)
        parts.append(page.article_html)
        parts.append("</main>")
        parts.append(aside)
        parts.append("</div>")
        parts.append(footer)
        parts.append(f'<img src="{_attr(pixel.url)}" width="1" height="1" alt="" style="display:none">')
        parts.append('<script src="https://%s/static/app.js" defer></script>' % d.host)
        parts.append("</body></html>")
        # occurrences in page order: logo, article images, share icons, pixel
        ordered: list[tuple[str, object]] = [("furn", (logo, logo_alt))]
        ordered += [("occ", o) for o in page.article_occ]
        ordered += [("furn", (ic, "share")) for ic in icons]
        ordered.append(("furn", (pixel, "")))
        for pos, (kind, obj) in enumerate(ordered):
            if kind == "furn":
                f, alt = obj
                f.pages.add(page.url)
                page.occurrences.append({
                    "page_url": page.url, "record_id": page.rid, "image_url": f.url, "raw_src": f.url,
                    "alt": alt, "alt_kind": "none" if alt is None else ("empty" if alt == "" else "boilerplate"),
                    "true_caption": None, "role": f.role, "position": pos, "content_position": None,
                    "lazy_attr": "src", "srcset_urls": None, "in_figure": False, "figcaption": None,
                    "figcaption_kind": None, "sentence": None, "alt_lang": None})
            else:
                o: ImgOcc = obj
                o.image.pages.add(page.url)
                if o.srcset_urls:
                    self.images[o.srcset_urls[0]].pages.add(page.url)
                resolved = o.image.url
                page.occurrences.append({
                    "page_url": page.url, "record_id": page.rid, "image_url": resolved, "raw_src": o.raw_url,
                    "alt": o.alt, "alt_kind": o.alt_kind,
                    "true_caption": o.image.scene.caption if o.image.scene else None, "role": o.image.role,
                    "position": pos, "content_position": o.content_index if o.image.role == "content" else None,
                    "lazy_attr": o.src_attr, "srcset_urls": o.srcset_urls, "in_figure": o.in_figure,
                    "figcaption": o.figcaption, "figcaption_kind": o.figcaption_kind, "sentence": o.sentence,
                    "alt_lang": o.alt_lang if o.image.role == "content" else None})
        return "\n".join(parts) + "\n"

    # ------------------------------------------------------------------ duplicates

    def copy_article(self, art: Article) -> Article:
        items = []
        for kind, obj in art.items:
            if kind == "p":
                obj = Para(list(obj.sentences), set(obj.fixed), obj.boilerplate, obj.raw_html)
            items.append((kind, obj))
        return Article(art.title, items, art.use_base_href)

    def near_duplicate(self, rng: random.Random, art: Article, target: float) -> Article:
        orig_text = _article_text(art)
        slots = [(ii, si) for ii, (kind, obj) in enumerate(art.items) if kind == "p" and not obj.boilerplate
                 for si in range(len(obj.sentences)) if si not in obj.fixed]
        rng.shuffle(slots)
        prose = tx.EnglishProse(rng)
        replacements = [prose.sentence() for _ in slots]

        def build(k: int) -> Article:
            new = self.copy_article(art)
            for (ii, si), s in zip(slots[:k], replacements[:k]):
                new.items[ii][1].sentences[si] = s
            return new

        best, best_gap = build(0), 1.0
        for k in range(1, len(slots) + 1):
            cand = build(k)
            j = tx.jaccard(orig_text, _article_text(cand))
            if abs(j - target) < best_gap:
                best, best_gap = cand, abs(j - target)
            if j <= target:
                break
        return best

    # ------------------------------------------------------------------ plan

    def plan(self) -> None:
        n = self.n_pages
        rng = self.rng
        counts = {
            "exact_duplicate": max(2, round(0.05 * n)),
            "near_duplicate": max(len(NEAR_DUP_TARGETS), round(0.08 * n)),
            "url_duplicate": max(1, round(0.03 * n)),
            "spam": max(2, round(0.05 * n)),
            "non_english": max(3, round(0.08 * n)),
            "boilerplate_heavy": max(1, round(0.02 * n)),
            "no_images": max(1, round(0.02 * n)),
        }
        counts["normal"] = n - sum(counts.values())
        self.kind_counts = counts
        n_normal = counts["normal"]
        bp_free = [d for d in EN_DOMAINS if not d.boilerplate]
        idx = 0
        originals: list[PageRec] = []
        # normal English pages
        for k in range(n_normal):
            prng = random.Random(f"sample:{self.seed}:page:{idx}")
            domain = EN_DOMAINS[k % len(EN_DOMAINS)] if k < len(EN_DOMAINS) else prng.choice(EN_DOMAINS)
            n_img = prng.choices([1, 2, 3, 4, 5, 6], weights=[20, 28, 24, 14, 8, 6])[0]
            sponsor = self.sponsors[idx % len(self.sponsors)] if prng.random() < 0.85 else None
            cp = k == 1
            art = self.english_article(prng, domain, n_img, sponsor, cp1252=cp)
            page = PageRec(idx, self.page_url(prng, domain, art.title), domain, "normal", "en", "document", article=art)
            if cp:
                page.charset = "windows-1252"
            originals.append(page)
            self.pages.append(page)
            idx += 1
        pool = [p for p in originals if p.charset == "utf-8"]
        rng.shuffle(pool)
        pick = iter(pool * 3)

        def dup_domain(prng: random.Random, orig: PageRec) -> Domain:
            return orig.domain if prng.random() < 0.5 else prng.choice(bp_free)

        for k in range(counts["exact_duplicate"]):
            prng = random.Random(f"sample:{self.seed}:page:{idx}")
            orig = next(pick)
            dom = dup_domain(prng, orig)
            if dom is orig.domain:
                u = urlsplit(orig.url)
                url = f"https://{u.netloc}/amp{u.path}"
                self.used_urls.add(url)
            else:
                url = self.page_url(prng, dom, orig.article.title)
            page = PageRec(idx, url, dom, "exact_duplicate", "en", "document", duplicate_of=orig.url,
                           article=orig.article, jaccard=1.0, jaccard_no_boilerplate=1.0)
            page._orig = orig
            self.pages.append(page)
            idx += 1
        for k in range(counts["near_duplicate"]):
            prng = random.Random(f"sample:{self.seed}:page:{idx}")
            orig = next(pick)
            target = NEAR_DUP_TARGETS[k % len(NEAR_DUP_TARGETS)]
            dom = dup_domain(prng, orig)
            art = self.near_duplicate(prng, orig.article, target)
            page = PageRec(idx, self.page_url(prng, dom, art.title), dom, "near_duplicate", "en", "document",
                           duplicate_of=orig.url, article=art, jaccard_target=target)
            self.pages.append(page)
            idx += 1
        for k in range(counts["url_duplicate"]):
            prng = random.Random(f"sample:{self.seed}:page:{idx}")
            orig = next(pick)
            art = self.near_duplicate(prng, orig.article, 0.93)
            art.items.append(("p", Para([f"Update: this article was edited on {prng.randint(2, 28)} February "
                                         f"to correct the name of one of the people involved."], fixed={0})))
            page = PageRec(idx, orig.url, orig.domain, "url_duplicate", "en", "document", duplicate_of=orig.url,
                           article=art)
            page._recrawl_of = orig
            self.pages.append(page)
            idx += 1
        for k in range(counts["spam"]):
            prng = random.Random(f"sample:{self.seed}:page:{idx}")
            dom = SPAM_DOMAINS[k % len(SPAM_DOMAINS)]
            art = self.spam_article(prng, prng.randint(1, 3))
            self.pages.append(PageRec(idx, self.page_url(prng, dom, art.title), dom, "spam", "en", "spam", article=art))
            idx += 1
        langs = ["fr", "de", "es"]
        for k in range(counts["non_english"]):
            prng = random.Random(f"sample:{self.seed}:page:{idx}")
            lang = langs[k % 3]
            dom = FOREIGN_DOMAINS[lang]
            art = self.foreign_article(prng, lang, prng.randint(1, 3))
            self.pages.append(PageRec(idx, self.page_url(prng, dom, art.title), dom, "non_english", lang, "language",
                                      article=art))
            idx += 1
        for k in range(counts["boilerplate_heavy"]):
            prng = random.Random(f"sample:{self.seed}:page:{idx}")
            dom = bp_free[k % len(bp_free)]
            art = self.thin_article(prng)
            self.pages.append(PageRec(idx, self.page_url(prng, dom, art.title + " weekend"), dom, "boilerplate_heavy",
                                      "en", "too_short", article=art))
            idx += 1
        for k in range(counts["no_images"]):
            prng = random.Random(f"sample:{self.seed}:page:{idx}")
            dom = EN_DOMAINS[(k * 3) % len(EN_DOMAINS)]
            art = self.english_article(prng, dom, 0, None)
            self.pages.append(PageRec(idx, self.page_url(prng, dom, art.title), dom, "no_images", "en", "no_images",
                                      article=art))
            idx += 1
        # planted non-page records
        prng = random.Random(f"sample:{self.seed}:planted")
        for k in range(3):
            dom = EN_DOMAINS[(k * 4) % len(EN_DOMAINS)]
            url = f"https://{dom.host}/articles/removed-story-{k + 1}.html"
            body = (b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
                    b"<p>The page you requested does not exist.</p></body></html>")
            self.pages.append(PageRec(idx, url, dom, "http_404", "en", "http_status", record_kind="http_404",
                                      body=body, http_status=404))
            idx += 1
        jpg = imgs.encode(imgs.render_scene(prng, tx.random_scene(prng), 320, 240), "jpeg")
        self.pages.append(PageRec(idx, f"https://{EN_DOMAINS[0].host}/media/photo-2231.jpg", EN_DOMAINS[0], "non_html",
                                  "en", "not_html", record_kind="non_html", body=jpg, content_type="image/jpeg"))
        idx += 1
        pdf = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
               b"trailer<</Root 1 0 R>>\n%%EOF\n")
        self.pages.append(PageRec(idx, f"https://{EN_DOMAINS[2].host}/downloads/annual-report-2023.pdf", EN_DOMAINS[2],
                                  "non_html", "en", "not_html", record_kind="non_html", body=pdf,
                                  content_type="application/pdf"))
        idx += 1
        self.pages.append(PageRec(idx, f"https://{EN_DOMAINS[5].host}/stories/draft-placeholder.htm", EN_DOMAINS[5],
                                  "empty", "en", "empty", record_kind="empty", body=b""))
        idx += 1

    # ------------------------------------------------------------------ records

    def finalize_pages(self) -> None:
        # crawl order, dates, record ids: from the master RNG
        order = list(range(len(self.pages)))
        self.rng.shuffle(order)
        for rank, i in enumerate(order):
            p = self.pages[i]
            p.date = CRAWL_START + timedelta(seconds=rank * 600 + self.rng.randint(0, 599))
            p.rid = record_id(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            p.warc_file = f"warc/sample-{rank % N_WARC_FILES:05d}.warc.gz"
        for p in self.pages:  # a recrawl comes a few days after the first fetch
            orig = getattr(p, "_recrawl_of", None)
            if orig is not None and p.date <= orig.date:
                p.date = orig.date + timedelta(days=2, seconds=p.idx)
        # render
        for p in self.pages:
            if p.article is None:
                continue
            prng = random.Random(f"sample:{self.seed}:render:{p.idx}")
            orig = getattr(p, "_orig", None)
            if orig is not None:  # exact duplicate: the very same <article> markup
                if orig.article_html is None:
                    raise AssertionError("original rendered after its duplicate")
                p.article_html, p.article_occ = orig.article_html, orig.article_occ
            html_text = self.render_page(prng, p)
            p.body = html_text.encode(p.charset if p.charset != "utf-8" else "utf-8")
            p.content_type = f"text/html; charset={p.charset}" if prng.random() < 0.9 or p.charset != "utf-8" else "text/html"
            p.article_text = _article_text(p.article)
        # jaccard vs originals
        by_url = {}
        for p in self.pages:
            if p.kind == "normal":
                by_url[p.url] = p
        for p in self.pages:
            if p.duplicate_of and p.kind != "exact_duplicate":
                o = by_url[p.duplicate_of]
                p.jaccard = round(tx.jaccard(o.article_text, p.article_text), 6)
                p.jaccard_no_boilerplate = round(
                    tx.jaccard(_article_text(o.article, False), _article_text(p.article, False)), 6)

    def write_warcs(self) -> list[str]:
        (self.root / "warc").mkdir()
        files = sorted({p.warc_file for p in self.pages})
        rng = random.Random(f"sample:{self.seed}:warc")
        counts = Counter()
        for wf in files:
            recs = sorted((p for p in self.pages if p.warc_file == wf), key=lambda p: (p.date, p.idx))
            with open(self.root / wf, "wb") as fh:
                w = WarcWriter(fh)
                info_id = record_id(uuid.UUID(int=rng.getrandbits(128), version=4))
                info = warc_fields([
                    ("software", "curation.sample (vl-curation offline mini-crawl)"),
                    ("format", "WARC File Format 1.1"),
                    ("conformsTo", "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/"),
                    ("isPartOf", "SAMPLE-2024-08"), ("operator", "sample generator"),
                    ("description", f"Synthetic sample crawl, seed {self.seed}"),
                    ("robots", "checked via crawler-commons"),
                ])
                w.write_record("warcinfo", [("WARC-Date", CRAWL_START.strftime("%Y-%m-%dT%H:%M:%SZ")),
                                            ("WARC-Record-ID", info_id), ("WARC-Filename", os.path.basename(wf))],
                               info, "application/warc-fields")
                counts["warcinfo"] += 1
                for p in recs:
                    date = p.date.strftime("%Y-%m-%dT%H:%M:%SZ")
                    u = urlsplit(p.url)
                    req_id = record_id(uuid.UUID(int=rng.getrandbits(128), version=4))
                    req = http_request("GET", u.path or "/", [
                        ("Host", u.netloc), ("User-Agent", "CCBot/2.0 (https://commoncrawl.org/faq/)"),
                        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                        ("Accept-Language", "en-US,en;q=0.5"), ("Connection", "Keep-Alive")])
                    w.write_record("request", [("WARC-Date", date), ("WARC-Record-ID", req_id),
                                               ("WARC-Target-URI", p.url), ("WARC-Warcinfo-ID", info_id)],
                                   req, "application/http; msgtype=request")
                    counts["request"] += 1
                    reason = {200: "OK", 404: "Not Found"}[p.http_status]
                    hdrs = [("Date", p.date.strftime("%a, %d %b %Y %H:%M:%S GMT")), ("Server", "nginx/1.24.0"),
                            ("Content-Type", p.content_type), ("Content-Length", str(len(p.body))),
                            ("Connection", "close")]
                    resp = http_response(p.http_status, reason, hdrs, p.body)
                    p.offset, _ = w.write_record(
                        "response", [("WARC-Date", date), ("WARC-Record-ID", p.rid), ("WARC-Target-URI", p.url),
                                     ("WARC-Warcinfo-ID", info_id), ("WARC-Concurrent-To", req_id),
                                     ("WARC-IP-Address", f"192.0.2.{(p.idx % 250) + 1}")],
                        resp, "application/http; msgtype=response", payload=p.body)
                    counts["response"] += 1
                    if p.idx % 4 == 0:
                        meta = warc_fields([("fetchTimeMs", str(50 + p.idx % 400)),
                                            ("charset-detected", p.charset.upper() if p.article else "UTF-8"),
                                            ("languages-cld2", json.dumps({"reliable": True, "languages": [
                                                {"code": p.lang, "code-iso-639-3": p.lang, "text-covered": 0.98,
                                                 "score": 900.0, "name": p.lang}]}))])
                        w.write_record("metadata", [("WARC-Date", date), ("WARC-Record-ID", record_id(
                            uuid.UUID(int=rng.getrandbits(128), version=4))), ("WARC-Target-URI", p.url),
                            ("WARC-Refers-To", p.rid), ("WARC-Warcinfo-ID", info_id)],
                            meta, "application/warc-fields")
                        counts["metadata"] += 1
        self.warc_counts = dict(counts)
        return files

    # ------------------------------------------------------------------ clean split

    def write_clean(self, n: int = 150) -> dict:
        d = self.root / "clean" / "images"
        d.mkdir(parents=True)
        images, anns = [], []
        ann_id = 1
        for i in range(n):
            rng = random.Random(f"sample:{self.seed}:clean:{i}")
            scene = tx.random_scene(rng)
            w, h = rng.randint(224, 320), rng.randint(224, 320)
            im = imgs.render_scene(rng, scene, w, h, textured=rng.random() < 0.3)
            name = f"clean_{i:05d}.jpg"
            (d / name).write_bytes(imgs.encode(im, "jpeg"))
            images.append({"id": i + 1, "file_name": name, "width": w, "height": h,
                           "shape": scene.shape, "colour": scene.colour, "count": scene.count,
                           "background": scene.background})
            for cap in tx.caption_variants(rng, scene, 5):
                anns.append({"id": ann_id, "image_id": i + 1, "caption": cap})
                ann_id += 1
        doc = {"info": {"description": "sample clean split: shape scenes with human-style captions", "version": "1"},
               "images": images, "annotations": anns}
        (self.root / "clean" / "captions.json").write_text(json.dumps(doc, indent=0, ensure_ascii=False) + "\n")
        return {"images": len(images), "captions": len(anns)}

    # ------------------------------------------------------------------ ground truth

    def write_ground_truth(self) -> dict:
        gt = self.root / "ground_truth"
        gt.mkdir()

        def dump(name: str, rows) -> int:
            k = 0
            with open(gt / name, "w", encoding="utf-8") as fh:
                for r in rows:
                    fh.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
                    k += 1
            return k

        ordered = sorted(self.pages, key=lambda p: (p.warc_file, p.offset))
        page_rows = []
        for p in ordered:
            page_rows.append({
                "url": p.url, "warc_file": p.warc_file, "offset": p.offset, "record_id": p.rid,
                "warc_date": p.date.strftime("%Y-%m-%dT%H:%M:%SZ"), "record_kind": p.record_kind, "kind": p.kind,
                "lang": p.lang, "domain": p.domain.host, "duplicate_of": p.duplicate_of, "jaccard": p.jaccard,
                "jaccard_no_boilerplate": p.jaccard_no_boilerplate, "jaccard_target": p.jaccard_target,
                "expect": p.expect, "http_status": p.http_status, "content_type": p.content_type,
                "charset": p.charset if p.article else None,
                "title": p.article.title if p.article else None,
                "n_content_images": sum(1 for k, _ in p.article.items if k == "img") if p.article else 0,
                "n_words": len(p.article_text.split()) if p.article_text else 0,
                "base_href": bool(p.article and p.article.use_base_href),
                "article_text": p.article_text,
            })
        occ_rows = [o for p in ordered for o in p.occurrences]
        img_rows = [f.row() for f in sorted(self.images.values(), key=lambda f: f.file)]
        bp_rows = [{"domain": d.host, "text": t} for d in EN_DOMAINS for t in d.boilerplate]
        return {"pages": dump("pages.jsonl", page_rows), "images": dump("images.jsonl", img_rows),
                "alt_texts": dump("alt_texts.jsonl", occ_rows),
                "boilerplate_paragraphs": dump("boilerplate_paragraphs.jsonl", bp_rows),
                "_page_rows": page_rows, "_img_rows": img_rows, "_occ_rows": occ_rows}

    def build(self, params: dict) -> dict:
        self.make_furniture()
        self.plan()
        self.finalize_pages()
        warcs = self.write_warcs()
        clean = self.write_clean()
        gt = self.write_ground_truth()
        pages, img_rows, occ_rows = gt.pop("_page_rows"), gt.pop("_img_rows"), gt.pop("_occ_rows")
        cnt = lambda rows, key: dict(sorted(Counter(r[key] for r in rows).items()))  # noqa: E731
        content_occ = [o for o in occ_rows if o["role"] == "content"]
        manifest = {
            "generator": "curation.sample", "generator_version": GENERATOR_VERSION,
            "parameters": params, "image_base_url": self.base, "image_root": "images",
            "serve": "ImageServer(<out_dir>/images) must answer at image_base_url for image downloads",
            "paths": {
                "warc_dir": "warc", "images_dir": "images", "clean_dir": "clean",
                "clean_images_dir": "clean/images", "clean_captions": "clean/captions.json",
                "ground_truth": {"pages": "ground_truth/pages.jsonl", "images": "ground_truth/images.jsonl",
                                 "alt_texts": "ground_truth/alt_texts.jsonl",
                                 "boilerplate_paragraphs": "ground_truth/boilerplate_paragraphs.jsonl"},
            },
            "files": {"warc": warcs, "ground_truth": sorted(f"ground_truth/{n}" for n in os.listdir(self.root / "ground_truth"))},
            "counts": {
                "n_pages": self.n_pages,
                "response_records": len(pages),
                "warc_records": dict(sorted(self.warc_counts.items())),
                "record_kind": cnt(pages, "record_kind"),
                "kind": cnt(pages, "kind"),
                "expect": cnt(pages, "expect"),
                "lang": cnt([p for p in pages if p["record_kind"] == "page"], "lang"),
                "warc_file": cnt(pages, "warc_file"),
                "images_by_role": cnt(img_rows, "role"),
                "images_by_format": cnt(img_rows, "format"),
                "img_occurrences": len(occ_rows),
                "img_occurrences_by_role": cnt(occ_rows, "role"),
                "content_alt_kind": cnt(content_occ, "alt_kind"),
                "content_lazy_attr": cnt(content_occ, "lazy_attr"),
                "clean_images": clean["images"], "clean_captions": clean["captions"],
                "ground_truth_lines": gt,
            },
            "expect_families": EXPECT_FAMILIES,
            "near_duplicate_jaccard_targets": NEAR_DUP_TARGETS,
            "jaccard": {"ngram": 5, "definition": "Jaccard of the SETS of word 5-gram shingles of the <article> text "
                        "(h1, paragraphs incl. domain boilerplate, figcaptions joined by newlines), lower-cased, "
                        "characters not matching [\\w\\s] deleted, split on whitespace; "
                        "see curation.sample.text.shingles"},
        }
        (self.root / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        return manifest


# --------------------------------------------------------------------------- entry point


def _params(n_pages: int, seed: int, image_base_url: str) -> dict:
    return {"n_pages": int(n_pages), "seed": int(seed), "image_base_url": image_base_url,
            "generator_version": GENERATOR_VERSION}


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def generate_sample(out_dir: str, n_pages: int = 300, seed: int = 0,
                    image_base_url: str = "http://127.0.0.1:8417/") -> dict:
    """Write the sample mini-crawl to ``out_dir`` and return its manifest.

    Idempotent: an ``out_dir`` whose manifest has the same parameters is returned as is. The sample is
    built in a sibling temporary directory and renamed into place, so a half-written sample never has a
    manifest. An existing ``out_dir`` built with other parameters is replaced; a non-empty ``out_dir``
    without a manifest is refused (it is not ours).
    """
    out = Path(out_dir)
    params = _params(n_pages, seed, image_base_url)
    existing = _read_manifest(out)
    if existing is not None and existing.get("parameters") == params:
        return existing
    if out.exists() and existing is None and any(out.iterdir()):
        raise FileExistsError(f"{out} exists, is not empty and holds no sample manifest; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        work = tmp / "sample"
        manifest = _Builder(work, n_pages, seed, image_base_url).build(params)
        if out.exists():
            old = tmp / "old"
            try:
                os.rename(out, old)
            except OSError:
                pass
        try:
            os.rename(work, out)
        except OSError:
            # Someone else finished the same sample first.
            other = _read_manifest(out)
            if other is not None and other.get("parameters") == params:
                return other
            raise
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m curation.sample.generate OUT_DIR [--n-pages N] [--seed S] [--image-base-url URL]``."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--n-pages", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-base-url", default="http://127.0.0.1:8417/")
    args = ap.parse_args(argv)
    m = generate_sample(args.out_dir, args.n_pages, args.seed, args.image_base_url)
    print(json.dumps({"out_dir": args.out_dir, "kind": m["counts"]["kind"], "expect": m["counts"]["expect"],
                      "images_by_role": m["counts"]["images_by_role"]}, indent=1))


if __name__ == "__main__":
    main()
