"""The README's tour, run as a newcomer would, in a scratch clone: afterwards ``git status`` is
clean (everything it writes is below an ignored folder).

The commands come from the ```bash block under the README heading ``## A short tour``, with
``.venv/bin/python`` replaced by this interpreter and octbench taken from this checkout. The full
tour trains the quickstart, generates data and tunes (minutes: marked slow); the default run takes
the commands that neither train nor generate data (listings, the dry run).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

#: Subcommands of the tour that train, need a trained run or generate data: only in the slow test.
HEAVY = ("run", "predict", "tune", "report", "data")


def tour_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The command lines of the ```bash block under ``## A short tour``."""
    text = readme.read_text()
    section = re.search(r"^## A short tour\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README.md has no '## A short tour' section"
    block = re.search(r"^```bash\n(.*?)^```", section[1], re.M | re.S)
    assert block, "the tour section has no ```bash block"
    lines = [line.strip() for line in block[1].splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _heavy(line: str) -> bool:
    words = shlex.split(line, comments=True)
    command = words[words.index("octbench") + 1] if "octbench" in words else ""
    return command in HEAVY and "--dry-run" not in words


def _run_tour(tmp_path: Path, lines: list[str]) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True,
                   capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OCTBENCH_CACHE": str(tmp_path / "cache"),
           "MPLCONFIGDIR": str(tmp_path / "matplotlib"), "PYTHONDONTWRITEBYTECODE": "1"}
    for line in lines:
        command = line.replace(".venv/bin/python", shlex.quote(sys.executable))
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=3600)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    status = subprocess.run(["git", "status", "--porcelain", "--ignored=no"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"the tour left files in the checkout:\n{status}"


def test_tour_is_found_in_the_readme():
    lines = tour_commands()
    assert len(lines) >= 5 and all("octbench" in line for line in lines)
    assert any(_heavy(line) for line in lines) and not all(_heavy(line) for line in lines)


def test_light_part_of_the_tour_leaves_the_checkout_clean(tmp_path):
    """The listings (building the listing cache) and the dry run, run by default."""
    _run_tour(tmp_path, [line for line in tour_commands() if not _heavy(line)])


@pytest.mark.slow
def test_whole_tour_leaves_the_checkout_clean(tmp_path):
    """Every command of the tour, the quickstart and a tuning study included (minutes)."""
    _run_tour(tmp_path, tour_commands())
