"""Dotted config paths: the shared way to set ``{dotted.path: value}`` in an experiment's data."""

from __future__ import annotations

import pytest

from octbench.dotted import PathError, canonical_path, set_path, with_values


def test_with_values_sets_values_in_a_copy_and_creates_sections() -> None:
    base = {"data": {"name": "synthetic"}, "train": {"epochs": 2}}
    out = with_values(base, {"data.size": 64, "train.lr": 0.01, "report.baseline": "none"})
    assert out == {"data": {"name": "synthetic", "size": 64},
                   "train": {"epochs": 2, "lr": 0.01}, "report": {"baseline": "none"}}
    assert base == {"data": {"name": "synthetic"}, "train": {"epochs": 2}}  # untouched


def test_a_path_below_a_value_names_the_value() -> None:
    raw = {"train": {"lr": 0.01}}
    with pytest.raises(PathError, match=r"^train\.lr is a value, not a section"):
        set_path(raw, "train.lr.decay", 0.5)
    assert raw == {"train": {"lr": 0.01}}


@pytest.mark.parametrize(("path", "expected"), [
    ("models.0.width", "model.width"), ("strategies.0", "strategy"),
    ("models.01.width", "models.01.width"), ("train.lr", "train.lr"),
])
def test_canonical_path(path: str, expected: str) -> None:
    assert canonical_path(path) == expected
