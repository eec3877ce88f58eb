"""The documentation: generated reference pages complete, runnable snippets run, README short.

The site build and the example notebook need the [docs] extra and skip without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import typing

import pytest
from conftest import ROOT

from octbench import cli, docgen
from octbench.augment import AUGMENTATIONS
from octbench.config import ExperimentConfig
from octbench.data import DATASETS
from octbench.models import MODELS
from octbench.strategies import STRATEGIES

DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"^<!-- runnable -->\n```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)


def yaml_keys(cls=ExperimentConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the experiment YAML, read from the dataclasses themselves."""
    keys = []
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        kind = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(kind) and kind.__name__ != "Component":
            keys += yaml_keys(kind, f"{prefix}{f.name}.")
    return keys


def test_yaml_schema_page_lists_every_key_and_registered_name():
    page = (DOCS / "reference" / "config.md").read_text()
    assert "<!-- octbench:config-schema -->" in page and "<!-- octbench:registries -->" in page
    rendered = docgen.render(page)
    keys = yaml_keys()
    assert {"train.epochs", "train.augment", "report.baseline", "sweep"} <= set(keys)
    for key in keys:
        assert f"| `{key}` |" in rendered, f"YAML key {key} missing from the schema page"
    assert "| `train.epochs` | int | `15` | >= 1 and <= 10000 |" in rendered
    assert "one of `adam`, `adamw`, `sgd`" in rendered
    for registry in (DATASETS, MODELS, STRATEGIES, AUGMENTATIONS):
        for name in registry.names():
            row = next((line for line in rendered.splitlines()
                        if line.startswith(f"| `{name}` |")), None)
            assert row is not None, f"{registry.kind} {name} missing from the schema page"
    focal = next(line for line in rendered.splitlines() if line.startswith("| `focal` |"))
    assert "`gamma` = `2.0` (>= 0)" in focal


def _parsers(parser: argparse.ArgumentParser, name: str = "octbench"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _parsers(subparser, f"{name} {sub}")


def test_cli_page_lists_every_command_and_option():
    page = (DOCS / "reference" / "cli.md").read_text()
    assert "<!-- octbench:cli -->" in page
    rendered = docgen.render(page)
    parsers = dict(_parsers(cli.build_parser()))
    assert {"octbench run", "octbench data info", "octbench export mlflow"} <= set(parsers)
    for name, parser in parsers.items():
        assert f"## `{name}`" in rendered, f"command {name} missing from the CLI page"
        section = rendered.split(f"## `{name}`\n", 1)[1].split("\n## `", 1)[0]
        # Every option of the usage line (what --help lists) must have its row.
        options = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", parser.format_usage()))
        for option in options - {"-h"} | {"--help"}:
            assert f"`{option}`" in section, f"{name} {option} missing from the CLI page"
    assert "--worker`" not in rendered  # internal (help suppressed) options stay out


def test_a_new_option_appears_in_the_cli_page(monkeypatch):
    build = cli.build_parser

    def with_extra():
        parser = build()
        parser.add_argument("--brand-new-option", help="made up for this test")
        return parser

    monkeypatch.setattr(cli, "build_parser", with_extra)
    assert "`--brand-new-option`" in docgen.cli_markdown()


def _runnable_blocks() -> list[tuple[str, str, str]]:
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        if "_incoming" in page.parts:
            continue
        for match in RUNNABLE.finditer(page.read_text()):
            blocks.append((str(page.relative_to(ROOT)), match[1], match[2]))
    return blocks


def test_there_are_runnable_blocks():
    kinds = {kind for _, kind, _ in _runnable_blocks()}
    assert kinds == {"python", "bash"}, kinds


@pytest.mark.parametrize("page,kind,code", _runnable_blocks(),
                         ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(_runnable_blocks())])
def test_runnable_block(page, kind, code, tmp_path):
    """Run as a reader would, from a checkout: `experiments/` and `.venv/bin/python` exist."""
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    python = tmp_path / ".venv" / "bin" / "python"  # not a link: a venv knows itself by path
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "OCTBENCH_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("OCTBENCH_PLUGINS", None)
    if kind == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{page}:\n{code}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr


def test_readme_is_short_and_keeps_its_sections():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    setup = readme.split("## Setup", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", setup, re.S)
    assert [c.strip() for c in commands] == [
        'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && '
        ".venv/bin/python -m octbench run experiments/quickstart.yaml",
        ".venv/bin/python -m pytest"]
    tour = readme.split("## A short tour\n", 1)[1].split("\n## ", 1)[0]
    assert tour.count("```bash") == 1
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):  # relative links
        assert (ROOT / target).exists(), f"README links to missing {target}"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(DOCS.rglob("*.md"))
    assert len(pages) >= 20, pages  # the guide, explanations and reference pages
    for page in pages:
        relative = page.relative_to(DOCS).as_posix()
        if not relative.startswith("_incoming/"):
            assert f" {relative}" in nav, f"{relative} is not in mkdocs.yml's nav"


@pytest.mark.extras
def test_site_builds_strictly_with_the_generated_pages(tmp_path):
    pytest.importorskip("mkdocs", reason="the site needs the [docs] extra")
    pytest.importorskip("mkdocstrings", reason="the site needs the [docs] extra")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(site)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    cli_page = (site / "reference" / "cli" / "index.html").read_text()
    assert "--gpus-per-run" in cli_page and "octbench:cli" not in cli_page
    schema = (site / "reference" / "config" / "index.html").read_text()
    assert "train.epochs" in schema and "logit_adjust" in schema
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "load_results" in api and "write_report" in api
    assert (site / "reports" / "quickstart" / "figures" / "confusion.png").is_file()
    assert not (site / "_incoming").exists()


@pytest.mark.extras
def test_example_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the notebook needs the [docs] extra")
    nbclient = pytest.importorskip("nbclient", reason="the notebook needs the [docs] extra")
    pytest.importorskip("ipykernel", reason="the notebook needs the [docs] extra")
    notebook = nbformat.read(DOCS / "notebooks" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "\n".join(str(output) for cell in notebook.cells if cell.cell_type == "code"
                        for output in cell.get("outputs", []))
    assert "error" not in {o.get("output_type") for c in notebook.cells
                           for o in c.get("outputs", [])}
    assert "test_recall_DRUSEN" in outputs and "report.md" in outputs
    assert (tmp_path / "reports" / "notebook" / "report.md").is_file()
