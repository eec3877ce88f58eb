"""``octbench predict``: classify raw OCT scans with a trained run's checkpoint.

Must not import at module level: torch, or octbench modules that import it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from octbench.cli.options import EXIT_USAGE, SCAN_SUFFIXES, command_settings
from octbench.errors import OctbenchError
from octbench.untrusted import printable


def add(commands) -> None:
    """Register ``predict`` and its options."""
    parser = commands.add_parser(
        "predict", help="classify raw OCT scans with a trained run", **command_settings(),
        description="Classify raw OCT scans (PNG / JPEG / TIFF files, or folders of them) with "
                    "a trained run's checkpoint, preprocessed like its training data; prints "
                    "each file's class and probabilities.")
    parser.add_argument("--run", required=True, metavar="RUN_ID|CHECKPOINT",
                        help="a run id (or unique prefix), a run folder, or a best.pt file")
    parser.add_argument("scans", nargs="+", metavar="SCAN",
                        help="PNG / JPEG / TIFF files, or folders holding them")
    parser.add_argument("--results-dir", default="results", help="where to look for run ids")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run)


def run(args) -> int:
    """``octbench predict``: each scan's class and probabilities; exit code 2 when a file
    could not be read."""
    from octbench.predict import load_predictor, predict_files

    scans = scan_files(args.scans)
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


def scan_files(paths: list[str]) -> list[str]:
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
