"""``octbench run``: train and evaluate an experiment's grid, or show it (``--dry-run``), here or
on Ray, whole or one shard, optionally logged to MLflow as it trains.

Must not import at module level: torch, or octbench modules that import it (the runner,
the executors): ``--help`` imports this module.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path

from octbench.cli.options import (
    EXIT_FAILED,
    add_overrides,
    ascii_float,
    ascii_int,
    command_line,
    command_settings,
    int_between,
    load_experiment,
)
from octbench.console import Console
from octbench.errors import OctbenchError

#: Most runs in one stack (`run --stack`): memory grows with it.
MAX_STACK = 64
#: Even on purpose, a grid beyond this is a mistake: each run is a folder and a record.
MAX_RUNS_CEILING = 10_000_000


def add(commands) -> None:
    """Register ``run`` and its options."""
    parser = commands.add_parser(
        "run", help="train and evaluate an experiment's grid", **command_settings(),
        description="Train and evaluate every run of an experiment's grid that is not complete "
                    "yet; rerun the same command to resume after an interruption.")
    parser.add_argument("config", help="experiment YAML, e.g. experiments/quickstart.yaml")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the data and the results folder, list the runs (which are "
                             "complete) and estimate the time from past runs; train nothing")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: here, one run at a time (default); ray: one Ray task per run "
                             "(pip install \"octbench[ray]\")")
    parser.add_argument("--address", metavar="auto|HOST:PORT",
                        help="with --executor ray: the Ray cluster to use (default: start Ray "
                             "here)")
    parser.add_argument("--gpus-per-run", type=ascii_float, metavar="F",
                        help="with --executor ray: share of a GPU per run (per stack with "
                             "--stack), 0 < F <= 1 (0.25 packs four on each GPU; default 1)")
    parser.add_argument("--cpus-per-run", type=ascii_int, metavar="N",
                        help="CPUs (torch threads) per run (default 1 with Ray, all here)")
    parser.add_argument("--max-runs", type=int_between(1, MAX_RUNS_CEILING), metavar="N",
                        help=f"refuse a grid of more than N runs, counted before anything is "
                             f"built (default: 10,000; at most {MAX_RUNS_CEILING:,})")
    parser.add_argument("--stack", type=int_between(1, MAX_STACK), metavar="N",
                        help="train up to N runs that share model, data, device and train "
                             "settings together as one stacked model, one record each (1 = off; "
                             "with Ray, one task per stack); default per device, shown by "
                             "--dry-run (try 12 on a GPU)")
    parser.add_argument("--shard", metavar="K/N|auto|auto/N",
                        help="train only the K-th of N disjoint slices of the grid (sizes differ "
                             "by at most one run), K counting from 1; auto: from a SLURM array "
                             "job's $SLURM_ARRAY_TASK_ID, _MIN and _COUNT; auto/N: N slices, K = "
                             "$SLURM_ARRAY_TASK_ID (--array=1-N; a resubmitted subset works); with "
                             "--dry-run, all/N lists every slice")
    parser.add_argument("--stuck-after", type=float, metavar="MINUTES",
                        help="with --executor ray: when runs wait this long for resources and none "
                             "trains, say what they ask and what the cluster has (default 10)")
    parser.add_argument("--on-stuck", choices=("wait", "exit"), default=None,
                        help="with --executor ray: then keep waiting (default) or stop with exit "
                             "code 2")
    parser.add_argument("--mlflow", metavar="URI",
                        help="also log to this MLflow tracking URI as the runs train: params at "
                             "a run's start, metrics at each epoch's end, final metrics and "
                             "artifacts at its end (checked before training; a server that stops "
                             "answering never stops the training)")
    add_overrides(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    """``octbench run``: the grid trained (or shown), one line of outcome; exit code 1 when a
    run failed."""
    config = load_experiment(args.config, args.set, args.max_runs)
    from octbench.grid import Shard

    every_shard = args.dry_run and (args.shard or "").startswith("all/")
    if every_shard:
        count = Shard.parse(f"1/{args.shard[4:]}").count
        shards = [Shard(k, count) for k in range(1, count + 1)]
    else:
        shards = [Shard.parse(args.shard) if args.shard is not None else None]
    executor = _make_executor(args)
    if args.executor == "local":  # Ray's workers may have devices that this machine lacks
        from octbench.devices import check_devices

        check_devices(config.devices)
    if args.mlflow:
        from octbench.export_mlflow import check_tracking

        check_tracking(args.mlflow)
    out = args.console
    if args.dry_run:
        for shard in shards:
            _dry_run(config, shard, executor.threads, out, stack=args.stack)
        return 0
    shard = shards[0]
    from octbench.experiment import run_experiment

    results = Path(config.results_dir) / config.name
    with contextlib.ExitStack() as context:
        observers = []
        if args.mlflow:  # each run logged as it trains
            from octbench.export_mlflow import LiveLogger

            observers.append(context.enter_context(LiveLogger(args.mlflow, results)))
        summary = run_experiment(config, quiet=args.quiet, say=out.info, executor=executor,
                                 shard=shard, observers=observers)
    out.result(
        f"{config.name}: {len(summary.completed)} trained, "
        f"{len(summary.already_complete)} already complete, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed, {len(summary.busy)} busy elsewhere. "
        f"Results in {results}."
    )
    from octbench.results import ResultsStore

    store = ResultsStore(results)
    for run_id, error in summary.failed:
        print(f"  failed: {run_id}: {error}", file=sys.stderr)
        trace = store.run_dir(run_id) / ResultsStore.TRACEBACK
        if trace.is_file():
            out.detail(f"  traceback: {trace}")
    for status, run_ids in (("trained", summary.completed),
                            ("already complete", summary.already_complete),
                            ("skipped", [run_id for run_id, _ in summary.skipped]),
                            ("busy elsewhere", summary.busy)):
        for run_id in run_ids:
            out.detail(f"  {status}: {store.run_dir(run_id)}")
    if observers:
        _mlflow_outcome(observers[0], results, args.mlflow, out)
    if summary.completed or summary.already_complete:
        out.info(f"Next: {command_line('report', args.config, args.set)}")
    return 0 if summary.ok else EXIT_FAILED


def _mlflow_outcome(live, results: Path, uri: str, out: Console) -> None:
    """Log what live logging did not (runs complete before this grid), and say what is in
    MLflow; a tracking server that stopped answering is named, with the command to catch up."""
    from octbench.export_mlflow import export_mlflow, redacted

    if live.failure is None and any(results.glob("*/record.json")):
        try:
            exported = export_mlflow(results, tracking_uri=uri)
        except OctbenchError as error:
            live.failure = str(error)
        else:
            logged = len(live.logged) + len(exported.exported)
            out.result(f"MLflow: {logged} run(s) logged, "
                       f"{len(set(exported.already) - set(live.logged))} already there, "
                       f"at {redacted(uri)}")
            return
    if live.failure is None:
        return
    missing = f" ({', '.join(live.not_logged)})" if live.not_logged else ""
    export = shlex.join(["python", "-m", "octbench", "export", "mlflow", str(results),
                         "--tracking-uri", redacted(uri)])
    out.warn(f"MLflow at {redacted(uri)} stopped answering ({live.failure}); "
             f"{len(live.logged)} run(s) logged, {len(live.not_logged)} complete run(s) not "
             f"logged{missing}. Log them later with `{export}`.")


def _dry_run(config, shard, threads: int, out: Console, *, stack: int | None) -> None:
    """Print what ``run`` would do (for one shard, when given) and how the runs stack."""
    from octbench.plan import plan_experiment

    plan = plan_experiment(config, shard=shard, threads=threads)
    out.result(f"{config.name}: {len(plan.runs)} runs on data '{config.data.label}'"
               + (f" (shard {shard})" if shard is not None else ""))
    if config.sweep:  # the grid is multiplied by every combination of the swept values
        cell = (len(config.models) * len(config.strategies) * len(config.seeds)
                * len(config.devices))
        out.info(f"sweep: {' x '.join(f'{p} {list(v)}' for p, v in config.sweep)} = "
                 f"{len(config.variants())} combinations of {cell} runs "
                 "(models x strategies x seeds x devices)")
        from octbench.config import swept_values

        values = config.variants()[0][0]
        shared = [s.label for s in config.strategies if swept_values(values, s) != values]
        if shared:
            out.info(f"shared: {', '.join(shared)} take(s) no swept strategy parameter, so "
                     "their runs are made once and shared by every combination")
    lines = plan.lines()
    for line in lines[:2]:  # the data and the results folder
        out.info(line)
    for line in lines[2:]:  # the runs and the total
        out.result(line)
    out.detail(f"torch threads per run: {threads} (part of the run ids of runs whose "
               "train.threads is not set)")
    if plan.pending:
        from octbench.grid import expand_grid
        from octbench.stacked_runs import describe_stacks

        todo = {run.run_id for run in plan.pending}
        out.result(describe_stacks([s for s in expand_grid(config, threads=threads)
                                    if s.run_id in todo], stack))


def _make_executor(args):
    """The executor the run options ask for; options that need Ray are refused without it."""
    from octbench.executors import LocalExecutor, RayExecutor

    if args.executor == "ray":
        stuck = {} if args.stuck_after is None else {"stuck_after": args.stuck_after * 60}
        return RayExecutor(address=args.address, gpus_per_run=args.gpus_per_run,
                           cpus_per_run=args.cpus_per_run, stack=args.stack,
                           exit_when_stuck=args.on_stuck == "exit", **stuck)
    for option, value in (("--address", args.address), ("--gpus-per-run", args.gpus_per_run),
                          ("--stuck-after", args.stuck_after), ("--on-stuck", args.on_stuck)):
        if value is not None:
            raise OctbenchError(f"{option} needs --executor ray; add it, or drop {option} to "
                                "train here, one run at a time.")
    return LocalExecutor(cpus_per_run=args.cpus_per_run, stack=args.stack)
