"""``curate``: one subcommand per registered stage and job, dispatch through the registry, one-line errors."""
from __future__ import annotations

import pytest

from curation import cli, pipeline, registry
from curation.snapshot import RunSource, WarcInput
from curation.stage import StageStats


def _subcommands() -> set[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def test_every_stage_and_job_is_a_subcommand():
    commands = _subcommands()
    assert set(registry.stage_order()) <= commands
    assert {c for j in registry.JOBS for c in j.commands} <= commands
    assert {"run", "sample", "status", "report", "card"} <= commands


@pytest.fixture
def no_preflight(monkeypatch):
    """Dispatch alone: the preflight's input checks have their own tests (test_preflight.py)."""
    import curation.preflight

    monkeypatch.setattr(curation.preflight, "preflight", lambda *a, **k: None)


def test_stage_dispatch_goes_through_the_registry(monkeypatch, tmp_path, no_preflight):
    calls = []

    def fake_run_stage(runner, name, source_root, source=None):
        calls.append((name, source_root, source))
        return StageStats(name)

    monkeypatch.setattr(pipeline, "run_stage", fake_run_stage)
    out = tmp_path / "run"
    # A stage directory as --input means its run directory.
    assert cli.main(["dedup", "--input", f"{out}/extract", "--out", str(out)]) == 0
    assert calls[-1] == ("dedup", str(out), None)

    warcs = RunSource((WarcInput("/w/a.warc.gz", "a.warc.gz"),), "local")
    seen = []
    monkeypatch.setattr(pipeline, "prepare_inputs", lambda cfg, spec=None: seen.append(spec) or warcs)
    assert cli.main(["extract", "--input", "/w/", "--out", str(out)]) == 0
    assert seen == ["/w/"] and calls[-1] == ("extract", str(out), warcs)


def test_a_stage_that_does_not_apply_does_nothing(monkeypatch, tmp_path, capsys, no_preflight):
    monkeypatch.setattr(pipeline, "run_stage", lambda *a, **k: pytest.fail("must not run"))
    rc = cli.main(["bootstrap", "--input", str(tmp_path), "--out", str(tmp_path),
                   "--set", "snapshot=CC-MAIN-2024-10"])
    assert rc == 0 and "does not apply" in capsys.readouterr().out


def test_a_stage_cli_hook_can_take_the_command_over(monkeypatch, tmp_path, no_preflight):
    taken = []
    real = registry.load_target

    def load(target):
        if target == registry.spec("bootstrap").cli_main:
            return lambda args, cfg, root: taken.append((args.rounds, root)) or 7
        return real(target)

    monkeypatch.setattr(registry, "load_target", load)
    assert cli.main(["bootstrap", "--input", f"{tmp_path}/score", "--out", str(tmp_path), "--rounds", "2"]) == 7
    assert taken == [(2, str(tmp_path))]


def test_user_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["dedup", "--input", str(tmp_path), "--out", str(tmp_path), "--set", "dedup.no_such_key=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("curate: error:") and "no_such_key" in err[0]


def test_status_lists_every_stage_in_order(tmp_path, capsys):
    assert cli.main(["status", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == list(registry.stage_order())
    assert all("not complete" in ln for ln in lines)
