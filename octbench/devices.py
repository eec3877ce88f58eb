"""Devices and precision: resolve a device name, autocast, synchronise, describe hardware.

An unavailable device raises :class:`DeviceUnavailable`; the runner records the run as skipped.
Nothing here ever falls back to another device silently.

Must not import: octbench beyond errors (the engine and runner use it).
"""

from __future__ import annotations

import contextlib
import os
import platform

import torch

from octbench.errors import DeviceUnavailable

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """Turn ``cpu | cuda | cuda:N | mps | auto`` into an available :class:`torch.device`.

    ``auto`` picks CUDA, then MPS, then CPU. Anything unavailable raises DeviceUnavailable.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device '{spec}' is not available: no CUDA GPU is visible")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"device '{spec}' is not available: only {torch.cuda.device_count()} CUDA "
                "device(s) are visible"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"device '{spec}' is not available: MPS needs Apple silicon")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceUnavailable(f"device '{spec}' is not supported; use cpu, cuda, cuda:N or mps")
    return device


def check_devices(devices) -> None:
    """Refuse, before anything trains, devices of an experiment that this machine lacks.

    Raises:
        DeviceUnavailable: naming each missing device and the fix (``auto`` or ``cpu``).
    """
    missing = []
    for spec in devices:
        try:
            resolve_device(spec)
        except DeviceUnavailable as error:
            missing.append(str(error))
    if missing:
        raise DeviceUnavailable(
            f"{'; '.join(missing)}. Nothing was trained. Use devices: [auto] (the best device "
            "here) or [cpu], e.g. --set devices=[cpu], or run on a machine that has it.")


def check_precision(device: torch.device, precision: str) -> None:
    """Raise DeviceUnavailable when ``precision`` cannot run on ``device``."""
    if precision == "fp16" and device.type == "cpu":
        raise DeviceUnavailable("precision fp16 is not supported on cpu; use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceUnavailable(f"precision bf16 is not supported on {describe(device)['name']}")


def autocast(device: torch.device, precision: str, *, cache: bool = True):
    """Mixed-precision context for ``bf16`` / ``fp16``; a no-op context for ``fp32``.

    ``cache=False`` is required inside CUDA graph capture (cached casts would outlive it).
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision], cache_enabled=cache)


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` so that wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> dict:
    """Hardware facts stored in every run record (name, threads, memory, versions)."""
    info = {
        "device": str(device),
        "type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
    elif device.type == "mps":
        info.update(name=f"Apple MPS ({platform.machine()})")
    else:
        info.update(name=info["cpu"])
    return info
