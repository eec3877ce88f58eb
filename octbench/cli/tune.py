"""``octbench tune``: search hyperparameters with Optuna on the validation split, in one or
several worker processes (``--worker`` is how a spawned worker is started).

Must not import at module level: torch, or octbench modules that import it. The tuning YAML is
read with the torch-free :mod:`octbench.tuning` package, so that its errors come at once; the
trials (:mod:`octbench.tuning.workers`, which trains) are imported after.
"""

from __future__ import annotations

import argparse
import os

from octbench.cli.options import (
    EXIT_FAILED,
    add_overrides,
    command_settings,
    int_between,
)

#: More worker processes than this only oversubscribes the machine.
MAX_WORKERS = 4 * (os.cpu_count() or 1)


def add(commands) -> None:
    """Register ``tune`` and its options."""
    parser = commands.add_parser(
        "tune", help="tune hyperparameters with Optuna (validation only)", **command_settings(),
        description="Search the hyperparameters of a tuning YAML with Optuna, judged on the "
                    "validation split only (the test split is never touched); rerun to resume "
                    "the study. Writes the best experiment to experiments/generated/.")
    parser.add_argument("config", help="tuning YAML, e.g. experiments/tune.yaml")
    parser.add_argument("--workers", type=int_between(1, MAX_WORKERS), default=1, metavar="N",
                        help="worker processes on this machine (default 1; N > 1 shares the "
                             "study through an Optuna journal file)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage: an RDB URL (postgresql://..., sqlite:///...) or "
                             "journal:PATH (default: results/<study>/study.db, or journal.log "
                             "with --workers)")
    parser.add_argument("--n-trials", type=int_between(1, 100_000), metavar="N",
                        help="trials to run, overriding the YAML's n_trials (e.g. 2 for a quick "
                             "look)")
    add_overrides(parser)
    # set for spawned workers
    parser.add_argument("--worker", type=int_between(0, MAX_WORKERS), help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def run(args) -> int:
    """``octbench tune``: run or resume the study; exit code 1 when no trial completed."""
    from octbench.tuning import load_tune_config

    overrides = dict(args.set)
    if args.n_trials is not None:
        overrides["n_trials"] = args.n_trials
    config = load_tune_config(args.config, overrides)
    from octbench.tuning.workers import run_worker, tune

    if args.worker is not None:
        run_worker(config, storage=args.storage, index=args.worker, workers=args.workers,
                   quiet=args.quiet, say=args.console.info, errors=args.console.result)
        return 0
    out = args.console
    result = tune(config, workers=args.workers, storage=args.storage, quiet=args.quiet,
                  say=out.info, result=out.result)
    out.detail(f"study '{result.study}' in {result.storage}: "
               + ", ".join(f"{count} {state}" for state, count in result.counts.items()))
    return 0 if result.best_value is not None else EXIT_FAILED
