"""One idea per module: a module of ``octbench/`` over ``MAX_LINES`` lines says in its docstring why
it is one idea (``One module over 450 lines because it is one idea: ...``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "octbench"
MAX_LINES = 450
REASON = "over 450 lines because it is one idea"


def long_modules_without_a_reason(package: Path) -> list[str]:
    """``name (lines)`` of each module over MAX_LINES whose docstring does not give the reason."""
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        docstring = " ".join((ast.get_docstring(ast.parse(text)) or "").split())
        if lines > MAX_LINES and REASON not in docstring:
            found.append(f"{path.relative_to(package.parent)} ({lines} lines)")
    return found


def test_a_module_over_450_lines_says_why_it_is_one_idea():
    assert len(list(PACKAGE.rglob("*.py"))) > 50, f"expected the octbench modules in {PACKAGE}"
    assert long_modules_without_a_reason(PACKAGE) == [], (
        "cut these along their ideas, or say in the docstring 'One module " + REASON + ": ...'")


def test_the_check_sees_a_long_module_and_accepts_its_reason(tmp_path):
    body = "x = 1\n" * (MAX_LINES + 1)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "long.py").write_text('"""Many things."""\n' + body)
    (tmp_path / "pkg" / "said.py").write_text(f'"""One module {REASON}: a table."""\n' + body)
    (tmp_path / "pkg" / "short.py").write_text('"""Short."""\nx = 1\n')
    found = long_modules_without_a_reason(tmp_path / "pkg")
    assert found == [f"pkg/long.py ({MAX_LINES + 2} lines)"]
