"""Shared fixtures: a small MedMNIST-format npz file, experiment YAMLs and a CLI runner.

The npz fixture is deliberately independent of the synthetic renderer: 28 px images whose class
decides a simple pattern (a bright band at a class-dependent depth) under noise, with OCTMNIST's
kind of imbalance in train and val and a balanced test split. A reference CNN of width 0.25
trains on it in about a second per run on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# A suite started where SIGINT is ignored (a background job of a script, nohup) would pass that
# on to every octbench it starts, and the Ctrl-C tests would send a signal no one hears.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

PLUGINS = Path(__file__).resolve().parent / "plugins"

#: Per-class counts (CNV, DME, DRUSEN, NORMAL): imbalanced train/val, balanced test.
FIXTURE_COUNTS = {"train": (200, 70, 50, 280), "val": (40, 14, 10, 56), "test": (20, 20, 20, 20)}


FIXTURE_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


def make_npz(path: Path, *, size: int = 28, seed: int = 0,
             counts: dict[str, tuple[int, ...]] = FIXTURE_COUNTS,
             class_names: tuple[str, ...] | None = FIXTURE_CLASSES) -> Path:
    """Write a small MedMNIST-format npz: a class-dependent band plus noise, uint8 (N, H, W).

    ``class_names`` is stored as the file's string array (None: no names, labels only).
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    rows = np.arange(size)[:, None]
    for split, per_class in counts.items():
        labels = rng.permutation(np.repeat(np.arange(len(per_class)), per_class))
        depth = (0.25 + 0.15 * labels) * size  # one band depth per class
        centre = depth[:, None, None] + rng.normal(0, 1.5, (len(labels), 1, 1))
        band = np.exp(-((rows[None] - centre) ** 2) / 4.0) * np.ones((1, 1, size))
        images = 60 + 140 * band + rng.normal(0, 35, (len(labels), size, size))
        arrays[f"{split}_images"] = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)[:, None]
    if class_names is not None:
        arrays["class_names"] = np.array(class_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own ``$OCTBENCH_CACHE`` (listings, rendered and decoded data), so no
    test reads what another left, nor the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("OCTBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def oct_npz(tmp_path_factory) -> Path:
    """A valid MedMNIST-format file (see :func:`make_npz`), shared by the whole session."""
    return make_npz(tmp_path_factory.mktemp("data") / "tiny_oct.npz")


class TrainedRun(NamedTuple):
    """A complete run: its results folder (``results_dir``) and its run id."""

    results: Path
    run_id: str

    @property
    def folder(self) -> Path:
        """The run's own folder: record.json, best.pt, predictions.npz."""
        return self.results / "trained" / self.run_id


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """One complete run (a tiny CNN, one epoch on synthetic data), trained once per session for
    the tests that read a trained model; none may change it."""
    from octbench.config import parse_config
    from octbench.experiment import run_experiment
    from octbench.grid import expand_grid

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OCTBENCH_CACHE", str(root / "cache"))
        config = parse_config({
            "name": "trained", "data": {"name": "synthetic", "scale": 0.01, "test_scale": 0.1},
            "models": [{"name": "reference_cnn", "width": 0.25}], "strategies": ["none"],
            "seeds": [0], "train": {"epochs": 1, "threads": 1},
            "results_dir": str(root / "results")})
        run_experiment(config, quiet=True, say=lambda _: None)
    run = TrainedRun(root / "results", expand_grid(config)[0].run_id)
    assert (run.folder / "record.json").is_file() and (run.folder / "best.pt").is_file()
    return run


def experiment(tmp_path: Path, data_path: Path, **overrides) -> dict:
    """A quickstart-sized experiment as plain data: 1 tiny CNN x 4 strategies x 1 seed."""
    config = {
        "name": "tiny",
        "data": {"name": "npz", "path": str(data_path), "synthetic": True},
        "models": [{"name": "reference_cnn", "width": 0.25}],
        "strategies": ["none", "weighted_ce", "oversample", {"name": "focal", "gamma": 2.0}],
        "seeds": [0],
        "devices": ["cpu"],
        # cosine: the resume checkpoint must restore the scheduler too; dropout (in the model)
        # and oversample (a sampler) need the RNG states and the sampler's generator.
        "train": {"epochs": 3, "batch_size": 64, "lr": 2.0e-3, "schedule": "cosine",
                  "deterministic": True, "threads": 1},
        "results_dir": str(tmp_path / "results"),
    }
    config.update(overrides)
    return config


def write_yaml(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli_env(tmp_path: Path, *plugins: str, **extra: str) -> dict[str, str]:
    """Environment for a ``python -m octbench`` subprocess: private cache, test plugins."""
    env = dict(os.environ)
    env["OCTBENCH_CACHE"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), env.get("PYTHONPATH")]))
    env.pop("OCTBENCH_PLUGINS", None)
    if plugins:
        env["OCTBENCH_PLUGINS"] = ",".join(plugins)
    env.update(extra)
    return env


def imports_torch(code: str, tmp_path: Path) -> bool:
    """Whether running ``code`` in a fresh interpreter (project root, private cache) imports
    torch; the code must not fail."""
    probe = f"import sys\n{code}\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "True"


def _command(args: list[str], quiet: bool) -> list[str]:
    return [sys.executable, "-m", "octbench", *(["-q"] if quiet else []), *args]


def start_cli(args: list[str], env: dict[str, str], *, quiet: bool = True) -> subprocess.Popen:
    """Start ``python -m octbench ARGS`` in the project root, capturing text output.

    ``quiet=False`` keeps octbench's info log (e.g. "resuming ... after epoch 2") on stderr.
    """
    return subprocess.Popen(_command(args, quiet), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_cli(args: list[str], env: dict[str, str], *, quiet: bool = True, timeout: float = 300
            ) -> subprocess.CompletedProcess:
    """Run ``python -m octbench ARGS`` to the end."""
    return subprocess.run(_command(args, quiet), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def cli_in_process(argv: list[str], capsys) -> dict:
    """``octbench ARGV`` in this process: its exit code (argparse's included) and what it
    printed, ``{"code", "out", "err"}``."""
    from octbench import cli

    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return {"code": code, "out": out, "err": err}


def assert_usage_error(result, *expect: str) -> str:
    """A user error as octbench promises it: exit code 2, exactly one ``error:`` line on stderr,
    no traceback, and each of ``expect`` in the message. Returns stderr.

    ``result``: a finished ``subprocess`` run, the dict of :func:`cli_in_process`, or
    ``(exit code, stderr)``.
    """
    if isinstance(result, subprocess.CompletedProcess):
        code, err = result.returncode, result.stderr
    elif isinstance(result, dict):
        code, err = result["code"], result["err"]
    else:
        code, err = result
    assert code == 2, f"exit {code}, not 2:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, f"{len(errors)} 'error:' lines, not 1:\n{err[-3000:]}"
    for part in expect:
        assert part in err, f"{part!r} missing from:\n{err[-3000:]}"
    return err


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below ``folder`` (to prove nothing changed)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def restore_torch():
    """Undo the process-wide torch settings an in-process run changes (threads, determinism)."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = deterministic


#: Per-epoch history fields that measure the machine's speed, not the run's result.
TIMING = {"train_seconds", "val_seconds", "time_utc"}  # when and how long: not the outcome


def run_outcome(root: Path, fields: tuple[str, ...]) -> dict[str, dict]:
    """Run id -> what must not depend on how the runs were executed or interrupted: status,
    metrics, curves (without timings), ``fields`` of the record, predictions and weights."""
    import hashlib
    import json

    import numpy as np
    import torch

    from octbench.results import COMPLETE

    found = {}
    for path in sorted(Path(root).glob("*/record.json")):
        record = json.loads(path.read_text())  # never corrupt, whatever happened
        entry = {k: record[k] for k in ("status", "metrics", "best_epoch", "epochs_trained",
                                          "config", *fields)}
        entry["history"] = [{k: v for k, v in h.items() if k not in TIMING}
                            for h in record["history"]]
        if record["status"] == COMPLETE:
            with np.load(path.parent / "predictions.npz") as npz:
                entry["predictions"] = {k: (npz[k].dtype.str, npz[k].shape, npz[k].tobytes())
                                        for k in npz.files}
            best = torch.load(path.parent / "best.pt", map_location="cpu", weights_only=True)
            entry["weights"] = {k: hashlib.sha256(v.numpy().tobytes()).hexdigest()
                                for k, v in best["model"].items()}
        found[record["run_id"]] = entry
    return found


def leftovers(root: Path) -> list[str]:
    """Temp files, lock files and resume checkpoints below ``root``."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if p.name.endswith(".tmp") or p.name in (".lock", "resume.pt"))


def require_robustness_extra() -> None:
    """Skip the calling test module, with the install line, when the robustness extra or the
    system libraries under it are missing."""
    pytest.importorskip("medmnistc", reason="robustness extra not installed: "
                                            'pip install "octbench[robustness]"')
    pytest.importorskip("wand.image", reason="Wand needs the ImageMagick library "
                                             "(apt-get install libmagickwand-6.q16-6)")
    pytest.importorskip("cv2", reason="medmnistc needs OpenCV")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """One report of 3 strategies x 3 seeds (+ a failed and a skipped run), built once for all
    the ``test_report_*`` modules."""
    from report_helpers import build_example

    return build_example(tmp_path_factory.mktemp("grid"))


@pytest.fixture
def no_figures(monkeypatch) -> None:
    """Skip drawing (about a second per report) where a test reads only the text."""
    monkeypatch.setattr("octbench.report.build._make_figures", lambda *args, **kwargs: [])
