"""Main-content extraction: keep the article's blocks (text and images, in page order), drop the furniture.

The OBELICS walk (``curation.html_extract``) keeps every text node that survives tag removal, so
related-article lists, comments, share bars and sidebars (with their thumbnails) reach the documents and
the paragraph filters then have to guess. Here the same single Lexbor parse is segmented into *blocks*
(the text between two block-level tags, or one image), each block gets a few cheap features, and a
jusText/boilerpipe-style classifier with context smoothing decides which blocks are content:

1. **Content root.** A page that marks its article (``itemprop=articleBody``, ``<article>``, ``<main>``,
   ``role=main``, the ``entry-content``/``post-body``/... classes of the common CMSs) is narrowed to that
   subtree, as trafilatura does with its ``BODY_XPATH`` list; the candidate must hold enough of the
   page's text, else the whole ``<body>`` is used. An article-body container is widened to its
   ``<article>`` when that adds little text: the headline and lead sit beside the body field; without an
   ``<article>``, the elements before the container in its parent join it (``lead_siblings``).
2. **Furniture subtrees.** Elements whose class/id/role names furniture (comments, related, share,
   sidebar, breadcrumb, cookie, newsletter, ...) are skipped whole, with their images counted as
   ``boilerplate``, unless they hold most of the page's text (a ``<div class="page has-sidebar">``
   wrapping everything is layout, not furniture).
3. **Blocks.** Per block: characters, link characters (text inside ``<a>``), tag (heading, list item,
   table cell, caption), sentence punctuation. Initial class: *bad* (mostly links, or no letter at all),
   *meta* (figcaptions, which travel with their image, short date/credit lines, and caption lines under
   an image up to its credit: dropped and invisible to the smoothing), *good* (long, little linked
   text), *near* (prose-like), *short*. A CJK character counts three for the lengths.
4. **Smoothing.** Near blocks are content inside a root, or next to good ones. Short blocks (and
   images) take the class of their neighbours: between two good blocks they are content; a heading
   belongs to what follows it; a short line before furniture introduces it, unless it is a sign-off
   right after the article. Images inside a root, or between the first and the last content block, are
   the article's. Without a root, the deepest element holding most of the kept text bounds the article
   (``html_extract._densest_region``).
5. **A wrong root** (one that keeps almost nothing of a long page) is checked against the whole body.

The thresholds were tuned on the dev split of ``bench/extract_quality.py`` only; docs/extraction.md
explains each step and docs/benchmarks.md gives the numbers.

All text lengths are computed by Lexbor in C (``node.text()``); the Python loop runs once per DOM node,
never per character, and iteratively (no recursion limit).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "CONTENT_ROOT_SELECTORS", "FURNITURE_MAX_TEXT_SHARE", "ROOT_CHECK_CHARS", "ROOT_FALLBACK_MIN_CHARS",
    "ROOT_FALLBACK_RATIO", "Block", "classify_blocks", "find_content_root", "is_furniture_container", "lead_siblings",
    "widen_root",
]

# Subtokens of class/id values (split on space, '-', '_') that name page furniture.
FURNITURE_SUBTOKENS = frozenset(
    """nav navbar navigation menu menubar mainmenu submenu breadcrumb breadcrumbs crumbs cookie cookies consent
    share shares sharing sharebar social socials comment comments commentlist disqus related recommended
    sidebar sidenav footer masthead advert advertisement advertising adsense sponsored newsletter
    pagination pager popup shariff addthis outbrain taboola author donation donations donate""".split()
)
# Sub-tokens that name furniture only at the start of a token ("ad-slot", "ads-top"); at its end they
# qualify the thing named ("cuerpo-ad" is an article body with ads in it).
LEADING_SUBTOKENS = frozenset({"ad", "ads"})
# Whole class/id tokens (lower case) that name furniture; as subtokens these words are too common
# (Elementor wraps every article in ``elementor-widget-container``).
FURNITURE_TOKENS = frozenset(
    """widget widgets widget-area sidebar-widget banner promo promos teaser teasers subscribe signup rating
    tagcloud tags toolbar print skip-link popular trending author-box authorbox author-bio
    sharedaddy jp-relatedposts wp-block-latest-posts postmetadata entry-meta post-meta article-meta
    entry-footer post-footer article-footer post-tags entry-tags article-tags tags-links cat-links
    byline post-navigation nav-links navigation-links comments-area comment-respond""".split()
)
FURNITURE_ROLES = frozenset({"navigation", "banner", "contentinfo", "menu", "menubar", "search", "complementary",
                             "dialog", "alertdialog", "toolbar"})
_SUBTOKEN_SPLIT = re.compile(r"[_\-]+")
# Class tokens that describe a state or a taxonomy of the element, never its role.
_STATE_PREFIXES = ("category-", "tag-", "no-", "has-", "with-", "hide-", "show-", "is-", "not-", "format-")
# Skip a furniture-hinted element only while it holds less than this share of the page's text.
FURNITURE_MAX_TEXT_SHARE = 0.4

# Content-root candidates in priority order (trafilatura's BODY_XPATH in spirit). The first selector with
# a match holding enough text wins; among its matches the one with the most unlinked text (see
# find_content_root, which also skips listings).
CONTENT_ROOT_SELECTORS = (
    '[itemprop="articleBody"]',
    '[itemprop="text"]',
    ".entry-content, .post-content, .article-content, .article-body, .articlebody, .article__body, "
    ".story-body, .post-body, .postbody, .post-entry, .entry-body, .blog-post-content, .single-content, "
    "#article-body, #articleBody, #post-content, #entry-content, #story-body, .field-name-body, .field--name-body, "
    ".td-post-content, .rich-text, .article-text, .post_content, .entry_content, .articleBody, .main-article",
    "article",
    '[role="main"], main',
    "#content, #main, #main-content, .main-content, #maincontent, .content-main, #primary, .content",
)
# A candidate root must hold this many characters and this share of the body's text.
ROOT_MIN_CHARS = 200
ROOT_MIN_SHARE = 0.08
ROOT_MIN_OF_MATCHES = 0.4
# An article-body container is widened to its enclosing <article> while that holds at most this many times its
# text (1.25 / 1.5 / 2 / 3 on dev: +11 / +18 / +19 / +21 article snippets for +4 / +5 / +7 / +9 furniture ones).
ROOT_WIDEN_RATIO = 1.5
# A root whose kept blocks hold fewer characters than this was a wrong guess (see html_extract).
ROOT_FALLBACK_MIN_CHARS = 150
# A root keeping fewer characters than this (in a page with 3x more text) is checked against the whole
# body, which wins when it keeps this many times more.
ROOT_CHECK_CHARS = 1000
ROOT_FALLBACK_RATIO = 2.5

SIGNOFF_TAGS = frozenset({"p"})
TABLE_CELLS = frozenset({"td", "th"})
HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
GOOD_MIN_CHARS = 100          # a block this long with little linked text is content on its own
SHORT_MAX_CHARS = 40          # a block shorter than this is decided by its neighbours
MAX_LINK_DENSITY = 0.33       # more linked text than this: navigation, tag lists, related links
ROOTED_MAX_LINK_DENSITY = 0.5  # a long block inside a content root: prose that links its sources
SHORT_LINK_DENSITY = 0.5      # an undecided block this linked is furniture
_SENTENCE_END = re.compile(r"[.!?。！？:;»\"”)…]\s|[.!?。！？）」』…]$")
# Chinese, Japanese and Korean write a word in one to three characters: for the length thresholds one of
# their characters counts as CJK_CHAR_WEIGHT (a 31-character Chinese sentence is a sentence, not a label).
CJK_CHAR_WEIGHT = 3
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")

_LETTER = re.compile(r"[^\W\d_]")
# Short lines that are a date stamp or an image credit: page metadata, not prose.
META_LINE_MAX_CHARS = 80
# A dated list item is an entry of an agenda, a timeline or minutes, not the page's date stamp.
DATED_ITEM_TAGS = frozenset({"li"})
_DATE = re.compile(r"\b\d{1,2}[./]\s?\d{1,2}[./]\s?\d{2,4}\b|\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}:\d{2}\b")
_CREDIT = re.compile(r"\(?\s*(?:foto|fotos|photo|photos|bild|image|credit|credits|quelle|source|©)\s*[:©]", re.I)
# A caption written as a plain line under its image (no <figcaption>): short, right after the image, and
# naming the picture's source somewhere in it ("Roman Prymula, photo: Archives", "... | © AFP").
CAPTION_MAX_CHARS = 250
CAPTION_MAX_LINES = 2  # a caption line, then its credit line
_CREDIT_ANYWHERE = re.compile(
    r"©|\(c\)|credit|\b(?:foto|fotos|photo|photos|bild|bilder|image|crédito|créditos|quelle|source|abbildung"
    r"|titelbild|copyright|picture)\s*:|\b(?:istock|getty\s?images|shutterstock|depositphotos|imago|unsplash)\b",
    re.I)

# META: page metadata (date stamps, credits, captions): dropped, and transparent to the smoothing.
META, BAD, SHORT, NEAR, GOOD = -1, 0, 1, 2, 3


@dataclass(slots=True)
class Block:
    """One unit of the page in order: a paragraph of text, or an image (``image`` is its index in the items)."""

    text: str
    link_chars: int
    tag: str
    in_root: bool
    image: int = -1
    cls: int = SHORT
    node: object = None  # the block element (selectolax node), for the densest-region step


def _subtokens(value: str) -> list[str]:
    return _SUBTOKEN_SPLIT.split(value.lower())


def is_furniture_container(attrs: dict[str, str | None]) -> bool:
    """Whether an element's class/id/role names page furniture (comments, related links, share bars, ...)."""
    role = attrs.get("role")
    if role and role.lower() in FURNITURE_ROLES:
        return True
    cls, ident = attrs.get("class"), attrs.get("id")
    return bool(cls and _names_furniture(cls)) or bool(ident and _names_furniture(ident))


@lru_cache(maxsize=65536)
def _names_furniture(value: str) -> bool:
    """One class or id value; cached, since a page repeats the same few class strings thousands of times."""
    low = value.lower()
    tokens = low.split()
    if any(token in FURNITURE_TOKENS for token in tokens):
        return True
    for token in tokens:
        if token.startswith(_STATE_PREFIXES):
            continue  # WordPress post_class(): category-social-media, no-share, has-sidebar name the post
        subs = [sub.rstrip("0123456789") for sub in _SUBTOKEN_SPLIT.split(token)]  # footer2, sidebar1
        if any(sub in FURNITURE_SUBTOKENS for sub in subs) or subs[0] in LEADING_SUBTOKENS:
            return True
    return False


def find_content_root(body, body_chars: int):
    """The element that holds the article, or None when no marked-up candidate holds enough text.

    Also returns whether the match is an article-body marker (``articleBody``, ``entry-content``, ...), whose
    ``<article>`` may hold the headline and lead beside it (``widen_root``)."""
    for k, selector in enumerate(CONTENT_ROOT_SELECTORS):
        # The article-body markers are trusted with less text than the generic containers.
        need = ROOT_MIN_CHARS if k < 3 else max(ROOT_MIN_CHARS, int(ROOT_MIN_SHARE * body_chars))
        best, best_len, total = None, 0, 0
        for node in body.css(selector):
            n = len(node.text(deep=True, separator=" ", strip=True))
            total += n
            if n > best_len and n >= need:
                # Among matches (several <article> on a page), the one with the most unlinked text.
                n -= sum(len(a.text(deep=True, separator=" ", strip=True)) for a in node.css("a"))
                if n > best_len:
                    best, best_len = node, n
        # Many comparable matches are a listing (teasers each in an <article>), not one article.
        if best is not None and best_len >= need and best_len >= ROOT_MIN_OF_MATCHES * total:
            return best, k < 3
    return None, False


def widen_root(root):
    """The enclosing ``<article>`` of an article-body container, when it adds little text (the headline and lead
    sit beside the body field: ``field-name-field-intro-text`` next to ``field-name-body``), else ``root``."""
    node = root.parent
    while node is not None and node.tag not in ("article", "body", "html"):
        node = node.parent
    if node is not None and node.tag == "article":
        inner = len(root.text(deep=True, separator=" ", strip=True))
        outer = len(node.text(deep=True, separator=" ", strip=True))
        if outer <= ROOT_WIDEN_RATIO * inner:
            return node
    return root


def lead_siblings(root) -> list:
    """The elements before an article-body container in its parent (the headline and the lead: TYPO3's
    ``teaser-text`` beside ``news-text-wrap``, ``article-intro`` beside ``article-content``) when there is
    no ``<article>`` to widen to and they add little text. Only what comes *before* the body: after it sit
    subscription boxes, citation blocks and newsletter offers."""
    parent = root.parent
    if parent is None or parent.tag in ("body", "html"):
        return []
    before = []
    node = parent.child
    while node is not None and node.mem_id != root.mem_id:
        if node.tag != "-text":
            before.append(node)
        node = node.next
    if not before:
        return []
    inner = len(root.text(deep=True, separator=" ", strip=True))
    extra = sum(len(n.text(deep=True, separator=" ", strip=True)) for n in before)
    return before if inner + extra <= ROOT_WIDEN_RATIO * inner else []


def _length(text: str) -> int:
    """Characters, CJK ones weighted (``CJK_CHAR_WEIGHT``)."""
    if text.isascii():
        return len(text)
    return len(text) + (CJK_CHAR_WEIGHT - 1) * len(_CJK.findall(text))


def _initial_class(block: Block) -> int:
    if block.image >= 0:
        return SHORT
    n = _length(block.text)
    density = block.link_chars / len(block.text) if block.text else 1.0
    max_density = ROOTED_MAX_LINK_DENSITY if block.in_root and n >= GOOD_MIN_CHARS else MAX_LINK_DENSITY
    if density > max_density and (n < 300 or density > 0.6):
        return BAD if density > SHORT_LINK_DENSITY or n >= SHORT_MAX_CHARS else SHORT
    if block.tag in HEADINGS:
        return SHORT if n < GOOD_MIN_CHARS else NEAR  # a long "heading" is a lead paragraph
    if block.tag == "figcaption":
        return META  # the caption travels with its image (``figcaption`` metadata), not in the text
    if not _LETTER.search(block.text):
        # Times, counters, page numbers; in a table cell, the table's data (decided with its row).
        return SHORT if block.tag in TABLE_CELLS else BAD
    dated = _DATE.search(block.text) is not None and block.tag not in DATED_ITEM_TAGS
    if n < META_LINE_MAX_CHARS and (dated or _CREDIT.match(block.text)):
        return META  # "Published: 03.04.2020, 12:35", "Photo: AFP", bylines with a date
    if n >= GOOD_MIN_CHARS:
        return GOOD
    if n >= SHORT_MAX_CHARS or _SENTENCE_END.search(block.text):
        return NEAR
    return SHORT


def classify_blocks(blocks: list[Block], rooted: bool) -> list[bool]:
    """Keep-mask over ``blocks``: initial class per block, then context smoothing (jusText's idea).

    ``rooted``: the blocks come from a marked-up content root, so undecided blocks lean to content.
    """
    cls = [_initial_class(b) for b in blocks]
    for i in range(1, len(blocks)):
        if blocks[i - 1].image < 0:
            continue
        # The image's caption and credit, not the article's text: the lines under it up to the credit.
        for j in range(i, min(i + CAPTION_MAX_LINES, len(blocks))):
            b = blocks[j]
            if b.image >= 0 or len(b.text) > CAPTION_MAX_CHARS:
                break
            if _CREDIT_ANYWHERE.search(b.text):
                cls[i:j + 1] = [META] * (j + 1 - i)
                break
    if GOOD not in cls:
        # No block is long prose on its own (short pages, line-broken layouts): the prose-like ones are.
        cls = [GOOD if c == NEAR else c for c in cls]
    if rooted:
        # Inside the article's own container, prose-like blocks are content. (Letting short linked lines
        # be decided by their neighbours there cost more furniture than it won content on dev.)
        cls = [GOOD if c == NEAR else c for c in cls]
    else:
        # NEAR blocks next to a GOOD one are content (jusText's near-good rule).
        # Left to right, so a run of them after a GOOD block follows it.
        following = _next_decided(cls)
        prev = None
        for i, c in enumerate(cls):
            if c == NEAR:
                cls[i] = c = GOOD if GOOD in (prev, following[i]) else BAD
            if c == GOOD or c == BAD:
                prev = c
    # SHORT blocks (and images) take their neighbours' class; at the edge, the one neighbour's.
    out = list(cls)
    following = _next_decided(cls)
    prev = None
    for i, c in enumerate(cls):
        if c == GOOD or c == BAD:
            prev = c
        if c != SHORT:
            continue
        nxt = following[i]
        if prev == GOOD and nxt == GOOD:
            out[i] = GOOD
        elif prev == BAD and nxt == BAD:
            out[i] = BAD
        elif prev is None or nxt is None:
            edge = prev if prev is not None else nxt
            if blocks[i].tag in HEADINGS:
                out[i] = GOOD if nxt == GOOD else BAD
            else:
                out[i] = GOOD if edge == GOOD and (blocks[i].image >= 0 or _signoff(blocks[i], rooted, prev)) else BAD
        else:
            # Between content and furniture: headings and images belong to the content that follows or
            # precedes them; other short lines (dates, bylines, "read more") do not.
            if blocks[i].tag in HEADINGS:
                out[i] = GOOD if nxt == GOOD else BAD  # a heading belongs to what follows it
            elif blocks[i].image >= 0:
                out[i] = GOOD
            else:
                # A short line before furniture introduces it ("Read more", "Related topics").
                out[i] = GOOD if (rooted and nxt == GOOD) or _signoff(blocks[i], rooted, prev) else BAD
    # Images between the first and the last content block are the article's (a link-dense news list on
    # a portal page is still the page's body); sidebars inside that span are furniture containers,
    # already skipped by the walk.
    good = [i for i, c in enumerate(out) if c == GOOD and blocks[i].image < 0]
    if rooted:
        # Inside the article's own container every image is the article's (a gallery under linked
        # headings included); furniture containers inside it were skipped by the walk.
        for i, b in enumerate(blocks):
            if b.image >= 0:
                out[i] = GOOD
    elif good:
        for i in range(good[0] + 1, good[-1]):
            if blocks[i].image >= 0:
                out[i] = GOOD
    return [c == GOOD for c in out]


def _signoff(block: Block, rooted: bool, prev: int | None) -> bool:
    return rooted and prev == GOOD and block.tag in SIGNOFF_TAGS and not block.text.endswith(":")


def _next_decided(cls: list[int]) -> list[int | None]:
    """For each position, the class of the nearest GOOD or BAD block after it (one pass from the right, so a
    long run of undecided blocks, a data table's cells, costs linear time, not quadratic)."""
    out: list[int | None] = [None] * len(cls)
    nxt = None
    for i in range(len(cls) - 1, -1, -1):
        out[i] = nxt
        if cls[i] == GOOD or cls[i] == BAD:
            nxt = cls[i]
    return out


def counter_of_dropped(blocks: list[Block], keep: list[bool]) -> Counter:
    """Images that the classifier dropped, as ``boilerplate``."""
    return Counter({"boilerplate": sum(1 for b, k in zip(blocks, keep) if b.image >= 0 and not k)})
