"""The report's safety metrics (sql/report_{nsfw_score,aesthetic_score,face_count}.sql) on a synthetic run."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import ReportConfig
from curation.report import RunCatalog, load_metric_specs, run_metric
from tests.support.synthetic_run import make_run


def test_nsfw_aesthetic_and_face_metrics(spark, tmp_path):
    root = tmp_path / "run"
    make_run(root)
    for f in sorted((root / "score" / "pairs").glob("*.parquet")):
        t = pq.read_table(f)
        n = t.num_rows
        t = t.set_column(t.schema.get_field_index("nsfw_score"), "nsfw_score", pa.array([0.01 * i for i in range(n)], pa.float32()))
        t = t.set_column(t.schema.get_field_index("aesthetic_score"), "aesthetic_score", pa.array([4.0 + 0.1 * i for i in range(n)], pa.float32()))
        t = t.set_column(t.schema.get_field_index("face_count"), "face_count", pa.array([i % 3 for i in range(n)], pa.int32()))
        pq.write_table(t, f)
    specs = {s.name: s for s in load_metric_specs()}
    catalog = RunCatalog.scan(str(root))
    cfg = ReportConfig()
    for name in ("nsfw_score", "aesthetic_score", "face_count"):
        res = run_metric(spark, specs[name], catalog, cfg)
        assert res["status"] == "ok", res
        assert res["sources"]["pairs"][0].startswith("score"), res["sources"]
        assert res["summary"]["all"]["n"] > 0 and not res.get("empty")
    faces = run_metric(spark, specs["face_count"], catalog, cfg)
    assert {k for k, _ in faces["integer_counts"]["images"]} <= {0, 1, 2}


def _plant(root, stage: str, reason: str, row_id: str, table: str = "", detail: str | None = None) -> None:
    """One more input row of ``stage`` rejected with ``reason``: a rejects record and the counts (conserved)."""
    import json

    from curation.schemas import REJECTS

    rej = root / stage / "rejects"
    n = len(list(rej.glob("*.parquet")))
    pq.write_table(pa.Table.from_pylist([dict(row_id=row_id, table=table or "main", stage=stage, reason=reason,
                                              detail=detail, duplicate_of=None)], schema=REJECTS), rej / f"planted-{n}.parquet")
    path = root / stage / "stats.json"
    stats = json.loads(path.read_text())
    t = stats["tables"][table] if table else stats
    t["rows_in"] += 1
    t["rejected"][reason] = t["rejected"].get(reason, 0) + 1
    path.write_text(json.dumps(stats))


# Each safety decision, where its stage records it (docs/safety.md): reasons, then counters.
PLANTED = [("extract", "blocked_domain", "a.warc.gz@9", "", "https://www.blocked.example/b.html on the blocklist"),
           ("images", "hash_listed", "http://img.test/listed.jpg", "", "sha256 on the list"),
           ("images", "robots_disallowed", "http://img.test/private/p.jpg", "", "robots.txt"),
           ("images", "tdm_reserved", "http://img.test/tdm.jpg", "", "tdm-reservation: 1"),
           ("score", "nsfw", "d9-0", "", "nsfw_score 0.93 > 0.5")]
COUNTERS = {"extract": {"pii_email": 2, "pii_phone": 1}, "images": {"robots_txt_fetched": 1}, "score": {"images_with_faces": 3}}


def test_every_safety_reason_reaches_stats_rejects_funnel_and_card(tmp_path):
    """Every reason the safety layer writes (planted where a small run cannot produce it: the sample's
    self-trained CLIP has no NSFW head) and a real ``curate takedown`` show up in stats.json, the
    rejects tables, the report's funnel (data and HTML) and the card's Safety section."""
    import json

    from curation.card import build_card
    from curation.config import PipelineConfig
    from curation.report import SAFETY_REASONS, funnel
    from curation.report_html import _funnel_section
    from pipelines.takedown import TakedownLists, takedown

    root = tmp_path / "run"
    make_run(root)
    for stage, reason, row_id, table, detail in PLANTED:
        _plant(root, stage, reason, row_id, table, detail)
    for stage, counters in COUNTERS.items():
        path = root / stage / "stats.json"
        stats = json.loads(path.read_text())
        stats["counters"].update(counters)
        path.write_text(json.dumps(stats))
    (tmp_path / "u.txt").write_text("http://site.test/5\n")
    assert takedown(str(root), TakedownLists.load(str(tmp_path / "u.txt")))["rows_removed"] > 0

    expected = {(s, r) for s, r, *_ in PLANTED} | {(s, "takedown") for s in ("extract", "dedup", "images", "score", "capfilt")}
    assert {r for _, r in expected} <= set(SAFETY_REASONS)
    rows = funnel(RunCatalog.scan(str(root)))
    for stage, reason in sorted(expected):
        stats = json.loads((root / stage / "stats.json").read_text())
        counted = sum((t.get("rejected") or {}).get(reason, 0) for t in [stats, *stats["tables"].values()])
        assert counted > 0, (stage, reason)
        in_funnel = sum(r.get("rejected", {}).get(reason, 0) for r in rows if r["stage"] == stage)
        assert in_funnel == counted, (stage, reason)
        if reason != "takedown":  # a takedown's record is the takedowns/<date>.jsonl log (the rejects record may name it)
            assert reason in pq.read_table(root / stage / "rejects").column("reason").to_pylist(), (stage, reason)
    main = {r["stage"]: r for r in rows if r["table"] is None and r.get("complete")}
    for stage, counters in COUNTERS.items():
        assert counters.items() <= main[stage]["safety"].items(), stage
    assert main["extract"]["safety"]["takedown_entries"] > 0
    html = _funnel_section({"funnel": rows})
    for _, reason in expected:
        assert reason in html
    for k in ("pii_email", "robots_txt_fetched", "images_with_faces", "takedown_entries"):
        assert k in html
    card = build_card(str(root), PipelineConfig.load())
    safety = card.split("## Safety", 1)[1].split("\n## ", 1)[0]
    for _, reason in expected:
        assert f"`{reason}`" in safety, reason
    assert "email 2" in safety and "phone 1" in safety and "takedown 20" in safety
