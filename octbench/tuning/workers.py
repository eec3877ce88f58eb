"""Running a study: :func:`tune`, its worker processes, progress lines and the best experiment.

Owns the order of a tuning session (check everything, then write), starting and stopping
``octbench tune --worker`` processes, one progress line per trial, and writing
``experiments/generated/<study>-best.yaml``.

Must not import: the report. Imports the objective (and so torch); the tuning package does
not import this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from octbench.devices import check_precision, resolve_device
from octbench.errors import OctbenchError
from octbench.fileio import atomic_write_text, writable_folder
from octbench.progress import format_duration
from octbench.tuning.objective import BudgetReached, TrialFailed, base_data, make_objective
from octbench.tuning.space import FINAL_SEEDS, best_experiment
from octbench.tuning.storage import (
    ERROR_ATTR,
    OWNER_ATTR,
    SURPLUS_ATTR,
    check_study,
    create_study,
    fail_dead_trials,
    local_storage_file,
    masked,
    open_storage,
    resolve_storage,
    write_study_file,
)
from octbench.tuning.tune_config import TuneConfig, make_pruner, make_sampler

GENERATED_DIR = Path("experiments/generated")
#: A worker stops after this many failed trials in a row (a broken setup, not bad luck).
MAX_CONSECUTIVE_FAILURES = 5


@dataclass
class TuneResult:
    """What :func:`tune` did: the study, its counts, the best trial and the generated YAML."""

    study: str
    storage: str
    counts: dict[str, int]
    best_value: float | None = None
    best_params: dict = field(default_factory=dict)
    best_trial: int | None = None
    generated: Path | None = None


def tune(tune_config: TuneConfig, *, workers: int = 1, storage: str | None = None,
         quiet: bool = False, say: Callable[[str], None] = print,
         result: Callable[[str], None] | None = None,
         generated_dir: str | Path = GENERATED_DIR) -> TuneResult:
    """Run (or resume) a study until it has ``n_trials`` finished trials or ``timeout`` passed.

    Everything is checked before anything is written: the config, the device, the data, the
    storage and, for an existing study, that it was made with the same search and objective.
    With ``workers > 1`` the study is created here and ``workers`` processes
    (``python -m octbench tune CONFIG --worker I``) share it.

    Args:
        tune_config: from :func:`load_tune_config`.
        workers: processes on this machine.
        storage: an Optuna RDB URL or ``journal:PATH``; default ``results/<study>/study.db``
            (one worker) or ``results/<study>/journal.log`` (several).
        quiet: no progress bars.
        say: where progress lines go.
        result: where the lines go that ``-q`` keeps: the final ones (the best trial, the
            YAML written), failed trials and trials recovered from a killed process; default
            ``say``.
        generated_dir: where ``<study>-best.yaml`` is written.

    Example:
        >>> result = tune(load_tune_config("experiments/tune.yaml"))  # doctest: +SKIP
        >>> result.best_params  # doctest: +SKIP
        {'train.lr': 0.0023, ...}
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial instead
    if workers < 1:
        raise OctbenchError(f"--workers must be >= 1. Got {workers} instead.")
    if workers > 1 and tune_config.source is None:
        raise OctbenchError("several workers need a tuning YAML file to start from; "
                            "use load_tune_config(path).")
    device = resolve_device(tune_config.base.get("devices", ["cpu"])[0])  # unavailable: fail now
    check_precision(device, tune_config.base.get("train", {}).get("precision", "fp32"))
    spec = resolve_storage(tune_config, storage, workers)
    root = tune_config.root
    local = local_storage_file(spec)
    if local is not None and not local.exists():  # a new file: open it once checks are done
        opened = None
        if local.parent.resolve() != root.resolve() and not local.parent.is_dir():
            raise OctbenchError(f"cannot open the Optuna storage {masked(spec)}: folder "
                                f"{local.parent} does not exist; create it or fix the path.")
    else:
        opened = open_storage(spec)
        check_study(tune_config, opened)
    data = base_data(tune_config)

    # Checks done: from here on we write.
    writable_folder(root, "study folder")
    opened = opened or open_storage(spec)
    study = create_study(tune_config, opened)
    write_study_file(tune_config, spec, data.synthetic)
    dead = fail_dead_trials(study)
    if dead:  # a notice -q keeps
        (result or say)(f"trial(s) {', '.join(map(str, dead))} were left RUNNING by a killed "
                        "process: marked failed and queued for retry.")
    busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if busy and spec.startswith("sqlite"):
        owner = str(busy[0].user_attrs.get(OWNER_ATTR, "?|?")).split("|")
        raise OctbenchError(
            f"trial {busy[0].number} of study '{tune_config.study}' is running in another "
            f"process ({owner[0]}, pid {owner[1]}); SQLite is not safe for two processes. Wait "
            "for it, or stop it and rerun; use --workers N for several processes.")
    counts = _counts(study)
    timeout = f", timeout {tune_config.timeout:g} s" if tune_config.timeout else ""
    say(f"study '{tune_config.study}' in {masked(spec)}: {counts['finished']} finished trial(s) "
        f"so far; target {tune_config.n_trials or 'none'}{timeout}"
        + (" [synthetic data]" if data.synthetic else ""))
    if workers == 1:
        _run_worker(tune_config, opened, index=0, workers=1, data=data, quiet=quiet, say=say,
                    errors=result or say)
    else:
        killed = _run_workers(tune_config, spec, workers, quiet=quiet, say=say)
        if killed and _remaining(study, tune_config) > 0:  # its retry may have no taker left
            say("finishing the trials that killed workers left")
            _run_worker(tune_config, opened, index=workers, workers=1, data=data, quiet=quiet,
                        say=say, errors=result or say)
    return _finish(tune_config, study, spec, data.synthetic, say, result or say,
                   Path(generated_dir))


def _counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    counts["finished"] = counts["complete"] + counts["pruned"]
    return counts


def _remaining(study: optuna.Study, tune_config: TuneConfig) -> int:
    if tune_config.n_trials is None:
        return 0
    return tune_config.n_trials - _counts(study)["finished"]


def run_worker(tune_config: TuneConfig, *, storage: str, index: int, workers: int,
               quiet: bool = False, say: Callable[[str], None] = print,
               errors: Callable[[str], None] | None = None) -> None:
    """One worker process of a multi-worker study (``octbench tune --worker``); ``errors``
    gets the lines of failed trials (default ``say``)."""
    opened = open_storage(storage)
    data = base_data(tune_config)
    with _threads_per_worker(tune_config, workers):
        _run_worker(tune_config, opened, index=index, workers=workers, data=data, quiet=quiet,
                    say=say, errors=errors)


def _run_worker(tune_config: TuneConfig, storage, *, index: int, workers: int, data,
                quiet: bool, say, errors=None) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial instead
    probe = optuna.load_study(study_name=tune_config.study, storage=storage)
    offset = 1000 * index + len(probe.get_trials(deepcopy=False))
    study = optuna.load_study(study_name=tune_config.study, storage=storage,
                              sampler=make_sampler(tune_config, offset),
                              pruner=make_pruner(tune_config))
    callbacks: list = [_Progress(tune_config, say, f" [worker {index}]" if workers > 1 else "",
                                 errors or say)]
    if tune_config.n_trials is not None:
        fail_dead_trials(study)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if _counts(study)["finished"] + running >= tune_config.n_trials:
            return
        # Stop once finished + running trials reach n_trials; _wait_for_slot settles races.
        callbacks += [lambda s, _: fail_dead_trials(s),
                      optuna.study.MaxTrialsCallback(
                          tune_config.n_trials,
                          states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))]
    objective = make_objective(tune_config, data=data, quiet=quiet, budget=tune_config.n_trials)
    study.optimize(objective, timeout=tune_config.timeout, callbacks=callbacks,
                   catch=(TrialFailed, BudgetReached))


class _Progress:
    """One line per finished trial (count, elapsed, ETA, best so far); stops the worker after
    too many failures in a row."""

    def __init__(self, tune_config: TuneConfig, say, tag: str, errors):
        self.config, self.say, self.tag, self.failures = tune_config, say, tag, 0
        self.errors = errors  # failed trials: shown even under -q
        self.started, self.done = time.perf_counter(), 0

    def _head(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        finished = _counts(study)["finished"]
        total = self.config.n_trials
        parts = [f"{finished}/{total}" if total else f"{finished} finished",
                 f"{format_duration(elapsed)} elapsed"]
        if total and finished < total:
            parts.append(f"ETA ~{format_duration(elapsed / self.done * (total - finished))}")
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if complete:
            best = (max if self.config.direction == "maximize" else min)(
                complete, key=lambda t: t.value)
            parts.append(f"best {best.value:.4f} (trial {best.number})")
        return f"trial {trial.number}{self.tag} [{', '.join(parts)}]"

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        if trial.state == TrialState.FAIL and trial.user_attrs.get(SURPLUS_ATTR):
            return
        head = self._head(study, trial)
        if trial.state == TrialState.COMPLETE:
            self.failures = 0
            self.say(f"{head}: val {self.config.metric} {trial.value:.4f} ({params})")
        elif trial.state == TrialState.PRUNED:
            self.failures = 0
            steps = trial.intermediate_values
            value = steps[max(steps)] if steps else float("nan")
            self.say(f"{head}: pruned after {len(steps)} epoch(s) (val {self.config.metric} "
                     f"{value:.4f}; {params})")
        elif trial.state == TrialState.FAIL:
            reason = str(trial.user_attrs.get(ERROR_ATTR, "interrupted or crashed"))
            self.failures += 1
            self.errors(f"{head}: failed ({params}): {reason.split(chr(10))[0][:300]}")
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                self.errors(f"{self.failures} trials failed in a row; stopping this worker. "
                         "See the FAILED run records under "
                         f"{self.config.root / 'trials'} for the errors.")
                study.stop()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _run_workers(tune_config: TuneConfig, spec: str, workers: int, *, quiet: bool,
                 say) -> bool:
    """Run ``octbench tune --worker I`` for I < N and wait; True if one of them was killed.

    All workers are processes of their own (none runs here), so they start on an equal footing.
    """
    command = [sys.executable, "-m", "octbench", *(["-q"] if quiet else []), "tune",
               str(tune_config.source), "--storage", spec, "--workers", str(workers)]
    for path, value in tune_config.overrides:  # JSON is YAML: each value reads back the same
        command += ["--set", f"{path}={json.dumps(value)}"]
    say(f"starting {workers} worker processes")
    sys.stdout.flush()  # our lines first, then the workers' (they share the terminal)
    # Own sessions: Ctrl-C reaches this process only, which then stops the workers cleanly.
    procs = [subprocess.Popen([*command, "--worker", str(i)], start_new_session=True)
             for i in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # the worker fails its trial and queues a retry
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    for i, code in enumerate(codes):
        if code < 0:
            say(f"worker {i} was killed by signal {-code}; its trial is failed and retried")
        elif code != 0:
            say(f"worker {i} exited with code {code}")
    return any(code < 0 for code in codes)


@contextlib.contextmanager
def _threads_per_worker(tune_config: TuneConfig, workers: int):
    """N workers on one machine share its cores instead of each taking all of them."""
    import torch

    before = torch.get_num_threads()
    if tune_config.base.get("train", {}).get("threads") is None:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _finish(tune_config: TuneConfig, study: optuna.Study, spec: str, synthetic: bool, say,
            result_line, generated_dir: Path) -> TuneResult:
    fail_dead_trials(study)
    counts = _counts(study)
    result = TuneResult(study=tune_config.study, storage=masked(spec), counts=counts)
    tag = " [synthetic data]" if synthetic else ""
    say(f"study '{tune_config.study}': {counts['finished']} finished trials "
        f"({counts['complete']} complete, {counts['pruned']} pruned), {counts['fail']} failed"
        + (f", {counts['waiting']} queued" if counts["waiting"] else ""))
    if counts["complete"] == 0:
        result_line("no trial completed, so there is no best configuration yet.")
        return result
    best = study.best_trial
    result.best_value, result.best_params, result.best_trial = (
        best.value, dict(best.params), best.number)
    seeds = f" (mean over {tune_config.seeds_per_trial} seeds)" \
        if tune_config.seeds_per_trial > 1 else ""
    result_line(f"best trial {best.number}: val {tune_config.metric} {best.value:.4f}{seeds}"
                f"{tag}")
    for name, value in best.params.items():
        result_line(f"  {name} = {_short(value)}")
    result.generated = write_best_experiment(tune_config, best, generated_dir, synthetic)
    write_study_file(tune_config, spec, synthetic, generated=str(result.generated))
    result_line(f"wrote {result.generated}")
    say(f"its test metrics come from running it ({len(FINAL_SEEDS)} seeds):\n"
        f"  python -m octbench run {result.generated}")
    return result



def write_best_experiment(tune_config: TuneConfig, trial: optuna.trial.FrozenTrial,
                          out_dir: str | Path = GENERATED_DIR, synthetic: bool = False) -> Path:
    """Write ``<out_dir>/<study>-best.yaml``: a ready-to-run experiment with the best params."""
    config = best_experiment(tune_config, trial.params)
    path = Path(out_dir) / f"{tune_config.study}-best.yaml"
    header = (
        f"# Generated by `octbench tune {tune_config.source or ''}`: study "
        f"'{tune_config.study}', best trial {trial.number},\n"
        f"# val {tune_config.metric} {trial.value:.4f} "
        f"(mean over {tune_config.seeds_per_trial} seed(s))"
        f"{', SYNTHETIC data' if synthetic else ''}. Chosen on the validation split only;\n"
        f"# test metrics come from running this file: python -m octbench run {path}\n")
    atomic_write_text(path, header + yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path

