"""Command-line interface: ``python -m octbench <command>``; argparse lives only here.

User errors (bad YAML, missing data, bad options) end with one message on stderr and exit code 2,
without a traceback; Ctrl-C and SIGTERM end with exit code 130 after recording the interrupted run.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from octbench.errors import OctbenchError

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors that name the fix (exit code 2, as argparse does)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="octbench", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    run = commands.add_parser("run", help="train and evaluate an experiment's grid")
    run.add_argument("config", help="experiment YAML, e.g. experiments/quickstart.yaml")
    run.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    run.set_defaults(handler=cmd_run)

    listing = commands.add_parser("list", help="list registered models, strategies or datasets")
    listing.add_argument("what", choices=("models", "strategies", "datasets"))
    listing.set_defaults(handler=cmd_list)

    report = commands.add_parser("report", help="summarise an experiment's results")
    report.add_argument("source", help="experiment YAML or results folder")
    report.set_defaults(handler=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``octbench`` and ``python -m octbench``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="octbench: %(message)s", stream=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.handler(args)
    except OctbenchError as error:
        print(f"octbench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("octbench: interrupted; completed runs are saved, rerun to resume.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_run(args) -> int:
    from octbench.config import load_config
    from octbench.runner import expand_grid, run_experiment

    config = load_config(args.config)
    if args.dry_run:
        specs = expand_grid(config)
        print(f"{config.name}: {len(specs)} runs on data '{config.data.label}'")
        for spec in specs:
            print(f"  {spec.run_id}")
        return 0
    summary = run_experiment(config, quiet=args.quiet)
    print(
        f"{config.name}: {len(summary.completed)} trained, "
        f"{len(summary.already_complete)} already complete, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed, {len(summary.busy)} busy elsewhere. "
        f"Results in {Path(config.results_dir) / config.name}."
    )
    for run_id, error in summary.failed:
        print(f"  failed: {run_id}: {error}", file=sys.stderr)
    return 0 if summary.ok else EXIT_FAILED


def cmd_list(args) -> int:
    if args.what == "models":
        from octbench.models import MODELS, build_model, count_parameters

        for name in MODELS.names():
            params = count_parameters(build_model(name))
            print(f"{name:<22} {params:>12,} parameters (28 px, 4 classes)  "
                  f"{_summary(MODELS.get(name))}")
        print("timm:<name>            any timm model, e.g. timm:efficientnet_b0 "
              "(random init, in_chans=1)")
    elif args.what == "strategies":
        from octbench.strategies import STRATEGIES

        for name in STRATEGIES.names():
            print(f"{name:<18} {_summary(STRATEGIES.get(name))}")
    else:
        from octbench.data import DATASETS

        for name in DATASETS.names():
            print(f"{name:<12} {_summary(DATASETS.get(name))}")
    return 0


def _summary(fn) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0]


def cmd_report(args) -> int:
    from octbench.report import print_summary

    print_summary(args.source)
    return 0
