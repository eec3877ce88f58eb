"""``octbench data info | show | synth``: a dataset's class counts, a PNG grid of its samples
(or of raw scans beside the model inputs made from them), synthetic data as a MedMNIST npz.

Must not import at module level: torch, or octbench modules that import it.
"""

from __future__ import annotations

import time
from pathlib import Path

from octbench.cli.options import (
    SCAN_SUFFIXES,
    command_settings,
    int_between,
    png_path,
    setting,
    subcommands,
)
from octbench.errors import OctbenchError
from octbench.untrusted import printable

#: The synthetic set's scale `data show` draws from: enough of the rarest class for 64 per class
#: (the test split is always full size).
SHOW_SCALE = {"test": 0.01, "train": 0.01, "val": 0.1}


def add(commands) -> None:
    """Register ``data`` and its actions ``info``, ``show`` and ``synth``."""
    common = command_settings()
    data = commands.add_parser("data", help="inspect, generate or show datasets", **common)
    actions = subcommands(data, "action", "ACTION")
    source = dict(nargs="?", default="synthetic",
                  help="a dataset name (synthetic, octmnist, npz, folder), an .npz file, an "
                       "image folder or an experiment YAML (default: synthetic)")
    setter = dict(action="append", default=[], metavar="KEY=VALUE", type=setting,
                  help="a dataset parameter, e.g. --set scale=0.1 (repeatable)")
    info = actions.add_parser("info", help="per-split class counts and imbalance ratios",
                              **common)
    info.add_argument("source", **source)
    info.add_argument("--set", **setter)
    info.add_argument("--figure", type=png_path, metavar="PNG",
                      help="also save a class-distribution chart")
    info.set_defaults(handler=run_info)
    show = actions.add_parser("show", help="write a PNG grid of samples per class, or of raw "
                              "scan files next to the model inputs made from them", **common)
    show.add_argument("source", **source)
    show.add_argument("scans", nargs="*", metavar="SCAN",
                      help="more scan files when SOURCE is an image file")
    show.add_argument("--set", **setter)
    show.add_argument("--out", type=png_path, default="samples.png", metavar="PNG",
                      help="image to write (default: samples.png)")
    show.add_argument("--per-class", type=int_between(1, 64), default=8,
                      help="samples per class, 1 to 64 (default: 8)")
    show.add_argument("--split", choices=("train", "val", "test"), default="test",
                      help="split to draw from (default: test)")
    show.set_defaults(handler=run_show)
    synth = actions.add_parser("synth", help="write synthetic OCT data as a MedMNIST npz",
                               **common)
    synth.add_argument("--out", required=True, metavar="FILE.npz")
    synth.add_argument("--set", **setter)
    synth.set_defaults(handler=run_synth)


def run_info(args) -> int:
    """``octbench data info``: class counts per split and imbalance ratios, a chart on request."""
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


def run_show(args) -> int:
    """``octbench data show``: a PNG grid of samples per class, or of the scan files given."""
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


def run_synth(args) -> int:
    """``octbench data synth``: synthetic OCT data written as a MedMNIST-format npz file."""
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


def _load_data_source(source: str, settings: list[tuple[str, object]], **defaults):
    """A dataset from a registry name + ``--set`` values, an .npz file, an image folder or an
    experiment YAML; ``defaults`` fill parameters of an .npz file or folder left unset."""
    from octbench.api import load_data

    return load_data(source, defaults=defaults, **dict(settings))
