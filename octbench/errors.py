"""Exceptions that mean "the user asked for something we cannot do".

The CLI turns every :class:`OctbenchError` into one message on stderr and exit code 2, with no
traceback; anything else is a bug and keeps its traceback.

Must not import: any other octbench module (every module imports this one).
"""

from __future__ import annotations


class OctbenchError(Exception):
    """A user error: the message says what is wrong and how to fix it."""


class ConfigError(OctbenchError):
    """An experiment or tuning YAML that does not validate (all problems in one message)."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        if len(self.problems) == 1:
            message = f"invalid configuration{where}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"invalid configuration{where} ({len(self.problems)} problems):\n{lines}"
        super().__init__(message)


class DataError(OctbenchError):
    """A dataset that cannot be loaded or does not have the MedMNIST layout."""


class DeviceUnavailable(OctbenchError):
    """A requested device that this machine does not have (the run is recorded as skipped)."""
