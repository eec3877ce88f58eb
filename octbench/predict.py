"""Run a trained model on raw OCT scans (PNG / JPEG / TIFF files of any size).

Each scan is preprocessed exactly as MedMNIST built OCTMNIST (:mod:`octbench.data.preprocess`);
a file that cannot be read gets its own error and the others are still predicted.

Must not import: config, the runner, report or tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from octbench.data.preprocess import load_scan
from octbench.engine import to_input
from octbench.errors import DataError, OctbenchError
from octbench.models import build_model
from octbench.results import ResultsStore, UnsafeCheckpoint, load_checkpoint


@dataclass(frozen=True)
class Predictor:
    """A trained model with what is needed to use it: class names, input size, logit offset."""

    model: nn.Module
    class_names: tuple[str, ...]
    img_size: int
    logit_offset: torch.Tensor | None
    source: Path
    normalize: tuple[float, float] = (0.5, 0.5)

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) for uint8 images (N, size, size)."""
        logits = self.model(to_input(torch.as_tensor(np.array(images)),
                                     normalize=self.normalize)).float()
        if self.logit_offset is not None:
            logits = logits + self.logit_offset
        return torch.softmax(logits, dim=1).numpy()


@dataclass(frozen=True)
class ScanPrediction:
    """The outcome for one file: probabilities, or the error that prevented them."""

    path: str
    probabilities: dict[str, float] | None = None
    error: str | None = None

    @property
    def top_class(self) -> str | None:
        if self.probabilities is None:
            return None
        return max(self.probabilities, key=self.probabilities.get)


def find_checkpoint(run: str, results_dir: str | Path = "results") -> Path:
    """Resolve ``--run``: a checkpoint file, a run folder, or a run id or unique prefix of one,
    optionally after its experiment (``quickstart/reference_cnn__weighted_ce``)."""
    path = Path(run)
    if path.is_file():
        return path
    if (path / ResultsStore.BEST).is_file():
        return path / ResultsStore.BEST
    root = Path(results_dir)
    pattern = f"{run}*/{ResultsStore.BEST}" if "/" in run else f"*/{run}*/{ResultsStore.BEST}"
    matches = sorted(root.glob(pattern))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(m.parent.name for m in matches[:5])
        raise OctbenchError(f"run '{run}' is ambiguous in {results_dir}: matches {names}; "
                            "give more of the run id.")
    raise OctbenchError(f"no trained run '{run}' in {results_dir} and no such checkpoint file; "
                        "pass a run id from `results/<experiment>/`, a run folder, or a best.pt "
                        "file (use --results-dir if results live elsewhere).")


def load_predictor(run: str, results_dir: str | Path = "results") -> Predictor:
    """Load the selected checkpoint of a run for inference on the CPU."""
    path = find_checkpoint(run, results_dir)
    try:
        state = load_checkpoint(path)
    except UnsafeCheckpoint as error:
        raise OctbenchError(
            f"{error}. octbench's own best.pt files load without pickle; if this one came from "
            "an older octbench, retrain it: delete its run folder and run `python -m octbench "
            "run <experiment.yaml>` again (completed runs are kept).") from None
    except OctbenchError as error:
        raise OctbenchError(f"{error}; it is not a usable octbench checkpoint: pass the best.pt "
                            "of a complete run.") from None
    try:
        config = dict(state["model_config"])
        config.pop("pretrained", None)  # the checkpoint holds the trained weights
        model = build_model(config.pop("name"), num_classes=len(state["class_names"]),
                            in_chans=1, img_size=state["img_size"], **config)
        model.load_state_dict(state["model"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, AttributeError,
            EOFError, OctbenchError) as error:
        raise OctbenchError(f"{path} is not a usable octbench checkpoint ({error}); pass the "
                            "best.pt of a complete run.") from None
    model.eval()
    return Predictor(model=model, class_names=tuple(state["class_names"]),
                     img_size=int(state["img_size"]), logit_offset=state.get("logit_offset"),
                     source=path, normalize=tuple(state.get("normalization", (0.5, 0.5))))


def predict_files(predictor: Predictor, paths: list[str]) -> list[ScanPrediction]:
    """Predict every readable file; unreadable ones carry their error instead."""
    results = []
    for path in paths:
        try:
            image = load_scan(path, size=predictor.img_size)
        except DataError as error:
            results.append(ScanPrediction(str(path), error=str(error)))
            continue
        probabilities = predictor.probabilities(image[None])[0]
        results.append(ScanPrediction(str(path), probabilities={
            name: float(p) for name, p in zip(predictor.class_names, probabilities, strict=True)}))
    return results
