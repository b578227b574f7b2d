"""A corpus of N real web pages as WARC files, with real photos served on loopback (issue 13, item 5).

``bench/scale.py`` needs inputs of any size that look like a crawl: the 300-page sample is
synthetic shapes, and the real pages in ``realdata`` are fewer than a thousand. This module
multiplies the real pages without making them duplicates of each other, and gives every page
real photos behind loopback URLs, so that ``curate run`` does the work it would do on a crawl
(extraction, dedup, image fetch, pHash, CLIP, BLIP) on N pages:

- **Pages.** The templates are trafilatura's 945 evaluation pages (``html_eval/``) and the
  HTML responses of the real WARCs (``warc/``), ordered by a hash of the URL. Page ``i`` is
  template ``i % T``; copy 0 is the page as crawled, copy ``k > 0`` has the words of each text node shuffled with a seeded RNG
  (same words, so language ID and stopword ratios stay those of the real page; different word
  5-grams, so MinHash does not call copies of one template duplicates) and a distinct URL
  (``?scale_copy=k``).
- **Planted near-duplicate pages** (``near_dup_fraction``): a page that repeats an earlier
  generated page with one text node (of several) reshuffled, at another URL; the ground truth
  names its original.
- **Images.** Every ``<img>`` kept on a page (furniture-looking sources dropped, at most
  ``max_images_per_page``) is rewritten to ``<img src="http://127.0.0.1:PORT/img/NNNNNNN.jpg"
  alt="...">`` (alt kept; ``srcset``/``<source>`` removed so nothing points off the machine).
  Each URL is a distinct real photo: one of coco_mini's 80 COCO photos, randomly cropped,
  flipped, resized and JPEG-encoded at a random quality. Planted: ``repeat_image_fraction`` of
  the occurrences reuse an earlier page's URL (the same image on many pages),
  ``exact_image_fraction`` of the URLs are byte copies of an earlier image and
  ``near_image_fraction`` are the same crop resized and re-encoded (a pHash near duplicate).

The images are served by the sample's own :class:`curation.sample.server.ImageServer`
(``bench/scale.py`` starts it on the port written into the URLs) and the WARCs are written by
the sample's :class:`curation.sample.warc_writer.WarcWriter`. Deterministic for a seed and a
port. ``ground_truth.json`` lists what was planted; ``manifest.json`` the counts.

Usage: python bench/scale_corpus.py OUT_DIR --pages 2000 [--port 8431] [--seed 0]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import io
import json
import os
import random
import re
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from curation.sample.warc_writer import WarcWriter, http_request, http_response, record_id, warc_fields  # noqa: E402

DEFAULT_REALDATA = ROOT.parent / "shared" / "realdata"
CRAWL_START = datetime(2024, 3, 1, tzinfo=timezone.utc)

_TAG_SPLIT = re.compile(r"(<!--.*?-->|<[^>]*>)", re.S)
_RAW_OPEN = re.compile(r"<(script|style|textarea|title)\b", re.I)
_RAW_CLOSE = re.compile(r"</(script|style|textarea|title)\s*>", re.I)
_IMG = re.compile(r"<img\b[^>]*>", re.I | re.S)
_SOURCE = re.compile(r"<source\b[^>]*>", re.I | re.S)
_ATTR = re.compile(r"""([\w:-]+)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""", re.S)
_FURNITURE = re.compile(r"\.(svg|gif|ico)(\?|$)|logo|icon|sprite|pixel|avatar|spacer|badge|button|banner|/ads?/|emoji",
                        re.I)


@dataclass
class CorpusConfig:
    """What to build: sizes, planted fractions and where the real data is."""

    pages: int = 2000
    seed: int = 0
    port: int = 8431
    pages_per_warc: int = 100
    max_images_per_page: int = 4
    near_dup_fraction: float = 0.05
    repeat_image_fraction: float = 0.05
    exact_image_fraction: float = 0.03
    near_image_fraction: float = 0.03
    min_side: int = 180  # the image filter's default min_side is 150
    max_side: int = 420
    realdata: str = str(DEFAULT_REALDATA)


@dataclass
class Template:
    url: str
    html: str  # decoded with surrogateescape: re-encoding gives the page's own bytes back
    content_type: str


@dataclass
class Corpus:
    """What :func:`build_corpus` wrote (also ``manifest.json``)."""

    out_dir: str
    base_url: str
    warc_files: list[str]
    pages: int
    distinct_urls: int
    near_duplicate_pages: int
    image_urls: int
    image_occurrences: int
    repeated_image_occurrences: int
    exact_duplicate_images: int
    near_duplicate_images: int
    image_bytes: int
    templates: int
    config: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- templates


def load_templates(realdata: str | Path, limit: int | None = None) -> list[Template]:
    """The real pages (the WARCs' HTML responses and html_eval), in an order fixed by a SHA-1 of the URL.

    The order mixes the two sources, so a small corpus (``limit``: the first ``limit``) looks like
    a large one: mostly articles, some of the WARCs' spam and wiki pages.
    """
    from curation.warc_reader import ResponseRecord, iter_warc

    rd = Path(realdata)
    found: list[Template] = []
    for warc in sorted((rd / "warc").glob("*.warc.gz")):
        for rec in iter_warc(str(warc)):
            if (isinstance(rec, ResponseRecord) and rec.http_status == 200 and rec.payload
                    and "html" in (rec.content_type or "")):
                found.append(Template(rec.target_uri, rec.payload.decode("utf-8", "surrogateescape"),
                                      rec.content_type or "text/html"))
    evaldata = json.loads((rd / "html_eval" / "evaldata.json").read_text())
    for url in sorted(evaldata):
        path = rd / "html_eval" / "html" / (evaldata[url]["file"] + ".gz")
        if path.is_file():
            found.append(Template(url, gzip.decompress(path.read_bytes()).decode("utf-8", "surrogateescape"),
                                  "text/html"))
    out: list[Template] = []
    seen: set[str] = set()  # a body crawled at two URLs is one template (the copies must be distinct)
    for t in sorted(found, key=lambda t: hashlib.sha1(t.url.encode()).hexdigest()):
        if t.html not in seen:
            seen.add(t.html)
            out.append(t)
    if not out:
        raise FileNotFoundError(f"no real pages under {rd}/html_eval or {rd}/warc")
    return out[:limit] if limit is not None else out


def _text_chunks(page: str) -> list[str]:
    """The page split into tags/comments and text; odd indices are tags (re.split with a group)."""
    return _TAG_SPLIT.split(page)


def _prose_nodes(parts: list[str]) -> list[int]:
    """Indices of the text nodes of >= 4 words outside script/style/textarea/title."""
    raw = False
    found = []
    for i, part in enumerate(parts):
        if i % 2 == 1:
            if _RAW_OPEN.match(part):
                raw = True
            elif _RAW_CLOSE.match(part):
                raw = False
        elif not raw and len(part.split()) >= 4:
            found.append(i)
    return found


def shuffle_text(page: str, rng: random.Random, only: int | None = None) -> str:
    """Shuffle the words of every prose text node (or only the ``only``-th one), never to the same order.

    Text inside script/style/title is left alone (it is not prose and the title identifies the page).
    """
    parts = _text_chunks(page)
    nodes = _prose_nodes(parts)
    for k, i in enumerate(nodes):
        if only is not None and k != only:
            continue
        part = parts[i]
        words = part.split()
        shuffled = list(words)
        for _ in range(5):  # a node of repeated words may have no other order
            rng.shuffle(shuffled)
            if shuffled != words:
                break
        lead = part[: len(part) - len(part.lstrip())]
        trail = part[len(part.rstrip()):]
        parts[i] = lead + " ".join(shuffled) + trail
    return "".join(parts)


def count_text_nodes(page: str) -> int:
    """How many text nodes :func:`shuffle_text` would shuffle."""
    return len(_prose_nodes(_text_chunks(page)))


def _attrs(tag: str) -> dict[str, str]:
    return {k.lower(): v.strip("\"'") for k, v in _ATTR.findall(tag)}


def kept_img_tags(page: str, limit: int) -> list[tuple[int, int, str]]:
    """(start, end, alt) of the <img> tags to rewrite: furniture-looking sources dropped, at most ``limit``.

    Tags with alt text come first (their captions make pairs), then page order.
    """
    found = []
    for m in _IMG.finditer(page):
        a = _attrs(m.group(0))
        src = a.get("src") or a.get("data-src") or a.get("data-lazy-src") or ""
        if not src or src.startswith("data:") or _FURNITURE.search(src):
            continue
        found.append((m.start(), m.end(), html.unescape(a.get("alt", ""))))
    chosen = sorted(found, key=lambda t: (t[2].strip() == "", t[0]))[:limit]
    return sorted(chosen)


# --------------------------------------------------------------------------- images


class PhotoMaker:
    """Distinct JPEGs from the COCO photos: seeded crop, flip, size and quality per image."""

    def __init__(self, coco_dir: Path, cfg: CorpusConfig):
        from PIL import Image

        self.photos = []
        for p in sorted(coco_dir.glob("*.jpg")):
            with Image.open(p) as im:
                self.photos.append(im.convert("RGB"))
        if not self.photos:
            raise FileNotFoundError(f"no COCO photos in {coco_dir}")
        self.cfg = cfg

    def spec(self, rng: random.Random) -> dict:
        photo = rng.randrange(len(self.photos))
        w, h = self.photos[photo].size
        fw, fh = rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.9)
        cw, ch = int(w * fw), int(h * fh)
        ratio = cw / ch
        if ratio > 1.6:
            cw = int(ch * 1.6)
        elif ratio < 0.625:
            ch = int(cw / 0.625)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        short = rng.randint(self.cfg.min_side, self.cfg.max_side)
        return {"photo": photo, "box": [x, y, x + cw, y + ch], "short": short, "flip": rng.random() < 0.5,
                "quality": rng.randint(60, 95)}

    def render(self, spec: dict) -> bytes:
        from PIL import Image

        im = self.photos[spec["photo"]].crop(tuple(spec["box"]))
        if spec["flip"]:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        w, h = im.size
        s = spec["short"] / min(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=spec["quality"])
        return buf.getvalue()


# --------------------------------------------------------------------------- corpus


def build_corpus(out_dir: str | Path, cfg: CorpusConfig) -> Corpus:
    """Write ``warc/``, ``images/img/`` and the manifest/ground truth under ``out_dir`` (replaced)."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    (out / "warc").mkdir(parents=True)
    (out / "images" / "img").mkdir(parents=True)
    rd = Path(cfg.realdata)
    templates = load_templates(rd, limit=cfg.pages)
    photos = PhotoMaker(rd / "coco_mini" / "images", cfg)
    base = f"http://127.0.0.1:{cfg.port}/"
    rng = random.Random(f"scale-corpus:{cfg.seed}")

    image_specs: list[dict] = []  # by image id
    image_bytes = 0
    occurrences = repeated = 0
    planted_exact: list[tuple[int, int]] = []
    planted_near: list[tuple[int, int]] = []
    url_pages: dict[int, int] = {}
    near_keys: set[tuple[int, int, int]] = set()

    def new_image() -> int:
        nonlocal image_bytes
        i = len(image_specs)
        r = rng.random()
        if image_specs and r < cfg.exact_image_fraction:
            j = rng.randrange(i)
            spec = {"exact_of": j}
            data = (out / "images" / "img" / f"{j:07d}.jpg").read_bytes()
            planted_exact.append((i, j))
        elif image_specs and r < cfg.exact_image_fraction + cfg.near_image_fraction:
            k = rng.randrange(i)
            while "exact_of" in image_specs[k] or "near_of" in image_specs[k]:
                k = image_specs[k].get("exact_of", image_specs[k].get("near_of"))
            root = image_specs[k]
            while True:  # smaller and re-encoded; never the same bytes as another copy of the root
                spec = {**root, "short": max(cfg.min_side, int(root["short"] * rng.uniform(0.75, 0.95))),
                        "quality": rng.randint(60, 95), "near_of": k}
                key = (k, spec["short"], spec["quality"])
                if key not in near_keys and (spec["short"], spec["quality"]) != (root["short"], root["quality"]):
                    near_keys.add(key)
                    break
            data = photos.render(spec)
            planted_near.append((i, k))
        else:
            spec = photos.spec(rng)
            data = photos.render(spec)
        image_specs.append(spec)
        (out / "images" / "img" / f"{i:07d}.jpg").write_bytes(data)
        image_bytes += len(data)
        return i

    pages: list[dict] = []  # url, body, content_type, near_dup_of
    copies: dict[int, int] = {}
    for idx in range(cfg.pages):
        orig = pages[rng.randrange(len(pages))] if pages and rng.random() < cfg.near_dup_fraction else None
        n = count_text_nodes(orig["body"]) if orig else 0
        if orig and n >= 2:  # one text node of several reshuffled: most shingles shared
            body = shuffle_text(orig["body"], random.Random(f"{cfg.seed}:near:{idx}"), only=rng.randrange(n))
            copied = body.count(f'<img src="{base}')  # the original's images, again on this page
            occurrences += copied
            repeated += copied
            url = orig["url"].split("#")[0] + ("&" if "?" in orig["url"] else "?") + f"near_dup={idx}"
            pages.append({"url": url, "body": body, "content_type": orig["content_type"], "near_dup_of": orig["url"]})
            continue
        t_idx = idx % len(templates)
        t = templates[t_idx]
        k = copies.get(t_idx, 0)
        copies[t_idx] = k + 1
        page = t.html if k == 0 else shuffle_text(t.html, random.Random(f"{cfg.seed}:copy:{t_idx}:{k}"))
        url = t.url if k == 0 else t.url.split("#")[0] + ("&" if "?" in t.url else "?") + f"scale_copy={k}"
        page = _SOURCE.sub("", page)
        pieces, last = [], 0
        for start, end, alt in kept_img_tags(page, cfg.max_images_per_page):
            occurrences += 1
            if url_pages and rng.random() < cfg.repeat_image_fraction:
                img = rng.choice(sorted(url_pages))  # an image already on another page
                repeated += 1
            else:
                img = new_image()
            url_pages[img] = idx
            pieces.append(page[last:start])
            pieces.append(f'<img src="{base}img/{img:07d}.jpg" alt="{html.escape(alt, quote=True)}">')
            last = end
        pieces.append(page[last:])
        page = "".join(pieces)
        # Images that were not rewritten would point off the machine: drop them.
        page = _IMG.sub(lambda m: m.group(0) if base in m.group(0) else "", page)
        pages.append({"url": url, "body": page, "content_type": t.content_type, "near_dup_of": None})

    warcs = _write_warcs(out, pages, cfg)
    urls = [p["url"] for p in pages]
    corpus = Corpus(
        out_dir=str(out), base_url=base, warc_files=warcs, pages=len(pages), distinct_urls=len(set(urls)),
        near_duplicate_pages=sum(1 for p in pages if p["near_dup_of"]), image_urls=len(image_specs),
        image_occurrences=occurrences, repeated_image_occurrences=repeated,
        exact_duplicate_images=len(planted_exact), near_duplicate_images=len(planted_near),
        image_bytes=image_bytes, templates=len(templates), config=asdict(cfg),
    )
    (out / "manifest.json").write_text(json.dumps(asdict(corpus), indent=1) + "\n")
    truth = {"near_duplicate_pages": [[p["url"], p["near_dup_of"]] for p in pages if p["near_dup_of"]],
             "exact_duplicate_images": planted_exact, "near_duplicate_images": planted_near}
    (out / "ground_truth.json").write_text(json.dumps(truth) + "\n")
    return corpus


def _write_warcs(out: Path, pages: list[dict], cfg: CorpusConfig) -> list[str]:
    rng = random.Random(f"scale-corpus:{cfg.seed}:warc")
    files = []
    for w, start in enumerate(range(0, len(pages), cfg.pages_per_warc)):
        name = f"scale-{w:05d}.warc.gz"
        files.append(f"warc/{name}")
        with open(out / "warc" / name, "wb") as fh:
            writer = WarcWriter(fh)
            info_id = record_id(uuid.UUID(int=rng.getrandbits(128), version=4))
            writer.write_record("warcinfo", [("WARC-Date", CRAWL_START.strftime("%Y-%m-%dT%H:%M:%SZ")),
                                             ("WARC-Record-ID", info_id), ("WARC-Filename", name)],
                                warc_fields([("software", "bench/scale_corpus.py"), ("isPartOf", "SCALE-BENCH")]),
                                "application/warc-fields")
            for i, p in enumerate(pages[start:start + cfg.pages_per_warc]):
                date = CRAWL_START + timedelta(seconds=60 * (start + i))
                body = p["body"].encode("utf-8", "surrogateescape")
                u = urlsplit(p["url"])
                req_id = record_id(uuid.UUID(int=rng.getrandbits(128), version=4))
                req = http_request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""), [("Host", u.netloc)])
                stamp = date.strftime("%Y-%m-%dT%H:%M:%SZ")
                writer.write_record("request", [("WARC-Date", stamp), ("WARC-Record-ID", req_id),
                                                ("WARC-Target-URI", p["url"]), ("WARC-Warcinfo-ID", info_id)],
                                    req, "application/http; msgtype=request")
                resp = http_response(200, "OK", [("Content-Type", p["content_type"]),
                                                 ("Content-Length", str(len(body)))], body)
                writer.write_record("response", [("WARC-Date", stamp), ("WARC-Record-ID", record_id(
                    uuid.UUID(int=rng.getrandbits(128), version=4))), ("WARC-Target-URI", p["url"]),
                    ("WARC-Warcinfo-ID", info_id), ("WARC-Concurrent-To", req_id)],
                    resp, "application/http; msgtype=response", payload=body)
    return files


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--pages", type=int, default=CorpusConfig.pages)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=CorpusConfig.port)
    ap.add_argument("--realdata", default=os.environ.get("REALDATA_DIR", str(DEFAULT_REALDATA)))
    args = ap.parse_args(argv)
    c = build_corpus(args.out_dir, CorpusConfig(pages=args.pages, seed=args.seed, port=args.port,
                                                realdata=args.realdata))
    print(json.dumps({k: v for k, v in asdict(c).items() if k not in ("warc_files", "config")}, indent=1))


if __name__ == "__main__":
    main()
