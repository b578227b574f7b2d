"""HTML -> text and images in page order: main-content blocks (default) or OBELICS-style DOM simplification.

``extract_page(mode="main_content")`` keeps only the article's blocks (``curation.main_content``,
docs/extraction.md); ``mode="obelics"`` is described below.

OBELICS simplifies the DOM (drops navigation, headers, footers, scripts, forms;
unwraps inline tags) and then walks it, emitting text blocks and images in the
order a reader sees them. This module does the same with the Lexbor parser
(selectolax): tags that never carry content are stripped in C before the walk,
and the walk itself is one iterative pass with no recursion, so a page nested
tens of thousands of levels deep cannot blow the Python stack (it is rejected
past ``max_depth`` instead).

Unlike article extractors such as trafilatura, images are kept wherever they
appear, including extension-less CDN URLs and lazy-loaded ones (``data-src``,
``data-original``, ``srcset``), because an interleaved dataset needs them in
place. Images whose URL names page furniture (logo, icon, button, ...) are
dropped and counted.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser

from curation.main_content import (
    FURNITURE_MAX_TEXT_SHARE,
    ROOT_CHECK_CHARS,
    ROOT_FALLBACK_MIN_CHARS,
    ROOT_FALLBACK_RATIO,
    HEADINGS,
    Block,
    classify_blocks,
    find_content_root,
    is_furniture_container,
    lead_siblings,
    widen_root,
)

# Elements whose whole subtree is never content (OBELICS removes the same families).
REMOVED_TAGS = [
    "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe", "svg",
    "button", "select", "textarea", "template", "menu", "object", "embed", "canvas", "input",
    "video", "audio", "map", "head", "dialog",
]
# Main-content mode does not strip these wholesale: an unclosed <header> or an ASP.NET <form> can hold the
# whole page. They are furniture containers instead, skipped while they hold a minor share of the text.
FURNITURE_TAGS = frozenset({"nav", "header", "footer", "aside", "form", "menu"})
# Ruby annotations (<rt>, <rp>: the reading of Japanese/Chinese characters) would split every word.
MAIN_CONTENT_REMOVED_TAGS = [t for t in REMOVED_TAGS if t not in FURNITURE_TAGS] + ["rt", "rp"]
# Elements that end a paragraph: their text is never glued to the text around them.
BLOCK_TAGS = frozenset(
    """p div section article main h1 h2 h3 h4 h5 h6 li ul ol dl dt dd table thead tbody tfoot tr td th
    caption blockquote pre figure figcaption hr address center details summary fieldset legend body
    html picture""".split()
)
# Class/id/role tokens of containers that hold menus or share buttons rather than content.
BOILERPLATE_TOKENS = frozenset(
    """nav navbar navigation menu mainmenu main-menu breadcrumb breadcrumbs cookie cookies cookie-banner
    share sharing social social-share advert advertisement ads skip-link""".split()
)
BOILERPLATE_ROLES = frozenset({"navigation", "banner", "contentinfo", "menu", "menubar", "search"})
LAZY_SRC_ATTRS = ("data-src", "data-original", "data-lazy-src", "data-url", "data-lazy", "data-hi-res-src")
SRCSET_ATTRS = ("srcset", "data-srcset")

_WS = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")
_NL_WS = re.compile(r" *\n[ \n]*")
_DIM = re.compile(r"^\s*(\d{1,6})(?:\.\d+)?\s*(?:px)?\s*$")


class HtmlTooDeep(ValueError):
    """The DOM nests deeper than the configured limit."""


_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*?(/?)>")
_NOT_MARKUP = (("<script", "</script"), ("<style", "</style"), ("<!--", "-->"))


def _markup_only(html: str) -> str:
    """``html`` without script, style and comment bodies, in linear time: each opening marker is searched
    forward only (a lazy regex would rescan to the end for every unclosed ``<script`` of a hostile page)."""
    low = html.lower()
    parts: list[str] = []
    pos = 0
    nxt = {open_: low.find(open_) for open_, _ in _NOT_MARKUP}
    while True:
        for open_, _ in _NOT_MARKUP:
            if 0 <= nxt[open_] < pos:
                nxt[open_] = low.find(open_, pos)
        found = [(nxt[open_], close) for open_, close in _NOT_MARKUP if nxt[open_] >= 0]
        if not found:
            parts.append(html[pos:])
            return " ".join(parts)
        start, close = min(found)
        parts.append(html[pos:start])
        end = low.find(close, start + 4)
        if end < 0:
            return " ".join(parts)
        pos = end + len(close)


_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
# Lexbor's tree builder is quadratic in nesting depth (40k nested divs take seconds),
# so pages with many tags get a cheap depth estimate before they are parsed.
_PRECHECK_MIN_TAGS = 5000


def estimated_depth(html: str) -> int:
    """Upper-bound-ish nesting depth from the tag stream, without building a DOM.

    Script, style and comment bodies are not markup (a script that builds ``<span>`` strings made a
    real news page with a DOM 25 deep look 1,500 deep), so they are cut out first.
    """
    depth = peak = 0
    for closing, name, selfclose in _TAG.findall(_markup_only(html)):
        if closing:
            depth = max(0, depth - 1)
        elif not selfclose and name.lower() not in _VOID:
            depth += 1
            if depth > peak:
                peak = depth
    return peak


@dataclass
class ExtractedImage:
    url: str          # absolute URL, resolved against <base href> or the page URL
    src: str          # the attribute value as written
    alt: str | None
    title: str | None
    figcaption: str | None
    width: int | None
    height: int | None


@dataclass
class ExtractedPage:
    """Page content in order: a text item is a list of paragraphs; an image item is an ExtractedImage."""

    items: list[list[str] | ExtractedImage]
    title: str | None
    dropped_images: Counter = field(default_factory=Counter)

    @property
    def images(self) -> list[ExtractedImage]:
        return [it for it in self.items if isinstance(it, ExtractedImage)]


def _norm_text(text: str) -> str:
    text = _WS.sub(" ", text)
    if "\n" in text:  # (the second pass can only change a text with a line break)
        text = _NL_WS.sub("\n", text)
    return text.strip()


def _dimension(value: str | None) -> int | None:
    if not value:
        return None
    m = _DIM.match(value)
    return int(m.group(1)) if m else None


def _best_srcset(value: str) -> str | None:
    """The largest candidate of a ``srcset`` (by its ``w`` or ``x`` descriptor)."""
    best, best_size = None, -1.0
    for cand in value.split(","):
        parts = cand.strip().split()
        if not parts:
            continue
        size = 1.0
        if len(parts) > 1:
            desc = parts[1].lower()
            try:
                size = float(desc[:-1]) if desc[-1] in "wx" else 1.0
            except (ValueError, IndexError):
                size = 1.0
        if size > best_size:
            best, best_size = parts[0], size
    return best


def pick_image_src(attrs: dict[str, str | None]) -> str | None:
    """The real image URL of an <img>: lazy-load attributes beat a placeholder ``src``."""
    for key in LAZY_SRC_ATTRS:
        val = attrs.get(key)
        if val and not val.startswith("data:"):
            return val.strip()
    src = attrs.get("src")
    if src and not src.startswith("data:") and src.strip():
        return src.strip()
    for key in SRCSET_ATTRS:
        val = attrs.get(key)
        if val:
            best = _best_srcset(val)
            if best and not best.startswith("data:"):
                return best
    return None


_PATH_SPLIT = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=16)
def _banned_words(words: frozenset[str]) -> tuple[tuple[str, ...], re.Pattern | None]:
    """The words in a fixed (sorted) order, so that a token matching two of them is counted under the same
    one in every process (a set's order follows the per-process string hash), and one regex finding any."""
    ordered = tuple(sorted(words))
    return ordered, (re.compile("|".join(map(re.escape, ordered))) if ordered else None)


def banned_word_in_url(url: str, words: frozenset[str] | set[str]) -> str | None:
    """A banned word that names page furniture in the URL path (``/img/logo-2x.png`` -> logo).

    A path token matches when it starts or ends with a banned word, so ``favicon``
    and ``logo_small`` match but ``silicone`` does not.
    """
    path = urlsplit(url).path.lower()
    ordered, any_word = _banned_words(words if isinstance(words, frozenset) else frozenset(words))
    if any_word is None or not any_word.search(path):
        return None  # a token can only start or end with a word the path contains: most URLs stop here
    for token in _PATH_SPLIT.split(path):
        if not token:
            continue
        stem = token.rstrip("0123456789")
        for word in ordered:
            if stem.startswith(word) or stem.endswith(word) or stem.endswith(word + "s"):
                return word
    return None


def _is_boilerplate_container(attrs: dict[str, str | None]) -> bool:
    role = (attrs.get("role") or "").lower()
    if role in BOILERPLATE_ROLES:
        return True
    for key in ("class", "id"):
        val = attrs.get(key)
        if val:
            for token in val.lower().split():
                if token in BOILERPLATE_TOKENS:
                    return True
    return False


def _figcaption_of(node) -> str | None:
    parent = node.parent
    for _ in range(4):
        if parent is None:
            return None
        if parent.tag == "figure":
            cap = parent.css_first("figcaption")
            if cap is not None:
                text = _norm_text(cap.text(separator=" "))
                return text or None
            return None
        parent = parent.parent
    return None


MODES = ("main_content", "obelics")


def extract_page(
    html: str,
    page_url: str,
    banned_words: frozenset[str] | set[str] = frozenset(),
    max_depth: int = 256,
    mode: str = "obelics",
    keep_boilerplate_images: bool = False,
) -> ExtractedPage:
    """Parse once and return paragraphs and images in page order.

    ``mode="obelics"`` walks the whole simplified DOM (every text node that survives tag removal);
    ``mode="main_content"`` keeps only the article's blocks (see ``curation.main_content``) and counts
    the images it leaves out as ``dropped_images["boilerplate"]`` (kept in place instead with
    ``keep_boilerplate_images``). The pipeline's mode is ``extract.mode`` (main_content unless
    configured); this function defaults to obelics for the callers that want every text node (the
    sample's shingle checks in tests).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if html.count("<") > _PRECHECK_MIN_TAGS and estimated_depth(html) > 4 * max_depth:
        raise HtmlTooDeep(f"DOM deeper than {max_depth} (estimated before parsing)")
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = _norm_text(title_node.text()) if title_node is not None else None
    base_node = tree.css_first("base[href]")
    base_url = page_url
    if base_node is not None:
        href = (base_node.attributes.get("href") or "").strip()
        if href:
            base_url = urljoin(page_url, href)
    if mode == "main_content":
        tree.strip_tags(MAIN_CONTENT_REMOVED_TAGS)
        page = _extract_main_content(tree, title, base_url, banned_words, max_depth, keep_boilerplate_images)
        if _text_chars(page) < ROOT_FALLBACK_MIN_CHARS and "<noscript" in html:
            # Pages that render their article with JavaScript often ship it again inside <noscript>
            # (a second parse, only for pages that came out nearly empty).
            tree = LexborHTMLParser(html)
            tree.strip_tags([t for t in MAIN_CONTENT_REMOVED_TAGS if t != "noscript"])
            alt = _extract_main_content(tree, title, base_url, banned_words, max_depth, keep_boilerplate_images)
            if _text_chars(alt) > _text_chars(page):
                return alt
        return page
    tree.strip_tags(REMOVED_TAGS)
    root = tree.body or tree.root
    items: list[list[str] | ExtractedImage] = []
    dropped: Counter = Counter()
    paragraphs: list[str] = []
    buf: list[str] = []

    def flush_paragraph() -> None:
        if buf:
            text = _norm_text("".join(buf))
            buf.clear()
            if text:
                paragraphs.append(text)

    def flush_segment() -> None:
        flush_paragraph()
        if paragraphs:
            items.append(list(paragraphs))
            paragraphs.clear()

    if root is None:
        return ExtractedPage(items, title, dropped)
    # Stack of (node, depth); None marks the end of a block element.
    stack: list = [(root, 0)]
    while stack:
        entry = stack.pop()
        if entry is None:
            flush_paragraph()
            continue
        node, depth = entry
        tag = node.tag
        if tag == "-text":
            buf.append(node.text_content or "")
            continue
        if tag is None or tag.startswith("-"):  # comments, doctype
            continue
        if depth > max_depth:
            raise HtmlTooDeep(f"DOM deeper than {max_depth}")
        if tag == "br":
            buf.append("\n")
            continue
        if tag == "img":
            img = _image_of(node, base_url, banned_words, dropped)
            if img is not None:
                flush_segment()
                items.append(img)
            continue
        attrs = node.attributes
        if attrs and _is_boilerplate_container(attrs):
            continue
        block = tag in BLOCK_TAGS
        if block:
            flush_paragraph()
            stack.append(None)
        children = list(node.iter(include_text=True))
        for child in reversed(children):
            stack.append((child, depth + 1))
    flush_segment()
    return ExtractedPage(items, title, dropped)


def _densest_region(blocks: list[Block], keep: list[bool]) -> list[bool]:
    """Without a marked-up root, the article is the deepest element holding ``DENSEST_SHARE`` of the kept
    text (readability's top candidate, found after the blocks are classified): kept text blocks before or
    after its span are dropped (a cookie notice, a footer blurb, a subscription offer). Images keep their
    rule (between the first and the last content block)."""
    weight: dict[int, int] = {}
    nodes: dict[int, object] = {}
    chains: list[tuple[int, list[int]]] = []
    total = 0
    for i, (b, k) in enumerate(zip(blocks, keep)):
        if not k or b.image >= 0 or b.node is None:
            continue
        n = len(b.text)
        total += n
        chain = []
        node = b.node
        while node is not None and node.tag not in ("html", None):
            key = node.mem_id
            chain.append(key)
            weight[key] = weight.get(key, 0) + n
            nodes[key] = node
            node = node.parent
        chains.append((i, chain))
    if not chains:
        return keep
    need = DENSEST_SHARE * total
    # Elements holding more than half of the text are nested in one another, so the first one found up the
    # chain of a block inside it is the deepest.
    best = None
    for _, chain in chains:
        for key in chain:
            if weight[key] >= need:
                best = key
                break
        if best is not None:
            break
    if best is None:
        return keep
    inside = [i for i, chain in chains if best in chain]
    lo, hi = inside[0], inside[-1]
    out = list(keep)
    for i, _ in chains:
        if i < lo or i > hi:
            out[i] = False
    return out


def _text_chars(page: ExtractedPage) -> int:
    return sum(len(p) for it in page.items if isinstance(it, list) for p in it)


def _image_of(node, base_url: str, banned_words, dropped: Counter) -> ExtractedImage | None:
    """The ExtractedImage of an <img>, or None (and the reason counted) when it has no usable URL."""
    attrs = node.attributes
    src = pick_image_src(attrs)
    if not src:
        dropped["no_src"] += 1
        return None
    url = urljoin(base_url, src)
    if urlsplit(url).scheme not in ("http", "https"):
        dropped["bad_scheme"] += 1
        return None
    word = banned_word_in_url(url, banned_words) if banned_words else None
    if word:
        dropped[f"url_{word}"] += 1
        return None
    alt = attrs.get("alt")
    title_attr = attrs.get("title")
    return ExtractedImage(
        url=url,
        src=src,
        alt=_norm_text(alt) if alt is not None else None,
        title=_norm_text(title_attr) if title_attr else None,
        figcaption=_figcaption_of(node),
        width=_dimension(attrs.get("width")),
        height=_dimension(attrs.get("height")),
    )


# Share of the kept text the densest element must hold (0.55 / 0.6 / 0.7 / 0.8 / 0.9 on dev: -11 / -11 / -11 /
# -10 / -10 furniture snippets for -2 / -2 / -1 / 0 / 0 article snippets).
DENSEST_SHARE = 0.8

_IN_LINK = 1     # stack flag: inside an <a>
_OUTSIDE = 2     # stack flag: outside the content root or inside a furniture container (images only)


def _extract_main_content(tree, title, base_url, banned_words, max_depth, keep_boilerplate_images,
                          use_root: bool = True) -> ExtractedPage:
    """Blocks of the walk, classified by ``curation.main_content``; kept ones assembled in page order.

    A content root whose blocks come to almost no content (a calendar widget in the only <article>)
    is a wrong guess: the page is walked again without one.
    """
    dropped: Counter = Counter()
    body = tree.body or tree.root
    if body is None:
        return ExtractedPage([], title, dropped)
    body_chars = len(body.text(deep=True, separator=" ", strip=True))
    root, body_marker = find_content_root(body, body_chars) if use_root else (None, False)
    rooted = root is not None
    # The article-body container and the elements up to its widened root are the article, whatever their
    # class says ("article-content sticky-sidebar-relative").
    core_ids: set[int] = set()
    tail_ids: set[int] = set()
    if root is None:
        root = body
    elif body_marker:
        node, root = root, widen_root(root)
        if root.mem_id == node.mem_id and lead_siblings(node):
            # No <article> around the body container: its parent, up to the container's end, holds the
            # headline and the lead; what follows the container in it stays out (``tail_ids``).
            root = node.parent
            sibling = node.next
            while sibling is not None:
                if sibling.tag != "-text":
                    tail_ids.add(sibling.mem_id)
                sibling = sibling.next
        while node is not None and node.mem_id != root.mem_id:
            core_ids.add(node.mem_id)
            node = node.parent
    if rooted and not keep_boilerplate_images:
        dropped["boilerplate"] += len(body.css("img")) - len(root.css("img"))
    furniture_limit = FURNITURE_MAX_TEXT_SHARE * body_chars
    root_id = root.mem_id
    blocks: list[Block] = []
    images: list[ExtractedImage] = []
    buf: list[str] = []
    link_chars = 0
    cur_tag = "body"
    cur_node = root

    def flush(flags: int) -> None:
        nonlocal link_chars
        if buf:
            # NFC, as trafilatura's output: a page may spell one letter both ways (Bengali U+09DC and
            # U+09A1 U+09BC), and dedup and search must see one spelling.
            text = _norm_text("".join(buf))
            if not text.isascii():
                text = unicodedata.normalize("NFC", text)
            buf.clear()
            if text and not flags & _OUTSIDE:
                blocks.append(Block(text, min(link_chars, len(text)), cur_tag, rooted, node=cur_node))
        link_chars = 0

    start = body if keep_boilerplate_images and rooted else root
    start_flags = _OUTSIDE if start.mem_id != root_id else 0
    # Entries: (node, depth, flags), or (None, enclosing block tag, flags) closing a block element.
    stack: list = [(start, 0, start_flags)]
    while stack:
        node, depth, flags = stack.pop()
        if node is None:
            if buf:
                flush(flags)
            cur_tag, cur_node = depth
            continue
        tag = node.tag
        if tag == "-text":
            text = node.text_content
            if text:
                buf.append(text)
                if flags & _IN_LINK:
                    link_chars += len(text)
            continue
        if tag is None or tag.startswith("-"):
            continue
        if depth > max_depth:
            raise HtmlTooDeep(f"DOM deeper than {max_depth}")
        if tag == "br":
            buf.append("\n")
            continue
        if tag == "img":
            img = _image_of(node, base_url, banned_words, dropped)
            if img is None:
                continue
            if flags & _OUTSIDE:
                blocks.append(Block("", 0, "img", False, len(images)))
                images.append(img)
                continue
            flush(flags)
            blocks.append(Block("", 0, cur_tag, rooted, len(images)))
            images.append(img)
            continue
        if tail_ids and node.mem_id in tail_ids:
            if not keep_boilerplate_images:
                dropped["boilerplate"] += len(node.css("img"))
                continue
            flags |= _OUTSIDE
        attrs = node.attributes
        if ((tag in FURNITURE_TAGS and not (rooted and tag == "header"))
                or (attrs and tag not in HEADINGS and is_furniture_container(attrs))) \
                and tag != "body" and node.mem_id != root_id and node.mem_id not in core_ids:
            # (A <header> inside the article's root is its title block or a section heading. A heading names a
            # section, never a region: <h3 id="nav_section_2"> is a table-of-contents anchor, not a menu.)
            if len(node.text(deep=True, separator=" ", strip=True)) < furniture_limit:
                if not keep_boilerplate_images:
                    dropped["boilerplate"] += len(node.css("img"))
                    continue
                flags |= _OUTSIDE
        if flags & _OUTSIDE and node.mem_id == root_id:
            flags &= ~_OUTSIDE
        if tag == "a":
            flags |= _IN_LINK
        if tag in BLOCK_TAGS:
            if buf:  # (an empty buffer has no link characters either: nothing to flush)
                flush(flags)
            stack.append((None, (cur_tag, cur_node), flags))
            cur_tag, cur_node = tag, node
        depth += 1
        stack.extend([(child, depth, flags) for child in node.iter(include_text=True)][::-1])
    flush(0)
    keep = classify_blocks(blocks, rooted)
    if not rooted:
        keep = _densest_region(blocks, keep)
    if rooted:
        kept_chars = sum(len(b.text) for b, k in zip(blocks, keep) if k)
        if kept_chars < ROOT_CHECK_CHARS and body_chars > 3 * kept_chars:
            # A short article in a long page: maybe the root was a wrong guess (a calendar widget in the
            # only <article>, a footer field of the CMS). The whole body decides when it finds much more.
            alt = _extract_main_content(tree, title, base_url, banned_words, max_depth, keep_boilerplate_images,
                                        use_root=False)
            if kept_chars < ROOT_FALLBACK_MIN_CHARS or _text_chars(alt) > ROOT_FALLBACK_RATIO * kept_chars:
                return alt
    items: list[list[str] | ExtractedImage] = []
    paragraphs: list[str] = []
    for block, kept in zip(blocks, keep):
        if block.image >= 0:
            if kept or keep_boilerplate_images:
                if paragraphs:
                    items.append(paragraphs)
                    paragraphs = []
                items.append(images[block.image])
            else:
                dropped["boilerplate"] += 1
            continue
        if kept and block.in_root is rooted:
            paragraphs.append(block.text)
    if paragraphs:
        items.append(paragraphs)
    return ExtractedPage(items, title, dropped)
