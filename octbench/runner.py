"""One run: set it up (or resume it), train its epochs, finish it with exactly one record.

:func:`execute_run` is the entry point; the grid (:mod:`octbench.experiment`) and the executors
(:mod:`octbench.executors`) call it per run, tuning per trial. A run reads in four steps:

- setup: :func:`setup_run` seeds and builds the model, strategy, optimiser and generators
  (:class:`RunSetup`), then :func:`resume_run` continues from the epoch checkpoint if there is one;
- epochs: each draws its order (:func:`epoch_order`), trains, evaluates on validation and is
  recorded by :func:`end_epoch` (history, best weights, early stopping, the epoch checkpoint);
- finish: :func:`complete_run` restores the best weights, scores the test split (and the
  corrupted sets), saves predictions and the checkpoint, and writes the COMPLETE record;
- any other ending writes a FAILED, SKIPPED or INTERRUPTED record (:class:`RecordWriter`).

The stacked runs (:mod:`octbench.stacked_runs`) train several runs from the same setup, epoch
and finish steps.

Must not import: the grid's executors, the CLI, report or tuning.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from octbench.augment import build_augmenter
from octbench.calibration import calibration_summary, fit_temperature
from octbench.corrupted_eval import PARTIAL, evaluate_corruptions
from octbench.data import OCTData
from octbench.devices import check_precision, describe, resolve_device
from octbench.engine import (
    Predictions,
    default_eval_batch,
    evaluate,
    make_optimizer,
    make_scheduler,
    seed_everything,
    train_one_epoch,
)
from octbench.errors import DataError, DeviceUnavailable
from octbench.fileio import UnsafePath
from octbench.grid import RunSpec
from octbench.metrics import METRICS, compute_metrics
from octbench.models import (
    build_model,
    count_parameters,
    describe_weights,
    freeze_all_but_head,
    input_normalization,
    use_cosine_head,
)
from octbench.progress import RunProgress, single_run
from octbench.provenance import git_commit, provenance, versions
from octbench.results import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    SKIPPED,
    ResultsStore,
    RunRecord,
    StorageError,
)
from octbench.resume import get_rng_state, resume_run, save_resume
from octbench.strategies import build_strategy

log = logging.getLogger(__name__)

#: ``on_epoch(epoch, val_metrics)`` after each epoch; tuning uses it to report and prune.
EpochCallback = Callable[[int, dict], None]


INTERRUPTED_MESSAGE = "interrupted (Ctrl-C or SIGTERM); rerun to resume from the last epoch"


def execute_run(spec: RunSpec, data: OCTData, store: ResultsStore, *, quiet: bool = True,
                on_epoch: EpochCallback | None = None, evaluate_test: bool = True,
                kind: str = "run", progress: RunProgress | None = None) -> RunRecord:
    """Run one spec and write its record; failures become FAILED records, not exceptions.

    KeyboardInterrupt (Ctrl-C, or SIGTERM turned into it by the CLI) writes an INTERRUPTED
    record and propagates; the epoch checkpoint stays so the next call resumes from it.
    Exceptions raised by ``on_epoch`` (e.g. ``optuna.TrialPruned``) propagate as well.
    """
    finish = RecordWriter(spec, data, store, kind=kind)
    try:
        device = resolve_device(spec.device)
        check_precision(device, spec.train.precision)
    except DeviceUnavailable as reason:
        return finish(SKIPPED, str(reason))
    if spec.train.threads:  # before describing the hardware, which records the thread count
        torch.set_num_threads(spec.train.threads)
    finish.base["hardware"] = describe(device)
    try:
        if progress is None:
            progress = single_run(spec.train.epochs, quiet=quiet)
        return _train(spec, data, store, device, finish, progress=progress, on_epoch=on_epoch,
                      evaluate_test=evaluate_test)
    except KeyboardInterrupt:
        # An interrupt that lands after the COMPLETE record was written must not replace it.
        if not store.is_complete(spec.run_id):
            finish(INTERRUPTED, INTERRUPTED_MESSAGE)
        raise
    except (StorageError, UnsafePath):
        # A full or unwritable disk: no record can be written, so stop the grid. A link that
        # leaves the run's folder (e.g. resume.pt): refused, and never written through.
        raise
    except Exception as error:
        if on_epoch is not None and type(error).__module__.startswith("optuna"):
            raise
        if store.is_complete(spec.run_id):  # failed only in the cleanup after the record
            log.warning("run %s: cleanup after completion failed: %s", spec.run_id, error)
            return store.read(spec.run_id)
        log.debug("run %s failed", spec.run_id, exc_info=True)
        # The record keeps the error's last line; the whole traceback goes beside it.
        store.save_bytes(spec.run_id, ResultsStore.TRACEBACK, traceback.format_exc().encode())
        return finish(FAILED, failure_detail(error))


def failure_detail(error: BaseException) -> str:
    """The error line a FAILED record keeps."""
    return "".join(traceback.format_exception_only(type(error), error)).strip()


class RecordWriter:
    """``finish(status, error=None, **fields)`` writes ``spec``'s record and returns it;
    ``finish.base`` holds the fields every record of the run shares."""

    def __init__(self, spec: RunSpec, data: OCTData, store: ResultsStore, *, kind: str = "run"):
        self.base = record_fields(spec, dataset=data.describe(), kind=kind)
        self.store = store

    def __call__(self, status: str, error: str | None = None, **fields) -> RunRecord:
        record = RunRecord(status=status, error=error, created_utc=_utc_now(), **self.base,
                           **fields)
        self.store.write(record)
        if status != FAILED:  # an earlier attempt's traceback no longer describes this run
            self.store.remove(record.run_id, ResultsStore.TRACEBACK)
        return record


def record_fields(spec: RunSpec, *, dataset: dict, kind: str = "run") -> dict:
    """The fields every record of ``spec`` carries, whatever its status."""
    return dict(run_id=spec.run_id, experiment=spec.experiment, model=spec.model.label,
                strategy=spec.strategy.label, seed=spec.seed, device=spec.device,
                precision=spec.train.precision, config=spec.config(), dataset=dataset,
                versions=versions(), git_commit=git_commit(), kind=kind, sweep=dict(spec.sweep))


def stopped_record(spec: RunSpec, status: str, error: str, *, dataset: dict) -> RunRecord:
    """The record of a run that ended without training to the end (interrupted, failed)."""
    return RunRecord(status=status, error=error, created_utc=_utc_now(),
                     **record_fields(spec, dataset=dataset))


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunSetup:
    """One run's training pieces, built (and resumed) by :func:`setup_run`; the sequential loop
    here and the stacked one (:mod:`octbench.stacked_runs`) both train from it."""

    spec: RunSpec
    model: torch.nn.Module
    normalize: tuple[float, float]
    model_init: dict
    frozen: list
    strategy: object
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    order_rng: torch.Generator
    augmenter: object
    state: dict


def check_fingerprint(data: OCTData, expected: str) -> None:
    """Refuse data whose content changed between computing the run ids and loading it."""
    if expected and data.fingerprint != expected:
        raise DataError(
            f"the {data.name} data changed while octbench was reading it (fingerprint "
            f"{expected} when the run ids were made, {data.fingerprint} when loaded); rerun "
            "once the file or folder is no longer being written.")


def setup_run(spec: RunSpec, data: OCTData, store: ResultsStore,
              device: torch.device) -> RunSetup:
    """Seed, build the model, strategy and optimiser of ``spec``, and resume its epoch
    checkpoint when there is one (restoring the random states too: :func:`resume_run`)."""
    cfg = spec.train
    check_fingerprint(data, spec.data_fingerprint)  # e.g. another file on a Ray node
    seed_everything(spec.seed, deterministic=cfg.deterministic)
    class_counts = data.train.class_counts(data.num_classes)
    model = build_model(spec.model.name, num_classes=data.num_classes, in_chans=1,
                        img_size=data.size, **spec.model.params)
    strategy = build_strategy(spec.strategy.name, class_counts, **spec.strategy.params)
    if strategy.cosine_head:
        use_cosine_head(model)
    normalize = input_normalization(spec.model.name, spec.model.params)
    model_init = {**describe_weights(spec.model.name, spec.model.params, model),
                  "normalization": {"mean": normalize[0], "std": normalize[1]}, "mode": cfg.mode}
    frozen = freeze_all_but_head(model) if cfg.mode == "linear_probe" else []
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = strategy.criterion.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg.optimizer, lr=cfg.lr,
                               weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                               fused=True if device.type == "cuda" else None,
                               capturable=device.type == "cuda")
    scheduler = make_scheduler(optimizer, cfg.schedule, epochs=cfg.epochs,
                               step_every=cfg.step_every, step_gamma=cfg.step_gamma)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    order_rng = torch.Generator().manual_seed(spec.seed)
    augmenter = build_augmenter(cfg.augment, seed=spec.seed, device=device)
    state = {"epoch": 0, "history": [], "best": None, "best_epoch": None, "best_value": None,
             "stale": 0}
    run = RunSetup(spec, model, normalize, model_init, frozen, strategy, criterion, optimizer,
                   scheduler, scaler, order_rng, augmenter, state)
    resume_run(run, store)
    return run


def _train(spec: RunSpec, data: OCTData, store: ResultsStore, device: torch.device, finish, *,
           progress: RunProgress, on_epoch: EpochCallback | None,
           evaluate_test: bool) -> RunRecord:
    """Set up (or resume) the run, train its remaining epochs, finish it."""
    cfg = spec.train
    run = setup_run(spec, data, store, device)
    # Static shapes: the last, smaller batch gets its own graph instead of a dynamic recompile.
    step_model = torch.compile(run.model, dynamic=False) if cfg.compile else run.model
    train, val, _ = (on_device(data, s, device) for s in ("train", "val", "test"))
    eval_batch = cfg.eval_batch_size or default_eval_batch(device)
    while run.state["epoch"] < cfg.epochs:
        _train_epoch(run, step_model, data, store, train=train, val=val, eval_batch=eval_batch,
                     progress=progress, on_epoch=on_epoch)
    return complete_run(run, data, store, device, finish, evaluate_test=evaluate_test)


def _train_epoch(run: RunSetup, step_model: torch.nn.Module, data: OCTData, store: ResultsStore,
                 *, train, val, eval_batch: int, progress: RunProgress,
                 on_epoch: EpochCallback | None) -> None:
    """One epoch of a run alone: train, step the schedule, evaluate on validation, record."""
    cfg = run.spec.train
    order = epoch_order(run, data.train.labels)
    with progress.epoch(run.state["epoch"], cfg.epochs, len(order)) as bar:
        stats = train_one_epoch(step_model, *train, order, criterion=run.criterion,
                                optimizer=run.optimizer, batch_size=cfg.batch_size,
                                precision=cfg.precision, scaler=run.scaler,
                                channels_last=cfg.channels_last, normalize=run.normalize,
                                eval_modules=run.frozen, augment=run.augmenter,
                                progress=bar)
    lr = run.optimizer.param_groups[0]["lr"]
    if run.scheduler is not None:
        run.scheduler.step()
    val_pred, val_seconds = evaluate(run.model, *val, batch_size=eval_batch,
                                     precision=cfg.precision,
                                     logit_offset=run.strategy.logit_offset,
                                     channels_last=cfg.channels_last,
                                     normalize=run.normalize)
    end_epoch(run, store, data, stats=stats, lr=lr, val_pred=val_pred,
              val_seconds=val_seconds, progress=progress, on_epoch=on_epoch,
              rng=get_rng_state())


def epoch_order(run: RunSetup, train_labels: torch.Tensor) -> torch.Tensor:
    """Start the run's next epoch (the strategy's hook) and draw its training order."""
    epoch, epochs = run.state["epoch"], run.spec.train.epochs
    if run.strategy.on_epoch_start is not None:
        run.strategy.on_epoch_start(epoch, epochs)
    if run.strategy.sampler is not None:
        return run.strategy.sampler(train_labels, run.order_rng)
    return torch.randperm(len(train_labels), generator=run.order_rng)


def end_epoch(run: RunSetup, store: ResultsStore, data: OCTData, *, stats: dict, lr: float,
              val_pred: Predictions, val_seconds: float, progress: RunProgress,
              on_epoch: EpochCallback | None, rng: dict) -> None:
    """Record a trained epoch: history, best weights, early stopping, the epoch checkpoint.

    ``rng`` is the random state saved for the resume (the global one for a run alone).
    """
    cfg, state, model = run.spec.train, run.state, run.model
    epoch = state["epoch"]
    val_metrics = compute_metrics(val_pred.labels, val_pred.scores, data.class_names)
    value = val_metrics[cfg.select_on]
    state["history"].append({
        "epoch": epoch + 1, "train_loss": stats["loss"], "lr": lr,
        "train_seconds": stats["seconds"], "train_images": stats["images"],
        "val_seconds": val_seconds,
        **{f"val_{k}": v for k, v in val_metrics.items() if k in METRICS},
        # when the epoch ended: tracking tools plot curves against real time
        "time_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
    })
    direction = METRICS[cfg.select_on]
    improved = state["best_value"] is None or (
        value > state["best_value"] if direction == "max" else value < state["best_value"])
    if improved:
        state.update(best=copy.deepcopy(model.state_dict()), best_epoch=epoch + 1,
                     best_value=value, stale=0,
                     # tensors, not a Predictions object: a resume state loads weights-only
                     best_val=({"scores": torch.from_numpy(val_pred.scores),
                                "labels": torch.from_numpy(val_pred.labels)},
                               val_metrics))
    else:
        state["stale"] += 1
    state["epoch"] = epoch + 1
    if on_epoch is not None:
        on_epoch(epoch, val_metrics)
    stop = cfg.patience is not None and state["stale"] >= cfg.patience
    progress.epoch_done(epoch, cfg.epochs, images=stats["images"],
                        train_seconds=stats["seconds"], loss=stats["loss"],
                        metric=cfg.select_on, value=value,
                        stopping=stop and state["epoch"] < cfg.epochs,
                        entry=state["history"][-1])
    if stop:
        state["epoch"] = cfg.epochs
    save_resume(run, store, rng)


def complete_run(run: RunSetup, data: OCTData, store: ResultsStore, device: torch.device,
                 finish, *, evaluate_test: bool, timing: dict | None = None) -> RunRecord:
    """The end of a trained run: best weights, test evaluation, predictions, checkpoint and
    record (``timing`` adds entries to the record's timing)."""
    spec, state, model, cfg = run.spec, run.state, run.model, run.spec.train
    model.load_state_dict(state["best"])
    best_val, val_metrics = state["best_val"]
    val_pred = Predictions(scores=best_val["scores"].numpy(), labels=best_val["labels"].numpy())
    arrays = {"val_scores": val_pred.scores.astype(np.float32), "val_labels": val_pred.labels}
    metrics = {"val": val_metrics}
    eval_seconds = sum(h["val_seconds"] for h in state["history"])
    eval_images = len(val_pred.labels) * len(state["history"])
    eval_batch = cfg.eval_batch_size or default_eval_batch(device)
    if evaluate_test:
        test = on_device(data, "test", device)
        test_pred, test_seconds = evaluate(model, *test, batch_size=eval_batch,
                                           precision=cfg.precision,
                                           logit_offset=run.strategy.logit_offset,
                                           channels_last=cfg.channels_last,
                                           normalize=run.normalize)
        metrics["test"] = compute_metrics(test_pred.labels, test_pred.scores, data.class_names)
        arrays.update(test_scores=test_pred.scores.astype(np.float32),
                      test_labels=test_pred.labels)
        if data.test.groups is not None:  # e.g. patients: the report resamples them whole
            arrays["test_groups"] = data.test.groups
        eval_seconds += test_seconds
        eval_images += len(test_pred.labels)
    robustness = {}
    if evaluate_test and spec.corruptions is not None:
        # Each scored cell is saved at once: an interrupted run resumes here (its last epoch is
        # checkpointed) and scores only the cells left.
        robustness = evaluate_corruptions(
            model, data, spec.corruptions, clean=metrics["test"], data_params=spec.data.params,
            normalize=run.normalize, logit_offset=run.strategy.logit_offset, device=device,
            batch_size=eval_batch, precision=cfg.precision, channels_last=cfg.channels_last,
            store=store, run_id=spec.run_id)
        robustness["timing"]["clean_eval_seconds"] = test_seconds
    store.save_predictions(spec.run_id, **arrays)
    # Temperature scaling on validation only (Guo et al. 2017): the test split stays unseen.
    temperature = fit_temperature(val_pred.scores, val_pred.labels)
    calibration = {"temperature": temperature, "fitted_on": "val", **{
        f"val_{k}": v for k, v in
        calibration_summary(val_pred.scores, val_pred.labels, temperature).items()}}
    store.save_state(spec.run_id, ResultsStore.BEST, {
        "temperature": temperature,
        "model": state["best"], "model_config": spec.config()["model"],
        "class_names": list(data.class_names), "img_size": data.size,
        "logit_offset": run.strategy.logit_offset, "epoch": state["best_epoch"],
        "cosine_head": run.strategy.cosine_head,
        "normalization": list(run.normalize),
        "provenance": provenance(data, run.normalize),
        # How evaluation fed the model, so evaluate / predict rebuild its inputs bit for bit.
        "inputs": {"normalization": list(run.normalize), "in_chans": 1,
                   "img_size": int(data.size), "channels_last": bool(cfg.channels_last),
                   "precision": cfg.precision, "eval_batch_size": int(eval_batch)},
    })
    history = state["history"]
    train_seconds = sum(h["train_seconds"] for h in history)
    train_images = sum(h["train_images"] for h in history)
    record = finish(
        COMPLETE, metrics=metrics, best_epoch=state["best_epoch"], epochs_trained=len(history),
        history=history, parameters=count_parameters(model), model_init=run.model_init,
        calibration=calibration,
        timing={
            "train_seconds": train_seconds,
            "seconds_per_epoch": train_seconds / len(history),
            "train_images_per_s": train_images / train_seconds if train_seconds else None,
            "eval_images_per_s": eval_images / eval_seconds if eval_seconds else None,
            **(timing or {}),
        },
        **({"robustness": robustness} if robustness else {}),
    )
    store.remove(spec.run_id, ResultsStore.RESUME)
    store.remove(spec.run_id, PARTIAL)
    return record


def on_device(data: OCTData, split: str, device: torch.device):
    """The split's (images, labels) on ``device``."""
    # Cached so a grid moves each split to a GPU once, not once per run.
    # The entry keeps its dataset, so a new dataset that reuses a freed one's id is not mistaken
    # for it (a sweep over data settings loads one after another).
    key = (id(data), split, str(device))
    if key not in _DEVICE_CACHE or _DEVICE_CACHE[key][0] is not data:
        part = data.split(split)
        _DEVICE_CACHE.clear() if len(_DEVICE_CACHE) > 6 else None
        _DEVICE_CACHE[key] = (data, part.images.to(device), part.labels.to(device))
    return _DEVICE_CACHE[key][1:]


_DEVICE_CACHE: dict = {}
