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
