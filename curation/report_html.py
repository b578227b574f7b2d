"""The quality report as one self-contained HTML page.

Every string that can come from the crawl (captions, keys, languages, reasons, paths)
goes through :func:`esc`; the page holds no script, and its Content-Security-Policy
forbids any (``default-src 'none'``) while allowing the embedded ``data:`` images and
the inline stylesheet, so a caption holding ``<script>`` is shown as text and would not
run even if escaping were ever missed. Plots and sample thumbnails are ``data:`` URIs:
the file can be mailed or archived alone.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any

from curation.config import ReportConfig
from curation.report_plots import categorical_png, funnel_png, numeric_png

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
BANDS = ("best", "median", "worst")
MAX_THUMB_INPUT_PIXELS = 50_000_000

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2327; background: #f6f7f9; }
header { background: #264653; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 2px 0; opacity: .9; }
nav { padding: 8px 32px; background: #e9eef2; font-size: 13px; }
nav a { margin-right: 14px; color: #264653; }
main { padding: 8px 32px 40px; max-width: 1320px; }
section { background: #fff; border-radius: 6px; padding: 14px 20px; margin: 16px 0; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { margin: 4px 0 10px; font-size: 18px; }
h3 { margin: 6px 0 4px; font-size: 15px; }
.desc, .src { color: #555; font-size: 12.5px; margin: 2px 0 6px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 14px; }
.metric { margin: 0; border: 1px solid #e3e7ea; border-radius: 5px; padding: 8px 10px; }
.metric img, .wide { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e3e7ea; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.band { margin: 6px 0 14px; }
.band h4 { margin: 4px 0; font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: #264653; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.sample { width: 180px; margin: 0; border: 1px solid #e3e7ea; border-radius: 5px; padding: 6px; background: #fafbfc; }
.sample img { display: block; max-width: 168px; max-height: 168px; margin: 0 auto 4px; }
.sample figcaption { font-size: 12px; overflow-wrap: anywhere; }
.sample .meta { color: #666; font-size: 11px; }
.noimg { height: 60px; display: flex; align-items: center; justify-content: center; color: #999; font-size: 11px; }
.skipped li { color: #666; }
.error { color: #b00020; }
"""


def esc(value: Any) -> str:
    """Text for HTML content and attribute values (quotes escaped too)."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return esc(v)


def thumbnail_uri(data: bytes | None, max_px: int) -> str | None:
    """A JPEG thumbnail of encoded image bytes as a ``data:`` URI; None if it does not decode."""
    if not data:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_THUMB_INPUT_PIXELS:
                return None
            im.thumbnail((max_px, max_px))
            im = im.convert("RGB")
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
    except Exception:  # noqa: BLE001 - any undecodable image is shown as a placeholder
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str | None, alt: str, cls: str = "") -> str:
    if not uri:
        return ""
    if not uri.startswith("data:image/"):  # only our own embedded images are ever placed in src
        raise ValueError("report images must be embedded data: URIs")
    klass = f' class="{esc(cls)}"' if cls else ""
    return f'<img src="{esc(uri)}" alt="{esc(alt)}"{klass}>'


def _funnel_section(report: dict[str, Any]) -> str:
    rows = report["funnel"]
    plot = funnel_png(rows)
    out = ['<section id="funnel"><h2>Rows through the pipeline</h2>',
           '<p class="desc">From each stage\'s <code>stats.json</code>: every input row is kept or rejected '
           'with a reason. Units differ by stage (WARC records for extract, documents or pairs after).</p>']
    if plot:
        out.append(_img(plot, "funnel of rows through every stage with rejection reasons", "wide"))
    out.append('<table><tr><th>stage</th><th class="num">rows in</th><th class="num">kept</th>'
               '<th class="num">rejected</th><th>rejection reasons</th><th>outputs</th><th class="num">seconds</th></tr>')
    for r in rows:
        label = r["stage"] + (f" · {r['table']}" if r.get("table") else "")
        if not r.get("complete") or "rows_in" not in r:
            out.append(f'<tr><td>{esc(label)}</td><td colspan="6" class="desc">not complete in this run</td></tr>')
            continue
        rej = sorted(r.get("rejected", {}).items(), key=lambda kv: -kv[1])
        reasons = ", ".join(f"{esc(k)}&nbsp;{v:,}" for k, v in rej) or "none"
        outputs = ", ".join(f"{esc(k)}&nbsp;{v:,}" for k, v in (r.get("outputs") or {}).items())
        if r.get("safety"):  # personal data replaced, robots.txt asked, faces, takedowns (curation.report.safety_counters)
            reasons += "<br><span class=\"desc\">safety: " + ", ".join(
                f"{esc(k)}&nbsp;{v:,}" for k, v in r["safety"].items()) + "</span>"
        out.append(
            f'<tr><td>{esc(label)}</td><td class="num">{r["rows_in"]:,}</td><td class="num">{r["rows_out"]:,}</td>'
            f'<td class="num">{sum(v for _, v in rej):,}</td><td>{reasons}</td><td>{outputs}</td>'
            f'<td class="num">{_num(r.get("seconds"))}</td></tr>'
        )
    out.append("</table></section>")
    return "\n".join(out)


def _sources(metric: dict[str, Any]) -> str:
    srcs = "; ".join(", ".join(v) for v in metric.get("sources", {}).values())
    return f'<p class="src">from {esc(srcs)}</p>' if srcs else ""


def _summary_table(summary: dict[str, Any]) -> str:
    cols = ("n", "mean", "std", "min", "p05", "p25", "p50", "p75", "p95", "max")
    rows = ["<table><tr><th>series</th>" + "".join(f'<th class="num">{c}</th>' for c in cols) + "</tr>"]
    keys = sorted(summary, key=lambda s: (s == "all", s))
    for key in keys:
        if key == "all" and len(keys) == 2:  # one series: its row already is the total
            continue
        s = summary[key]
        rows.append(f"<tr><td>{esc(key)}</td>" + "".join(f'<td class="num">{_num(s.get(c))}</td>' for c in cols) + "</tr>")
    rows.append("</table>")
    return "".join(rows)


def _distribution(name: str, metric: dict[str, Any]) -> str:
    if metric["kind"] == "numeric":
        plot = None if metric.get("empty") else numeric_png(metric)
        extra = _summary_table(metric.get("summary", {}))
    else:
        plot = None if metric.get("empty") else categorical_png(metric)
        extra = f'<p class="desc">{metric.get("total", 0):,} rows, {metric.get("distinct", 0):,} distinct values</p>'
    body = _img(plot, f"distribution: {metric['title']}") if plot else '<p class="desc">no rows</p>'
    return (f'<figure class="metric" id="metric-{esc(name)}"><h3>{esc(metric["title"])}</h3>'
            f'<p class="desc">{esc(metric.get("description"))}</p>{_sources(metric)}{body}{extra}</figure>')


def _samples_block(name: str, metric: dict[str, Any], cfg: ReportConfig) -> str:
    out = [f'<div class="metric" id="metric-{esc(name)}"><h3>{esc(metric["title"])}</h3>',
           f'<p class="desc">{esc(metric.get("description"))}</p>{_sources(metric)}']
    for band in BANDS:
        items = [s for s in metric.get("samples", []) if s["band"] == band]
        if not items:
            continue
        out.append(f'<div class="band"><h4>{band}</h4><div class="grid">')
        for s in items:
            uri = thumbnail_uri(s.get("image"), cfg.thumbnail_px)
            img = _img(uri, f"sample image {s.get('key')}") if uri else '<div class="noimg">image does not decode</div>'
            score = _num(s.get("score"))
            out.append(
                f'<figure class="sample" data-band="{esc(band)}">{img}<figcaption>'
                f'<span class="caption">{esc(s.get("caption"))}</span>'
                f'<div class="meta">score {score} · {esc(s.get("caption_source"))} · {esc(s.get("key"))}</div>'
                "</figcaption></figure>"
            )
        out.append("</div></div>")
    out.append("</div>")
    return "\n".join(out)


def _table_block(name: str, metric: dict[str, Any]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in metric.get("columns", []))
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_num(v)}</td>' if isinstance(v, (int, float)) else f"<td>{esc(v)}</td>"
                         for v in row) + "</tr>"
        for row in metric.get("rows", [])
    )
    more = '<p class="desc">(first rows only; all in the JSON)</p>' if metric.get("truncated") else ""
    return (f'<div class="metric" id="metric-{esc(name)}"><h3>{esc(metric["title"])}</h3>'
            f'<p class="desc">{esc(metric.get("description"))}</p>{_sources(metric)}<table><tr>{head}</tr>{body}</table>{more}</div>')


def render_html(report: dict[str, Any], cfg: ReportConfig) -> str:
    """The whole page."""
    metrics = report["metrics"]
    ok = {n: m for n, m in metrics.items() if m.get("status") == "ok"}
    dists = [_distribution(n, m) for n, m in ok.items() if m["kind"] in ("numeric", "categorical")]
    samples = [_samples_block(n, m, cfg) for n, m in ok.items() if m["kind"] == "samples" and not m.get("empty")]
    tables = [_table_block(n, m) for n, m in ok.items() if m["kind"] == "table"]
    not_ok = [(n, m) for n, m in metrics.items() if m.get("status") != "ok"]
    run_name = report["run"].rstrip("/").rsplit("/", 1)[-1]
    stages = ", ".join(
        f"{esc(s['name'])} ({'complete' if s['complete'] else 'not complete'})" for s in report["stages"]
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Quality report: {esc(run_name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f'<header><h1>Quality report: {esc(run_name)}</h1>',
        f"<p>run {esc(report['run'])} · snapshot {esc(report.get('snapshot'))} · "
        f"{report.get('warc_files', 0):,} WARC file(s) · generated {esc(report['generated_at'])}</p>",
        f"<p>stages: {stages}</p></header>",
        '<nav><a href="#funnel">funnel</a><a href="#distributions">distributions</a>'
        '<a href="#samples">samples</a><a href="#tables">tables</a><a href="#skipped">not shown</a></nav>',
        "<main>",
        _funnel_section(report),
        '<section id="distributions"><h2>Distributions</h2><div class="plots">',
        *(dists or ['<p class="desc">no distribution metric applies to this run</p>']),
        "</div></section>",
        '<section id="samples"><h2>Samples by score band</h2>',
        *(samples or ['<p class="desc">this run has no scored pairs with images yet</p>']),
        "</section>",
        '<section id="tables"><h2>Tables</h2>',
        *tables,
        "</section>",
        '<section id="skipped" class="skipped"><h2>Not shown</h2><ul>',
        *(f'<li{" class=error" if m.get("status") == "error" else ""}><b>{esc(m["title"])}</b> '
          f'(sql/report_{esc(n)}.sql): {esc(m.get("status"))}: {esc(m.get("reason"))}</li>' for n, m in not_ok),
        *([] if not_ok else ['<li>every metric applied</li>']),
        "</ul></section></main></body></html>",
    ]
    return "\n".join(parts)
