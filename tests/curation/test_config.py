"""Config: defaults, YAML, dotted overrides, and clear errors before any work."""
from __future__ import annotations

import pytest

from curation.cli import main
from curation.config import ConfigError, PipelineConfig, parse_override


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("spark:\n  master: spark://10.0.0.5:7077\ndedup:\n  num_bands: 10\n")
    cfg = PipelineConfig.load(path, {"dedup.rows_per_band": 5, "limit": 2})
    assert cfg.spark.master == "spark://10.0.0.5:7077"
    assert (cfg.dedup.num_bands, cfg.dedup.rows_per_band, cfg.limit) == (10, 5, 2)
    assert parse_override("document_filters.languages=[en, fr]") == ("document_filters.languages", ["en", "fr"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dedup.num_bandz": 3}, "unknown config key"),
        ({"dedup.num_bands": "many"}, "must be an integer"),
        ({"spark": 3}, "must be a mapping"),
        ({"document_filters.min_words": 5000}, "min_words"),
        ({"document_filters.languages": "en"}, "must be a list"),
    ],
)
def test_bad_values_fail_with_the_key_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.load(overrides=overrides)


def test_cli_reports_config_errors_before_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extract:\n  max_payload_bytez: 3\n")
    code = main(["run", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "extract.max_payload_bytez" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
