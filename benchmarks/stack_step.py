"""Training steps of N runs one after another against the same N runs stacked, interleaved.

    python benchmarks/stack_step.py [--device cpu|cuda] [--stacks 4 12] [--batches 10]
                                    [--rounds 3] [--scale 0.1]

For each stack size N: N reference CNNs (their own seeds) each train ``--batches`` batches with
``engine.train_one_epoch``, one after another (what ``run --stack 1`` does), and the same N train
the same batches stacked with ``stacking.train_stacked_epoch`` (``run --stack N``). The settings
run in rotating rounds (median kept), so a machine whose load drifts charges both alike: the
load-robust companion of benchmarks/grid_throughput.py, which times whole grids end to end.
Prints training images/s of each and the ratio. SYNTHETIC data.
"""

from __future__ import annotations

import torch
from _common import header, load_synthetic, measure, parser

from octbench.engine import make_optimizer, seed_everything, train_one_epoch
from octbench.models import build_model
from octbench.stacking import build_stacked, load_members, train_stacked_epoch
from octbench.strategies import build_strategy


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(batches=10, rounds=3)
    p.add_argument("--stacks", type=int, nargs="+", default=[4, 12])
    args = p.parse_args()
    device = header(args.device)
    data = load_synthetic(args.scale)
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    cuda = device.type == "cuda"
    length = args.batches * args.batch_size
    pipelines = {}
    for n in args.stacks:
        models, criteria = [], []
        for seed in range(n):
            seed_everything(seed)
            models.append(build_model("reference_cnn").to(device)
                          .to(memory_format=torch.channels_last))
            criteria.append(build_strategy("none", data.train.class_counts(4))
                            .criterion.to(device))
        optimizers = [make_optimizer(m.parameters(), "adam", lr=1e-3, fused=cuda or None,
                                     capturable=cuda) for m in models]
        stacked = build_stacked(models[0], n).to(device).to(memory_format=torch.channels_last)
        load_members(stacked, models)
        stacked_optimizer = make_optimizer(stacked.parameters(), "adam", lr=1e-3,
                                           fused=cuda or None, capturable=cuda)
        orders = torch.stack([torch.randperm(len(labels))[:length] for _ in range(n)])

        def alone(models=models, optimizers=optimizers, criteria=criteria, orders=orders):
            for model, optimizer, criterion, order in zip(models, optimizers, criteria, orders,
                                                          strict=True):
                train_one_epoch(model, images, labels, order, criterion=criterion,
                                optimizer=optimizer, batch_size=args.batch_size,
                                channels_last=True)
            return orders.numel()

        def together(stacked=stacked, optimizer=stacked_optimizer, criteria=criteria,
                     orders=orders):
            train_stacked_epoch(stacked, images, labels, orders, criteria=criteria,
                                optimizer=optimizer, batch_size=args.batch_size,
                                channels_last=True)
            return orders.numel()

        pipelines[f"{n} runs one by one"] = alone
        pipelines[f"{n} runs stacked"] = together
    rates = measure(pipelines, args.rounds, device)
    print(f"reference_cnn, batch {args.batch_size}, {args.batches} batches per run and round, "
          f"{args.rounds} rotating rounds (median), SYNTHETIC data")
    for n in args.stacks:
        one, many = rates[f"{n} runs one by one"], rates[f"{n} runs stacked"]
        print(f"  N={n:<3} one by one {one:>9,.0f} img/s   stacked {many:>9,.0f} img/s   "
              f"stacked / one by one {many / one:.2f}x")


if __name__ == "__main__":
    main()
