"""Config: defaults, YAML, dotted overrides, and clear errors before any work."""
from __future__ import annotations

import pytest

from curation.cli import main
from curation.config import PipelineConfig, parse_override
from curation.errors import ConfigError


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
        ({"document_filters.min_words": 50000}, "min_words"),  # above max_words (20,000)
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


# --------------------------------------------------------------------------- every section, generically
# Built from the dataclasses themselves, so a section or key another stage adds is covered
# without editing these tests.
def _sections() -> list[str]:
    import dataclasses
    import typing

    hints = typing.get_type_hints(PipelineConfig)
    return [f.name for f in dataclasses.fields(PipelineConfig) if dataclasses.is_dataclass(hints[f.name])]


def _leaf_keys(cls=PipelineConfig, prefix: str = "") -> list[tuple[str, object]]:
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += _leaf_keys(hint, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, hint))
    return out


def _wrong_value(hint):
    """A value no field of this type accepts (None where every value is acceptable)."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return None
    if origin in (typing.Union, types.UnionType):  # e.g. str | None: a mapping is none of them
        return None if any(a is typing.Any or a is dict or typing.get_origin(a) is dict for a in args) else {"x": [1]}
    if origin is list or hint is list:
        return "not-a-list"
    if origin is dict or hint is dict:
        return "not-a-mapping"
    return {bool: "yes-please", int: "many", float: "lots", str: ["a", "list"]}.get(hint, {"x": [1]})


@pytest.mark.parametrize("section", _sections())
def test_every_section_refuses_unknown_keys(section):
    with pytest.raises(ConfigError, match=rf"{section}\.no_such_key"):
        PipelineConfig.load(overrides={f"{section}.no_such_key": 1})
    with pytest.raises(ConfigError, match=rf"\b{section}\b.*(must be a mapping|is not a section)"):
        PipelineConfig.load(overrides={section: "not a mapping"})


@pytest.mark.parametrize("key, hint", [k for k in _leaf_keys() if _wrong_value(k[1]) is not None],
                         ids=[k for k, h in _leaf_keys() if _wrong_value(h) is not None])
def test_every_key_refuses_a_wrong_type_naming_it(key, hint):
    import re

    with pytest.raises(ConfigError, match=re.escape(key)):
        PipelineConfig.load(overrides={key: _wrong_value(hint)})


def test_every_section_round_trips_through_yaml(tmp_path):
    import yaml

    cfg = PipelineConfig.load(overrides={"snapshot": "CC-MAIN-2024-10"})
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    again = PipelineConfig.load(path)
    assert again == cfg
    assert set(cfg.to_dict()) >= set(_sections())


def test_cli_flags_override_the_yaml(tmp_path):
    from curation.cli import build_parser, load_config

    path = tmp_path / "cluster.yaml"
    path.write_text("snapshot: CC-MAIN-2024-10\nspark:\n  master: spark://a:7077\ndask:\n  scheduler: tcp://a:8786\n"
                    "dedup:\n  num_bands: 10\n")
    args = build_parser().parse_args(["run", "--config", str(path), "--master", "spark://b:7077",
                                      "--set", "dedup.num_bands=12", "--out", "/data/run"])
    cfg = load_config(args)
    assert (cfg.spark.master, cfg.dask.scheduler, cfg.dedup.num_bands, cfg.out, cfg.snapshot) == (
        "spark://b:7077", "tcp://a:8786", 12, "/data/run", "CC-MAIN-2024-10")


# --------------------------------------------------------------------------- ranges (issue 19 item 7)
@pytest.mark.parametrize(
    "key, value",
    [
        ("extract.max_payload_bytes", 0), ("extract.max_payload_bytes", -1), ("extract.max_dom_depth", 0),
        ("extract.files_per_task", 0), ("extract.min_caption_chars", -1), ("score.min_clip_score", -1.5),
        ("score.min_clip_score", 1.01), ("score.mmc4_min_sim", 2.0), ("spark.shuffle_partitions", 0),
        ("images.encode_quality", 0), ("sample_pages", 0), ("sample_image_port", 70000), ("limit", 0),
    ],
)
def test_out_of_range_values_fail_at_load_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key.rsplit(".", 1)[-1]):
        PipelineConfig.load(overrides={"snapshot": "CC-MAIN-2024-10", key: value})


def test_range_ends_are_accepted():
    cfg = PipelineConfig.load(overrides={"score.min_clip_score": -1, "extract.max_dom_depth": 1, "limit": 1})
    assert (cfg.score.min_clip_score, cfg.extract.max_dom_depth) == (-1.0, 1)


@pytest.mark.parametrize("entry", ["localhost", "127.0.0.1:http", "10.0.0.0/33", "127.0.0.1:99999", "1.2.3.4.5"])
def test_bad_allow_addresses_fail_at_load_naming_the_entry(entry):
    with pytest.raises(ConfigError, match=r"images: allow_addresses entry '.*'[ :]"):
        PipelineConfig.load(overrides={"images.allow_addresses": [entry]})


def test_good_allow_addresses_load():
    entries = ["127.0.0.1", "127.0.0.1:8417", "10.0.0.0/8", "10.0.0.0/8:80", "::1", "[::1]:8417"]
    assert PipelineConfig.load(overrides={"images.allow_addresses": entries}).images.allow_addresses == entries


def test_cli_reports_an_out_of_range_value_as_one_line(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "o"), "--set", "extract.max_payload_bytes=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("curate: error: extract: max_payload_bytes must be >= 1") and "\n" not in err
    assert not (tmp_path / "o").exists()
