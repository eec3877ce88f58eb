"""Evaluation throughput: the original pipeline against octbench, interleaved in one process.

    python benchmarks/eval_throughput.py [--device cpu|cuda|mps] [--rounds 4]

(a) original: medmnist Dataset + ToTensor/Normalize + DataLoader (batch 128) under no_grad;
(b) octbench fp32: ``engine.evaluate`` over the uint8 validation tensor (batch 1024,
    inference_mode); (c) the same in bf16 with channels_last; (d) pure compute: one
pre-normalised batch of 1024 reused. Prints median images/s, ratios b/a, c/a, b/d, peak RSS.
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

from octbench.engine import evaluate, to_input
from octbench.models import build_model


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    device = header(args.device)
    data = load_synthetic(args.scale)
    torch.manual_seed(0)
    model = build_model("reference_cnn").to(device).eval()
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

    def octbench_eval(net, precision, channels_last):
        def step():
            evaluate(net, images, labels, batch_size=1024, precision=precision,
                     channels_last=channels_last)
            return n
        return step

    x = to_input(images[:1024])

    def compute():
        with torch.inference_mode():
            for _ in range(0, n, 1024):
                model(x)
        return n

    pipelines = {"(a) original": original,
                 "(b) octbench fp32": octbench_eval(model, "fp32", False),
                 "(c) octbench bf16": octbench_eval(fast, "bf16", True),
                 "(d) pure compute": compute}
    if device.type == "mps" or (device.type == "cuda" and not torch.cuda.is_bf16_supported()):
        del pipelines["(c) octbench bf16"]
    measure(pipelines, 1, device)  # warm-up
    rates = measure(pipelines, args.rounds, device)
    print(f"reference_cnn, 28 px, {n:,} validation images, median of {args.rounds} rounds")
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
