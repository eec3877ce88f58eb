"""Command-line interface: ``python -m octbench <command>``; argparse lives only here.

One module per command (:mod:`~octbench.cli.run`, ``tune``, ``predict``, ``evaluate``,
``data``, ``listing`` for ``list``, ``export``, ``report``), each with ``add(commands)``, which
registers its parser, and the function that runs it; :mod:`~octbench.cli.options` holds what
they share. This module builds the parser and runs a command: global options, exit codes,
broken pipes, signals.

Imports are lazy (inside the command functions) so that ``--help`` and ``list`` answer without
importing torch: this package is the command boundary.

User errors (bad YAML, missing data, bad options) end with one message on stderr and exit code 2,
without a traceback; Ctrl-C and SIGTERM end with exit code 130 after recording the interrupted run.

Plugins: ``OCTBENCH_PLUGINS="pkg.models,my_strategies"`` names modules imported before a command
runs, so that models, strategies and datasets they register can be used in experiment YAMLs.

Must not import at module level: torch, or octbench modules that import it (hence the lazy
imports); no module imports the CLI but ``__main__`` and the docs generator.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from octbench.cli import data, evaluate, export, listing, predict, report, run, tune
from octbench.cli.options import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandParser,
    command_settings,
    subcommands,
)
from octbench.console import Console
from octbench.errors import OctbenchError
from octbench.plugins import load_plugins
from octbench.untrusted import printable

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "build_parser",
           "main"]

#: The commands in the order ``--help`` lists them.
COMMANDS = (run, tune, predict, evaluate, data, listing, export, report)

DESCRIPTION = """\
Benchmark retinal OCT classifiers on OCTMNIST: models x class-imbalance strategies x seeds x
devices, described in one YAML file, with resumable runs, Optuna tuning and markdown reports."""

EPILOG = """\
examples:
  octbench run experiments/quickstart.yaml --dry-run   show the grid, what is done, the time left
  octbench run experiments/quickstart.yaml             train it (synthetic data, minutes on CPU)
  octbench report experiments/quickstart.yaml          tables and figures in reports/quickstart/
  octbench list models                                 what a YAML can name
  octbench COMMAND --help                              the options of one command

Errors in the input end with one message and exit code 2; Ctrl-C ends with 130 and a rerun
resumes. OCTBENCH_PLUGINS="pkg.models,my_strategies" imports modules that register more models,
strategies or datasets."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (each sets ``handler``, the function that runs it)."""
    parser = CommandParser(prog="octbench", description=DESCRIPTION, epilog=EPILOG,
                           **command_settings())
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = subcommands(parser, "command", "COMMAND")
    for command in COMMANDS:
        command.add(commands)
    return parser


def _version() -> str:
    from octbench import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``octbench`` and ``python -m octbench``; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.quiet = getattr(args, "quiet", False)
    args.verbose = 0 if args.quiet else getattr(args, "verbose", 0) or 0
    args.console = Console.from_flags(quiet=args.quiet, verbose=args.verbose)
    args.console.configure_logging()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        load_plugins()
        return args.handler(args)
    except OctbenchError as error:
        # Messages quote names from files and folders: no escape sequence reaches the terminal.
        print(f"octbench: error: {printable(error, keep=chr(10))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader left (`octbench list models | head -1`): nothing to say, and nobody to say
        # it to. Later writes (Python's own flush at exit) go nowhere instead of failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as error:
        # The file system refused (read-only, missing folder, name too long, disk full): an
        # environment problem, so one message naming the path, as for any other bad input.
        where = f" {error.filename}" if error.filename else ""
        print(f"octbench: error: cannot access{where}: {error.strerror or error}; check the "
              "path, its permissions and free space, or choose another location.",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("octbench: interrupted; completed runs are saved, rerun to resume.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
