"""Use a trained model: on raw OCT scans (PNG / JPEG / TIFF files of any size), or on a split
of a dataset (``octbench evaluate``).

Each scan is preprocessed exactly as MedMNIST built OCTMNIST (:mod:`octbench.data.preprocess`);
a file that cannot be read gets its own error and the others are still predicted.

Must not import: config, the runner, report or tuning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from octbench.calibration import apply_temperature
from octbench.corrupted_eval import CorruptionPlan, evaluate_corruptions
from octbench.data import OCTData
from octbench.data.preprocess import load_scan
from octbench.engine import Predictions, evaluate
from octbench.errors import DataError, OctbenchError
from octbench.metrics import compute_metrics
from octbench.models import build_model, use_cosine_head
from octbench.results import ResultsStore, RunRecord, UnsafeCheckpoint, load_checkpoint
from octbench.untrusted import MAX_CLASSES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictor:
    """A trained model with what is needed to use it: class names, input size, logit offset."""

    model: nn.Module
    class_names: tuple[str, ...]
    img_size: int
    logit_offset: torch.Tensor | None
    source: Path
    normalize: tuple[float, float] = (0.5, 0.5)
    #: How the run's own evaluation fed the model (memory format, autocast precision, batch):
    #: scoring the same images the same way gives the record's numbers to the last bit.
    channels_last: bool = True
    precision: str = "fp32"
    eval_batch_size: int = 256

    #: The training data (:func:`octbench.provenance.provenance`); empty for older checkpoints.
    provenance: dict = field(default_factory=dict)
    #: Temperature fitted on validation at the end of training (1.0: none, older checkpoints).
    temperature: float = 1.0
    #: Whether the checkpoint holds a fitted temperature.
    calibrated: bool = False

    def calibration_note(self) -> str:
        """One line on how the probabilities were calibrated, for the user to see."""
        if not self.calibrated:
            return ("probabilities are the model's softmax, not calibrated (the checkpoint has "
                    "no fitted temperature)")
        return (f"probabilities temperature-scaled with T = {self.temperature:.3f} (fitted on "
                "the validation split at the end of training; the predicted class is unchanged)")

    @property
    def synthetic(self) -> bool | None:
        """True if the model learned from synthetic data; None if the checkpoint does not say."""
        value = self.provenance.get("synthetic")
        return None if value is None else bool(value)

    def trained_on(self) -> str:
        """One line on the training data, e.g. ``model trained on SYNTHETIC data - ...``."""
        if self.synthetic:
            return "model trained on SYNTHETIC data - not a diagnosis"
        if self.synthetic is None:
            return ("the checkpoint does not say what data the model was trained on (made by an "
                    "older octbench) - not a diagnosis")
        return (f"model trained on {self.provenance.get('dataset', '?')} data "
                f"({self.provenance.get('fingerprint', '?')[:19]}) - not a diagnosis")

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) for uint8 images (N, size, size)."""
        images = torch.as_tensor(np.array(images))
        scores = self.predict(images, torch.zeros(len(images), dtype=torch.int64)).scores
        # The validation-fitted temperature (the argmax is unchanged); predict() stays raw, as
        # the run's own evaluation scored.
        return apply_temperature(scores, self.temperature) if self.calibrated else scores

    def predict(self, images: torch.Tensor, labels: torch.Tensor) -> Predictions:
        """Score uint8 images (N, size, size) exactly as the run's evaluation did."""
        predictions, _ = evaluate(self.model, images, labels, batch_size=self.eval_batch_size,
                                  precision=self.precision, logit_offset=self.logit_offset,
                                  channels_last=self.channels_last, normalize=self.normalize)
        return predictions


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


#: Largest image side a checkpoint may declare (the largest any dataset here loads).
MAX_IMG_SIZE = 1024


def _checkpoint_problem(state) -> str | None:
    """Sizes a checkpoint declares, checked before a model is built for them: its class names
    (strings, 2 to MAX_CLASSES) and image size."""
    if not isinstance(state, dict):
        return "it holds no mapping of weights and settings"
    names, size = state.get("class_names"), state.get("img_size")
    if not (isinstance(names, (list, tuple)) and 2 <= len(names) <= MAX_CLASSES
            and all(isinstance(n, str) for n in names)):
        shown = f"{len(names):,} entries" if isinstance(names, (list, tuple)) else repr(names)
        return f"class_names must list 2 to {MAX_CLASSES} names, got {shown}"
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMG_SIZE:
        return f"img_size must be an integer from 1 to {MAX_IMG_SIZE}, got {size!r}"
    return None


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
    problem = _checkpoint_problem(state)
    if problem is not None:
        raise OctbenchError(f"{path} is not a usable octbench checkpoint ({problem}); pass the "
                            "best.pt of a complete run.")
    try:
        inputs = checkpoint_inputs(state)
        config = dict(state["model_config"])
        # The checkpoint holds the trained weights: nothing is loaded from elsewhere.
        config.pop("pretrained", None)
        config.pop("pretrained_strict", None)
        model = build_model(config.pop("name"), num_classes=len(state["class_names"]),
                            in_chans=inputs["in_chans"], img_size=state["img_size"], **config)
        if state.get("cosine_head") is True:  # trained with LDAM's cosine classifier
            use_cosine_head(model)
        model.load_state_dict(state["model"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, AttributeError,
            EOFError, OctbenchError) as error:
        raise OctbenchError(f"{path} is not a usable octbench checkpoint ({error}); pass the "
                            "best.pt of a complete run.") from None
    model.eval()
    temperature = state.get("temperature", None)
    if temperature is not None and not (isinstance(temperature, float | int)
                                        and 0 < temperature < math.inf):
        raise OctbenchError(f"{path} holds temperature {temperature!r}, not a positive number; "
                            "it is not a usable octbench checkpoint: pass the best.pt of a "
                            "complete run.")
    if inputs["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return Predictor(model=model, class_names=tuple(state["class_names"]),
                     temperature=float(temperature or 1.0), calibrated=temperature is not None,
                     img_size=int(state["img_size"]), logit_offset=state.get("logit_offset"),
                     source=path, normalize=inputs["normalization"],
                     channels_last=inputs["channels_last"], precision=inputs["precision"],
                     eval_batch_size=inputs["eval_batch_size"],
                     provenance=dict(state.get("provenance") or {}))


#: How checkpoints written before ``inputs`` was recorded were evaluated.
OLD_INPUTS = {"in_chans": 1, "channels_last": True, "precision": "fp32", "eval_batch_size": 256}


def checkpoint_inputs(state: dict) -> dict:
    """How the run fed its model (normalisation, channels, memory format, precision, batch),
    validated: a checkpoint is untrusted.

    Raises:
        ValueError: a value of the wrong type or out of range, named.
    """
    inputs = {**OLD_INPUTS, "normalization": state.get("normalization", (0.5, 0.5)),
              **dict(state.get("inputs") or {})}
    mean, std = (float(v) for v in inputs["normalization"])
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise ValueError(f"normalisation mean {mean}, std {std} (a finite mean and std > 0)")
    checks = {"in_chans": inputs["in_chans"] == 1,
              "channels_last": isinstance(inputs["channels_last"], bool),
              "precision": inputs["precision"] in ("fp32", "bf16", "fp16"),
              "eval_batch_size": isinstance(inputs["eval_batch_size"], int)
              and 1 <= inputs["eval_batch_size"] <= 1 << 16}
    bad = [f"{key}={inputs[key]!r}" for key, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"unusable input settings {', '.join(bad)}")
    precision = inputs["precision"]
    if precision == "fp16":  # trained on a GPU; CPU autocast has no fp16, so score in fp32
        log.warning("the run evaluated in fp16 on a GPU; scoring on the CPU in fp32, so the "
                    "numbers may differ from the record's in the last digits")
        precision = "fp32"
    return {**inputs, "normalization": (mean, std), "precision": precision}


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


def check_compatible(predictor: Predictor, data: OCTData) -> None:
    """Refuse data the model cannot score: another class count or input size.

    Raises:
        DataError: naming both sides and the fix.
    """
    problems = []
    if data.num_classes != len(predictor.class_names):
        problems.append(f"the model has {len(predictor.class_names)} classes "
                        f"({', '.join(predictor.class_names)}) but the data have "
                        f"{data.num_classes} ({', '.join(data.class_names)})")
    if data.size != predictor.img_size:
        problems.append(f"the model takes {predictor.img_size} px images but the data are "
                        f"{data.size} px (set the data's size: {predictor.img_size})")
    if problems:
        raise DataError(f"cannot evaluate {predictor.source} on {data.name} data: "
                        + "; ".join(problems) + ". Evaluate on data like the training data.")


def _label_map(predictor: Predictor, data: OCTData) -> torch.Tensor:
    """Data label -> model label: by name when both name the same classes (an image folder
    sorts them alphabetically, an npz may not), by index when either side only numbers them.

    Raises:
        DataError: both sides name their classes, differently.
    """
    ours, theirs = list(predictor.class_names), list(data.class_names)
    if theirs == ours:
        return torch.arange(len(ours))
    if sorted(theirs) == sorted(ours):
        log.warning("the data list their classes as %s, the model as %s; matched by name",
                    ", ".join(theirs), ", ".join(ours))
        return torch.tensor([ours.index(name) for name in theirs])
    numbered = [str(i) for i in range(len(ours))]
    if numbered in (ours, theirs):
        log.warning("the data call their classes %s, the model %s; matched by label index",
                    ", ".join(theirs), ", ".join(ours))
        return torch.arange(len(ours))
    raise DataError(f"the data's classes ({', '.join(theirs)}) are not the model's "
                    f"({', '.join(ours)}); evaluate on data with the same classes, or name them "
                    "alike (data.class_names).")


def evaluate_checkpoint(predictor: Predictor, data: OCTData, split: str = "test") -> dict:
    """Score a trained checkpoint on one split of a dataset, on the CPU.

    Returns:
        ``{"metrics": {split: ...}, "model": ..., "dataset": ...}``: the metrics exactly as a
        run record holds them (:func:`octbench.metrics.compute_metrics`), with both sides'
        provenance.

    Raises:
        DataError: the data do not fit the model (:func:`check_compatible`).

    Example:
        >>> report = evaluate_checkpoint(load_predictor("quickstart/reference_cnn__none"),
        ...                              load_dataset("synthetic", scale=0.05))  # doctest: +SKIP
        >>> report["metrics"]["test"]["macro_f1"]  # doctest: +SKIP
    """
    check_compatible(predictor, data)
    part = data.split(split)
    labels = _label_map(predictor, data)[part.labels]
    # The inputs, memory format, precision and batch size of the run's own evaluation, so the
    # numbers match the run record's to the last bit when the data are the run's own.
    predictions = predictor.predict(part.images, labels)
    return {
        "split": split,
        "metrics": {split: compute_metrics(predictions.labels, predictions.scores,
                                           predictor.class_names)},
        "model": {"checkpoint": str(predictor.source), **predictor.provenance},
        "dataset": {k: v for k, v in data.describe().items() if k != "class_counts"}
        | {"class_counts": data.class_counts()[split]},
    }


def own_record(predictor: Predictor, data: OCTData) -> tuple[ResultsStore, RunRecord] | None:
    """The complete run record beside the checkpoint, if these data are the run's own (same
    content fingerprint); None for a loose checkpoint, other data or an unreadable record."""
    run_dir = predictor.source.parent
    store = ResultsStore(run_dir.parent)
    try:
        record = store.read(run_dir.name)
    except (OSError, ValueError, OctbenchError):
        return None
    if (record is None or record.status != "complete"
            or record.dataset.get("fingerprint") != data.fingerprint):
        return None
    return store, record


def evaluate_corrupted_checkpoint(predictor: Predictor, data: OCTData, plan: CorruptionPlan, *,
                                  clean: dict, data_params: dict | None = None,
                                  store: ResultsStore | None = None,
                                  run_id: str | None = None,
                                  previous: dict | None = None) -> dict:
    """Score a trained checkpoint on the corrupted test sets of ``plan``, on the CPU: the
    ``robustness`` section of a run record (:func:`octbench.corrupted_eval.evaluate_corruptions`).
    """
    check_compatible(predictor, data)
    labels = _label_map(predictor, data)[data.test.labels]
    model = predictor.model.to(memory_format=torch.channels_last)
    return evaluate_corruptions(model, data, plan, clean=clean, data_params=data_params,
                                normalize=predictor.normalize,
                                logit_offset=predictor.logit_offset, labels=labels,
                                class_names=predictor.class_names, channels_last=True,
                                store=store, run_id=run_id, previous=previous)

