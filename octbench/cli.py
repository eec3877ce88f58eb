"""Command-line interface: ``python -m octbench <command>``; argparse lives only here.

Imports are lazy (inside the command functions) so that ``--help`` and ``list`` answer without
importing torch.

User errors (bad YAML, missing data, bad options) end with one message on stderr and exit code 2,
without a traceback; Ctrl-C and SIGTERM end with exit code 130 after recording the interrupted run.

Plugins: ``OCTBENCH_PLUGINS="pkg.models,my_strategies"`` names modules imported before a command
runs, so that models, strategies and datasets they register can be used in experiment YAMLs.

Must not import at module level: torch, or octbench modules that import it (hence the lazy
imports); no module imports the CLI but ``__main__``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path

from octbench.console import Console
from octbench.errors import OctbenchError
from octbench.plugins import load_plugins
from octbench.untrusted import printable

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130
#: As a Unix tool ended by SIGPIPE (128 + 13) when the reader of its output goes away.
EXIT_BROKEN_PIPE = 141
#: More worker processes than this only oversubscribes the machine.
MAX_WORKERS = 4 * (os.cpu_count() or 1)
#: Most runs in one stack (`run --stack`): memory grows with it.
MAX_STACK = 64
#: Even on purpose, a grid beyond this is a mistake: each run is a folder and a record.
MAX_RUNS_CEILING = 10_000_000


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


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors that name the fix (exit code 2, as argparse does)."""

    def error(self, message):
        hint = ""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            from octbench.registry import did_you_mean

            hint = did_you_mean(choice[1], re.findall(r"[\w-]+", choice[2]))
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}.{hint} "
                              f"(see `{self.prog} --help`)\n")


def _verbosity_options() -> argparse.ArgumentParser:
    """-q / -v, accepted before and after the subcommand (SUPPRESS: a later level keeps them)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                         help="print only errors and the final result line")
    options.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                         help="more detail (debug messages, tracebacks of failed runs)")
    return options


def _setting(text: str) -> tuple[str, object]:
    """An argparse type: ``KEY=VALUE`` in one word, the value read as YAML (like in a file)."""
    from octbench.config import parse_scalar

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} must look like KEY=VALUE in one word, e.g. --set scale=0.1 or "
            "--set train.epochs=1")
    try:
        return key.strip(), parse_scalar(value)
    except OctbenchError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


_setting.__name__ = "KEY=VALUE"  # argparse names the type in its messages


def _overrides_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], type=_setting, metavar="KEY=VALUE",
                        help="change one setting of the YAML without editing it, e.g. --set "
                             "train.epochs=1 --set data.scale=0.01 --set seeds=[0] (repeatable; "
                             "validated like the file, part of the run ids)")


def build_parser() -> argparse.ArgumentParser:
    verbosity = _verbosity_options()
    common = dict(parents=[verbosity], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser = _Parser(prog="octbench", description=DESCRIPTION, epilog=EPILOG, **common)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    run = commands.add_parser(
        "run", help="train and evaluate an experiment's grid", **common,
        description="Train and evaluate every run of an experiment's grid that is not complete "
                    "yet; rerun the same command to resume after an interruption.")
    run.add_argument("config", help="experiment YAML, e.g. experiments/quickstart.yaml")
    run.add_argument("--dry-run", action="store_true",
                     help="check the data and the results folder, list the runs (which are "
                          "complete) and estimate the time from past runs; train nothing")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local: here, one run at a time (default); ray: one Ray task per run "
                          "(pip install \"octbench[ray]\")")
    run.add_argument("--address", metavar="auto|HOST:PORT",
                     help="with --executor ray: the Ray cluster to use (default: start Ray here)")
    run.add_argument("--gpus-per-run", type=_ascii_float, metavar="F",
                     help="with --executor ray: share of a GPU per run (per stack with "
                          "--stack), 0 < F <= 1 (0.25 packs four on each GPU; default 1)")
    run.add_argument("--cpus-per-run", type=_ascii_int, metavar="N",
                     help="CPUs (torch threads) per run (default 1 with Ray, all here)")
    run.add_argument("--max-runs", type=_int_between(1, MAX_RUNS_CEILING), metavar="N",
                     help=f"refuse a grid of more than N runs, counted before anything is "
                          f"built (default: 10,000; at most {MAX_RUNS_CEILING:,})")
    run.add_argument("--stack", type=_int_between(1, MAX_STACK), metavar="N",
                     help="train up to N runs that share model, data, device and train "
                          "settings together as one stacked model, one record each (1 = off; "
                          "with Ray, one task per stack); default per device, shown by "
                          "--dry-run (try 12 on a GPU)")
    run.add_argument("--shard", metavar="K/N|auto|auto/N",
                     help="train only the K-th of N disjoint slices of the grid (sizes differ "
                          "by at most one run), K counting from 1; auto: from a SLURM array "
                          "job's $SLURM_ARRAY_TASK_ID, _MIN and _COUNT; auto/N: N slices, K = "
                          "$SLURM_ARRAY_TASK_ID (--array=1-N; a resubmitted subset works); with "
                          "--dry-run, all/N lists every slice")
    run.add_argument("--stuck-after", type=float, metavar="MINUTES",
                     help="with --executor ray: when runs wait this long for resources and none "
                          "trains, say what they ask and what the cluster has (default 10)")
    run.add_argument("--on-stuck", choices=("wait", "exit"), default=None,
                     help="with --executor ray: then keep waiting (default) or stop with exit "
                          "code 2")
    run.add_argument("--mlflow", metavar="URI",
                     help="also log to this MLflow tracking URI as the runs train: params at "
                          "a run's start, metrics at each epoch's end, final metrics and "
                          "artifacts at its end (checked before training; a server that stops "
                          "answering never stops the training)")
    _overrides_option(run)
    run.set_defaults(handler=cmd_run)

    tune = commands.add_parser(
        "tune", help="tune hyperparameters with Optuna (validation only)", **common,
        description="Search the hyperparameters of a tuning YAML with Optuna, judged on the "
                    "validation split only (the test split is never touched); rerun to resume "
                    "the study. Writes the best experiment to experiments/generated/.")
    tune.add_argument("config", help="tuning YAML, e.g. experiments/tune.yaml")
    tune.add_argument("--workers", type=_int_between(1, MAX_WORKERS), default=1, metavar="N",
                      help="worker processes on this machine (default 1; N > 1 shares the "
                           "study through an Optuna journal file)")
    tune.add_argument("--storage", metavar="URL",
                      help="Optuna storage: an RDB URL (postgresql://..., sqlite:///...) or "
                           "journal:PATH (default: results/<study>/study.db, or journal.log "
                           "with --workers)")
    tune.add_argument("--n-trials", type=_int_between(1, 100_000), metavar="N",
                      help="trials to run, overriding the YAML's n_trials (e.g. 2 for a quick "
                           "look)")
    _overrides_option(tune)
    # set for spawned workers
    tune.add_argument("--worker", type=_int_between(0, MAX_WORKERS), help=argparse.SUPPRESS)
    tune.set_defaults(handler=cmd_tune)

    predict = commands.add_parser(
        "predict", help="classify raw OCT scans with a trained run", **common,
        description="Classify raw OCT scans (PNG / JPEG / TIFF files, or folders of them) with "
                    "a trained run's checkpoint, preprocessed like its training data; prints "
                    "each file's class and probabilities.")
    predict.add_argument("--run", required=True, metavar="RUN_ID|CHECKPOINT",
                         help="a run id (or unique prefix), a run folder, or a best.pt file")
    predict.add_argument("scans", nargs="+", metavar="SCAN",
                         help="PNG / JPEG / TIFF files, or folders holding them")
    predict.add_argument("--results-dir", default="results", help="where to look for run ids")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.set_defaults(handler=cmd_predict)

    evaluate = commands.add_parser(
        "evaluate", help="score a trained run's checkpoint on a split of a dataset",
        description="Score a trained checkpoint on one split of a dataset: the same metrics "
                    "as a run record, printed (and written as JSON with --out).", **common)
    evaluate.add_argument("--run", required=True, metavar="RUN_ID|CHECKPOINT",
                          help="a run id (or unique prefix), a run folder, or a best.pt file")
    evaluate.add_argument("data", metavar="DATA",
                          help="an experiment YAML (its data), an .npz file, an image folder "
                               "or a dataset name")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          type=_setting,
                          help="a dataset parameter, e.g. --set skip_bad=true (repeatable)")
    evaluate.add_argument("--corruptions", metavar="medmnist_c|NAME,...",
                          help="also score the test split under MedMNIST-C corruptions (all six "
                               "with medmnist_c); stored in the run's record when DATA are its "
                               "own (pip install \"octbench[robustness]\")")
    evaluate.add_argument("--severities", default="1,2,3,4,5", metavar="S,...",
                          help="with --corruptions: severity levels 1-5 (default all)")
    evaluate.add_argument("--corruption-seed", type=_int_between(0, 2**32 - 1), default=0,
                          metavar="N", help="with --corruptions: seed of the corrupted sets")
    evaluate.add_argument("--results-dir", default="results", help="where to look for run ids")
    evaluate.add_argument("--out", metavar="FILE.json", help="also write the metrics as JSON")
    evaluate.set_defaults(handler=cmd_evaluate)

    data = commands.add_parser("data", help="inspect, generate or show datasets", **common)
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION",
                                  parser_class=_Parser)
    source = dict(nargs="?", default="synthetic",
                  help="a dataset name (synthetic, octmnist, npz, folder), an .npz file, an "
                       "image folder or an experiment YAML (default: synthetic)")
    setter = dict(action="append", default=[], metavar="KEY=VALUE", type=_setting,
                  help="a dataset parameter, e.g. --set scale=0.1 (repeatable)")
    info = actions.add_parser("info", help="per-split class counts and imbalance ratios",
                              **common)
    info.add_argument("source", **source)
    info.add_argument("--set", **setter)
    info.add_argument("--figure", type=_png_path, metavar="PNG",
                      help="also save a class-distribution chart")
    info.set_defaults(handler=cmd_data_info)
    show = actions.add_parser("show", help="write a PNG grid of samples per class, or of raw "
                              "scan files next to the model inputs made from them", **common)
    show.add_argument("source", **source)
    show.add_argument("scans", nargs="*", metavar="SCAN",
                      help="more scan files when SOURCE is an image file")
    show.add_argument("--set", **setter)
    show.add_argument("--out", type=_png_path, default="samples.png", metavar="PNG",
                      help="image to write (default: samples.png)")
    show.add_argument("--per-class", type=_int_between(1, 64), default=8,
                      help="samples per class, 1 to 64 (default: 8)")
    show.add_argument("--split", choices=("train", "val", "test"), default="test",
                      help="split to draw from (default: test)")
    show.set_defaults(handler=cmd_data_show)
    synth = actions.add_parser("synth", help="write synthetic OCT data as a MedMNIST npz",
                               **common)
    synth.add_argument("--out", required=True, metavar="FILE.npz")
    synth.add_argument("--set", **setter)
    synth.set_defaults(handler=cmd_data_synth)

    listing = commands.add_parser(
        "list", help="list registered models, strategies, datasets or augmentations", **common,
        description="List what an experiment YAML can name, with each entry's parameters and "
                    "their defaults; `list models --timm NAME` searches timm's model names.")
    listing.add_argument("what", choices=("models", "strategies", "datasets", "augmentations"))
    listing.add_argument("--timm", metavar="PATTERN",
                         help="with models: timm model names containing PATTERN (or matching a "
                              "wildcard such as 'resnet*'), usable as timm:<name>")
    listing.set_defaults(handler=cmd_list)

    export = commands.add_parser("export", help="send results to tracking tools (MLflow)",
                                 **common)
    targets = export.add_subparsers(dest="target", required=True, metavar="TARGET",
                                    parser_class=_Parser)
    to_mlflow = targets.add_parser(
        "mlflow", help="log each complete run as an MLflow run (once; re-export skips it)",
        description="Log each complete run as an MLflow run: config as params, per-epoch "
                    "curves as steps, final val/test metrics, tags, checkpoint and predictions "
                    "as artifacts. Runs already exported are skipped. Needs the [mlflow] extra.",
        **common)
    to_mlflow.add_argument("results", metavar="RESULTS_DIR",
                           help="an experiment's results folder (results/quickstart) or the "
                                "results folder of several")
    to_mlflow.add_argument("--tracking-uri", metavar="URI",
                           help="MLflow tracking URI (default: a local mlruns/ folder, "
                                "sqlite:///mlruns/mlflow.db)")
    to_mlflow.add_argument("--experiment", metavar="NAME",
                           help="MLflow experiment name (default: each run's experiment)")
    to_mlflow.set_defaults(handler=cmd_export_mlflow)

    report = commands.add_parser(
        "report", help="summarise an experiment's results and write reports/<experiment>/",
        description="Print a short summary, then write report.md with figures (--format md) or "
                    "runs.csv with medmnist Evaluator files (--format csv) to OUT/<experiment>/.",
        **common)
    report.add_argument("source", help="experiment YAML or results folder")
    report.add_argument("--format", choices=("md", "csv", "all"), default="md",
                        help="md: report.md + figures/*.png (default); csv: runs.csv (one row "
                             "per run) + medmnist/ (test predictions for `python -m medmnist "
                             "evaluate`); all: both")
    report.add_argument("--out", default="reports", metavar="DIR",
                        help="reports folder (default: reports)")
    report.add_argument("--baseline", metavar="STRATEGY",
                        help="strategy the others are compared with (default: the YAML's "
                             "report.baseline, else none)")
    report.add_argument("--resamples", type=_int_between(100, 100_000), default=2000,
                        metavar="N", help="bootstrap resamples for intervals and tests, 100 to "
                                          "100,000 (default: 2000)")
    report.add_argument("--study", metavar="DIR",
                        help="Optuna study folder whose tuning figures to include (default: "
                             "the results folder, or results/<study> for <study>-best)")
    report.add_argument("--allow-mixed-data", action="store_true",
                        help="report runs made on different data (content fingerprints) in "
                             "one table; refused otherwise")
    report.add_argument("--stratify", choices=("class", "groups", "none"),
                        help="how the bootstrap resamples test items: within each class, whole "
                             "groups (test_groups, e.g. patients) or freely (default: the YAML's "
                             "report.bootstrap.stratify, else class)")
    _overrides_option(report)
    report.set_defaults(handler=cmd_report)
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


def _load_experiment(path: str, settings: list[tuple[str, object]], max_runs: int | None = None):
    """The experiment YAML with ``--set`` values applied, validated.

    What needs no model code (keys, names, devices, train values, and the parameters of
    models, strategies and datasets as the cached catalog describes them) is checked first,
    before torch is imported, so that a typo is reported at once rather than after seconds of
    imports.
    """
    from octbench.catalog import cached_catalog, parameter_schemas
    from octbench.config import check_grid_size, check_plain, read_config

    raw = read_config(path, dict(settings))
    check_grid_size(raw, **({"max_runs": max_runs} if max_runs else {}), source=path)
    listing = cached_catalog()  # the names, if `list` or an earlier run cached them
    known = None if listing is None else {
        "model": [e["name"] for e in listing["models"]], "timm": listing["timm"],
        "strategy": [e["name"] for e in listing["strategies"]],
        "dataset": [e["name"] for e in listing["datasets"]]}
    check_plain(raw, path, known=known,
                schemas=None if listing is None else parameter_schemas(listing))
    from octbench.config import parse_config

    return parse_config(raw, source=path)


def cmd_run(args) -> int:
    config = _load_experiment(args.config, args.set, args.max_runs)
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
        out.info(f"Next: {_command('report', args.config, args.set)}")
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


SCAN_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: The synthetic set's scale `data show` draws from: enough of the rarest class for 64 per class
#: (the test split is always full size).
SHOW_SCALE = {"test": 0.01, "train": 0.01, "val": 0.1}


#: Numbers on the command line: ASCII digits only (``int()`` also takes '١٢', '1_0' and ' 7 ').
_ASCII_INT = re.compile(r"[0-9]{1,12}", re.ASCII)
_ASCII_FLOAT = re.compile(r"([0-9]{1,12}\.?[0-9]{0,12}|\.[0-9]{1,12})([eE][-+]?[0-9]{1,3})?",
                          re.ASCII)


def _ascii_int(text: str) -> int:
    """An argparse type: a non-negative integer written in ASCII digits."""
    if not _ASCII_INT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be a whole number in digits 0-9, got {text!r}")
    return int(text)


def _ascii_float(text: str) -> float:
    """An argparse type: a non-negative decimal number (``0.25``, ``1e-1``) in ASCII digits."""
    if not _ASCII_FLOAT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be a number in digits 0-9 such as 0.25, got "
                                         f"{text!r}")
    return float(text)


_ascii_int.__name__ = "integer"  # argparse names the type in its messages
_ascii_float.__name__ = "number"


def _int_between(low: int, high: int):
    """An argparse type: an integer in [low, high] (bounds keep a typo from exhausting the
    machine, e.g. a billion bootstrap resamples)."""
    def parse(text: str) -> int:
        if not _ASCII_INT.fullmatch(text):
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high:,} in "
                                             f"digits 0-9, got {text!r}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be an integer from {low} to {high:,}, got {text}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def _png_path(text: str) -> str:
    """An argparse type: a PNG file to write (not a folder; matplotlib would write DIR.png)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name such as "
                                         f"{Path(text) / 'samples.png'}")
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"{text} must end in .png (a PNG image is written)")
    return text


def _load_data_source(source: str, settings: list[tuple[str, object]], **defaults):
    """A dataset from a registry name + ``--set`` values, an .npz file, an image folder or an
    experiment YAML; ``defaults`` fill parameters of an .npz file or folder left unset."""
    from octbench.api import load_data

    return load_data(source, defaults=defaults, **dict(settings))


def _data_component(source: str, settings: list[tuple[str, object]], **defaults):
    """The validated dataset choice of ``evaluate`` (as :func:`octbench.api.load_data` makes
    it): corrupted evaluation needs its parameters to load the 224-px scans."""
    from octbench.api import data_component

    return data_component(source, defaults, **dict(settings))


def cmd_tune(args) -> int:
    from octbench.tuning import load_tune_config, run_worker, tune

    overrides = dict(args.set)
    if args.n_trials is not None:
        overrides["n_trials"] = args.n_trials
    config = load_tune_config(args.config, overrides)
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


def cmd_data_info(args) -> int:
    from octbench.data.explore import format_distribution, save_distribution_figure
    from octbench.fileio import writable_folder

    if args.figure:
        writable_folder(Path(args.figure).parent, "--figure folder")
    out = args.console
    data = _load_data_source(args.source, args.set)
    out.result(printable(format_distribution(data), keep="\n"))
    out.detail(f"from {printable(args.source)}"
               + "".join(f", {key}={value!r}" for key, value in args.set))
    if args.figure:
        out.result(f"saved {save_distribution_figure(data, args.figure)}")
    return 0


def cmd_data_show(args) -> int:
    from octbench.data.explore import save_sample_grid, save_scan_grid
    from octbench.fileio import writable_folder

    writable_folder(Path(args.out).parent, "--out folder")
    scans = [args.source, *args.scans]
    out = args.console
    if all(s.lower().endswith(SCAN_SUFFIXES) for s in scans):
        out.result(f"saved {save_scan_grid(scans, args.out)}")
        out.detail(f"from {len(scans)} scan file(s)")
        return 0
    if args.scans:
        raise OctbenchError("data show takes one dataset, or scan files (.png, .jpeg, .tif) "
                            f"only; got {' '.join(scans)}")
    settings = list(args.set)
    sampled = args.source == "synthetic" and "scale" not in dict(settings)
    if sampled:  # a few thumbnails need no full-size set (109,309 images, a minute or more)
        settings.append(("scale", SHOW_SCALE[args.split]))
    data = _load_data_source(args.source, settings)
    path = save_sample_grid(data, args.out, per_class=args.per_class, split=args.split)
    out.result(f"saved {path}" + (" (synthetic data" + (
        f", drawn from a {SHOW_SCALE[args.split]:.0%} scale set; --set scale=1 for the full one)"
        if sampled else ")") if data.synthetic else ""))
    out.detail(f"{args.per_class} per class from the {args.split} split of "
               f"{printable(data.name)} ({data.size} px)")
    return 0


def cmd_data_synth(args) -> int:
    import time

    import numpy as np

    from octbench.config import parse_data
    from octbench.data.synthetic import generate_arrays
    from octbench.fileio import atomic_write, writable_folder

    if not args.out.endswith(".npz"):
        raise OctbenchError(f"--out {args.out} must end in .npz (a MedMNIST-format file)")
    writable_folder(Path(args.out).parent, "--out folder")
    params = dict(args.set)
    component = parse_data({"name": "synthetic", **params})
    params = {k: v for k, v in component.params.items() if k != "cache"}
    start = time.perf_counter()
    arrays = generate_arrays(**params)
    seconds = time.perf_counter() - start
    arrays["octbench_synthetic"] = np.array(True)  # the label travels with the file
    atomic_write(args.out, lambda handle: np.savez_compressed(handle, **arrays))
    sizes = ", ".join(f"{s} {len(arrays[f'{s}_labels']):,}" for s in ("train", "val", "test"))
    args.console.result(f"wrote {args.out}: synthetic OCT data ({sizes}) generated in "
                        f"{seconds:.1f} s")
    args.console.detail(f"{Path(args.out).stat().st_size:,} bytes; parameters: "
                        + ", ".join(f"{k}={v}" for k, v in params.items()))
    return 0


def cmd_predict(args) -> int:
    import json

    from octbench.predict import load_predictor, predict_files

    scans = _scan_files(args.scans)
    predictor = load_predictor(args.run, args.results_dir)
    results = predict_files(predictor, scans)
    # The training data's nature goes first, where nobody can miss it (stderr under --json,
    # whose rows carry it as the `synthetic` field).
    out, stream = args.console, sys.stderr if args.json else sys.stdout
    banner = predictor.trained_on()
    if predictor.synthetic is not False:  # a warning about every result: never left out
        print(f"*** {banner} ***", file=stream, flush=True)
    elif not out.quiet:
        print(banner, file=stream, flush=True)
    if not out.quiet:
        print(predictor.calibration_note(), file=stream, flush=True)
    if out.verbose:
        print(f"model: {predictor.source} ({predictor.img_size} px)", file=stream, flush=True)
    if args.json:
        print(json.dumps([{"file": r.path, "top_class": r.top_class,
                           "probabilities": r.probabilities, "error": r.error,
                           "temperature": predictor.temperature if predictor.calibrated else None,
                           "synthetic": predictor.synthetic,
                           "dataset": predictor.provenance.get("dataset")}
                          for r in results], indent=2))
    else:
        for r in results:
            if r.error:
                print(f"{printable(r.path)}: error: {printable(r.error)}", file=sys.stderr)
                continue
            probs = "  ".join(f"{printable(k)} {v:.3f}" for k, v in r.probabilities.items())
            out.result(f"{printable(r.path)}: {printable(r.top_class)}  ({probs})")
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"octbench: error: {failed} of {len(results)} files could not be read",
              file=sys.stderr)
        return EXIT_USAGE
    return 0


def _scan_files(paths: list[str]) -> list[str]:
    """The scan files named, a folder standing for the scan files below it (links are not
    followed: a folder may come from someone else)."""
    files = []
    for path in paths:
        if not Path(path).is_dir():
            files.append(path)
            continue
        found = sorted(str(Path(folder) / name)
                       for folder, _, names in os.walk(path)  # followlinks=False
                       for name in names if name.lower().endswith(SCAN_SUFFIXES)
                       and not (Path(folder) / name).is_symlink())
        if not found:
            raise OctbenchError(f"the folder {path} holds no scan files "
                                f"({', '.join(SCAN_SUFFIXES)}); give scan files or a folder of "
                                "them.")
        files.extend(found)
    return files


def cmd_evaluate(args) -> int:
    import json

    from octbench.data import load_dataset
    from octbench.fileio import atomic_write_text
    from octbench.predict import evaluate_checkpoint, load_predictor
    from octbench.results import nan_to_none

    out = args.console
    plan = _corruption_plan(args)
    predictor = load_predictor(args.run, args.results_dir)
    component = _data_component(args.data, args.set, size=predictor.img_size)
    data = load_dataset(component.name, **component.params)
    if data.synthetic or predictor.synthetic:
        which = " and ".join(w for w, s in (("the model's training data", predictor.synthetic),
                                             ("these data", data.synthetic)) if s)
        out.result(f"*** SYNTHETIC DATA ({which}): these numbers are not about real scans ***")
    report = evaluate_checkpoint(predictor, data, args.split)
    metrics = report["metrics"][args.split]
    n = sum(report["dataset"]["class_counts"])
    out.result(f"{predictor.source} on {data.name} {args.split} ({n:,} images, "
               f"{report['dataset']['fingerprint'][:19]}):")
    out.result("  " + "  ".join(
        f"{name} {metrics[key]:.4f}".replace("nan", "n/a") for key, name in (
            ("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
            ("macro_f1", "macro-F1"), ("macro_auc", "macro AUC"), ("ece", "ECE"))))
    width = max(len(name) for name in metrics["per_class"])
    out.info(f"  {'class':<{width}}  precision  recall      F1  support")
    for name, row in metrics["per_class"].items():
        out.info(f"  {printable(name):<{width}}  {_fixed(row['precision'], 9)}  "
                 f"{_fixed(row['recall'], 6)}  {_fixed(row['f1'], 6)}  {row['support']:7,}")
    if metrics.get("absent_classes"):
        out.info(f"  n/a: {', '.join(metrics['absent_classes'])} absent from the {args.split} "
                 "split; macro-F1, balanced accuracy and macro AUC average over the classes "
                 "present.")
    out.detail(f"  data fingerprint {report['dataset']['fingerprint']}; class counts "
               f"{report['dataset']['class_counts']}")
    if plan is not None:
        report["robustness"] = _evaluate_corrupted(predictor, data, plan, metrics,
                                                   component.params, out)
    if args.out:
        text = json.dumps(nan_to_none(report), indent=2, sort_keys=True, allow_nan=False)
        atomic_write_text(args.out, text + "\n")
        out.result(f"wrote {args.out}")
    return 0


def _corruption_plan(args):
    """The corrupted sets ``evaluate --corruptions`` asks for (None without it); checked before
    anything is loaded."""
    if args.corruptions is None:
        return None
    from octbench.config import parse_corruptions
    from octbench.corrupted_eval import CorruptionPlan
    from octbench.robustness import SEVERITIES
    from octbench.robustness.corruptions import require_medmnistc

    value = args.corruptions if args.corruptions in ("medmnist_c", "none") else [
        n.strip() for n in args.corruptions.split(",") if n.strip()]
    names, problems = parse_corruptions(value, "--corruptions")
    try:
        severities = sorted({int(s) for s in args.severities.split(",")})
    except ValueError:
        severities = []
    if not severities or not set(severities) <= set(SEVERITIES):
        problems.append(f"--severities must list levels from 1 to 5, e.g. 1,3,5; got "
                        f"{args.severities!r}")
    if args.split != "test":
        problems.append("--corruptions scores the test split (as MedMNIST-C); drop --split")
    if problems or not names:
        raise OctbenchError("; ".join(problems) or "--corruptions names no corruption; give "
                            "medmnist_c or names such as pixelate,speckle_noise")
    require_medmnistc()
    return CorruptionPlan(names, tuple(severities), args.corruption_seed)


def _evaluate_corrupted(predictor, data, plan, clean: dict, data_params: dict,
                        out: Console) -> dict:
    """Score and print the corrupted sets; store them in the run's record when the data are
    the run's own (resumable through the run folder's partial file)."""
    import dataclasses

    from octbench.corrupted_eval import PARTIAL
    from octbench.predict import evaluate_corrupted_checkpoint, own_record

    owned = own_record(predictor, data)
    store, record = owned if owned else (None, None)
    section = evaluate_corrupted_checkpoint(
        predictor, data, plan, clean=clean, data_params=data_params, store=store,
        run_id=record.run_id if record else None,
        previous=record.robustness if record else None)
    section["timing"]["clean_eval_seconds"] = None
    label = {"medmnist_c": "MedMNIST-C protocol (224 px)",
             "adapted": f"adapted protocol: corrupted at 224 px, resized to {data.size} px",
             "synthetic": "SYNTHETIC data, adapted protocol",
             "generic": "own data: generic corruptions with OCTMNIST's severities"}
    out.info(f"corrupted test sets ({label[section['protocol']]}):")
    for name, cells in section["cells"].items():
        values = "  ".join(f"s{s} {m['macro_f1']:.3f}" for s, m in cells.items())
        out.info(f"  {name:<17} macro-F1  {values}")
    mean = section["summary"]["mean"]
    extra = (f", BE {mean['be']:.3f}, rBE {mean['rbe']:.3f}" if section["normalised"]
             else f", balanced error {mean['error']:.3f} ({mean['error_drop']:+.3f} from clean)")
    out.result(f"  mean corrupted macro-F1 {mean['macro_f1']:.4f}{extra}")
    kept = section["timing"]["cells_kept"]
    if kept:
        out.info(f"  ({kept} corrupted set(s) scored before kept from the run's record; the sets "
                 "scored now replace only their own)")
    if owned:
        store.write(dataclasses.replace(record, robustness=section))
        store.remove(record.run_id, PARTIAL)
        out.info(f"stored in {store.run_dir(record.run_id) / store.RECORD}")
    return section


def _fixed(value: float | None, width: int) -> str:
    """A per-class value to 3 decimals, or n/a (None: a class absent from the split)."""
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}.3f}"


def cmd_list(args) -> int:
    from octbench.catalog import catalog

    out = args.console
    listing = catalog()
    if args.timm is not None:
        return _list_timm(listing["timm"], args.timm, args.what, out)
    entries = listing[args.what]
    width = max(len(entry["name"]) for entry in entries) + 2
    for entry in entries:
        if out.quiet:  # the names alone, one a line, for scripts; an error is still said
            out.result(entry["name"] + (f"  cannot build ({entry['error']})"
                                        if entry.get("error") else ""))
        elif args.what == "models":
            parameters = (f"{entry['parameters']:>12,} parameters" if entry.get("error") is None
                          else f"cannot build ({entry['error']})")
            out.result(f"{entry['name']:<{width}}{parameters} (28 px, 4 classes)  "
                       f"{entry['summary']}")
        else:
            out.result(f"{entry['name']:<{width}}{entry['summary']}")
        if entry.get("settings"):
            out.info(f"{'':<{width}}parameters: {entry['settings']}")
        for key, parameter in _parameter_details(entry).items():
            out.detail(f"{'':<{width}}  {key}: {parameter}")
    if args.what == "models":
        out.info(f"{'timm:<name>':<{width}}any of timm's {len(listing['timm']):,} models, e.g. "
                 "timm:efficientnet_b0 (random init, in_chans=1); search with --timm NAME")
    return 0


def _parameter_details(entry: dict) -> dict[str, str]:
    """``{parameter: "a float, >= 0, required"}`` from a catalog entry's schema (-v)."""
    from octbench.config import type_name
    from octbench.registry import Parameter

    details = {}
    for key, value in (entry.get("schema") or {}).items():
        parameter = Parameter.from_json(value)
        details[key] = ", ".join([type_name(parameter.annotation)]
                                 + ([str(parameter.constraint)] if parameter.constraint else [])
                                 + (["required"] if parameter.required else []))
    return details


def _list_timm(names: list[str], pattern: str, what: str, out: Console) -> int:
    import fnmatch

    if what != "models":
        raise OctbenchError(f"--timm searches model names; use `octbench list models --timm "
                            f"{pattern}`.")
    wildcard = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    found = [name for name in names if fnmatch.fnmatch(name, wildcard.lower())]
    if not found:
        raise OctbenchError(f"no timm model name matches '{pattern}'; try a shorter part of the "
                            "name, e.g. --timm resnet or --timm 'efficientnet*'.")
    for name in found:
        out.result(f"timm:{name}")
    out.detail(f"{len(found)} of timm's {len(names):,} model names")
    return 0


def cmd_report(args) -> int:
    from octbench.report import build_report, load_records, print_summary
    from octbench.report.build import check_options
    from octbench.tuning import study_figures, study_summary

    formats = ("md", "csv") if args.format == "all" else (args.format,)
    check_options(formats, args.resamples)
    source = args.source
    if source.endswith((".yaml", ".yml")):
        source = _load_experiment(source, args.set)
    elif args.set:
        raise OctbenchError("--set changes an experiment YAML; give the YAML (e.g. "
                            "experiments/quickstart.yaml) instead of a results folder.")
    name, folder, records = load_records(source, allow_mixed_data=args.allow_mixed_data)
    if not records and not (Path(folder) / "study.json").is_file():
        run = (_command("run", args.source, args.set) if source is not args.source
               else "python -m octbench run EXPERIMENT.yaml")
        raise OctbenchError(f"no run records of '{name}' in {folder}, so there is nothing to "
                            f"report; train first (`{run}`), or check the path.")
    out = args.console
    print_summary(source, allow_mixed_data=args.allow_mixed_data, full=not out.quiet)
    written = build_report(source, args.out, formats=formats, baseline=args.baseline,
                           n_resamples=args.resamples, study=args.study,
                           allow_mixed_data=args.allow_mixed_data, stratify=args.stratify,
                           draw_study=study_figures, summarise_study=study_summary)
    for index, path in enumerate(written):  # -q: the report itself only
        line = f"wrote {path}" + (f" ({Path(path).stat().st_size:,} bytes)" if out.verbose
                                  else "")
        (out.result if index == 0 else out.info)(line)
    statuses = sorted({r.status for r in records})
    out.detail(f"from {len(records)} run record(s) in {folder} ("
               + ", ".join(f"{sum(r.status == s for r in records)} {s}" for s in statuses) + ")")
    return 0


def _command(verb: str, config: str, settings: list[tuple[str, object]]) -> str:
    """The command line that runs ``verb`` on ``config`` with the same ``--set`` values."""
    words = ["python", "-m", "octbench", verb, config]
    words += [word for key, value in settings for word in ("--set", f"{key}={json.dumps(value)}")]
    return shlex.join(words)


def cmd_export_mlflow(args) -> int:
    from octbench.export_mlflow import default_tracking_uri, export_mlflow, redacted

    summary = export_mlflow(args.results, tracking_uri=args.tracking_uri,
                            experiment=args.experiment)
    parts = [f"exported {len(summary.exported)} run(s)",
             f"{len(summary.already)} already exported"]
    if summary.not_complete:
        parts.append(f"{len(summary.not_complete)} not complete (not exported)")
    if summary.unreadable:
        parts.append(f"{len(summary.unreadable)} unreadable (skipped)")
    uri = args.tracking_uri or default_tracking_uri()
    out = args.console
    out.result(f"{', '.join(parts)} to {redacted(uri)}")
    for what, run_ids in (("exported", summary.exported), ("already there", summary.already),
                          ("not complete", summary.not_complete),
                          ("unreadable", summary.unreadable)):
        for run_id in run_ids:
            out.detail(f"  {what}: {run_id}")
    if args.tracking_uri is None:
        out.info(f"See them with: mlflow ui --backend-store-uri {uri}")
    return 0
