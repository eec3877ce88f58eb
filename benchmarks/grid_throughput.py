"""Grid throughput: one run at a time against stacked training and Ray packing.

    python benchmarks/grid_throughput.py [--device cpu|cuda] [--scale 1.0] [--epochs 3]
                                         [--stacks 4 12] [--packings 1 2 4 8] [--seeds 0 1]

One grid (reference CNN x 4 strategies x 2 seeds, 3 epochs, full OCTMNIST-size synthetic data by
default) runs sequentially with the local executor, then stacked (``run --stack S``: S runs as
one stacked model) at each stack size, then with the Ray executor at each packing, all in this
invocation, each into its own temporary results folder. Packing P means P runs at once
on the device: on a GPU ``--gpus-per-run 1/P`` (Ray fractional GPUs), on a CPU P runs of
``max(1, cores // P)`` torch threads each. Prints wall time, runs/hour, the speed-up over the
sequential grid, training images/s of the whole grid, the largest difference in test macro-F1
between a run and its sequential twin, on CUDA the peak GPU memory of this process (Ray's
workers are other processes: n/a),
and Ray's overhead per run (Ray at packing 1 against the sequential grid, same threads per run,
plus the Ray start, printed separately). The numbers come from synthetic data.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from octbench.config import parse_config
from octbench.data import load_dataset
from octbench.executors import LocalExecutor, RayExecutor
from octbench.results import ResultsStore
from octbench.runner import run_experiment

STRATEGIES = ["none", "weighted_ce", "oversample", {"name": "focal", "gamma": 2.0}]


def grid(args, results: str, name: str):
    return parse_config({
        "name": name,
        "data": {"name": "synthetic", "scale": args.scale},
        "models": [args.model], "strategies": STRATEGIES, "seeds": args.seeds,
        "devices": [args.device],
        "train": {"epochs": args.epochs, "batch_size": 128},
        "results_dir": results,
    })


def macro_f1(results: str, name: str) -> dict[str, float]:
    """Run id without the experiment -> test macro-F1 (the run id does not name the experiment)."""
    return {r.run_id: r.metrics["test"]["macro_f1"]
            for r in ResultsStore(f"{results}/{name}").records() if r.status == "complete"}


def images(results: str, name: str) -> int:
    """Training images seen by every run of the grid (all epochs)."""
    return sum(h["train_images"] for r in ResultsStore(f"{results}/{name}").records()
               for h in r.history)


def peak(cuda: bool) -> float | None:
    """Peak GPU memory of this process since the last reset, MiB (None off CUDA)."""
    if not cuda:
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--scale", type=float, default=1.0, help="synthetic data scale (1.0 = OCTMNIST)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--stacks", type=int, nargs="*", default=[4, 12],
                   help="stack sizes to time beside the sequential grid (none: skip)")
    p.add_argument("--packings", type=int, nargs="*", default=[1, 2, 4, 8],
                   help="Ray packings (none: skip Ray)")
    p.add_argument("--model", default="reference_cnn")
    args = p.parse_args()
    import torch

    cores = os.cpu_count() or 1
    results = tempfile.mkdtemp(prefix="octbench-grid-")
    runs = 4 * len(args.seeds)
    rows = []
    cuda = args.device.startswith("cuda")
    # Outside the timings: generating (caching) the synthetic set and starting CUDA.
    load_dataset("synthetic", scale=args.scale)
    if cuda:
        torch.zeros(1, device=args.device)

    def local(name: str, stack: int) -> float:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        begin = time.perf_counter()
        run_experiment(grid(args, results, name), quiet=True, say=lambda _: None,
                       executor=LocalExecutor(stack=stack))
        return time.perf_counter() - begin

    sequential = local("sequential", 1)
    reference = macro_f1(results, "sequential")
    rows.append(("local, sequential (--stack 1)", sequential, reference, None, peak(cuda),
                 images(results, "sequential")))
    for stack in args.stacks:
        name = f"stack-{stack}"
        wall = local(name, stack)
        rows.append((f"local, stacked (--stack {stack})", wall, macro_f1(results, name), None,
                     peak(cuda), images(results, name)))

    if args.packings:
        import ray
        for packing in args.packings:
            threads = max(1, cores // packing)
            begin = time.perf_counter()
            if args.device == "cpu":  # P slots of `threads` CPUs: P runs at once
                ray.init(address="local", num_cpus=packing * threads, include_dashboard=False,
                         log_to_driver=False)
                executor = RayExecutor(cpus_per_run=threads)
            else:
                ray.init(address="local", num_cpus=max(cores, packing),
                         num_gpus=torch.cuda.device_count(), include_dashboard=False,
                         log_to_driver=False)
                executor = RayExecutor(gpus_per_run=1 / packing, cpus_per_run=threads)
            ray_start = time.perf_counter() - begin
            name = f"ray-{packing}"
            begin = time.perf_counter()
            run_experiment(grid(args, results, name), quiet=True, say=lambda _: None,
                           executor=executor)
            wall = time.perf_counter() - begin
            ray.shutdown()
            rows.append((f"ray, {packing} per {args.device} ({threads} thread(s) each)", wall,
                         macro_f1(results, name), ray_start, None, images(results, name)))

    print(f"grid: {args.model} x 4 strategies x {len(args.seeds)} seeds = {runs} runs, "
          f"{args.epochs} epochs, synthetic scale {args.scale} (SYNTHETIC DATA), device "
          f"{args.device}, {cores} CPU cores")
    print(f"{'executor':<42} {'wall s':>8} {'images/s':>9} {'runs/h':>8} {'speed-up':>9} "
          f"{'max dF1':>9} {'peak GPU MiB':>12}")
    for label, wall, scores, _, memory, seen in rows:
        common = set(scores) & set(reference)
        diff = max((abs(scores[k] - reference[k]) for k in common), default=float("nan"))
        done = f"{len(scores)}/{runs}" if len(scores) != runs else ""
        memory = "n/a" if memory is None else f"{memory:.0f}"
        print(f"{label:<42} {wall:>8.1f} {seen / wall:>9.0f} {len(scores) * 3600 / wall:>8.0f} "
              f"{sequential / wall:>8.2f}x {diff:>9.4f} {memory:>12} {done}")
    for label, wall, _, ray_start, _, _ in rows:
        if label.startswith("ray, 1 per"):  # same threads per run as the sequential grid
            print(f"Ray overhead per run: ({wall:.1f} - {sequential:.1f} s) / {runs} runs = "
                  f"{(wall - sequential) / runs:+.2f} s; starting Ray itself (not in the wall "
                  f"times): {ray_start:.1f} s")


if __name__ == "__main__":
    main()
