"""What median pruning saves: the same 20-trial study with and without it, side by side.

Both studies use the same search space, the same seeded TPE sampler and the same built-in
synthetic OCT data (numbers are synthetic, not OCTMNIST results); only the pruner differs. It
prints the epochs each study trained, its best validation macro-F1, and the ratios::

    python benchmarks/pruning.py --seeds 3 4 5        # about 4 minutes a seed on 2 CPU cores
    python benchmarks/pruning.py --trials 10 --epochs 4 --scale 0.02     # a quick look

The objective is :func:`octbench.tuning.objective.make_objective` on plain in-memory Optuna studies.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import optuna

from octbench.tuning import DEFAULT_PRUNER, parse_tune_config
from octbench.tuning.objective import make_objective

SEARCH = {
    "train.lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True},
    "train.weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-2, "log": True},
    "train.batch_size": {"type": "categorical", "choices": [64, 128, 256]},
    "train.optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.6},
    "strategy": {"type": "categorical", "choices": ["none", "weighted_ce", "oversample", "focal"]},
}


def run_study(config, pruner: optuna.pruners.BasePruner, trials: int, seed: int, data,
              verbose: bool = False) -> dict:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=pruner)
    start = time.perf_counter()
    study.optimize(make_objective(config, data=data), n_trials=trials)
    seconds = time.perf_counter() - start
    done = study.get_trials(deepcopy=False)
    for t in done if verbose else ():
        curve = " ".join(f"{v:.3f}" for v in t.intermediate_values.values())
        print(f"  {config.study} trial {t.number:>2} {t.state.name:<8} [{curve}] {t.params}")
    return {
        "epochs": sum(len(t.intermediate_values) for t in done),
        "best": study.best_value,
        "complete": sum(t.state.name == "COMPLETE" for t in done),
        "pruned": sum(t.state.name == "PRUNED" for t in done),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--scale", type=float, default=0.05, help="synthetic data size")
    parser.add_argument("--difficulty", type=float, default=0.3,
                        help="synthetic data difficulty (1 = default renderer; < 1 easier)")
    parser.add_argument("--width", type=float, default=0.5, help="reference CNN width")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="TPE sampler seeds; each gives one pruned/unpruned pair")
    parser.add_argument("--n-startup-trials", type=int,
                        default=DEFAULT_PRUNER["n_startup_trials"])
    parser.add_argument("--n-warmup-steps", type=int, default=DEFAULT_PRUNER["n_warmup_steps"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"],
                        help="bf16 (default) trains faster on a CPU with bf16 support")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every trial")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from octbench.data import load_dataset

    data_params = {"name": "synthetic", "scale": args.scale, "difficulty": args.difficulty}
    data = load_dataset(**data_params)

    def config(name: str, results: str):
        return parse_tune_config({
            "study": name,  # its own results folder: no run is shared between the studies
            "data": data_params,
            "models": [{"name": "reference_cnn", "width": args.width}],
            "strategies": ["none"],
            "devices": [args.device],
            # Cosine decay: the last epochs settle, so "best epoch" is not a lucky spike.
            "train": {"epochs": args.epochs, "schedule": "cosine", "precision": args.precision},
            "results_dir": results,
            "search": SEARCH,
            "n_trials": args.trials,
        })

    pairs = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as results:
            median = optuna.pruners.MedianPruner(n_startup_trials=args.n_startup_trials,
                                                 n_warmup_steps=args.n_warmup_steps)
            pairs[seed] = {
                "none": run_study(config(f"unpruned-{seed}", results),
                                  optuna.pruners.NopPruner(), args.trials, seed, data,
                                  args.verbose),
                "median": run_study(config(f"pruned-{seed}", results), median, args.trials,
                                    seed, data, args.verbose),
            }
    print(f"{args.trials} trials x {args.epochs} epochs (cosine, {args.precision}) on "
          f"{args.device}, SYNTHETIC "
          f"data (scale {args.scale}, difficulty {args.difficulty}: {len(data.train)} train / "
          f"{len(data.val)} val images), reference_cnn width {args.width}; median pruner: "
          f"n_startup_trials={args.n_startup_trials}, n_warmup_steps={args.n_warmup_steps}")
    print(f"{'TPE seed':>8}  {'pruner':<7} {'epochs':>7} {'best val macro-F1':>18} "
          f"{'complete':>9} {'pruned':>7} {'time (s)':>9}")
    for seed, rows in pairs.items():
        for name, row in rows.items():
            print(f"{seed:>8}  {name:<7} {row['epochs']:>7} {row['best']:>18.4f} "
                  f"{row['complete']:>9} {row['pruned']:>7} {row['seconds']:>9.0f}")
    ratios = [rows["median"]["epochs"] / rows["none"]["epochs"] for rows in pairs.values()]
    gaps = [rows["median"]["best"] - rows["none"]["best"] for rows in pairs.values()]
    for seed, ratio, gap in zip(pairs, ratios, gaps, strict=True):
        print(f"seed {seed}: median / none = {ratio:.0%} of the epochs; best val macro-F1 "
              f"{gap:+.4f}")
    if len(pairs) > 1:
        print(f"mean over {len(pairs)} seeds: {sum(ratios) / len(ratios):.0%} of the epochs; "
              f"best val macro-F1 {sum(gaps) / len(gaps):+.4f}")


if __name__ == "__main__":
    main()
