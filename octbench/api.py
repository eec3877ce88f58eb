"""The Python API for notebooks and scripts: the CLI's commands as functions.

Each function takes what the matching command takes (a YAML path, or the same content as a
dict or a parsed config), returns data instead of printing, and reports through the
``octbench`` logger, so a notebook silences it with
``logging.getLogger("octbench").setLevel(logging.WARNING)``. In a notebook the progress bars
are tqdm's notebook widgets when ipywidgets is installed.

Example:
    >>> import octbench
    >>> summary = octbench.run("experiments/quickstart.yaml",
    ...                        overrides={"train.epochs": 1})  # doctest: +SKIP
    >>> runs = octbench.load_results("results/quickstart")  # doctest: +SKIP
    >>> octbench.write_report("results/quickstart", out="reports")  # doctest: +SKIP

Layer: the top, beside the CLI (it imports the library below it; nothing imports it but
``octbench/__init__.py``'s lazy names and the CLI).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from octbench.errors import OctbenchError

if TYPE_CHECKING:  # only for the signatures: importing them pulls in torch
    import pandas

    from octbench.config import ExperimentConfig
    from octbench.data import OCTData
    from octbench.executors import Executor
    from octbench.experiment import RunSummary
    from octbench.tuning import TuneConfig
    from octbench.tuning.workers import TuneResult

log = logging.getLogger("octbench")


def experiment_config(experiment: str | Path | Mapping | ExperimentConfig, *,
                      overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """An experiment as a validated config: from a YAML path, the same content as a dict, or
    a config; ``overrides`` set values at dotted paths (``{"train.epochs": 1}``) first.

    Raises:
        ConfigError: every problem of the result, each with its YAML path.

    Example:
        >>> config = experiment_config("experiments/quickstart.yaml",
        ...                            overrides={"train.epochs": 1, "seeds": [0, 1]})
        >>> config.train.epochs, config.seeds
        (1, (0, 1))
    """
    from octbench.config import ExperimentConfig, apply_overrides, parse_config, read_yaml

    if isinstance(experiment, ExperimentConfig):
        if not overrides:
            return experiment
        raw, source = experiment.to_dict(), None
    elif isinstance(experiment, Mapping):
        raw, source = dict(experiment), None
    elif isinstance(experiment, (str, Path)):
        raw, source = read_yaml(experiment), str(experiment)
        raw.setdefault("name", Path(experiment).stem)
    else:
        raise OctbenchError(f"an experiment is a YAML path, a dict or an ExperimentConfig; got "
                            f"{type(experiment).__name__}.")
    if overrides:
        raw = apply_overrides(raw, overrides, source)
    return parse_config(raw, source=source)


def run(experiment: str | Path | Mapping | ExperimentConfig, *,
        overrides: Mapping[str, Any] | None = None, executor: str | Executor = "local",
        shard: str | None = None, quiet: bool = False) -> RunSummary:
    """Train and evaluate every run of an experiment that is not complete yet
    (``octbench run``); calling it again resumes.

    Args:
        experiment: a YAML path, the same content as a dict, or an ``ExperimentConfig``.
        overrides: values at dotted paths, e.g. ``{"train.epochs": 1, "data.scale": 0.01}``.
        executor: ``"local"`` (here, one run at a time), ``"ray"`` (a local Ray; needs the
            ``[ray]`` extra), or an executor object such as
            ``octbench.executors.RayExecutor(address="auto")``.
        shard: ``"K/N"``: only the K-th of N disjoint slices of the grid.
        quiet: no progress lines or bars.

    Returns:
        The ``RunSummary``: run ids trained, already complete, skipped and failed.

    Example:
        >>> summary = run({"name": "demo", "data": {"name": "synthetic", "scale": 0.01},
        ...                "models": ["reference_cnn"], "strategies": ["none"], "seeds": [0],
        ...                "train": {"epochs": 1}, "results_dir": "results"})  # doctest: +SKIP
        >>> summary.completed  # doctest: +SKIP
        ['reference_cnn__none__seed0__cpu__...']
    """
    from octbench.executors import LocalExecutor, RayExecutor
    from octbench.experiment import run_experiment
    from octbench.grid import Shard

    config = experiment_config(experiment, overrides=overrides)
    if isinstance(executor, str):
        makers = {"local": LocalExecutor, "ray": RayExecutor}
        if executor not in makers:
            raise OctbenchError(f"executor must be 'local' or 'ray', or an executor object. "
                                f"Got {executor!r} instead.")
        executor = makers[executor]()
    return run_experiment(config, quiet=quiet, say=log.info, executor=executor,
                          shard=Shard.parse(shard) if shard is not None else None)


def load_results(path: str | Path) -> pandas.DataFrame:
    """Every run record below ``path`` as a DataFrame, one row per run: identity columns
    (``model``, ``strategy``, ``seed``, ...), ``config.*`` (the resolved configuration),
    ``<split>_<metric>`` and ``<split>_<metric>_<class>`` (per-class precision, recall, F1,
    support) and the timing columns.

    Example:
        >>> runs = load_results("results/quickstart")  # doctest: +SKIP
        >>> runs.groupby("strategy")["test_macro_f1"].mean()  # doctest: +SKIP
    """
    from octbench.results import load_results as load

    return load(path)


def write_report(source: str | Path, out: str | Path = "reports", *,
           formats: Sequence[str] = ("md",), baseline: str | None = None,
           resamples: int = 2000, study: str | Path | None = None,
           allow_mixed_data: bool = False) -> list[Path]:
    """Write an experiment's report to ``<out>/<experiment>/`` (``octbench report``).

    (Not ``octbench.report``: that name is the package of the report's modules.)

    Args:
        source: an experiment YAML or a results folder.
        out: the reports folder.
        formats: ``"md"`` (report.md and figures) and/or ``"csv"`` (runs.csv, medmnist files).
        baseline: the strategy the others are compared with (default: the YAML's, else none).
        resamples: bootstrap resamples for the intervals and tests.
        study: an Optuna study folder whose figures to include.
        allow_mixed_data: report runs made on data of different fingerprints together.

    Returns:
        Every path written.

    Example:
        >>> paths = write_report("results/quickstart", out="reports")  # doctest: +SKIP
        >>> paths[0]  # doctest: +SKIP
        PosixPath('reports/quickstart/report.md')
    """
    from octbench.report import build_report
    from octbench.tuning import study_figures, study_summary

    return build_report(source, out, formats=tuple(formats), baseline=baseline,
                        n_resamples=resamples, study=study, allow_mixed_data=allow_mixed_data,
                        draw_study=study_figures, summarise_study=study_summary)


def tune(config: str | Path | Mapping | TuneConfig, *, workers: int = 1,
         storage: str | None = None, quiet: bool = False) -> TuneResult:
    """Run or resume an Optuna study (``octbench tune``) on the validation split.

    Args:
        config: a tuning YAML path, its content as a dict, or a ``TuneConfig``.
        workers: processes on this machine (more than one needs a YAML path).
        storage: an Optuna RDB URL or ``journal:PATH`` (default: a file in the study folder).
        quiet: no progress lines.

    Returns:
        The ``TuneResult``: counts of trials, the best value and parameters, and the path of
        the generated ``<study>-best.yaml``.

    Example:
        >>> result = tune("experiments/tune.yaml")  # doctest: +SKIP
        >>> result.best_params  # doctest: +SKIP
        {'train.lr': 0.0023, ...}
    """
    from octbench.tuning import TuneConfig, load_tune_config, parse_tune_config
    from octbench.tuning.workers import tune as tune_study

    if isinstance(config, (str, Path)):
        config = load_tune_config(config)
    elif isinstance(config, Mapping):
        config = parse_tune_config(dict(config))
    elif not isinstance(config, TuneConfig):
        raise OctbenchError(f"a tuning config is a YAML path, a dict or a TuneConfig; got "
                            f"{type(config).__name__}.")
    return tune_study(config, workers=workers, storage=storage, quiet=quiet, say=log.info)


def load_data(source: str | Path, *, defaults: Mapping[str, Any] | None = None,
              **params: Any) -> OCTData:
    """A dataset from a registry name (``"synthetic"``), an ``.npz`` file, an image folder or
    an experiment YAML (its ``data:``), with ``params`` set on it; ``defaults`` fill
    parameters of an npz file or folder left unset.

    Example:
        >>> data = load_data("synthetic", scale=0.01)  # doctest: +SKIP
        >>> data.class_counts()["test"]  # doctest: +SKIP
    """
    from octbench.data import load_dataset

    component = data_component(source, defaults, **params)
    return load_dataset(component.name, **component.params)


def data_component(source: str | Path, defaults: dict | None = None, **params: Any):
    """The validated dataset choice (a ``Component``) that :func:`load_data` loads, without
    loading it: a registry name, an .npz file, an image folder or an experiment YAML."""
    from octbench.config import load_config, parse_data

    source = str(source)
    if source.endswith((".yaml", ".yml")):
        component = load_config(source).data
        return parse_data({"name": component.name, **component.params, **params})
    if source.endswith(".npz"):
        return parse_data({"name": "npz", "path": source, **params})
    if Path(source).is_dir():
        return parse_data({"name": "folder", "path": source, **(defaults or {}), **params})
    return parse_data({"name": source, **params})


def evaluate(run: str | Path, data: str | Path | OCTData, *, split: str = "test",
             results_dir: str | Path = "results", **params: Any) -> dict:
    """Score a trained run's checkpoint on one split of a dataset (``octbench evaluate``).

    Args:
        run: a run id (or unique prefix) below ``results_dir``, a run folder, or a best.pt.
        data: an ``OCTData``, or what :func:`load_data` takes (``params`` go to it).
        split: ``"train"``, ``"val"`` or ``"test"``.
        results_dir: where to look for run ids.

    Returns:
        ``{"split", "metrics": {split: {...}}, "model", "dataset"}``: the metrics as a run
        record holds them, with the provenance of both sides.

    Example:
        >>> scores = evaluate("reference_cnn__none", "synthetic", scale=0.05)  # doctest: +SKIP
        >>> scores["metrics"]["test"]["macro_f1"]  # doctest: +SKIP
    """
    from octbench.data import OCTData
    from octbench.predict import evaluate_checkpoint, load_predictor

    if split not in ("train", "val", "test"):
        raise OctbenchError(f"split must be 'train', 'val' or 'test'. Got {split!r} instead.")
    predictor = load_predictor(str(run), results_dir)
    if not isinstance(data, OCTData):
        data = load_data(data, defaults={"size": predictor.img_size}, **params)
    if data.synthetic or predictor.synthetic:
        log.warning("synthetic data: these numbers are not about real scans")
    return evaluate_checkpoint(predictor, data, split)

