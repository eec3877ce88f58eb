"""A run's epoch checkpoint (``resume.pt``): what it holds (:func:`save_resume`), whether a file
holds a usable one, and continuing a run from it (:func:`resume_run`), with the global random
states it saves and restores. Written after every epoch, so an interrupted run resumes where it
stopped; loaded weights-only (plain tensors, numbers and tuples), as it may come from a stranger.

Must not import: the CLI, report or tuning.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from octbench.errors import OctbenchError
from octbench.results import ResultsStore

if TYPE_CHECKING:  # the runner builds the run and imports this module
    from octbench.runner import RunSetup

log = logging.getLogger(__name__)


def save_resume(run: RunSetup, store: ResultsStore, rng: dict) -> None:
    """Save ``run``'s epoch checkpoint: everything :func:`resume_run` restores (``rng``: the
    global random states, :func:`get_rng_state` for a run alone)."""
    model, scheduler, scaler, augmenter = run.model, run.scheduler, run.scaler, run.augmenter
    store.save_state(run.spec.run_id, ResultsStore.RESUME, {
        "model": model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "order_rng": run.order_rng.get_state(), "rng": rng, "state": run.state,
        "augment_rng": augmenter.state_dict() if augmenter is not None else None,
    })


def resume_run(run: RunSetup, store: ResultsStore) -> None:
    """Continue ``run`` from its epoch checkpoint, if it has a usable one: weights, optimiser,
    scheduler, loss scaler, sampling and augmentation generators, global random states and the
    training state. An inconsistent checkpoint is discarded (the run starts from scratch); one
    that fails half-applied is removed and the attempt fails (OctbenchError)."""
    spec, cfg = run.spec, run.spec.train
    model, optimizer, scheduler, scaler = run.model, run.optimizer, run.scheduler, run.scaler
    order_rng, augmenter = run.order_rng, run.augmenter
    resume = store.load_state(spec.run_id, ResultsStore.RESUME)
    problem = _resume_problem(resume, cfg.epochs) if resume is not None else None
    if problem is not None:
        # Checked before anything is applied, so the model is still a clean start.
        log.warning("%s is inconsistent (%s); it is discarded and the run starts from scratch",
                    store.run_dir(spec.run_id) / ResultsStore.RESUME, problem)
        store.remove(spec.run_id, ResultsStore.RESUME)
        resume = None
    if resume is not None:
        try:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            if scaler is not None:
                scaler.load_state_dict(resume["scaler"])
            order_rng.set_state(resume["order_rng"])
            if augmenter is not None:
                augmenter.load_state_dict(resume["augment_rng"])
            set_rng_state(resume["rng"])
            run.state = resume["state"]
            epoch = int(run.state["epoch"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            # Half-applied, the model is no longer a clean start: drop the file and fail this
            # attempt; the rerun trains from scratch.
            store.remove(spec.run_id, ResultsStore.RESUME)
            raise OctbenchError(
                f"{store.run_dir(spec.run_id) / ResultsStore.RESUME} does not fit this run "
                f"({type(error).__name__}: {error}); it was removed, rerun to train this run "
                "from scratch") from None
        log.info("resuming %s after epoch %d", spec.run_id, epoch)


def _resume_problem(resume: dict, epochs: int) -> str | None:
    """What makes a resume state unusable for a run of ``epochs`` epochs, or None.

    A state comes from a file (a copied results folder, a crafted one): one that claims
    trained epochs must also hold their history and the best model so far, or finishing the
    run would fail every time it is rerun.
    """
    missing = [k for k in ("model", "optimizer", "order_rng", "rng", "state") if k not in resume]
    if missing:
        return f"it lacks {', '.join(missing)}"
    state = resume["state"]
    if not isinstance(state, dict):
        return "its training state is not a mapping"
    epoch, history = state.get("epoch"), state.get("history")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        return f"its epoch {epoch!r} is not a whole number from 0 to {epochs}"
    if not isinstance(history, list) or len(history) > epoch or (epoch and not history):
        return f"its history does not match its epoch {epoch}"
    if epoch == 0:
        return None
    best_epoch, best_val = state.get("best_epoch"), state.get("best_val")
    if not isinstance(state.get("best"), dict) or not (
            isinstance(best_epoch, int) and 1 <= best_epoch <= len(history)):
        return f"it claims {epoch} trained epoch(s) but holds no best model"
    if not (isinstance(best_val, (tuple, list)) and len(best_val) == 2
            and isinstance(best_val[0], dict) and {"scores", "labels"} <= best_val[0].keys()):
        return "its best model's validation predictions are missing"
    for key in ("stale", "best_value"):
        if key not in state:
            return f"its training state lacks {key}"
    return None


def get_rng_state() -> dict:
    """The global random states (torch, NumPy, Python, CUDA, MPS) as a resume saves them."""
    # Only tensors, numbers and tuples, so that resume.pt loads with weights_only=True.
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"bit_generator": bit_generator,
                       "key": torch.from_numpy(key.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached_gaussian)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():  # dropout on MPS draws from the MPS generator
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["bit_generator"], numpy_state["key"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
