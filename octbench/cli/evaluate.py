"""``octbench evaluate``: score a trained checkpoint on one split of a dataset, and with
``--corruptions`` on MedMNIST-C corrupted test sets (stored in the run's record when the data
are its own).

Must not import at module level: torch, or octbench modules that import it.
"""

from __future__ import annotations

import dataclasses
import json

from octbench.cli.options import command_settings, int_between, setting
from octbench.console import Console
from octbench.errors import OctbenchError
from octbench.untrusted import printable


def add(commands) -> None:
    """Register ``evaluate`` and its options."""
    parser = commands.add_parser(
        "evaluate", help="score a trained run's checkpoint on a split of a dataset",
        description="Score a trained checkpoint on one split of a dataset: the same metrics "
                    "as a run record, printed (and written as JSON with --out).",
        **command_settings())
    parser.add_argument("--run", required=True, metavar="RUN_ID|CHECKPOINT",
                        help="a run id (or unique prefix), a run folder, or a best.pt file")
    parser.add_argument("data", metavar="DATA",
                        help="an experiment YAML (its data), an .npz file, an image folder "
                             "or a dataset name")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        type=setting,
                        help="a dataset parameter, e.g. --set skip_bad=true (repeatable)")
    parser.add_argument("--corruptions", metavar="medmnist_c|NAME,...",
                        help="also score the test split under MedMNIST-C corruptions (all six "
                             "with medmnist_c); stored in the run's record when DATA are its "
                             "own (pip install \"octbench[robustness]\")")
    parser.add_argument("--severities", default="1,2,3,4,5", metavar="S,...",
                        help="with --corruptions: severity levels 1-5 (default all)")
    parser.add_argument("--corruption-seed", type=int_between(0, 2**32 - 1), default=0,
                        metavar="N", help="with --corruptions: seed of the corrupted sets")
    parser.add_argument("--results-dir", default="results", help="where to look for run ids")
    parser.add_argument("--out", metavar="FILE.json", help="also write the metrics as JSON")
    parser.set_defaults(handler=run)


def run(args) -> int:
    """``octbench evaluate``: the metrics of a run record, for a checkpoint on a split."""
    from octbench.api import data_component
    from octbench.data import load_dataset
    from octbench.fileio import atomic_write_text
    from octbench.predict import evaluate_checkpoint, load_predictor
    from octbench.results import nan_to_none

    out = args.console
    plan = _corruption_plan(args)
    predictor = load_predictor(args.run, args.results_dir)
    # The validated dataset choice (as octbench.api.load_data makes it): corrupted evaluation
    # needs its parameters to load the 224-px scans.
    component = data_component(args.data, {"size": predictor.img_size}, **dict(args.set))
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
