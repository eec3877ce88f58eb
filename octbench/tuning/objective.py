"""The objective: one trial trains the sampled experiment on the train and validation splits.

Owns :func:`make_objective` (sample, train ``seeds_per_trial`` runs, report each epoch to the
pruner, return the mean validation metric), keeping trials within ``n_trials`` when several
workers share a study, and the trial outcomes Optuna is told about.

Must not import: the workers (they import this module) or the report. The test split never
reaches a trial: it is removed from the data here. Imports the runner, hence torch: the tuning
package does not import this module, so that reading a tuning YAML or a study stays torch-free.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from octbench.config import parse_config
from octbench.data import Split, load_dataset
from octbench.errors import ConfigError
from octbench.grid import RunSpec
from octbench.results import COMPLETE, ResultsStore, RunLocked
from octbench.runner import execute_run
from octbench.tuning.space import suggest_experiment
from octbench.tuning.storage import (
    ERROR_ATTR,
    OWNER_ATTR,
    SURPLUS_ATTR,
    fail_dead_trials,
    retry_callback,
    trial_owner,
)
from octbench.tuning.tune_config import TuneConfig

ORIGIN_ATTR = "octbench_origin"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def base_data(tune_config: TuneConfig):
    """The base experiment's dataset (:func:`octbench.data.load_dataset`)."""
    params = dict(tune_config.base["data"])
    return load_dataset(params.pop("name"), **params)


class TrialFailed(Exception):
    """A trial's run failed (its FAILED run record holds the details); Optuna records FAIL."""


class BudgetReached(Exception):
    """Raised by a trial that was asked for after the study reached ``n_trials``."""


def make_objective(tune_config: TuneConfig, *, data=None, quiet: bool = True,
                   budget: int | None = None) -> Callable[[optuna.Trial], float]:
    """An Optuna objective: sample a config, train it on k seeds, return the mean val metric.

    Each epoch reports the running mean over seeds (finished seeds' values and the current
    seed's epoch value) at step ``seed_index * epochs + epoch``; the trial is pruned when the
    study's pruner says so, except at its last step (the last epoch of its last seed). Runs are
    written under ``<results_dir>/<study>/trials/<trial>/`` (``kind="trial"``, no test metrics:
    the test split is removed from the data).

    Args:
        tune_config: from :func:`load_tune_config`.
        data: the loaded dataset (default: loaded on the first trial).
        quiet: no progress bars.
        budget: ``n_trials`` shared by several workers; a trial asked for after the study
            reached it fails at once (``tune`` sets this; leave None with a plain study).

    Example:
        >>> import optuna
        >>> config = load_tune_config("experiments/tune.yaml")
        >>> study = optuna.create_study(direction=config.direction)
        >>> study.optimize(make_objective(config), n_trials=2)  # doctest: +SKIP
    """
    cache = {"data": data}

    def tuning_data():
        if cache["data"] is None:
            cache["data"] = base_data(tune_config)
        data = cache["data"]
        if len(data.test):  # never let a trial see the test split
            empty = Split(data.test.images[:0], data.test.labels[:0])
            cache["data"] = data = dataclasses.replace(data, test=empty)
        return data

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(OWNER_ATTR, trial_owner(trial.number))
        try:
            if budget is not None:
                _wait_for_slot(trial, budget)
            return run_trial(trial)
        except BudgetReached:
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise
        except TrialFailed as error:
            trial.set_user_attr(ERROR_ATTR, str(error)[:2000])
            raise

    def run_trial(trial: optuna.Trial) -> float:
        # A retried trial keeps its original number here, so it resumes the same runs.
        origin = trial.user_attrs.get(ORIGIN_ATTR, trial.number)
        trial.set_user_attr(ORIGIN_ATTR, origin)
        try:
            config = parse_config(suggest_experiment(trial, tune_config))
        except ConfigError as error:
            raise TrialFailed(str(error)) from None
        store = ResultsStore(tune_config.root / "trials" / f"{origin:04d}")
        store.prepare()
        data = tuning_data()
        epochs = config.train.epochs
        finished: list[float] = []
        try:
            for index, seed in enumerate(config.seeds):
                spec = RunSpec(config.name, config.data, config.models[0], config.strategies[0],
                               seed, config.devices[0], config.train,
                               data_fingerprint=data.fingerprint)

                def report(epoch: int, val_metrics: dict, index=index, seed=seed) -> None:
                    value = statistics.fmean([*finished, val_metrics[tune_config.metric]])
                    trial.report(value, index * epochs + epoch)
                    # At the trial's last epoch its whole cost is paid: pruning it then would
                    # only throw its result away, so a trial that gets there completes.
                    last = index == len(config.seeds) - 1 and epoch == epochs - 1
                    if not last and trial.should_prune():
                        raise optuna.TrialPruned(
                            f"val {tune_config.metric} {value:.4f} at epoch {epoch + 1} of "
                            f"seed {seed}")

                record = None
                if store.is_complete(spec.run_id):  # a retried trial: this seed already ran
                    record = store.read(spec.run_id)
                else:
                    try:
                        with store.claim(spec.run_id):
                            record = execute_run(spec, data, store, quiet=quiet,
                                                 on_epoch=report, evaluate_test=False,
                                                 kind="trial")
                    except optuna.TrialPruned:
                        shutil.rmtree(store.run_dir(spec.run_id), ignore_errors=True)
                        raise
                    except RunLocked as busy:
                        raise TrialFailed(str(busy)) from None
                if record.status != COMPLETE:
                    raise TrialFailed(f"seed {seed}: {record.status}: {record.error}")
                finished.append(record.metrics["val"][tune_config.metric])
        except KeyboardInterrupt:
            # Optuna marks this trial FAIL; queue it again so a rerun resumes its checkpoint.
            frozen = next(t for t in trial.study.get_trials(deepcopy=False)
                          if t.number == trial.number)
            retry_callback()(trial.study, frozen)
            raise
        trial.set_user_attr("seed_values", finished)
        return statistics.fmean(finished)

    return objective


def _wait_for_slot(trial: optuna.Trial, n_trials: int, poll_s: float = 1.0) -> None:
    """Let this trial run only if it fits in ``n_trials`` together with lower-numbered ones.

    Several workers may ask for a trial at the same moment near the end of a study; trial
    numbers are unique, so the lower-numbered trials go first and an extra one fails at once.
    """
    while True:
        study = trial.study
        fail_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in COUNTED for t in trials)
        ahead = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
        if done >= n_trials:
            study.stop()
            raise BudgetReached(f"the study already has {n_trials} finished trials")
        if done + ahead < n_trials:
            return
        time.sleep(poll_s)  # the trials ahead may still fail; then this one is needed

