"""Evaluation throughput: the original pipeline against octbench, interleaved in one process.

    python benchmarks/eval_throughput.py [--device cpu|cuda|mps] [--rounds 4] [--scale 0.1]

(a) original: medmnist Dataset + ToTensor/Normalize + DataLoader (batch 128) under no_grad;
(b) octbench fp32: ``engine.evaluate`` over the uint8 validation tensor, as ``octbench run``
    evaluates (channels_last, inference_mode, batch 256 on CPU / 1024 on a GPU);
(c) the same in bf16; (d) pure compute: the same model and batch size on one pre-normalised
    batch reused. Prints median images/s, the ratios b/a, c/a, b/d, and the peak RSS.
"""

from __future__ import annotations

import torch
from _common import (
    header,
    load_synthetic,
    measure,
    original_loader,
    parser,
    peak_rss_mib,
    temp_root,
)

from octbench.engine import default_eval_batch, evaluate, to_input
from octbench.models import build_model


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--eval-batch-size", type=int, default=None,
                   help="octbench's evaluation batch (default: what `octbench run` uses)")
    args = p.parse_args()
    device = header(args.device)
    data = load_synthetic(args.scale)
    batch = args.eval_batch_size or default_eval_batch(device)
    torch.manual_seed(0)
    model = build_model("reference_cnn").to(device).eval()  # the seed project's layout (NCHW)
    fast = build_model("reference_cnn").to(device).to(memory_format=torch.channels_last).eval()
    fast.load_state_dict(model.state_dict())
    loader = original_loader(data, "val", 128, False, temp_root())
    images, labels = data.val.images.to(device), data.val.labels.to(device)
    n = len(labels)

    def original():
        with torch.no_grad():
            for x, _ in loader:
                torch.softmax(model(x.to(device)), dim=1).cpu()
        return n

    def octbench_eval(precision):
        def step():
            evaluate(fast, images, labels, batch_size=batch, precision=precision,
                     channels_last=True)
            return n
        return step

    x = to_input(images[:batch], channels_last=True)

    def compute():
        with torch.inference_mode():
            for first in range(0, n, batch):
                fast(x[: min(batch, n - first)])
        return n

    pipelines = {"(a) original": original, "(b) octbench fp32": octbench_eval("fp32"),
                 "(c) octbench bf16": octbench_eval("bf16"), "(d) pure compute": compute}
    if device.type == "mps" or (device.type == "cuda" and not torch.cuda.is_bf16_supported()):
        del pipelines["(c) octbench bf16"]
    measure(pipelines, 1, device)  # warm-up
    rates = measure(pipelines, args.rounds, device)
    print(f"reference_cnn, 28 px, {n:,} validation images, octbench batch {batch}, median of "
          f"{args.rounds} rounds")
    for name, rate in rates.items():
        print(f"  {name:<20} {rate:>10,.0f} images/s")
    a, b, d = rates["(a) original"], rates["(b) octbench fp32"], rates["(d) pure compute"]
    line = f"  b/a = {b / a:.2f}   b/d = {b / d:.2f}"
    if "(c) octbench bf16" in rates:
        line += f"   c/a = {rates['(c) octbench bf16'] / a:.2f}"
    print(line)
    print(f"  peak RSS {peak_rss_mib():,.0f} MiB (whole benchmark process)")


if __name__ == "__main__":
    main()
