"""``octbench report``: a short summary in the terminal, then report.md with figures and/or
runs.csv with medmnist Evaluator files, from an experiment YAML or a results folder.

The report never imports tuning: this command hands it the study's figures and summary
functions. Must not import at module level: torch, or octbench modules that import it.
"""

from __future__ import annotations

from pathlib import Path

from octbench.cli.options import (
    add_overrides,
    command_line,
    command_settings,
    int_between,
    load_experiment,
)
from octbench.errors import OctbenchError


def add(commands) -> None:
    """Register ``report`` and its options."""
    parser = commands.add_parser(
        "report", help="summarise an experiment's results and write reports/<experiment>/",
        description="Print a short summary, then write report.md with figures (--format md) or "
                    "runs.csv with medmnist Evaluator files (--format csv) to OUT/<experiment>/.",
        **command_settings())
    parser.add_argument("source", help="experiment YAML or results folder")
    parser.add_argument("--format", choices=("md", "csv", "all"), default="md",
                        help="md: report.md + figures/*.png (default); csv: runs.csv (one row "
                             "per run) + medmnist/ (test predictions for `python -m medmnist "
                             "evaluate`); all: both")
    parser.add_argument("--out", default="reports", metavar="DIR",
                        help="reports folder (default: reports)")
    parser.add_argument("--baseline", metavar="STRATEGY",
                        help="strategy the others are compared with (default: the YAML's "
                             "report.baseline, else none)")
    parser.add_argument("--resamples", type=int_between(100, 100_000), default=2000,
                        metavar="N", help="bootstrap resamples for intervals and tests, 100 to "
                                          "100,000 (default: 2000)")
    parser.add_argument("--study", metavar="DIR",
                        help="Optuna study folder whose tuning figures to include (default: "
                             "the results folder, or results/<study> for <study>-best)")
    parser.add_argument("--allow-mixed-data", action="store_true",
                        help="report runs made on different data (content fingerprints) in "
                             "one table; refused otherwise")
    parser.add_argument("--stratify", choices=("class", "groups", "none"),
                        help="how the bootstrap resamples test items: within each class, whole "
                             "groups (test_groups, e.g. patients) or freely (default: the YAML's "
                             "report.bootstrap.stratify, else class)")
    add_overrides(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    """``octbench report``: the summary printed, then each file written named."""
    from octbench.report import build_report, load_records, print_summary
    from octbench.report.build import check_options
    from octbench.tuning import study_figures, study_summary

    formats = ("md", "csv") if args.format == "all" else (args.format,)
    check_options(formats, args.resamples)
    source = args.source
    if source.endswith((".yaml", ".yml")):
        source = load_experiment(source, args.set)
    elif args.set:
        raise OctbenchError("--set changes an experiment YAML; give the YAML (e.g. "
                            "experiments/quickstart.yaml) instead of a results folder.")
    name, folder, records = load_records(source, allow_mixed_data=args.allow_mixed_data)
    if not records and not (Path(folder) / "study.json").is_file():
        run = (command_line("run", args.source, args.set) if source is not args.source
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
