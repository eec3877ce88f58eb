"""A griffe extension for the API pages: octbench's docstrings head their doctests
``Example:`` (singular), which griffe's Google parser reads as an admonition of plain markdown
(so ``x["a"]["b"]`` became a broken link); as ``Examples:`` they render as code."""

from __future__ import annotations

import re

import griffe


class SingularExamples(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = re.sub(r"(?m)^(\s*)Example:$", r"\1Examples:",
                                         obj.docstring.value)
