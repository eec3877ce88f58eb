"""The layer contract of ``octbench/`` in one place: the layer table, the allowed exceptions and
an ``ast`` reader of every import (module level, inside functions, ``importlib.import_module``).

Each layer imports only layers below it (siblings in one layer may import each other, without
cycles; the units of an *independent* layer never import each other). Lazy (function-local)
imports are for the command boundary and for optional or heavy third-party libraries only.
``docs/reference/layout.md`` and DESIGN describe the shape; this file is the one that is checked
(``tests/test_layers.py``). Change the table and the code together.

Reading the code never imports it (no torch), so the check is fast.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "octbench"

#: unit (a module, or a package with everything below it) -> layer. The longest matching unit
#: names a module's layer; every module of ``octbench/`` must match one.
LAYERS: dict[str, int] = {
    # L0: no torch, no octbench imports above L0
    "octbench.errors": 0, "octbench.registry": 0, "octbench.plugins": 0,
    "octbench.fileio": 0, "octbench.progress": 0, "octbench.stats": 0, "octbench.dotted": 0,
    "octbench.untrusted": 0, "octbench.console": 0,
    # L1: data, models, strategies (each a leaf registry + one module per family) and peers
    "octbench.data": 1, "octbench.models": 1, "octbench.strategies": 1, "octbench.augment": 1,
    "octbench.metrics": 1, "octbench.devices": 1, "octbench.figures": 1,
    "octbench.robustness": 1, "octbench.calibration": 1, "octbench.rankings": 1,
    # L2: configuration, the grid (no torch), the results store
    "octbench.config": 2, "octbench.grid": 2, "octbench.results": 2,
    # L3: training and running the grid
    "octbench.engine": 3, "octbench.stacking": 3, "octbench.corrupted_eval": 3,
    "octbench.provenance": 3, "octbench.resume": 3, "octbench.runner": 3,
    "octbench.stacked_runs": 3, "octbench.preflight": 3, "octbench.executors": 3,
    "octbench.experiment": 3, "octbench.plan": 3,
    # L4: what is built on runs; never each other (the CLI passes what they share)
    "octbench.tuning": 4, "octbench.report": 4, "octbench.predict": 4, "octbench.catalog": 4,
    "octbench.export_mlflow": 4,
    # L5: the command boundary (CLI, the notebook API that mirrors it, the docs generator)
    "octbench.cli": 5, "octbench.__main__": 5, "octbench.api": 5, "octbench.docgen": 5,
    # the package itself: a PEP 562 facade that imports its public names on first use
    "octbench": 6,
}

#: Layers whose units never import each other.
INDEPENDENT_LAYERS = {4}

#: Where importing octbench modules lazily is the point (so ``--help`` and ``import octbench``
#: do not pay for torch): units of ``LAYERS``, so ``octbench.cli`` is the package, every command.
LAZY_BOUNDARY = {"octbench", "octbench.cli", "octbench.__main__", "octbench.api",
                 "octbench.docgen"}

#: Third-party libraries that may be imported lazily anywhere: optional extras, or heavy.
LAZY_LIBRARIES = {"torch", "torchvision", "timm", "safetensors", "ray", "optuna", "sqlalchemy",
                  "huggingface_hub", "matplotlib", "seaborn", "pandas", "sklearn", "mlflow",
                  "requests", "medmnistc", "medmnist"}

#: Import edges that break the contract today, each with the reason it is still here. The test
#: holds this list exact: an edge that is gone must be removed, so the list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {}


def _each(importer: str, reason: str, *imported: str) -> dict[tuple[str, str], str]:
    return {(importer, name): reason for name in imported}


#: Lazy imports outside the boundary that are not of a listed library: (module, imported) ->
#: reason. Held exact like ``ALLOWED``.
ALLOWED_LAZY: dict[tuple[str, str], str] = {
    **_each("octbench.augment", "MedMNIST-C needs the robustness extra",
            "octbench.robustness.corruptions"),
    **_each("octbench.catalog", "the registries only on a cache miss: list stays fast",
            "octbench.augment", "octbench.data", "octbench.models", "octbench.strategies"),
    # The registries import torch (their families are torch modules), and a config error must
    # come before torch (0.2 s, not 5-15 s). Next: the validator takes a view of the registries
    # (live, or the catalog's cached listing), so the lazy imports move to the CLI.
    **_each("octbench.config.experiment", "the registries import torch: config errors first",
            "octbench.augment", "octbench.data", "octbench.data.duplicates", "octbench.devices",
            "octbench.models", "octbench.robustness", "octbench.strategies"),
    **_each("octbench.config.sweep", "the registries import torch: config errors first",
            "octbench.data", "octbench.models", "octbench.strategies"),
    **_each("octbench.data.folder", "a bar only while a big folder is read",
            "tqdm"),
    **_each("octbench.progress", "a bar only on a terminal or in a notebook",
            "tqdm"),
    **_each("octbench.report.collect", "split next: a torch-free config/ for the report",
            "octbench.config"),
    **_each("octbench.grid", "data imports torch: only expanding a grid (run ids hold the data's "
            "fingerprint) pays for it, so the report reads a grid's run ids without torch",
            "octbench.data"),
}

#: ``importlib.import_module`` calls whose argument is not a literal: module -> reason.
ALLOWED_DYNAMIC: dict[str, str] = {
    "octbench": "the PEP 562 facade imports the module of each public name on first use",
    "octbench.plugins": "imports the plugin modules the user names in $OCTBENCH_PLUGINS",
}

#: Underscore names imported from another module: (importer, module) -> reason. Held exact.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, at which line, and whether inside a function."""

    importer: str
    imported: str  # an octbench module, or the top-level name of a third-party library
    line: int
    lazy: bool
    names: tuple[str, ...] = ()  # the names taken from it (``from X import a, b``)


def module_files(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` below ``root`` (a package folder)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Reader(ast.NodeVisitor):
    def __init__(self, importer: str, is_package: bool, modules: set[str], package: str):
        self.importer, self.is_package = importer, is_package
        self.modules, self.package = modules, package
        self.depth = 0
        self.found: list[Import] = []
        self.dynamic: list[int] = []  # import_module(<not a literal>)
        self.detours: list[int] = []  # import_module("octbench.<module>")

    def _target(self, name: str) -> str:
        if name == self.package or name.startswith(self.package + "."):
            while name not in self.modules and "." in name:
                name = name.rsplit(".", 1)[0]
            return name
        return name.split(".")[0]

    def _add(self, name: str, line: int, names: tuple[str, ...] = ()) -> None:
        self.found.append(Import(self.importer, self._target(name), line, self.depth > 0, names))

    def _function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # annotations only: never imported at run time
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.importer, self.is_package, node.module, node.level)
        plain = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.modules:  # ``from octbench import config``: the module
                self._add(submodule, node.lineno)
            else:
                plain.append(alias.name)
        if plain:
            self._add(base, node.lineno, tuple(plain))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "import_module" and node.args:
            argument = node.args[0]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                self.depth += 1  # an import at call time, wherever the call is written
                self._add(argument.value, node.lineno)
                self.depth -= 1
                if argument.value.split(".")[0] == self.package:
                    self.detours.append(node.lineno)
            else:
                self.dynamic.append(node.lineno)
        self.generic_visit(node)


@dataclass
class Graph:
    """Every import of a package, read from its source."""

    modules: set[str]
    imports: list[Import]
    dynamic: dict[str, list[int]]  # module -> lines of import_module(<not a literal>)
    detours: dict[str, list[int]]  # module -> lines of import_module("<this package>...")

    def edges(self) -> set[tuple[str, str]]:
        """(importer, imported) between the package's own modules; the package root, which
        every submodule's import runs anyway, and a module's own name are left out."""
        return {(i.importer, i.imported) for i in self.imports
                if i.imported in self.modules and i.imported != self.package
                and i.imported != i.importer}

    @property
    def package(self) -> str:
        return min(self.modules, key=len)


def read_imports(root: Path = PACKAGE_ROOT) -> Graph:
    """Read every import of the package at ``root`` (a folder with ``__init__.py``)."""
    files = module_files(root)
    modules, imports, dynamic, detours = set(files), [], {}, {}
    for name, path in files.items():
        reader = _Reader(name, path.name == "__init__.py", modules, root.name)
        reader.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        imports.extend(reader.found)
        if reader.dynamic:
            dynamic[name] = reader.dynamic
        if reader.detours:
            detours[name] = reader.detours
    return Graph(modules, imports, dynamic, detours)


def unit_of(module: str, layers: dict[str, int] = LAYERS) -> str | None:
    """The longest unit of the layer table that contains ``module`` (None: not in the table)."""
    candidates = [u for u in layers if module == u or module.startswith(u + ".")]
    return max(candidates, key=len) if candidates else None


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the module count
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return sorted(found)


def layer_violations(edges: set[tuple[str, str]], layers: dict[str, int] = LAYERS,
                     independent: set[int] = INDEPENDENT_LAYERS) -> dict[tuple[str, str], str]:
    """Edges that go up a layer, or across units of an independent layer: edge -> why."""
    found = {}
    for a, b in sorted(edges):
        unit_a, unit_b = unit_of(a, layers), unit_of(b, layers)
        if unit_a is None or unit_b is None:
            continue  # reported by the table's own check
        if layers[unit_b] > layers[unit_a]:
            found[(a, b)] = f"L{layers[unit_a]} imports L{layers[unit_b]}"
        elif (layers[unit_a] == layers[unit_b] and layers[unit_a] in independent
              and unit_a != unit_b):
            found[(a, b)] = f"two units of the independent L{layers[unit_a]}"
    return found


def lazy_violations(graph: Graph, boundary: set[str] = LAZY_BOUNDARY,
                    libraries: set[str] = LAZY_LIBRARIES, layers: dict[str, int] = LAYERS,
                    ) -> dict[tuple[str, str], list[int]]:
    """Function-local imports outside the boundary (units of the layer table, so a package
    counts with its modules) that are not of a lazy library: (module, imported) -> lines."""
    found: dict[tuple[str, str], list[int]] = {}
    for i in graph.imports:
        if (i.lazy and unit_of(i.importer, layers) not in boundary
                and i.imported not in libraries):
            found.setdefault((i.importer, i.imported), []).append(i.line)
    return found


def private_imports(graph: Graph) -> dict[tuple[str, str], list[str]]:
    """Underscore names taken from another module of the package: (importer, module) -> names."""
    found: dict[tuple[str, str], list[str]] = {}
    for i in graph.imports:
        private = [n for n in i.names if n.startswith("_") and not n.startswith("__")]
        if private and i.imported in graph.modules and i.imported != i.importer:
            found.setdefault((i.importer, i.imported), []).extend(private)
    return found
