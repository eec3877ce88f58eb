"""Training throughput: the original pipeline against octbench, interleaved in one process.

    python benchmarks/train_throughput.py [--device cpu|cuda|mps] [--rounds 4] [--batches 30]

(a) original: medmnist Dataset of PIL images + ToTensor/Normalize + DataLoader, the seed
    project's loop (``loss.item()`` every step);
(b) octbench fp32: ``engine.train_one_epoch`` on uint8 tensors, channels_last (the defaults of
    ``octbench run``; on CUDA the step is replayed as a CUDA graph);
(c) octbench bf16: the same under bf16 autocast;
(d) pure compute: the model of (b), eager, on one pre-normalised batch reused (the ceiling for
    (b) on a CPU);
(e) octbench fp32 + flip + affine: (b) with ``train.augment: [hflip, affine]`` (per-image
    random flips and affine warps on the device);
(f) pure compute bf16: the model of (c) under bf16 autocast on one pre-normalised batch reused
    (the ceiling for (c));
(g) octbench fp32 + medmnist_c, in turn: (b) with ``train.augment: [medmnist_c]`` (MedMNIST-C's
    random corruption per image, medmnistc's own code on the host), each batch corrupted when
    its step comes (``prefetch=0``);
(h) octbench fp32 + medmnist_c: the same as ``octbench run`` trains it, the next batches
    corrupted in a background thread while the model trains (``prefetch=2``, the default);
    (g) and (h) only with the robustness extra installed.
Prints the median images/s of each, the ratios b/a, c/a, b/d, e/b, g/b, h/b, h/g and c/f, and the
peak RSS.
"""

from __future__ import annotations

import copy

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

from octbench.augment import build_augmenter
from octbench.devices import autocast
from octbench.engine import to_input, train_one_epoch
from octbench.errors import OctbenchError
from octbench.models import build_model
from octbench.strategies import build_strategy


def _forever(loader):
    # Re-iterates the DataLoader, so every batch pays the per-sample work again
    # (itertools.cycle would replay cached batches after the first pass).
    while True:
        yield from loader


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    device = header(args.device)
    data = load_synthetic(args.scale)
    n = args.batches * args.batch_size
    torch.manual_seed(0)
    reference = build_model("reference_cnn")
    criterion = build_strategy("none", data.train.class_counts(4)).criterion.to(device)

    def fresh(channels_last=False):
        model = copy.deepcopy(reference).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    # (a) the original pipeline
    loader = original_loader(data, "train", args.batch_size, True, temp_root())
    model_a, opt_a = fresh()
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = _forever(loader)

    def original():
        model_a.train()
        running = 0.0
        for _ in range(args.batches):
            images, labels = next(batches)
            images, labels = images.to(device), labels.squeeze(1).long().to(device)
            opt_a.zero_grad()
            loss = loss_fn(model_a(images), labels)
            loss.backward()
            opt_a.step()
            running += loss.item()
        return args.batches * args.batch_size

    images = data.train.images.to(device)
    labels = data.train.labels.to(device)
    generator = torch.Generator().manual_seed(0)

    def octbench_run(precision, channels_last, augment=(), prefetch=2):
        model, opt = fresh(channels_last)
        augmenter = build_augmenter(augment, seed=0, device=device, prefetch=prefetch)

        def step():
            order = torch.randint(len(labels), (n,), generator=generator)
            train_one_epoch(model, images, labels, order, criterion=criterion, optimizer=opt,
                            batch_size=args.batch_size, precision=precision,
                            channels_last=channels_last, augment=augmenter)
            return n
        return step

    x = to_input(images[: args.batch_size], channels_last=True)
    y = labels[: args.batch_size]

    def compute_run(precision):
        model, opt = fresh(channels_last=True)

        def compute():
            model.train()
            for _ in range(args.batches):
                opt.zero_grad(set_to_none=True)
                with autocast(device, precision):
                    loss = criterion(model(x), y)
                loss.backward()
                opt.step()
            return n
        return compute

    pipelines = {"(a) original": original, "(b) octbench fp32": octbench_run("fp32", True),
                 "(c) octbench bf16": octbench_run("bf16", True),
                 "(d) pure compute": compute_run("fp32"),
                 "(e) fp32 + flip + affine": octbench_run("fp32", True, ["hflip", "affine"]),
                 "(f) pure compute bf16": compute_run("bf16")}
    try:
        pipelines["(g) medmnist_c in turn"] = octbench_run("fp32", True, ["medmnist_c"],
                                                           prefetch=0)
        pipelines["(h) medmnist_c thread"] = octbench_run("fp32", True, ["medmnist_c"])
    except OctbenchError as error:  # the robustness extra is missing
        print(f"(g) skipped: {error}")
    if device.type == "mps" or (device.type == "cuda" and not torch.cuda.is_bf16_supported()):
        del pipelines["(c) octbench bf16"]  # no bf16 autocast there
        del pipelines["(f) pure compute bf16"]
    measure(pipelines, 1, device)  # warm-up
    rates = measure(pipelines, args.rounds, device)
    print(f"reference_cnn, batch {args.batch_size}, 28 px, median of {args.rounds} "
          f"interleaved rounds of {n} images")
    for name, rate in rates.items():
        print(f"  {name:<20} {rate:>9,.0f} images/s")
    a, b, d = rates["(a) original"], rates["(b) octbench fp32"], rates["(d) pure compute"]
    e = rates["(e) fp32 + flip + affine"]
    print(f"  b/a = {b / a:.2f}   b/d = {b / d:.2f}   e/b = {e / b:.2f} "
          f"(augmentation overhead {b / e - 1:.0%})", end="")
    if "(g) medmnist_c in turn" in rates:
        g, h = rates["(g) medmnist_c in turn"], rates["(h) medmnist_c thread"]
        print(f"   g/b = {g / b:.2f}   h/b = {h / b:.2f} (medmnist_c overhead in turn "
              f"{b / g - 1:.0%}, with the thread {b / h - 1:.0%})   h/g = {h / g:.2f}", end="")
    if "(c) octbench bf16" in rates:
        c, f = rates["(c) octbench bf16"], rates["(f) pure compute bf16"]
        print(f"   c/a = {c / a:.2f}   c/f = {c / f:.2f}")
    else:
        print()
    print(f"  peak RSS {peak_rss_mib():,.0f} MiB (whole benchmark process)")


if __name__ == "__main__":
    main()
