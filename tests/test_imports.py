"""The project's import graph: no cycles, and ``curation/`` reaches ``pipelines/`` only by import strings.

Imports are read from the source (module level and inside functions alike: a lazy import
is still a dependency), so this holds without importing torch or Spark.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "filters", "models", "pipelines")


def project_modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
    return mods


def _imported(module: str, node: ast.Import | ast.ImportFrom, mods: dict[str, Path]) -> set[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = module.split(".")
            if mods[module].name != "__init__.py":
                pkg = pkg[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in mods:  # a name inside a module -> that module
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module] |= _imported(module, node, mods)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_project_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_curation_reaches_pipelines_only_through_the_registry():
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if d.startswith("pipelines"))
                 for m, deps in graph.items() if m.startswith("curation")}
    offenders = {m: d for m, d in offenders.items() if d}
    assert not offenders, f"curation/ imports pipelines/ directly (use an import string in curation/registry.py): {offenders}"


def test_registry_targets_name_pipelines_modules():
    from curation import registry

    strings = [s.target for s in registry.STAGES] + [t for s in registry.STAGES for t in (s.cli_arguments, s.cli_main) if t]
    strings += [t for j in registry.JOBS for t in (j.cli_arguments, j.cli_main)]
    mods = project_modules()
    for target in strings:
        module, _, attr = target.partition(":")
        assert module in mods and attr, target


def test_registry_and_config_import_without_the_data_libraries():
    """Airflow parses the DAGs in its own venv (no numpy, pyarrow, torch...): the registry and the
    config (validating a YAML file) must import with the standard library and PyYAML alone."""
    import subprocess
    import sys

    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('numpy', 'pyarrow', 'PIL', 'torch', 'fsspec', 'pyspark', 'pandas',\n"
        "                                  'justext', 'fasttext', 'cv2', 'dask'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import curation.registry, curation.config\n"
        "curation.config.PipelineConfig.load(None, {'dedup.num_bands': 20})\n"
        "print(','.join(curation.registry.stage_order()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("extract,dedup")
