"""The quality report's plots: matplotlib figures rendered to PNG ``data:`` URIs.

PNG keeps the page self-contained (no script, no external file) and renders the
same in any browser; the numbers behind every plot are in the report's JSON.
Labels may come from the crawl (a language code, a caption source): mathtext is
off so a ``$`` in them is drawn as text, never parsed.
"""
from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update({
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "figure.dpi": 100,
})

KEPT = "#2a9d8f"
IN = "#b7c4cf"
PALETTE = ["#e76f51", "#f4a261", "#e9c46a", "#8d99ae", "#9b5de5", "#f15bb5", "#00bbf9", "#6a994e", "#bc6c25", "#577590"]
SERIES = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
MAX_REASONS = 8
MAX_INTEGER_BARS = 40


def _plain_number(v: float, _pos=None) -> str:
    """Tick labels as plain text (1, 10, 1k, 10M): mathtext is off, so no ``10^{k}``."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _row_label(row: dict[str, Any]) -> str:
    return row["stage"] if not row.get("table") else f"{row['stage']} · {row['table']}"


def funnel_png(rows: list[dict[str, Any]]) -> str | None:
    """Rows in and kept per stage (and secondary table), largest-first reject reasons beside."""
    rows = [r for r in rows if r.get("complete") and "rows_in" in r]
    if not rows:
        return None
    n = len(rows)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 0.55 * n + 1.4), gridspec_kw={"width_ratios": [1, 1.3]})
    labels = [_row_label(r) for r in rows][::-1]
    ins = [r["rows_in"] for r in rows][::-1]
    outs = [r["rows_out"] for r in rows][::-1]
    y = range(n)
    ax.barh([i + 0.2 for i in y], ins, height=0.4, color=IN, label="rows in")
    ax.barh([i - 0.2 for i in y], outs, height=0.4, color=KEPT, label="rows kept")
    top = max(ins + [1])
    for i, (a, b) in enumerate(zip(ins, outs)):
        ax.text(a + top * 0.01, i + 0.2, f"{a:,}", va="center", fontsize=8)
        share = f" ({b / a:.0%})" if a else ""
        ax.text(b + top * 0.01, i - 0.2, f"{b:,}{share}", va="center", fontsize=8)
    ax.set_yticks(list(y), labels)
    ax.set_xlim(0, top * 1.3)
    ax.set_title("Rows through every stage")
    ax.legend(loc="upper right", fontsize=8, frameon=False)

    # Right: each stage's rejections, stacked by reason (largest first), as a share of rows in.
    reasons_seen: dict[str, str] = {}
    max_share = max((sum(r.get("rejected", {}).values()) / max(r["rows_in"], 1) for r in rows), default=0) or 1.0
    for i, r in enumerate(rows[::-1]):
        rejected = sorted(r.get("rejected", {}).items(), key=lambda kv: -kv[1])
        head, tail = rejected[:MAX_REASONS], sum(v for _, v in rejected[MAX_REASONS:])
        if tail:
            head.append(("other reasons", tail))
        left = 0.0
        total = max(r["rows_in"], 1)
        for reason, count in head:
            color = reasons_seen.setdefault(reason, PALETTE[len(reasons_seen) % len(PALETTE)])
            width = count / total
            ax2.barh(i, width, left=left, color=color, height=0.6, edgecolor="white", linewidth=0.5)
            if width > 0.22 * max_share:  # label the segments wide enough to hold one
                ax2.text(left + width / 2, i, f"{reason}\n{count:,}", ha="center", va="center", fontsize=6.5)
            left += width
        ax2.text(left + 0.01, i, f"{sum(c for _, c in head):,} rejected", va="center", fontsize=8)
    ax2.set_yticks(list(y), [""] * n)
    ax2.set_xlim(0, max_share * 1.35)
    ax2.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax2.set_xlabel("share of rows in")
    ax2.set_title("Rejected rows by reason")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in reasons_seen.values()]
    if handles:
        ax2.legend(handles, list(reasons_seen), fontsize=7, frameon=False, loc="upper left",
                   bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return to_data_uri(fig)


def numeric_png(metric: dict[str, Any]) -> str | None:
    """Histogram (per series) of a numeric metric, the median marked."""
    fig, ax = plt.subplots(figsize=(6.2, 3.0))
    summary = metric.get("summary", {})
    if "integer_counts" in metric:
        series = metric["integer_counts"]
        ks = sorted({k for pairs in series.values() for k, _ in pairs})
        if len(ks) <= MAX_INTEGER_BARS:
            width = 0.8 / max(len(series), 1)
            for j, (name, pairs) in enumerate(sorted(series.items())):
                xs = [k - 0.4 + width * (j + 0.5) for k, _ in pairs]
                ax.bar(xs, [v for _, v in pairs], width=width, color=SERIES[j % len(SERIES)], label=name)
            ax.set_xticks(ks if len(ks) <= 20 else ks[:: max(1, len(ks) // 20)])
        else:
            for j, (name, pairs) in enumerate(sorted(series.items())):
                ax.hist([k for k, _ in pairs], weights=[v for _, v in pairs], bins=30, histtype="step",
                        color=SERIES[j % len(SERIES)], label=name, linewidth=1.5)
            ax.set_yscale("log")
    elif "histogram" in metric:
        edges = metric["histogram"]["edges"]
        for j, (name, counts) in enumerate(sorted(metric["histogram"]["counts"].items())):
            ax.stairs(counts, edges, fill=len(metric["histogram"]["counts"]) == 1, alpha=0.75,
                      color=SERIES[j % len(SERIES)], label=name, linewidth=1.5)
        if metric.get("scale") == "log":
            ax.set_xscale("symlog", linthresh=1.0)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_plain_number))
    else:
        plt.close(fig)
        return None
    med = summary.get("all", {}).get("p50")
    if med is not None:
        ax.axvline(med, color="#333", linestyle="--", linewidth=1)
        ax.text(med, ax.get_ylim()[1] * 0.95, f" median {med:.3g}", fontsize=8, va="top")
    ax.set_ylabel("rows")
    if len(metric.get("integer_counts", metric.get("histogram", {}).get("counts", {}))) > 1:
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return to_data_uri(fig)


def categorical_png(metric: dict[str, Any]) -> str | None:
    """Horizontal bars of the largest categories (the tail folded into ``other``)."""
    counts = metric.get("counts") or []
    if not counts:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 0.28 * len(counts) + 1.0))
    labels = [str(c) for c, _ in counts][::-1]
    values = [v for _, v in counts][::-1]
    ax.barh(range(len(values)), values, color=SERIES[0])
    total = max(metric.get("total") or 1, 1)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,} ({v / total:.0%})", va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlim(0, max(values) * 1.3)
    ax.set_xlabel("rows")
    fig.tight_layout()
    return to_data_uri(fig)
