"""The import contract of ``octbench/`` (``tests/import_layers.py``): no cycles, no import up a
layer or across the independent L4 units, lazy imports only where they pay, no underscore names
shared between modules. Each allowed exception is listed with its reason, and the list is held
exact, so it can only shrink. Reads the source only: no torch, fast.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from import_layers import (
    ALLOWED,
    ALLOWED_DYNAMIC,
    ALLOWED_LAZY,
    ALLOWED_PRIVATE,
    LAYERS,
    PACKAGE_ROOT,
    cycles,
    layer_violations,
    lazy_violations,
    private_imports,
    read_imports,
    unit_of,
)


@pytest.fixture(scope="module")
def graph():
    return read_imports(PACKAGE_ROOT)


def _listing(items) -> str:
    return "\n".join(f"  {item}" for item in sorted(items))


def test_every_module_has_a_row_in_the_layer_table(graph):
    missing = sorted(m for m in graph.modules if unit_of(m) is None)
    assert not missing, f"add these modules to LAYERS in tests/import_layers.py: {missing}"
    stale = sorted(u for u in LAYERS if not any(unit_of(m) == u for m in graph.modules))
    assert not stale, f"LAYERS names units that no longer exist: {stale}"


def test_the_reader_sees_module_level_local_and_importlib_imports(graph):
    found = {(i.importer, i.imported, i.lazy) for i in graph.imports}
    assert ("octbench.cli", "octbench.plugins", False) in found  # module level
    assert ("octbench.cli.data", "octbench.config", True) in found  # inside a command function
    assert ("octbench.models", "octbench.models.reference", False) in found  # from pkg import mod
    assert len(graph.modules) == len(list(PACKAGE_ROOT.rglob("*.py")))


def test_no_cycles(graph):
    allowed = set(ALLOWED)
    found = cycles(graph.edges() - allowed)
    assert not found, "import cycles (cut one edge of each):\n" + _listing(map(str, found))


def test_no_import_goes_up_a_layer(graph):
    found = layer_violations(graph.edges())
    unexpected = {edge: why for edge, why in found.items() if edge not in ALLOWED}
    assert not unexpected, "imports against the layer table:\n" + _listing(
        f"{a} -> {b}: {why}" for (a, b), why in unexpected.items())


def test_allowed_exceptions_are_still_needed(graph):
    """An allowed edge that is gone, or that breaks no rule any more, leaves the list."""
    edges = graph.edges()
    in_cycles = {module for component in cycles(edges) for module in component}
    needed = set(layer_violations(edges)) | {
        (a, b) for a, b in edges if a in in_cycles and b in in_cycles}
    stale = sorted(set(ALLOWED) - (edges & needed))
    assert not stale, f"remove from ALLOWED in tests/import_layers.py: {stale}"
    assert all(reason.strip() for reason in ALLOWED.values())


def test_lazy_imports_only_at_the_boundary_or_for_heavy_libraries(graph):
    found = lazy_violations(graph)
    unexpected = {key: lines for key, lines in found.items() if key not in ALLOWED_LAZY}
    assert not unexpected, (
        "function-local imports outside the CLI boundary (hoist them, or list them with a "
        "reason in ALLOWED_LAZY):\n" + _listing(f"{a} -> {b} (lines {lines})"
                                               for (a, b), lines in unexpected.items()))
    stale = sorted(set(ALLOWED_LAZY) - set(found))
    assert not stale, f"remove from ALLOWED_LAZY in tests/import_layers.py: {stale}"


def test_importlib_detours_are_only_the_listed_ones(graph):
    assert not graph.detours, f"import octbench modules with import statements: {graph.detours}"
    assert set(graph.dynamic) == set(ALLOWED_DYNAMIC), graph.dynamic


def test_no_underscore_name_is_imported_from_another_module(graph):
    found = private_imports(graph)
    unexpected = {key: names for key, names in found.items() if key not in ALLOWED_PRIVATE}
    assert not unexpected, "make these public or move them:\n" + _listing(
        f"{a} takes {names} from {b}" for (a, b), names in unexpected.items())
    stale = sorted(set(ALLOWED_PRIVATE) - set(found))
    assert not stale, f"remove from ALLOWED_PRIVATE in tests/import_layers.py: {stale}"


# ---------------------------------------------------------------------------------------------
# The checker catches what it should: a synthetic package with deliberate faults.

SYNTHETIC_LAYERS = {"pkg": 9, "pkg.low": 0, "pkg.mid": 1, "pkg.top": 2, "pkg.a": 3, "pkg.b": 3}


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_checker_catches_an_upward_import_even_inside_a_function(tmp_path):
    root = _package(tmp_path, {
        "low.py": "def f():\n    from pkg.top import g\n",
        "mid.py": "from . import low\n",
        "top.py": "import pkg.mid\n",
    })
    graph = read_imports(root)
    assert graph.edges() == {("pkg.low", "pkg.top"), ("pkg.mid", "pkg.low"),
                             ("pkg.top", "pkg.mid")}
    assert layer_violations(graph.edges(), SYNTHETIC_LAYERS) == {
        ("pkg.low", "pkg.top"): "L0 imports L2"}
    assert cycles(graph.edges()) == [["pkg.low", "pkg.mid", "pkg.top"]]
    assert lazy_violations(graph, boundary=set(), libraries=set()) == {
        ("pkg.low", "pkg.top"): [2]}


def test_checker_catches_a_cycle_within_one_layer_and_importlib_detours(tmp_path):
    root = _package(tmp_path, {
        "a.py": "import importlib\n\ndef f():\n    return importlib.import_module('pkg.b')\n",
        "b.py": "from .a import _helper\n",
        "low.py": "import importlib\n\ndef load(name):\n    importlib.import_module(name)\n",
    })
    graph = read_imports(root)
    assert cycles(graph.edges()) == [["pkg.a", "pkg.b"]]
    assert layer_violations(graph.edges(), SYNTHETIC_LAYERS) == {}  # siblings, not upward
    assert layer_violations(graph.edges(), SYNTHETIC_LAYERS, independent={3}) == {
        ("pkg.a", "pkg.b"): "two units of the independent L3",
        ("pkg.b", "pkg.a"): "two units of the independent L3"}
    assert graph.dynamic == {"pkg.low": [4]}
    assert graph.detours == {"pkg.a": [4]}
    assert private_imports(graph) == {("pkg.b", "pkg.a"): ["_helper"]}


def test_checker_ignores_annotations_only_imports(tmp_path):
    root = _package(tmp_path, {
        "low.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                  "    from pkg.top import Thing\n",
        "top.py": "",
    })
    assert read_imports(root).edges() == set()


def test_a_package_at_the_boundary_counts_with_its_modules(tmp_path):
    root = _package(tmp_path, {
        "top/__init__.py": "",
        "top/command.py": "def run():\n    import pkg.low\n",
        "low.py": "",
    })
    graph = read_imports(root)
    lazy = {"libraries": set(), "layers": SYNTHETIC_LAYERS}
    assert lazy_violations(graph, boundary={"pkg.top"}, **lazy) == {}
    assert lazy_violations(graph, boundary=set(), **lazy) == {("pkg.top.command", "pkg.low"): [2]}


@pytest.mark.parametrize("module", ["octbench.grid", "octbench.report.collect"])
def test_the_grid_and_the_report_import_without_torch(module):
    """The report finds a grid's records by run id (octbench.grid): neither pays for torch."""
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=PACKAGE_ROOT.parent, check=True).stdout.strip()
    assert found == "[]", f"importing {module} imports {found}"
