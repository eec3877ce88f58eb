#!/usr/bin/env bash
# One command for a GPU machine: the CUDA tests, then the seed project's grid (reference CNN x
# 4 strategies x 3 seeds = 12 runs, 15 epochs, full OCTMNIST-size SYNTHETIC data) one run at a
# time, stacked (--stack 4, 12) and Ray-packed (4 tasks per GPU: single runs, then stacks of 3),
# in one invocation. About 8 minutes on an H200 (not yet run on one). Prints the tests' summary
# and the benchmark table (wall time, images/s, runs/h, speed-up, max |dF1| against the
# sequential twins, peak GPU memory, load), each row's time as it finishes.
#
#   benchmarks/gpu_check.sh          # on the GPU machine, from anywhere in the checkout
#   benchmarks/gpu_check.sh --dry    # a CPU rehearsal at tiny size (a minute): the same commands
#
# PYTHON picks the interpreter (default: python). Ray rows need `pip install "octbench[ray]"`;
# without Ray they are left out (and said so).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}

if [[ "${1:-}" == "--dry" ]]; then
    # no time limits that matter: a shared CPU may be slow
    device=cpu scale=0.002 epochs=1 seeds=(0) stacks=(4) packings=(1) ray_stacks=(1 4)
    tests_marker="not cuda"
    tests_limit=1800 bench_limit=1800
    tests=(tests/test_stacking.py -k "weights_and_optimizer or dropout")
else
    device=cuda scale=1.0 epochs=15 seeds=(0 1 2) stacks=(4 12) packings=(4) ray_stacks=(1 3)
    tests_marker=cuda tests_limit=150 bench_limit=420  # under 10 minutes in all on an H200
    tests=(tests/test_cuda.py tests/test_stacking.py)
fi
if [[ ${#packings[@]} -gt 0 ]] && ! "$PYTHON" -c "import ray" 2>/dev/null; then
    echo "Ray is not installed: the Ray-packed rows are left out." >&2
    packings=()
fi

echo "== $(date -u +%FT%TZ) $(uname -n), load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PYTHON" - <<'PY'
import torch
print("torch", torch.__version__, "| cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
PY
echo "== tests (-m $tests_marker)"
timeout $tests_limit "$PYTHON" -m pytest -q -m "$tests_marker" "${tests[@]}"
echo "== grid benchmark ($device, scale $scale, $epochs epochs, seeds ${seeds[*]})"
timeout $bench_limit "$PYTHON" benchmarks/grid_throughput.py --device "$device" --scale "$scale" \
    --epochs "$epochs" --seeds "${seeds[@]}" --stacks "${stacks[@]}" \
    --packings "${packings[@]}" --ray-stacks "${ray_stacks[@]}"
echo "== done $(date -u +%FT%TZ), load: $(cut -d' ' -f1-3 /proc/loadavg)"
