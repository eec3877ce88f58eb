"""What a command prints, by verbosity: the one rule every command follows.

``-q``: only errors, warnings and the final result line(s) (what a script would read);
default: also progress, hints and next steps; ``-v``: also detail (files, sizes, debug log).
Results and hints go to stdout, flushed at once (under nohup or SLURM stdout is a file);
octbench's log messages go to stderr at the matching level.

Must not import: torch, or octbench modules above L0 (every command uses it before its imports).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

QUIET, NORMAL, VERBOSE = 0, 1, 2


@dataclass(frozen=True)
class Console:
    """Prints a command's lines at the verbosity asked for.

    Example:
        >>> out = Console(QUIET)
        >>> out.result("3 trained")
        3 trained
        >>> out.info("Next: python -m octbench report x.yaml")
    """

    level: int = NORMAL

    @classmethod
    def from_flags(cls, *, quiet: bool = False, verbose: int = 0) -> Console:
        return cls(QUIET if quiet else VERBOSE if verbose else NORMAL)

    @property
    def quiet(self) -> bool:
        return self.level == QUIET

    @property
    def verbose(self) -> bool:
        return self.level >= VERBOSE

    def result(self, line: str = "") -> None:
        """A final result line: printed at every level."""
        print(line, flush=True)

    def info(self, line: str = "") -> None:
        """Progress, a hint or a next step: not under ``-q``."""
        if self.level >= NORMAL:
            print(line, flush=True)

    def detail(self, line: str = "") -> None:
        """More detail: only with ``-v``."""
        if self.level >= VERBOSE:
            print(line, flush=True)

    def warn(self, line: str) -> None:
        """A warning: on stderr, at every level."""
        print(f"octbench: warning: {line}", file=sys.stderr, flush=True)

    def configure_logging(self) -> None:
        """Send octbench's own log messages to stderr at this level; other libraries' INFO
        lines stay out.

        Only the ``octbench`` logger gets a handler (not the root logger), so a library that
        logs at INFO (matplotlib's font cache, Optuna's trial lines) does not print as if it
        were us.
        """
        logger = logging.getLogger("octbench")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("octbench: %(message)s"))
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel({QUIET: logging.WARNING, NORMAL: logging.INFO}.get(self.level,
                                                                           logging.DEBUG))
