"""The layering in ARCHITECTURE.md, checked: imports run only downward between packages, and no
module imports another that (directly or not) imports it back — counting imports inside
functions and under TYPE_CHECKING, which are cycles too once anything runs or type-checks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "harness"
FLOORS = ["util", "config", "stats", "models", "sft", "eval", "preflight", "study", "verdicts"]
TOP = {"cli", "__main__", "__init__"}  # the command line and the package's lazy public names
MAX_LINES = 500
# Longer than MAX_LINES, each with its reason in ARCHITECTURE.md ("Modules over 500 lines").
LONGER = {
    "harness.models.toy.world",
    "harness.stats.comparison",
    "harness.sft.train",
    "harness.eval.suites",
    "harness.preflight.lint",
    "harness.verdicts.analysis",
    "harness.verdicts.gate",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """harness modules imported anywhere in the file (module level, functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != "harness"}
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _floor(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    return len(FLOORS) if part in TOP else FLOORS.index(part)


def test_every_module_sits_on_a_known_floor():
    for module in MODULES:
        if module != "harness":
            _floor(module)  # raises ValueError for a package ARCHITECTURE.md does not place


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "harness"))
def test_imports_run_only_downward(module):
    upward = [dep for dep in GRAPH[module] if _floor(dep) > _floor(module)]
    assert not upward, (
        f"{module} (floor {FLOORS[_floor(module)] if _floor(module) < len(FLOORS) else 'top'}) imports {upward}"
    )


def test_config_imports_nothing_but_util():
    for module, deps in GRAPH.items():
        if module.startswith("harness.config"):
            stray = [d for d in deps if not d.startswith(("harness.config", "harness.util"))]
            assert not stray, f"{module} imports {stray}"


def test_study_never_imports_verdicts():
    for module, deps in GRAPH.items():
        if module.startswith("harness.study"):
            assert not [d for d in deps if d.startswith("harness.verdicts")], module


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(GRAPH.get(m, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_optuna_private_surface_in_one_module():
    users = [
        m
        for m, path in MODULES.items()
        if "optuna.storages._" in path.read_text(encoding="utf-8")
        or "_storage._" in path.read_text(encoding="utf-8")
    ]
    assert users in ([], ["harness.study.storage"]), users


def test_modules_stay_small():
    long = {
        m: n
        for m, p in MODULES.items()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES and m not in LONGER
    }
    assert not long, f"over {MAX_LINES} lines (split them or say why in ARCHITECTURE.md): {long}"


def test_every_function_hook_in_evals_resolves():
    """Task YAMLs name scoring hooks by dotted path (`!function harness.eval.hooks.score_format`,
    or `utils.fn` beside the YAML): a moved or renamed hook must fail here, not mid-study."""
    import importlib
    import importlib.util
    import re

    evals = ROOT.parent / "evals"
    hooks = [
        (yaml, name)
        for yaml in sorted(evals.rglob("*.yaml"))
        for name in re.findall(r"!function\s+([\w.]+)", yaml.read_text(encoding="utf-8"))
    ]
    assert hooks, "no !function hooks found under evals/"
    for yaml, name in hooks:
        module, fn = name.rsplit(".", 1)
        local = yaml.parent / f"{module}.py"
        if local.is_file():
            spec = importlib.util.spec_from_file_location(f"_hook_{yaml.parent.name}", local)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module)
        assert callable(getattr(mod, fn, None)), f"{yaml}: !function {name} does not resolve"
