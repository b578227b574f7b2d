"""Checks the CLI runs before any stage starts: each one that fails is one line, in seconds.

Without them a closed Spark master port costs 83 s and a 208-line Py4J trace, an absent Dask
scheduler 33 s and a traceback, a missing input stage a Spark job that reads nothing, and an
unwritable ``--out`` a Python traceback, all after the run has started (issue 19). Every check
here is cheap (a TCP connect with a 3 s timeout, a marker read, a probe file) and raises a
:class:`~curation.errors.CurateError` naming the key or path and the fix, which the CLI prints
as ``curate: error: ...`` (exit 2).

What a stage's inputs must look like is :func:`curation.stage.check_inputs`' (the runner runs it
again before each stage); this module only calls it early.
"""
from __future__ import annotations

import socket
import uuid
from urllib.parse import urlsplit

from fsspec.core import url_to_fs

from curation import registry
from curation.config import PipelineConfig
from curation.errors import ConfigError, InputError

CONNECT_TIMEOUT_S = 3.0
# Engines each stage uses (a stage not listed here is assumed to use both).
SPARK_STAGES = ("extract", "dedup")
DASK_STAGES = ("bootstrap", "score", "capfilt")


def preflight(cfg: PipelineConfig, command: str, input_path: str | None = None) -> None:
    """Fail fast on what would otherwise fail minutes into ``command``.

    ``input_path`` is the command's ``--input`` (a run directory or a stage directory for a stage
    after the first; WARC files for ``extract``/``run``, which :mod:`curation.snapshot` checks).
    """
    stages = _stages_of(command)
    if input_path and len(stages) == 1 and stages[0] != "extract":
        _check_stage_inputs(cfg, stages[0], input_path)
    engines = set().union(*(_engines(cfg, s) for s in stages)) | ({"spark"} if command == "report" else set())
    if "spark" in engines:
        check_spark_master(cfg.spark.master)
    if "dask" in engines and cfg.dask.scheduler:
        check_dask_scheduler(cfg.dask.scheduler)
    if stages:
        check_writable(cfg.out)


def _stages_of(command: str) -> list[str]:
    if command == "run":
        return list(registry.stage_order())
    return [command] if command in registry.stage_order() else []


def _engines(cfg: PipelineConfig, stage: str) -> set[str]:
    if stage in SPARK_STAGES:
        return {"spark"}
    if stage in DASK_STAGES:
        return {"dask"}
    if stage == "images":  # img2dataset's pyspark distributor, or its multiprocessing one
        on_spark = cfg.images.distributor == "pyspark" or (
            cfg.images.distributor == "auto" and not cfg.spark.master.startswith("local"))
        return {"spark"} if on_spark else set()
    return {"spark", "dask"}


def upstream_of(cfg: PipelineConfig, stage: str) -> dict[str, str]:
    """``{input key: stage}`` for the inputs of ``stage`` that must be a finished stage's output in this run
    (an input of a stage this configuration skips, e.g. ``bootstrap/models`` with downloaded models, is not)."""
    return registry.spec(stage).required_upstream(cfg)


def _check_stage_inputs(cfg: PipelineConfig, stage: str, input_path: str) -> None:
    from curation.stage import check_inputs

    spec = registry.spec(stage)
    if not spec.when(cfg):
        return  # the CLI says "does not apply" and runs nothing
    root = registry.source_root(input_path)
    _check_exists(root, "--input", f"give `curate {stage}` the run directory holding "
                  f"{', '.join(u + '/' for u in spec.upstream())}")
    check_inputs(spec.resolve_inputs(root), upstream_of(cfg, stage))


def _check_exists(path: str, key: str, fix: str) -> None:
    fs, p = url_to_fs(path)
    if not fs.exists(p):
        raise InputError(f"{key} {path} does not exist; {fix}")


# --------------------------------------------------------------------------- cluster addresses
def _reachable(host: str, port: int) -> OSError | None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return exc


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` (``default_port``)."""
    parts = urlsplit(f"//{text}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not parts.hostname:
        raise ValueError(f"no host in {text!r}")
    return parts.hostname, port


def check_spark_master(master: str) -> None:
    """``spark://host:port[,host2:port2]`` (standalone, HA list): at least one master accepts a connection.

    ``local[*]``, ``yarn`` and ``k8s://`` masters are not checked (nothing to connect to first,
    or a resource manager found through its own configuration).
    """
    if not master.startswith("spark://"):
        return
    errors = []
    for entry in master[len("spark://"):].split(","):
        try:
            host, port = _host_port(entry, 7077)
        except ValueError as exc:
            raise ConfigError(f"spark.master {master!r}: {exc}; expected spark://host:port") from None
        exc = _reachable(host, port)
        if exc is None:
            return
        errors.append(f"{host}:{port} ({exc.strerror or exc})")
    raise ConfigError(
        f"spark.master {master}: no Spark master accepts connections at {', '.join(errors)} "
        f"(tried for {CONNECT_TIMEOUT_S:.0f} s); start it (`spark-class org.apache.spark.deploy.master.Master`) "
        f"or pass --master local[*]"
    )


def check_dask_scheduler(address: str) -> None:
    """``tcp://host:port`` / ``tls://host:port`` / ``host:port``: the scheduler accepts a connection.

    Other Dask transports (``inproc://``, ``ucx://``, ...) are not checked.
    """
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in ("tcp", "tls"):
        return
    try:
        host, port = _host_port(rest.rstrip("/"), 8786)
    except ValueError as exc:
        raise ConfigError(f"dask.scheduler {address!r}: {exc}; expected tcp://host:port") from None
    exc = _reachable(host, port)
    if exc is not None:
        raise ConfigError(
            f"dask.scheduler {address}: no Dask scheduler accepts connections at {host}:{port} "
            f"({exc.strerror or exc}, tried for {CONNECT_TIMEOUT_S:.0f} s); start it (`dask scheduler`) "
            f"or leave --scheduler unset for a local cluster"
        )


# --------------------------------------------------------------------------- the run directory
def check_writable(out: str) -> None:
    """A local ``out`` is created (as the run would) and a probe file written and removed in it.

    Object-store outputs are not probed: a write there has side effects a check should not have
    (versioned buckets, notifications) and fails with the store's own message at the first write.
    """
    fs, path = url_to_fs(out)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if not {"file", "local"} & set(protocols):
        return
    probe = f"{path.rstrip('/')}/.curate-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        fs.makedirs(path, exist_ok=True)
        with fs.open(probe, "wb") as fh:
            fh.write(b"")
        fs.rm(probe)
    except OSError as exc:
        raise ConfigError(
            f"out {out}: cannot write there ({type(exc).__name__}: {exc.strerror or exc}); "
            f"pass --out a directory you can write"
        ) from None
