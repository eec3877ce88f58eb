"""Seconds per full training epoch of the reference CNN on the OCTMNIST-size synthetic set.

    python benchmarks/epoch_time.py [--device cuda] [--epochs 3] [--precision fp32 bf16]
                                    [--compile] [--scale 1.0]

Trains with ``engine.train_one_epoch`` as ``octbench run`` does (uint8 split resident on the
device, batch 128, Adam, fresh permutation each epoch) over all 97,477 training images at scale
1.0; on CUDA both eagerly and with the step replayed as a CUDA graph (the default there).
Epoch 1 includes warm-up (cuDNN autotuning, graph capture, compilation), so it is printed apart
from the median of the later epochs. The seed project reported 69 s per epoch on an Apple M2.
"""

from __future__ import annotations

import statistics

import torch
from _common import header, load_synthetic, parser, peak_rss_mib

from octbench.engine import make_optimizer, seed_everything, train_one_epoch
from octbench.models import build_model
from octbench.strategies import build_strategy


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(scale=1.0)
    p.add_argument("--epochs", type=int, default=3, help="epochs per setting (>= 2)")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                   choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    args = p.parse_args()
    device = header(args.device)
    data = load_synthetic(args.scale)
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    criterion = build_strategy("none", data.train.class_counts(4)).criterion.to(device)
    # (precision, mode): "eager" steps one by one; "graphs" replays each epoch's step as a CUDA
    # graph (octbench's default on CUDA); "compiled" is torch.compile'd eager.
    modes = ["eager", "graphs"] if device.type == "cuda" else ["eager"]
    modes += ["compiled"] if args.compile else []
    settings = [(precision, mode) for mode in modes for precision in args.precision]

    print(f"reference_cnn, {len(labels):,} training images, 28 px, batch {args.batch_size}, "
          f"{args.epochs} epochs per setting, channels_last")
    print(f"  {'setting':<16} {'epoch 1 (s)':>12} {'later epochs, median (s)':>25} "
          f"{'images/s':>10}")
    for precision, mode in settings:
        graphs = mode == "graphs"
        seed_everything(0)
        model = build_model("reference_cnn").to(device).to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model.parameters(), "adam", lr=1e-3,
                                   fused=device.type == "cuda", capturable=graphs)
        step_model = torch.compile(model, dynamic=False) if mode == "compiled" else model
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        generator = torch.Generator().manual_seed(0)
        seconds = []
        for _ in range(args.epochs):
            order = torch.randperm(len(labels), generator=generator)
            stats = train_one_epoch(step_model, images, labels, order, criterion=criterion,
                                    optimizer=optimizer, batch_size=args.batch_size,
                                    precision=precision, scaler=scaler,
                                    channels_last=True, cuda_graph=graphs)
            seconds.append(stats["seconds"])
        later = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
        name = f"{precision} {mode}"
        print(f"  {name:<16} {seconds[0]:>12.2f} {later:>25.2f} {len(labels) / later:>10,.0f}",
              flush=True)
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB")
    print(f"  peak RSS {peak_rss_mib():,.0f} MiB (whole benchmark process)")


if __name__ == "__main__":
    main()
