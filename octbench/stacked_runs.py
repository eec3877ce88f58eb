"""Train several pending runs of a grid together, as one stacked model (``run --stack N``).

Runs that share the data, model, device and every ``train`` setting but the learning rate (they
differ in seed, strategy and lr: each member steps with its own) form a stack of at most N members
(:func:`plan_stacks`). Each member is set up exactly as a run alone
(:func:`octbench.runner.setup_run`: its seed, initial weights, strategy, sampler, augmentation
generators, resume checkpoint); each epoch the members' weights and optimiser states are stacked
(:mod:`octbench.stacking`), trained in one vectorised pass, and handed back, so every member
saves its own epoch checkpoint, best weights, predictions and record in the format and under the
run id a run alone writes. A member that stops early, finishes, fails or was resumed at another
epoch leaves the stack; members whose epochs have different lengths (undersampling) train in
separate stacks. On the CPU each member's dropout draws from its own copy of the global
generator, as the run alone would; on CUDA one mask for the stack comes from the device's
generator (so that the step can be a CUDA graph).

Must not import: the CLI, report or tuning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from octbench.data import OCTData
from octbench.devices import check_precision, describe, resolve_device
from octbench.engine import Predictions, check_finite_loss, default_eval_batch, make_optimizer
from octbench.errors import DeviceUnavailable
from octbench.grid import RunSpec
from octbench.models import build_model
from octbench.progress import GridProgress, RunProgress
from octbench.results import FAILED, INTERRUPTED, ResultsStore, RunLocked, StorageError
from octbench.resume import get_rng_state
from octbench.runner import (
    INTERRUPTED_MESSAGE,
    RecordWriter,
    RunSetup,
    complete_run,
    end_epoch,
    epoch_order,
    execute_run,
    failure_detail,
    on_device,
    setup_run,
)
from octbench.stacking import (
    architecture,
    build_stacked,
    evaluate_stacked,
    load_members,
    optimizer_steps,
    stack_optimizer_state,
    stacking_problem,
    store_members,
    train_stacked_epoch,
    unstack_optimizer_state,
)

log = logging.getLogger(__name__)

#: The stack size used when ``--stack`` is not given, by device type, and why: the one table of
#: defaults. Each is chosen by measurement (benchmarks/grid_throughput.py; on CUDA
#: benchmarks/gpu_check.sh) and the reason is what ``run --dry-run`` shows.
DEFAULT_STACK: dict[str, tuple[int, str]] = {
    "cpu": (1, "off: measured slower than sequential on an idle 2-core CPU (--stack 4 / 12: "
               "0.86x / 0.68x at 1 % size, 0.77x / 0.49x at 10 %), and not bit-identical "
               "(rounding-level differences)"),
    "cuda": (1, "off until measured on a GPU (benchmarks/gpu_check.sh); try --stack 12"),
    "mps": (1, "off: never measured on Apple GPUs; --stack 4 may help"),
}


def default_stack(device: str) -> tuple[int, str]:
    """The stack size used for runs on ``device`` when ``--stack`` is not given, and why."""
    kind = device.split(":")[0]
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return DEFAULT_STACK.get(kind, (1, f"off: never measured on {kind}"))


def stack_key(spec: RunSpec) -> str | None:
    """What runs must share to train in one stack (all but seed, strategy and learning rate:
    each member steps with its own); None for a run that always trains alone (fp16 needs a
    loss scaler per run, a linear probe freezes layers, torch.compile)."""
    cfg = spec.train
    if cfg.precision == "fp16" or cfg.mode != "end_to_end" or cfg.compile:
        return None
    train = {k: v for k, v in cfg.to_dict().items() if k != "lr"}
    sweep = {k: v for k, v in spec.sweep.items() if k != "train.lr"}
    return json.dumps([spec.experiment, spec.data.to_yaml(), spec.data_fingerprint,
                       spec.model.to_yaml(), spec.device, train, sweep],
                      sort_keys=True, default=str)


def plan_stacks(pending: list[RunSpec], stack: int | None) -> list[list[RunSpec]]:
    """The pending runs in groups that train together (a group of one trains alone), in the
    order of their first run; ``stack`` is the most members per group (None: the device's
    default, :data:`DEFAULT_STACK`)."""
    groups: dict[str, list[list[RunSpec]]] = {}
    order: list[list[RunSpec]] = []
    for spec in pending:
        key = stack_key(spec)
        limit = stack if stack is not None else default_stack(spec.device)[0]
        if key is None or limit <= 1:
            order.append([spec])
            continue
        chunks = groups.setdefault(key, [])
        if not chunks or len(chunks[-1]) >= limit:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(spec)
    return order


def describe_stacks(pending: list[RunSpec], stack: int | None) -> str:
    """Lines for ``run --dry-run``: how the pending runs would be stacked and, without
    ``--stack``, each device's default and the reason for it."""
    groups = plan_stacks(pending, stack)
    sizes = sorted((len(g) for g in groups if len(g) > 1), reverse=True)
    setting = "default" if stack is None else f"--stack {stack}"
    if not sizes:
        line = f"stacking: off ({setting}); every run trains alone"
    else:
        alone = sum(1 for g in groups if len(g) == 1)
        line = (f"stacking ({setting}): {len(sizes)} stack(s) of {', '.join(map(str, sizes))} "
                f"runs" + (f", {alone} run(s) alone" if alone else "")
                + " (same model, data, device and train settings but lr; a model that cannot "
                "stack trains alone)")
    if stack is None:
        for device in dict.fromkeys(s.device for s in pending):
            size, reason = default_stack(device)
            line += f"\n  default stack for {device}: {size} ({reason})"
    return line


@dataclass(eq=False)
class _Member:
    run: RunSetup
    finish: RecordWriter
    progress: RunProgress
    rng: dict  # the run's global random state (numpy, python, ...); torch's is `generator`
    generator: torch.Generator | None
    record: object = None
    largest: int = 1  # the most members it trained with, recorded as timing["stack"]
    order_state: torch.Tensor | None = field(default=None, repr=False)

    def rng_state(self) -> dict:
        """The random state a run alone would save after this epoch."""
        if self.generator is None:  # CUDA: dropout drew from the shared device generator
            return {**self.rng, **{k: v for k, v in get_rng_state().items() if k == "cuda"}}
        return {**self.rng, "torch": self.generator.get_state()}


def execute_stack(specs: list[RunSpec], data: OCTData, store: ResultsStore, *, quiet: bool,
                  progress: GridProgress, numbers: dict[str, int]
                  ) -> Iterator[tuple[RunSpec, object]]:
    """Train ``specs`` (one stack from :func:`plan_stacks`) and yield ``(spec, outcome)`` per
    run, as :meth:`octbench.executors.LocalExecutor.execute` does. Runs claimed elsewhere or
    complete meanwhile are left; a model that cannot stack trains its runs one by one."""
    outcomes: dict[str, object] = {}
    with contextlib.ExitStack() as claims:
        mine = []
        for spec in specs:
            try:
                claims.enter_context(store.claim(spec.run_id))
            except RunLocked as busy:
                outcomes[spec.run_id] = busy
                continue
            if store.is_complete(spec.run_id):
                outcomes[spec.run_id] = None
            else:
                mine.append(spec)
        for spec, outcome in train_stack(mine, data, store, quiet=quiet, progress=progress,
                                         numbers=numbers):
            outcomes[spec.run_id] = outcome
    for spec in specs:
        yield spec, outcomes[spec.run_id]


def _alone(specs, data, store, *, quiet, progress, numbers):
    for spec in specs:
        run_progress = progress.start_run(numbers[spec.run_id], spec.run_id, spec.device,
                                          spec=spec)
        try:
            yield spec, execute_run(spec, data, store, quiet=quiet, progress=run_progress)
        finally:
            run_progress.finished()


def train_stack(specs: list[RunSpec], data: OCTData, store, *, quiet: bool, progress,
                numbers: dict[str, int]) -> Iterator[tuple[RunSpec, object]]:
    """Train ``specs``, runs this process holds (claimed here, or by the Ray driver that sent
    them), as one stack, and yield ``(spec, record)`` per run; a single run, or a model that
    cannot stack, trains its runs one by one. ``store`` is a results store or a Ray task's
    relay of one; ``progress`` hands out each run's progress (``start_run``)."""
    if len(specs) < 2:
        yield from _alone(specs, data, store, quiet=quiet, progress=progress, numbers=numbers)
        return
    first = specs[0]
    try:
        device = resolve_device(first.device)
        check_precision(device, first.train.precision)
    except DeviceUnavailable:  # each run records itself as skipped
        yield from _alone(specs, data, store, quiet=quiet, progress=progress, numbers=numbers)
        return
    problem = _model_problem(first, data)
    if problem is not None:
        log.info("%s trains without stacking: %s", first.model.label, problem)
        yield from _alone(specs, data, store, quiet=quiet, progress=progress, numbers=numbers)
        return
    members: list[_Member] = []
    try:
        for spec in specs:
            member = _set_up(spec, data, store, device, progress, numbers[spec.run_id])
            if member.record is not None:  # its resume checkpoint did not fit: FAILED
                yield spec, member.record
            else:
                members.append(member)
        _train_group(members, data, store, device)
    except KeyboardInterrupt:
        for member in members:
            if member.record is None and not store.is_complete(member.run.spec.run_id):
                member.finish(INTERRUPTED, INTERRUPTED_MESSAGE)
        raise
    except StorageError:
        raise
    except Exception as error:  # a fault of the stack itself: every unfinished member fails
        log.debug("stack of %d runs failed", len(members), exc_info=True)
        for member in members:
            if member.record is None:
                member.record = member.finish(FAILED, failure_detail(error))
    finally:
        for member in members:
            member.progress.finished()
    for member in members:
        yield member.run.spec, member.record


_PROBLEMS: dict[str, str | None] = {}


def _model_problem(spec: RunSpec, data: OCTData) -> str | None:
    key = json.dumps([spec.model.to_yaml(), data.num_classes, data.size], default=str)
    if key not in _PROBLEMS:
        try:
            model = build_model(spec.model.name, num_classes=data.num_classes, in_chans=1,
                                img_size=data.size, **spec.model.params)
            _PROBLEMS[key] = stacking_problem(model, in_chans=1, img_size=data.size)
        except Exception as error:  # noqa: BLE001 - each run alone then says what is wrong
            _PROBLEMS[key] = f"the model could not be built ({error})"
    return _PROBLEMS[key]


def _set_up(spec, data, store, device, progress, number) -> _Member:
    finish = RecordWriter(spec, data, store)
    if spec.train.threads:  # as execute_run: the record's hardware names the thread count
        torch.set_num_threads(spec.train.threads)
    finish.base["hardware"] = describe(device)
    run_progress = progress.start_run(number, spec.run_id, spec.device, spec=spec)
    try:
        run = setup_run(spec, data, store, device)
    except (KeyboardInterrupt, StorageError):
        raise
    except Exception as error:
        run_progress.finished()
        member = _Member(None, finish, run_progress, {}, None)
        member.record = finish(FAILED, failure_detail(error))
        return member
    rng = get_rng_state()  # after the initial weights (or the resumed state): dropout's start
    generator = None
    if device.type == "cpu":
        generator = torch.Generator()
        generator.set_state(rng["torch"])
    return _Member(run, finish, run_progress, rng, generator)


def _train_group(members: list[_Member], data, store, device) -> None:
    """Train ``members`` epoch by epoch until each has ended; members that cannot take the
    next epoch together (another epoch, epoch length or architecture: LDAM's cosine head)
    train as separate groups."""
    stacked, optimizer, built_for = None, None, None
    train, val = on_device(data, "train", device), on_device(data, "val", device)
    while True:
        active = [m for m in members
                  if m.record is None and m.run.state["epoch"] < m.run.spec.train.epochs]
        if not active:
            return
        orders = []
        for member in active:
            member.order_state = member.run.order_rng.get_state()
            orders.append(epoch_order(member.run, data.train.labels))
        keys = [(m.run.state["epoch"], len(order), optimizer_steps(m.run.optimizer.state_dict()),
                 architecture(m.run.model)) for m, order in zip(active, orders, strict=True)]
        if len(set(keys)) > 1:
            for member in active:  # each group draws its orders again, from the same state
                member.run.order_rng.set_state(member.order_state)
            for key in dict.fromkeys(keys):
                _train_group([m for m, k in zip(active, keys, strict=True) if k == key],
                             data, store, device)
            continue
        if built_for != active:
            stacked, optimizer = _stack(active, device)
            built_for = list(active)
        _stacked_epoch(active, stacked, optimizer, torch.stack(orders), data, store, device,
                       train, val)


def _stack(active: list[_Member], device):
    first = active[0].run
    cfg = first.spec.train
    generators = None if active[0].generator is None else [m.generator for m in active]
    stacked = build_stacked(first.model, len(active), generators=generators).to(device)
    if cfg.channels_last:
        stacked = stacked.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(stacked.parameters(), cfg.optimizer, lr=cfg.lr,
                               weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                               fused=True if device.type == "cuda" else None,
                               capturable=device.type == "cuda")
    return stacked, optimizer


def _stacked_epoch(active, stacked, optimizer, orders, data, store, device, train, val):
    n = len(active)
    template = active[0].run.model
    cfg = active[0].run.spec.train
    load_members(stacked, [m.run.model for m in active])
    singles = [m.run.optimizer.state_dict() for m in active]
    optimizer.load_state_dict(stack_optimizer_state(singles, stacked, template))
    lrs = [single["param_groups"][0]["lr"] for single in singles]
    if len(set(lrs)) > 1:  # members step with their own lr (train_stacked_epoch)
        for group in optimizer.param_groups:
            group["lr"] = 1.0
    else:
        lrs = None
    epoch = active[0].run.state["epoch"]
    with active[0].progress.epoch(epoch, cfg.epochs, n * orders.shape[1]) as bar:
        stats = train_stacked_epoch(
            stacked, *train, orders, criteria=[m.run.criterion for m in active],
            optimizer=optimizer, batch_size=cfg.batch_size, precision=cfg.precision,
            channels_last=cfg.channels_last, normalize=active[0].run.normalize,
            augmenters=[m.run.augmenter for m in active], lrs=lrs, progress=bar)
    store_members(stacked, [m.run.model for m in active])
    stacked_state = optimizer.state_dict()
    for i, member in enumerate(active):  # the state back, with the member's own settings
        member.run.optimizer.load_state_dict({
            **unstack_optimizer_state(stacked_state, i, n, template),
            "param_groups": singles[i]["param_groups"]})
    values, seconds = evaluate_stacked(
        stacked, val[0], members=n, batch_size=cfg.eval_batch_size or default_eval_batch(device),
        precision=cfg.precision, logit_offsets=[m.run.strategy.logit_offset for m in active],
        channels_last=cfg.channels_last, normalize=active[0].run.normalize)
    labels = val[1].cpu().numpy()
    for i, member in enumerate(active):
        run = member.run
        try:  # a diverged member fails as it would alone; the others' weights never mix
            check_finite_loss(stats["losses"][i], cfg.precision)
        except Exception as error:
            member.record = member.finish(FAILED, failure_detail(error))
            member.progress.finished()
            continue
        lr = run.optimizer.param_groups[0]["lr"]
        if run.scheduler is not None:
            with warnings.catch_warnings():  # the stacked optimiser stepped, not this one
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
                run.scheduler.step()
        # Each member's share of the stack's time: summed over a grid, the wall time.
        member.largest = max(member.largest, n)
        member_stats = {"loss": stats["losses"][i], "images": stats["images"],
                        "seconds": stats["seconds"] / n}
        end_epoch(run, store, data, stats=member_stats, lr=lr,
                  val_pred=Predictions(scores=values[i], labels=labels),
                  val_seconds=seconds / n, progress=member.progress, on_epoch=None,
                  rng=member.rng_state())
        if run.state["epoch"] >= run.spec.train.epochs:
            member.record = complete_run(run, data, store, device, member.finish,
                                         evaluate_test=True, timing={"stack": member.largest})
            member.progress.finished()
