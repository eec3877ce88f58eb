"""``octbench export mlflow``: each complete run of a results folder as an MLflow run, once
(the library part is :mod:`octbench.export_mlflow`).

Must not import at module level: torch, mlflow, or octbench modules that import them.
"""

from __future__ import annotations

from octbench.cli.options import command_settings, subcommands


def add(commands) -> None:
    """Register ``export`` and its target ``mlflow``."""
    export = commands.add_parser("export", help="send results to tracking tools (MLflow)",
                                 **command_settings())
    targets = subcommands(export, "target", "TARGET")
    to_mlflow = targets.add_parser(
        "mlflow", help="log each complete run as an MLflow run (once; re-export skips it)",
        description="Log each complete run as an MLflow run: config as params, per-epoch "
                    "curves as steps, final val/test metrics, tags, checkpoint and predictions "
                    "as artifacts. Runs already exported are skipped. Needs the [mlflow] extra.",
        **command_settings())
    to_mlflow.add_argument("results", metavar="RESULTS_DIR",
                           help="an experiment's results folder (results/quickstart) or the "
                                "results folder of several")
    to_mlflow.add_argument("--tracking-uri", metavar="URI",
                           help="MLflow tracking URI (default: a local mlruns/ folder, "
                                "sqlite:///mlruns/mlflow.db)")
    to_mlflow.add_argument("--experiment", metavar="NAME",
                           help="MLflow experiment name (default: each run's experiment)")
    to_mlflow.set_defaults(handler=run)


def run(args) -> int:
    """``octbench export mlflow``: one line of counts, each run's outcome with -v."""
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
