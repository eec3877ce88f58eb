"""Hyperparameter tuning with Optuna, used as it is: objective -> study -> storage.

A tuning YAML names a base experiment (inline keys, or ``base: file.yaml`` plus inline
overrides) and a ``search:`` section mapping dotted config paths to Optuna distributions::

    study: quickstart-tune
    base: quickstart.yaml                 # relative to this file
    strategies: [focal]                   # inline keys override the base
    search:
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      train.batch_size: {type: categorical, choices: [64, 128, 256]}
      strategy.gamma: {type: float, low: 0.0, high: 5.0}
    objective: {metric: macro_f1}         # a validation metric; direction from the metric
    n_trials: 20                          # and/or timeout: seconds
    seeds_per_trial: 1                    # > 1: the objective is the mean over seeds
    sampler: {name: tpe, seed: 0}         # tpe (default) or random
    pruner: {name: median, n_startup_trials: 3}   # median (default), hyperband or none

Paths: ``train.<field>``; ``model`` / ``strategy`` (categorical over registry names) and
``model.<param>`` / ``strategy.<param>`` (``models.0.<param>``, ``strategies.0.<param>`` too). A
parameter path is suggested only when the chosen model or strategy has that parameter (an
Optuna define-by-run conditional space). Every path is checked up-front by applying sample
values to the base experiment and validating the result with :func:`octbench.config.parse_config`.

A trial trains one model x one strategy on one device for ``seeds_per_trial`` seeds with
:func:`octbench.runner.execute_run` on the train and validation splits only: the test split is
removed from the data handed to trials. Per-epoch validation values (the running mean over seeds)
feed the pruner. Completed runs are stored as run records (``kind="trial"``) under
``results/<study>/trials/<trial>/``.

Storage: a SQLite file ``results/<study>/study.db`` by default; with ``workers > 1`` an Optuna
journal file ``results/<study>/journal.log`` (SQLite is not safe for several processes); any
Optuna RDB URL (``postgresql://...``), or a journal file on a filesystem they share, for several
machines. Dead trials are never left RUNNING: RDB and journal storages record heartbeats and fail
trials whose heartbeat stops (a worker on another host that was killed); on every storage a
RUNNING trial whose worker process on *this* machine no longer exists is failed at once. Either
way Optuna's ``RetryHeartbeatStaleTrialCallback`` queues the trial again with its parameters, and
the retry resumes the killed run from its last epoch checkpoint.

Modules: :mod:`~octbench.tuning.tune_config` (the YAML, sampler, pruner),
:mod:`~octbench.tuning.space` (search spaces, sampled experiments),
:mod:`~octbench.tuning.storage` (storages, study file, dead-worker recovery),
:mod:`~octbench.tuning.objective` (one trial) and :mod:`~octbench.tuning.workers` (a study run,
worker processes, the best experiment). Study figures are drawn by :mod:`octbench.figures`.
This package must not import the report; the report finds a study by its files.

``import octbench.tuning`` reads tuning YAMLs and studies without torch: the modules that train
(``objective``, which imports the runner, and ``workers``) are imported by name where a study
is run (``from octbench.tuning.workers import tune``; the CLI's ``tune`` after the YAML is read).
"""

from __future__ import annotations

import json
from pathlib import Path

from octbench.figures import MIN_IMPORTANCE_TRIALS, draw_study
from octbench.tuning.space import (
    SearchParam,
    best_experiment,
    suggest_experiment,
    trial_experiment,
)
from octbench.tuning.storage import (
    ERROR_ATTR,
    SURPLUS_ATTR,
    load_study,
    open_storage,
    resolve_storage,
)
from octbench.tuning.tune_config import (
    DEFAULT_PRUNER,
    TuneConfig,
    load_tune_config,
    parse_tune_config,
)

__all__ = [
    "DEFAULT_PRUNER", "SearchParam", "TuneConfig", "best_experiment", "load_study",
    "load_tune_config", "open_storage", "parse_tune_config", "resolve_storage", "study_figures",
    "study_summary", "suggest_experiment", "trial_experiment",
]


def study_figures(study_dir: str | Path, out_dir: str | Path, *,
                  storage: str | None = None) -> list[Path]:
    """Optimisation history, parameter importances and learning curves of a study, as PNGs.

    ``study_dir`` is ``results/<study>`` (its ``study.json`` says where the study lives); a
    study in a server needs ``storage`` (passwords are not stored). Figures of synthetic-data
    studies say so in their titles. Returns the files written (none for a study without
    complete trials).

    Example:
        >>> study_figures("results/quickstart-tune", "reports/quickstart-tune")  # doctest: +SKIP
        [PosixPath('reports/quickstart-tune/quickstart-tune-history.png'), ...]
    """
    study, info = load_study(study_dir, storage=storage)
    return draw_study(study, out_dir, metric=f"val {info.get('metric', 'objective')}",
                      synthetic=bool(info.get("synthetic")))


def study_summary(study_dir: str | Path, *, storage: str | None = None) -> dict:
    """A study as plain data for the report: objective, data, every trial, the best one.

    Returns a dict with ``study, metric, direction, n_trials, seeds_per_trial, synthetic,
    dataset`` (a trial record's dataset description), ``generated`` (the best experiment's YAML,
    when written), ``trials`` (``number, state, value, params, epochs, error``; a pruned trial's
    value is the last it reported) and ``best`` (one of the trials, or None).

    Example:
        >>> study_summary("results/quickstart-tune")["best"]["number"]  # doctest: +SKIP
        4
    """
    from optuna.trial import TrialState

    study, info = load_study(study_dir, storage=storage)
    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.FAIL and t.user_attrs.get(SURPLUS_ATTR):
            continue  # asked for after the budget was reached: never ran
        steps = t.intermediate_values
        value = t.value if t.value is not None else (steps[max(steps)] if steps else None)
        trials.append({"number": t.number, "state": t.state.name.lower(), "value": value,
                       "params": dict(t.params), "epochs": len(steps),
                       "error": t.user_attrs.get(ERROR_ATTR)})
    complete = [t for t in trials if t["state"] == "complete"]
    pick = max if info.get("direction", "maximize") == "maximize" else min
    dataset = {}
    for path in sorted(Path(study_dir).glob("trials/*/*/record.json"))[:1]:
        try:
            dataset = json.loads(path.read_text()).get("dataset") or {}
        except (OSError, ValueError):
            pass  # the banner then rests on study.json alone
    return {
        "study": info.get("study", study.study_name), "metric": info.get("metric", "objective"),
        "direction": info.get("direction", "maximize"), "n_trials": info.get("n_trials"),
        "seeds_per_trial": info.get("seeds_per_trial", 1),
        "synthetic": bool(info.get("synthetic") or dataset.get("synthetic")),
        "dataset": dataset, "generated": info.get("generated"), "trials": trials,
        "best": pick(complete, key=lambda t: t["value"]) if complete else None,
        "min_importance_trials": MIN_IMPORTANCE_TRIALS,
    }
