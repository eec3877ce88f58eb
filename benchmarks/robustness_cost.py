"""Cost of MedMNIST-C robustness: building the corrupted test sets, and corrupted evaluation.

    python benchmarks/robustness_cost.py [--images 1000] [--size 28] [--device cpu]

(1) build: the 30 corrupted test sets (6 corruptions x 5 severities) of ``--images`` 224-px
    synthetic OCT scans (OCTMNIST's test split has 1,000), each resized to ``--size`` px, into
    an empty cache: seconds per corruption and in all (medmnistc on the host, one core's work);
(2) evaluate: a reference CNN scored on the clean test set and on the 30 cached corrupted sets
    (read from the cache, predicted, metrics), side by side: the ratio corrupted / clean is the
    cost of ``evaluate: {corruptions: medmnist_c}`` per run once the sets exist.
Needs the robustness extra. The scans are synthetic: the timing does not depend on content
much, but say so beside any figure.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from _common import header, parser, temp_root

from octbench.data.render import render_scans
from octbench.engine import evaluate
from octbench.metrics import compute_metrics
from octbench.models import build_model
from octbench.robustness import CORRUPTIONS, SEVERITIES
from octbench.robustness.cache import corrupted_set
from octbench.robustness.corruptions import require_medmnistc


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="test scans (OCTMNIST: 1,000)")
    p.add_argument("--size", type=int, default=28, help="the run's image size")
    args = p.parse_args()
    device = header(args.device)
    require_medmnistc()
    os.environ["OCTBENCH_CACHE"] = str(temp_root())
    labels = np.arange(args.images) % 4
    source = render_scans(labels, size=224, seed=0)
    print(f"{args.images} synthetic 224-px scans -> {args.size} px, load {os.getloadavg()}")

    start = time.perf_counter()
    for name in CORRUPTIONS:
        began = time.perf_counter()
        for severity in SEVERITIES:
            corrupted_set(source, "bench", name, severity, seed=0, size=args.size)
        print(f"  build {name:<17} {time.perf_counter() - began:8.1f} s (5 sets)")
    build = time.perf_counter() - start
    print(f"  build all 30 sets     {build:8.1f} s, load {os.getloadavg()}")

    torch.manual_seed(0)
    model = build_model("reference_cnn", img_size=args.size).to(device)
    y = torch.from_numpy(labels).to(device)
    clean = torch.from_numpy(np.stack([s[:: 224 // args.size, :: 224 // args.size]
                                       [: args.size, : args.size] for s in source])).to(device)

    def score(images):
        predictions, _ = evaluate(model, images, y, batch_size=256)
        compute_metrics(predictions.labels, predictions.scores, "abcd")

    def clean_eval():
        score(clean)

    def corrupted_eval():
        for name in CORRUPTIONS:
            for severity in SEVERITIES:
                images, generated = corrupted_set(source, "bench", name, severity, seed=0,
                                                  size=args.size)
                assert not generated
                score(torch.from_numpy(images).to(device))

    times = {"clean": [], "corrupted": []}
    for _ in range(args.rounds):
        for key, fn in (("clean", clean_eval), ("corrupted", corrupted_eval)):
            began = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - began)
    clean_s, corrupted_s = np.median(times["clean"]), np.median(times["corrupted"])
    print(f"  evaluate clean        {clean_s:8.3f} s (median of {args.rounds})")
    print(f"  evaluate 30 corrupted {corrupted_s:8.3f} s, ratio corrupted/clean "
          f"{corrupted_s / clean_s:.1f}; with building the sets first: "
          f"{(corrupted_s + build) / clean_s:,.0f}")
    print(f"  load {os.getloadavg()}")


if __name__ == "__main__":
    main()
