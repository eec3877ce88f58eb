"""bf16 against fp32: test macro-F1 and training speed on synthetic data, same seeds.

    python benchmarks/precision_parity.py [--device cpu] [--scale 1.0] [--epochs 6] [--seeds 0 1 2]

Runs the reference CNN with weighted cross-entropy in both precisions through the normal runner
(into a temporary results folder; the settings of ``experiments/synthetic_calibration.yaml``:
full OCTMNIST size, 6 epochs, cosine schedule) and prints per-seed and mean test macro-F1,
images/s and the process's peak RSS. About 20 minutes on 2 CPU cores; ``--scale 0.1`` for a
quick look (noisier). The numbers come from synthetic data: they compare precisions, not
OCTMNIST results.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile

from octbench.config import parse_config
from octbench.experiment import run_experiment
from octbench.results import ResultsStore


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    results = tempfile.mkdtemp(prefix="octbench-parity-")
    rows = {}
    for precision in ("fp32", "bf16"):
        config = parse_config({
            "name": f"parity-{precision}",
            "data": {"name": "synthetic", "scale": args.scale},
            "models": ["reference_cnn"], "strategies": ["weighted_ce"],
            "seeds": args.seeds, "devices": [args.device],
            "train": {"epochs": args.epochs, "precision": precision, "schedule": "cosine"},
            "results_dir": results,
        })
        run_experiment(config, quiet=True, say=lambda _: None)
        records = sorted(ResultsStore(f"{results}/{config.name}").records(), key=lambda r: r.seed)
        rows[precision] = records
    print(f"reference_cnn + weighted_ce, synthetic scale {args.scale}, {args.epochs} epochs "
          f"(cosine), device {args.device} (SYNTHETIC DATA)")
    print(f"{'seed':>6} {'fp32 macro-F1':>14} {'bf16 macro-F1':>14} {'fp32 img/s':>11} "
          f"{'bf16 img/s':>11}")
    for a, b in zip(rows["fp32"], rows["bf16"], strict=True):
        print(f"{a.seed:>6} {a.metrics['test']['macro_f1']:>14.4f} "
              f"{b.metrics['test']['macro_f1']:>14.4f} "
              f"{a.timing['train_images_per_s']:>11,.0f} {b.timing['train_images_per_s']:>11,.0f}")
    mean = {k: statistics.mean(r.metrics["test"]["macro_f1"] for r in v) for k, v in rows.items()}
    speed = {k: statistics.mean(r.timing["train_images_per_s"] for r in v)
             for k, v in rows.items()}
    print(f"{'mean':>6} {mean['fp32']:>14.4f} {mean['bf16']:>14.4f} {speed['fp32']:>11,.0f} "
          f"{speed['bf16']:>11,.0f}")
    print(f"bf16 - fp32 macro-F1: {mean['bf16'] - mean['fp32']:+.4f}; "
          f"bf16 / fp32 training speed: {speed['bf16'] / speed['fp32']:.2f}x")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:,.0f} MiB (this process: the data and {2 * len(args.seeds)} runs)")


if __name__ == "__main__":
    main()
