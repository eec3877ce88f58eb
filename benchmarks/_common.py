"""Shared pieces of the speed benchmarks: data, the original pipeline, timing rounds."""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from octbench.data import load_dataset
from octbench.devices import describe, resolve_device, synchronize


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--scale", type=float, default=0.1, help="synthetic data scale")
    p.add_argument("--batches", type=int, default=100, help="batches per pipeline and round")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (median is kept)")
    p.add_argument("--batch-size", type=int, default=128)
    return p


def load_synthetic(scale: float):
    return load_dataset("synthetic", scale=scale)


def original_loader(data, split: str, batch_size: int, shuffle: bool, root: Path):
    """The seed project's input pipeline: medmnist Dataset of PIL images + ToTensor/Normalize.

    The synthetic arrays are written where medmnist expects octmnist.npz, so medmnist's own
    ``OCTMNIST`` class serves them exactly as it would serve the real file.
    """
    import medmnist
    from torch.utils.data import DataLoader
    from torchvision import transforms

    arrays = {}
    for s in ("train", "val", "test"):
        part = data.split(s)
        arrays[f"{s}_images"] = part.images.numpy()
        arrays[f"{s}_labels"] = part.labels.numpy().astype(np.uint8)[:, None]
    np.savez(root / "octmnist.npz", **arrays)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    class ScaledOCTMNIST(medmnist.OCTMNIST):
        def __len__(self):  # medmnist asserts the official split sizes; the data is scaled
            return self.imgs.shape[0]

    dataset = ScaledOCTMNIST(split=split, transform=transform, root=str(root))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


def temp_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="octbench-bench-"))


def measure(pipelines: dict, rounds: int, device) -> dict[str, float]:
    """Run each pipeline once per round, interleaved; return the median images/s of each.

    Each round starts one pipeline later (a, b, c, d; then b, c, d, a; ...): the first steps
    after a switch run slower (the previous pipeline's memory formats, caches and kernels), and
    rotating spreads that cost evenly instead of charging it to whoever follows (a).
    """
    names = list(pipelines)
    rates = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            synchronize(device)
            start = time.perf_counter()
            images = pipelines[name]()
            synchronize(device)
            rates[name].append(images / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def header(device_spec: str) -> torch.device:
    device = resolve_device(device_spec)
    info = describe(device)
    print(f"device: {info['name']} ({device}), torch {info['torch']}, "
          f"{info['threads']} threads, python {sys.version.split()[0]}")
    return device
