"""Seconds a newcomer waits for the CLI's first answers: --help, config errors, cold and warm
listings.

Runs each case as a fresh ``python -m octbench`` process, alternating between this checkout and
an optional other one (``--before DIR``, e.g. ``git archive <commit> | tar -x -C DIR``), so both
see the same machine load; prints min and median wall seconds and the load average around it.

    python benchmarks/cli_latency.py --repeat 3 --before /tmp/octbench-before
    python benchmarks/cli_latency.py --only "config error"   # skip the cold listings
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

BAD_KEYS = """name: typo
data: {name: synthetic, scale: 0.01}
models: [reference_cnn]
devices: [gpu]
train: {epochs: 1, learning_rate: 0.1}
"""
BAD_NAME = """name: typo
data: {name: synthetic, scale: 0.01}
models: [reference_cn]
"""
BAD_PARAMS = """name: typo
data: {name: synthetic, scale: 0.01}
models: [reference_cnn]
strategies: [{name: focal, gamma: -1}, {name: weighted_ce, powr: 1}]
"""


def _time(source: Path, args: list[str], cache: Path, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(source), "OCTBENCH_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "octbench", *args], cwd=cwd, env=env,
                   capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another octbench checkout to compare")
    parser.add_argument("--only", metavar="TEXT",
                        help="only the cases whose name contains TEXT, e.g. 'config error'")
    args = parser.parse_args()
    trees = {"now": HERE, **({"before": args.before.resolve()} if args.before else {})}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "bad_keys.yaml").write_text(BAD_KEYS)
        (tmp / "bad_name.yaml").write_text(BAD_NAME)
        (tmp / "bad_params.yaml").write_text(BAD_PARAMS)
        cases = {
            "--help": (["--help"], "warm"),
            "config error: key, device, train value": (["run", "bad_keys.yaml"], "warm"),
            "config error: model name (listing cached)": (["run", "bad_name.yaml"], "warm"),
            "config error: strategy parameters (listing cached)": (
                ["run", "bad_params.yaml"], "warm"),
            "list models, cold cache": (["list", "models"], "cold"),
            "list models, warm cache": (["list", "models"], "warm"),
        }
        cases = {case: how for case, how in cases.items() if (args.only or "") in case}
        times: dict[tuple[str, str], list[float]] = {}
        print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs")
        for name, source in trees.items():  # warm each tree's cache once
            _time(source, ["list", "models"], tmp / f"cache-{name}", tmp)
        for repeat in range(args.repeat):
            for case, (argv, cache) in cases.items():
                for name, source in trees.items():
                    folder = tmp / (f"cache-{name}" if cache == "warm"
                                    else f"cold-{name}-{repeat}")
                    times.setdefault((case, name), []).append(_time(source, argv, folder, tmp))
        print(f"load average after: {os.getloadavg()}")
        print(f"| case | {' | '.join(f'{n} (min / median s)' for n in trees)} |")
        print(f"| --- | {' | '.join('---' for _ in trees)} |")
        for case in cases:
            cells = [f"{min(times[case, n]):.2f} / {statistics.median(times[case, n]):.2f}"
                     for n in trees]
            print(f"| {case} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
