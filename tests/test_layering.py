"""Import rules from docs/architecture.md ("Layers").

Statically, with `ast` over every module under classifr/ (milliseconds): classifr never imports
`training` or `study`, only classifr/ui imports gradio, and classifr's modules import each other
without a cycle. At run time, in fresh interpreters: one per rule, importing all of the rule's
modules one after another and recording which heavy libraries each import pulled in (a library
absent after the last import was pulled in by none of them).
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "classifr"
UI_PACKAGE = "classifr.ui"
FORBIDDEN_IN_CLASSIFR = ("training", "study")  # run as scripts (`classifr train`), never imported

# Library modules that must not pull in gradio or the training code (the serving path, the CLI).
LIBRARY_MODULES = ("classifr.app.service", "classifr.cli", "classifr.versions.registry", "classifr.core.images",
                   "classifr.inference.explain")
# `classifr --help`, versions / promote / rollback / monitor answer in about a second, not after ~10 s of
# torch imports; opening the registry through the composition root stays as light.
TORCH_FREE_MODULES = ("classifr.cli", "classifr.versions.registry", "classifr.monitoring.report",
                      "classifr.app.bootstrap", "classifr.app.project")


# --- static: the import graph ----------------------------------------------------------------------


def _module_name(path: Path, root: Path = REPO_ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@functools.cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(path: Path, module: str, *, module_level_only: bool) -> list[tuple[int, str]]:
    """(line, imported name) for each import in one module, relative imports resolved: `import a.b`
    gives a.b, `from a import b` gives a.b (b may be a submodule of a or a name defined in a: the
    graph resolves it), `from a import *` gives a.

    module_level_only: skip imports inside functions and classes and under `if TYPE_CHECKING:`, which
    do not run when the module is imported.
    """
    tree = _parse(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[tuple[int, str]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                origin = ".".join(base + ([node.module] if node.module else []))
                found.extend((node.lineno, origin if alias.name == "*" else f"{origin}.{alias.name}") for alias in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not module_level_only:
                    visit(node.body)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                if not module_level_only:
                    visit(node.body)
                visit(node.orelse)
            else:  # if / try / with / for blocks at module level run on import
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, None) or [])
                for handler in getattr(node, "handlers", None) or []:
                    visit(handler.body)

    visit(tree.body)
    return found


def _classifr_modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(path, root.parent): path for path in sorted(root.rglob("*.py"))}


def _import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {classifr module it imports at module level: line}. `from a import b` is an edge to a.b
    when that is a module, else to a (a name defined in a's __init__)."""
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        for line, imported in _imports(path, name, module_level_only=True):
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].setdefault(target, line)
    return graph


def _find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _describe(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    return "\n".join(
        f"  {a} imports {b} ({modules[a].relative_to(REPO_ROOT)}:{graph[a][b]})" for a, b in itertools.pairwise(cycle)
    )


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_classifr_modules_import_each_other_without_a_cycle():
    modules = _classifr_modules()
    assert "classifr.app.service" in modules and "classifr.cli" in modules
    graph = _import_graph(modules)
    assert graph["classifr.app.project"], "the graph sees module-level imports"  # a sanity check of the parser
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle among classifr modules:\n" + _describe(cycle, graph, modules)


def test_classifr_never_imports_training_or_study():
    """Anywhere in classifr, at any depth (functions too): `classifr train` runs the script as a process."""
    wrong = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {imported}"
        for name, path in _classifr_modules().items()
        for line, imported in _imports(path, name, module_level_only=False)
        if imported.split(".")[0] in FORBIDDEN_IN_CLASSIFR
    ]
    assert not wrong, "classifr must not import training or study:\n" + "\n".join(wrong)


def test_only_the_ui_package_imports_gradio():
    """gradio is imported (at any depth) by classifr/ui only; app.py at the repo root serves the app."""
    importers = {
        name: sorted(line for line, imported in _imports(path, name, module_level_only=False) if imported.split(".")[0] == "gradio")
        for name, path in _classifr_modules().items()
    }
    wrong = [f"{name}: lines {lines}" for name, lines in importers.items() if lines and not name.startswith(UI_PACKAGE)]
    assert not wrong, "only classifr/ui imports gradio:\n" + "\n".join(wrong)
    assert any(importers[name] for name in importers if name.startswith(UI_PACKAGE + "."))  # the check sees them


def test_the_static_checks_see_what_they_should(tmp_path: Path):
    """The parser and the cycle finder on a made-up package: relative imports, `from a import b` of a
    submodule and of a name, function-level and TYPE_CHECKING imports."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .b import thing\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom pkg.sub import b\nimport gradio as gr\n"
        "if TYPE_CHECKING:\n    from pkg import c\n"
        "def f():\n    import training.train\n    from . import c\n"
    )
    (package / "sub" / "b.py").write_text("try:\n    from ..c import x\nexcept ImportError:\n    pass\nthing = 1\n")
    (package / "c.py").write_text("from pkg.sub import thing\nx = 2\n")
    modules = _classifr_modules(package)
    assert sorted(modules) == ["pkg", "pkg.a", "pkg.c", "pkg.sub", "pkg.sub.b"]
    assert [i for _, i in _imports(modules["pkg.a"], "pkg.a", module_level_only=True)] == [
        "typing.TYPE_CHECKING", "pkg.sub.b", "gradio"]
    assert [i for _, i in _imports(modules["pkg.a"], "pkg.a", module_level_only=False)] == [
        "typing.TYPE_CHECKING", "pkg.sub.b", "gradio", "pkg.c", "training.train", "pkg.c"]
    graph = _import_graph(modules)
    assert graph["pkg.a"] == {"pkg.sub.b": 2} and graph["pkg.sub.b"] == {"pkg.c": 2}
    assert graph["pkg.c"] == {"pkg.sub": 1} and graph["pkg.sub"] == {"pkg.sub.b": 1}
    assert _find_cycle(graph) == ["pkg.sub.b", "pkg.c", "pkg.sub", "pkg.sub.b"]  # found from pkg.a
    del graph["pkg.c"]["pkg.sub"]
    assert _find_cycle(graph) is None


# --- at run time, in fresh interpreters ------------------------------------------------------------

_PROBE = """
import importlib, json, sys
heavy = sys.argv[1].split(",")
seen, pulled = set(), {}
for module in sys.argv[2:]:
    importlib.import_module(module)
    loaded = {h for h in heavy if any(m == h or m.startswith(h + ".") for m in sys.modules)}
    pulled[module] = sorted(loaded - seen)
    seen |= loaded
print(json.dumps(pulled))
"""


def _heavy_imports(modules: tuple[str, ...], heavy: tuple[str, ...]) -> dict[str, list[str]]:
    """Import `modules` in turn in one fresh interpreter: for each, the `heavy` libraries it loaded first."""
    out = subprocess.run([sys.executable, "-c", _PROBE, ",".join(heavy), *modules], check=True, capture_output=True,
                         text=True, cwd=REPO_ROOT, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_cli_registry_and_monitor_modules_start_without_torch():
    """`classifr --help`, argument errors, versions / promote / rollback / monitor: no torch, no gradio."""
    heavy = ("torch", "transformers", "gradio", "training", "study")
    pulled = _heavy_imports(TORCH_FREE_MODULES, ("classifr.core.config", *heavy))
    assert list(pulled) == list(TORCH_FREE_MODULES)
    assert pulled["classifr.cli"] == ["classifr.core.config"]  # the probe sees what an import pulls in
    wrong = {module: [lib for lib in libs if lib in heavy] for module, libs in pulled.items()}
    assert {module: libs for module, libs in wrong.items() if libs} == {}


@pytest.mark.slow  # the serving path imports torch and transformers: seconds
def test_library_does_not_import_gradio_or_training():
    """The serving path and the CLI, whatever they import, never pull in gradio or the training code."""
    pulled = _heavy_imports(LIBRARY_MODULES, ("gradio", "training", "study"))
    assert list(pulled) == list(LIBRARY_MODULES)
    assert {module: libs for module, libs in pulled.items() if libs} == {}


@pytest.mark.slow  # a fresh interpreter that imports gradio: seconds
def test_the_app_starts_without_importing_torch():
    """`python app.py` answers before the model loads: its import path (the UI and the service) holds
    no torch, Captum or transformers; they load in the background (docs/speed.md, "Start-up")."""
    heavy = ("torch", "captum", "transformers")
    pulled = _heavy_imports(("classifr.app.service", "classifr.app.project", "classifr.ui.app"), heavy)
    assert pulled == {"classifr.app.service": [], "classifr.app.project": [], "classifr.ui.app": []}
