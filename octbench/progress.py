"""Progress of a grid, visible both in a terminal and in a log file.

Every run starts with a line (``[i/N] start RUN_ID on DEVICE``) and every epoch ends with one
(throughput, loss, the validation metric, the run's and the grid's ETA). On a terminal a tqdm bar
also moves during the epoch; elsewhere (``nohup``, SLURM, a pipe) a long epoch prints a plain
line every ``heartbeat`` seconds instead, so a log file never stays silent for long.

The runner talks to this module through :class:`GridProgress` and :class:`RunProgress` only, so
any executor can report progress the same way. The same events reach the grid's *observers*
(:class:`RunObserver`, e.g. live MLflow logging): one channel for every listener.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

#: Seconds between in-epoch lines when the output is not a terminal.
HEARTBEAT_SECONDS = 60.0


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if minutes < 10 and seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def interactive(stream: TextIO) -> bool:
    """Whether a person watches ``stream`` live: a terminal, or a Jupyter notebook (no terminal,
    but tqdm.auto draws its notebook widget there)."""
    return stream.isatty() or in_notebook()


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class RunObserver(Protocol):
    """What a listener to a grid's runs hears, in this order for each run."""

    def run_started(self, spec: Any) -> None:
        """A run (its ``octbench.grid.RunSpec``) starts training."""

    def epoch_ended(self, run_id: str, entry: dict) -> None:
        """An epoch ended; ``entry`` is the run's new history entry (as in its record)."""

    def run_ended(self, run_id: str, outcome: Any) -> None:
        """The run ended: its record, or what stopped it (None: finished elsewhere)."""


class GridProgress:
    """Start lines and a grid-level ETA for ``epochs[i]`` epochs of each pending run.

    The ETA is the mean wall time per finished epoch (training and validation) times the epochs
    left; early stopping makes it an upper bound.

    Example:
        >>> grid = GridProgress([2], stream=sys.stdout, tty=False)
        >>> run = grid.start_run(1, "cnn__none__seed0__cpu__1a2b", "cpu")
        [1/1] start cnn__none__seed0__cpu__1a2b on cpu (2 epochs)
    """

    def __init__(self, epochs: list[int], *, enabled: bool = True, stream: TextIO | None = None,
                 tty: bool | None = None, heartbeat: float = HEARTBEAT_SECONDS,
                 epoch_lines: bool = True, observers: Sequence[RunObserver] = ()):
        self.epochs_left = list(epochs)
        self.observers = list(observers)
        self.enabled = enabled
        self.epoch_lines = epoch_lines
        self.stream = stream if stream is not None else sys.stderr
        self.tty = interactive(self.stream) if tty is None else tty
        self.heartbeat = heartbeat
        self.epoch_seconds: list[float] = []

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            from tqdm.auto import tqdm

            tqdm.write(line, file=self.stream)  # above a live bar, not through it
        else:
            print(line, file=self.stream, flush=True)

    def eta_seconds(self) -> float | None:
        """Seconds left in the whole grid, once an epoch has finished."""
        if not self.epoch_seconds:
            return None
        per_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds)
        return per_epoch * sum(self.epochs_left)

    def start_run(self, number: int, run_id: str, device: str, *,
                  spec: Any = None) -> RunProgress:
        """Print the run's start line and return the object its epochs report to; the
        observers hear of ``spec`` (the run's RunSpec) starting."""
        total = len(self.epochs_left)
        epochs = self.epochs_left[number - 1]
        eta = self.eta_seconds()
        tail = f", grid ETA ~{format_duration(eta)}" if eta is not None else ""
        self.write(f"[{number}/{total}] start {run_id} on {device} ({epochs} epochs{tail})")
        if spec is not None:
            for observer in self.observers:
                observer.run_started(spec)
        return RunProgress(self, number - 1, run_id)

    def run_ended(self, run_id: str, outcome: Any) -> None:
        """Tell the observers how a run ended (its record, or what stopped it)."""
        for observer in self.observers:
            observer.run_ended(run_id, outcome)


class RunProgress:
    """Per-epoch progress of one run; made by :meth:`GridProgress.start_run`."""

    def __init__(self, grid: GridProgress, index: int, run_id: str | None = None):
        self.grid = grid
        self.index = index
        self.run_id = run_id
        self.started: float | None = None

    @contextmanager
    def epoch(self, epoch: int, epochs: int, images: int):
        """Around one training epoch; yields an object whose ``update(n)`` counts images."""
        self.started = time.perf_counter()
        desc = f"epoch {epoch + 1}/{epochs}"
        if not self.grid.enabled:
            yield _Counter()
        elif self.grid.tty:
            from tqdm.auto import tqdm

            with tqdm(total=images, leave=False, unit="img", desc=desc,
                      file=self.grid.stream) as bar:
                yield bar
        else:
            yield _Heartbeat(self.grid.write, f"  {desc}", images, self.grid.heartbeat)

    def epoch_done(self, epoch: int, epochs: int, *, images: int, train_seconds: float,
                   loss: float, metric: str, value: float, stopping: bool = False,
                   wall: float | None = None, entry: dict | None = None) -> None:
        """Print the epoch's line; ``stopping``: early stopping ends the run after it.

        ``wall``: the epoch's wall time when it was measured elsewhere (a Ray worker);
        ``entry``: the epoch's history entry, for the observers.
        """
        grid = self.grid
        if entry is not None and self.run_id is not None:
            for observer in grid.observers:
                observer.epoch_ended(self.run_id, entry)
        if wall is None:
            wall = (time.perf_counter() - self.started if self.started is not None
                    else train_seconds)
        grid.epoch_seconds.append(wall)
        grid.epochs_left[self.index] = 0 if stopping else max(epochs - epoch - 1, 0)
        if not grid.epoch_lines:
            return
        rate = images / train_seconds if train_seconds > 0 else float("nan")
        left = grid.epochs_left[self.index] * wall
        eta = grid.eta_seconds()
        if stopping:
            tail = " (early stop)"
        elif left > 0:
            tail = f" (run ETA {format_duration(left)}, grid ETA {format_duration(eta)})"
        else:
            tail = f" (grid ETA {format_duration(eta)})"
        grid.write(f"  epoch {epoch + 1}/{epochs}: {rate:,.0f} img/s, loss {loss:.4f}, "
                   f"val {metric} {value:.4f}, {format_duration(wall)}{tail}")

    def finished(self) -> None:
        """The run ended (complete, failed or skipped): none of its epochs are left."""
        self.grid.epochs_left[self.index] = 0


class _Counter:
    def update(self, n: int = 1) -> None:
        pass


class _Heartbeat:
    """Progress for a log file: a line every ``interval`` seconds (none when it ends sooner)."""

    def __init__(self, write: Callable[[str], None], desc: str, total: int, interval: float,
                 unit: str = "images"):
        self.write, self.desc, self.total, self.interval = write, desc, total, interval
        self.unit = unit
        self.done = 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last < self.interval or self.done >= self.total:
            return
        self.last = now
        rate = self.done / (now - self.start)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        self.write(f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} "
                   f"({self.done / self.total:.0%}), {rate:,.0f}/s, ETA {format_duration(left)}")


@contextmanager
def counting(total: int, desc: str, *, unit: str = "images", interval: float = 10.0):
    """Progress of a long loop outside a grid (data generation, caching, reports).

    A tqdm bar on a terminal, else a line every ``interval`` seconds through octbench's logger;
    silent when that logger is below INFO (``-q``, or a library user who configured nothing).
    Yields an object whose ``update(n)`` counts work done.
    """
    logger = logging.getLogger("octbench")
    if not logger.isEnabledFor(logging.INFO):
        yield _Counter()
    elif interactive(sys.stderr):
        from tqdm.auto import tqdm

        with tqdm(total=total, leave=False, desc=desc, unit=unit[:3]) as bar:
            yield bar
    else:
        yield _Heartbeat(logger.info, desc, total, interval, unit)


def single_run(epochs: int, *, quiet: bool = True) -> RunProgress:
    """Progress of a run outside a grid (a tuning trial): a line per epoch (and a bar on a
    terminal, a heartbeat line in a log file), so that a long trial is never silent."""
    grid = GridProgress([epochs], enabled=not quiet)
    return RunProgress(grid, 0)
