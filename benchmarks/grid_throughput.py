"""Grid throughput: one run at a time against stacked training and Ray packing.

    python benchmarks/grid_throughput.py [--device cpu|cuda] [--scale 0.01 0.1] [--epochs 3]
                                         [--stacks 4 12] [--packings 1 2 4 8] [--seeds 0 1]
                                         [--ray-stacks 1 3] [--rounds R]

One grid (reference CNN x 4 strategies x 2 seeds, 3 epochs, full OCTMNIST-size synthetic data by
default) runs sequentially with the local executor, then stacked (``run --stack S``: S runs as
one stacked model) at each stack size, then with the Ray executor at each packing, all in this
invocation, each into its own temporary results folder; one table per ``--scale``. Packing P
means P Ray tasks at once on the device: on a GPU ``--gpus-per-run 1/P`` (Ray fractional GPUs),
on a CPU P tasks of ``max(1, cores // P)`` torch threads each; ``--ray-stacks S`` makes each
task a stack of S runs (Ray packs stacks). ``--rounds R`` times the local rows R times,
interleaved, and shows each row's median.

Prints wall time, runs/hour, the speed-up over the sequential grid, training images/s of the
whole grid, the largest difference in test macro-F1 between a run and its sequential twin (beside
the seed-to-seed spread of the sequential grid, the yardstick for that difference), on CUDA the
peak GPU memory of this process (Ray's workers are other processes: n/a), the load
average, and Ray's overhead per run (Ray at packing 1 against the sequential grid, same threads
per run, plus the Ray start, printed separately). The numbers come from synthetic data.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from octbench.config import parse_config
from octbench.data import load_dataset
from octbench.executors import LocalExecutor, RayExecutor
from octbench.experiment import run_experiment
from octbench.results import ResultsStore

STRATEGIES = ["none", "weighted_ce", "oversample", {"name": "focal", "gamma": 2.0}]


def grid(args, scale: float, results: str, name: str):
    return parse_config({
        "name": name,
        "data": {"name": "synthetic", "scale": scale},
        "models": [args.model], "strategies": STRATEGIES, "seeds": args.seeds,
        "devices": [args.device],
        "train": {"epochs": args.epochs, "batch_size": 128},
        "results_dir": results,
    })


def macro_f1(results: str, name: str) -> dict[str, float]:
    """Run id without the experiment -> test macro-F1 (the run id does not name the experiment)."""
    return {r.run_id: r.metrics["test"]["macro_f1"]
            for r in ResultsStore(f"{results}/{name}").records() if r.status == "complete"}


def seed_spread(results: str, name: str) -> float:
    """Test macro-F1's standard deviation across seeds, averaged over the strategies: how far two
    draws of the same run lie apart, the yardstick for a stacked run's drift from its twin."""
    by_strategy: dict[str, list[float]] = {}
    for r in ResultsStore(f"{results}/{name}").records():
        if r.status == "complete":
            by_strategy.setdefault(r.strategy, []).append(r.metrics["test"]["macro_f1"])
    spreads = [statistics.stdev(scores) for scores in by_strategy.values() if len(scores) > 1]
    return statistics.fmean(spreads) if spreads else float("nan")


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
    p.add_argument("--scale", type=float, nargs="+", default=[1.0],
                   help="synthetic data scale(s) (1.0 = OCTMNIST); several: one table each")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--stacks", type=int, nargs="*", default=[4, 12],
                   help="stack sizes to time beside the sequential grid (none: skip)")
    p.add_argument("--packings", type=int, nargs="*", default=[1, 2, 4, 8],
                   help="Ray packings (none: skip Ray)")
    p.add_argument("--ray-stacks", type=int, nargs="+", default=[1], metavar="S",
                   help="runs per Ray task (a stack of S), a row each (default 1: one run "
                        "per task)")
    p.add_argument("--rounds", type=int, default=1,
                   help="time the local rows this often, interleaved; the median is shown")
    p.add_argument("--model", default="reference_cnn")
    args = p.parse_args()
    for scale in args.scale:
        table(args, scale)


def table(args, scale: float) -> None:
    """Time the grid at one data scale and print its table."""
    import torch

    cores = os.cpu_count() or 1
    results = tempfile.mkdtemp(prefix="octbench-grid-")
    runs = 4 * len(args.seeds)
    rows = []
    delays = []  # (packing, seconds from submitting each task to its run starting on a worker)
    cuda = args.device.startswith("cuda")
    load_start = os.getloadavg()[0]
    # Outside the timings: generating (caching) the synthetic set and starting CUDA.
    load_dataset("synthetic", scale=scale)
    if cuda:
        torch.zeros(1, device=args.device)

    def local(name: str, stack: int) -> float:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        begin = time.perf_counter()
        run_experiment(grid(args, scale, results, name), quiet=True, say=lambda _: None,
                       executor=LocalExecutor(stack=stack))
        return time.perf_counter() - begin

    # Rounds interleave the rows (sequential, stack 4, stack 12, sequential, ...), so a load
    # that changes while the benchmark runs falls on every row alike; each row shows its median.
    local_rows = [("local, sequential (--stack 1)", 1)] + [
        (f"local, stacked (--stack {stack})", stack) for stack in args.stacks]
    timed = {label: [] for label, _ in local_rows}
    for round_ in range(args.rounds):
        for label, stack in local_rows:
            name = f"stack-{stack}-round-{round_}"
            timed[label].append((local(name, stack), name, peak(cuda)))
            # each timing as it comes: a benchmark stopped early still leaves its rounds
            print(f"scale {scale}, round {round_ + 1}/{args.rounds}: {label} "
                  f"{timed[label][-1][0]:.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    reference = macro_f1(results, "stack-1-round-0")
    for label, _ in local_rows:
        walls = sorted(timed[label])
        wall, name, memory = walls[len(walls) // 2]
        rows.append((label, wall, macro_f1(results, name), None, memory, images(results, name)))
    sequential = rows[0][1]

    if args.packings:
        import ray
        for packing in args.packings:
            threads = max(1, cores // packing)
            begin = time.perf_counter()
            if args.device == "cpu":  # P slots of `threads` CPUs: P runs at once
                ray.init(address="local", num_cpus=packing * threads, include_dashboard=False,
                         log_to_driver=False)
                options = {"cpus_per_run": threads}
            else:
                ray.init(address="local", num_cpus=max(cores, packing),
                         num_gpus=torch.cuda.device_count(), include_dashboard=False,
                         log_to_driver=False)
                options = {"gpus_per_run": 1 / packing, "cpus_per_run": threads}
            ray_start = time.perf_counter() - begin
            for stack in args.ray_stacks:
                name = f"ray-{packing}-stack-{stack}"
                executor = RayExecutor(**options, stack=stack)
                begin = time.perf_counter()
                run_experiment(grid(args, scale, results, name), quiet=True,
                               say=lambda _: None, executor=executor)
                wall = time.perf_counter() - begin
                per_task = f", stacks of {stack}" if stack > 1 else ""
                label = f"ray, {packing} per {args.device} ({threads} thread(s){per_task})"
                rows.append((label, wall, macro_f1(results, name), ray_start, None,
                             images(results, name)))
                print(f"scale {scale}: {label} {wall:.1f} s, load {os.getloadavg()[0]:.1f}",
                      flush=True)
                if stack == 1:
                    delays.append((packing, list(executor.start_delays.values())))
            ray.shutdown()

    print(f"grid: {args.model} x 4 strategies x {len(args.seeds)} seeds = {runs} runs, "
          f"{args.epochs} epochs, synthetic scale {scale} (SYNTHETIC DATA), device "
          f"{args.device}, {cores} CPU cores; load {load_start:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end"
          + (f"; local rows: median of {args.rounds} interleaved rounds"
             if args.rounds > 1 else ""))
    print(f"{'executor':<42} {'wall s':>8} {'images/s':>9} {'runs/h':>8} {'speed-up':>9} "
          f"{'max dF1':>9} {'peak GPU MiB':>12}")
    for label, wall, scores, _, memory, seen in rows:
        common = set(scores) & set(reference)
        diff = max((abs(scores[k] - reference[k]) for k in common), default=float("nan"))
        done = f"{len(scores)}/{runs}" if len(scores) != runs else ""
        memory = "n/a" if memory is None else f"{memory:.0f}"
        print(f"{label:<42} {wall:>8.1f} {seen / wall:>9.0f} {len(scores) * 3600 / wall:>8.0f} "
              f"{sequential / wall:>8.2f}x {diff:>9.4f} {memory:>12} {done}")
    print(f"seed-to-seed spread of test macro-F1 in the sequential grid (std across seeds, mean "
          f"over strategies): {seed_spread(results, 'stack-1-round-0'):.4f}; max dF1 above is "
          "a stacked run against its sequential twin (same seed)")
    if args.rounds > 1:
        for label, _ in local_rows:
            print(f"  {label}: rounds {', '.join(f'{w:.1f}' for w, _, _ in timed[label])} s")
    for label, wall, _, ray_start, _, _ in rows:
        if label.startswith("ray, 1 per") and "stacks of" not in label:  # same threads per run
            print(f"Ray overhead per run: ({wall:.1f} - {sequential:.1f} s) / {runs} runs = "
                  f"{(wall - sequential) / runs:+.2f} s; starting Ray itself (not in the wall "
                  f"times): {ray_start:.1f} s")
    for packing, waits in delays:  # the first tasks pay for worker start-up and imports
        if waits:
            print(f"Ray {packing} per {args.device}: task submitted -> run started on a worker: "
                  f"first run {waits[0]:.1f} s (worker start-up, imports); median "
                  f"{sorted(waits)[len(waits) // 2]:.1f} s, max {max(waits):.1f} s (queued runs "
                  "include their wait for a free slot)")
    print(flush=True)


if __name__ == "__main__":
    main()
