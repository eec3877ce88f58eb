"""A sweep over a strategy parameter: each combination is compared with its own baseline runs.

The grid is [none, focal, weighted_ce] x 2 seeds with ``sweep: {strategy.gamma: [1, 3]}``:
``none`` and ``weighted_ce`` take no gamma, so their runs are made once per seed and shared by
both combinations; focal is trained once per combination and seed. Differences and the Holm
adjustment are recomputed here from the stored predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cli_in_process, experiment, write_yaml
from sklearn.metrics import f1_score

from octbench import report
from octbench.config import load_config, parse_config
from octbench.errors import ConfigError
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.results import ResultsStore

SEEDS = [0, 1]
GAMMAS = [1, 3]
RESAMPLES = 100
SHARED = ["none", "weighted_ce"]  # take no gamma


def swept(tmp_path, oct_npz, **overrides) -> dict:
    return experiment(tmp_path, oct_npz, **{
        "strategies": ["none", {"name": "focal", "gamma": 2}, "weighted_ce"], "seeds": SEEDS,
        "train": {"epochs": 1, "batch_size": 64, "threads": 1},
        "sweep": {"strategy.gamma": GAMMAS}, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, oct_npz):
    """The grid, trained once for the module; returns the folder holding ``results/``."""
    import torch

    threads = torch.get_num_threads()
    tmp_path = tmp_path_factory.mktemp("sweep_baseline")
    config = parse_config(swept(tmp_path, oct_npz, report={"baseline": "none"}))
    try:
        assert run_experiment(config, quiet=True, say=lambda _: None).ok
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    return tmp_path


def macro_f1(store: ResultsStore, run_id: str) -> float:
    """A run's test macro-F1, straight from its predictions file."""
    with np.load(store.run_dir(run_id) / ResultsStore.PREDICTIONS) as arrays:
        labels = arrays["test_labels"].reshape(-1)
        predicted = arrays["test_scores"].argmax(axis=1)
    return f1_score(labels, predicted, average="macro", labels=range(4), zero_division=0)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out: the i-th smallest p times (m - i), running max."""
    order = np.argsort(p_values)
    adjusted, running = np.empty(len(p_values)), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def focal(gamma) -> str:
    return f"focal(gamma={float(gamma)})"


def test_unswept_strategies_are_trained_once_per_seed(trained):
    records = list(ResultsStore(trained / "results" / "tiny").records())
    for strategy in SHARED:
        runs = [r for r in records if r.strategy == strategy]
        assert sorted(r.seed for r in runs) == SEEDS and all(r.sweep == {} for r in runs)
    swept_runs = sorted((r.sweep["strategy.gamma"], r.seed, r.strategy) for r in records
                        if r.strategy not in SHARED)
    assert swept_runs == [(g, s, focal(g)) for g in GAMMAS for s in SEEDS]
    assert len(records) == len(SHARED) * len(SEEDS) + len(GAMMAS) * len(SEEDS)


@pytest.mark.parametrize("baseline", ["none", "focal(gamma=2.0)"])
def test_each_combination_is_compared_with_its_own_baseline_runs(trained, oct_npz, baseline):
    """With baseline none: focal(gamma=g) and weighted_ce vs the shared none runs, in each
    combination. With baseline focal: it follows the swept gamma, so none and weighted_ce are
    compared with focal(gamma=g)."""
    raw = swept(trained, oct_npz, report={"baseline": baseline})
    data = report.collect(parse_config(raw))
    assert not [w for w in data.warnings if "baseline" in w]
    comparisons = report.compare_to_baseline(data, n_resamples=RESAMPLES)
    assert len(comparisons) == 2 * len(GAMMAS)

    store = ResultsStore(trained / "results" / "tiny")
    records = list(store.records())

    def runs_of(strategy: str, gamma: int) -> dict[int, str]:
        """seed -> run id of a strategy's runs in a combination (shared ones included)."""
        return {r.seed: r.run_id for r in records if r.strategy == strategy
                and r.sweep.get("strategy.gamma", gamma) == gamma}

    compared_runs = {}
    for gamma in GAMMAS:
        base = "none" if baseline == "none" else focal(gamma)
        others = [focal(gamma), "weighted_ce"] if baseline == "none" else SHARED
        setup = f"cpu fp32 · strategy.gamma={gamma}"
        for strategy in others:
            row = comparisons[(comparisons.setup == setup)
                              & (comparisons.strategy == strategy)].iloc[0]
            assert row.seeds == len(SEEDS)
            a, b = runs_of(strategy, gamma), runs_of(base, gamma)
            differences = [macro_f1(store, a[s]) - macro_f1(store, b[s]) for s in SEEDS]
            assert row.seed_differences == pytest.approx(differences, abs=1e-12)
            assert row.macro_f1_delta == pytest.approx(np.mean(differences), abs=1e-12)
            compared_runs[row.name] = (*a.values(), *b.values())

    # Holm counts each distinct comparison once: shared vs shared appears in both combinations.
    distinct = {}
    for index, runs in compared_runs.items():
        distinct.setdefault(runs, comparisons.macro_f1_p[index])
    assert len(distinct) == (3 if baseline == "none" else 4)
    adjusted = dict(zip(distinct, holm(list(distinct.values())), strict=True))
    for index, runs in compared_runs.items():
        assert comparisons.macro_f1_p_holm[index] == pytest.approx(adjusted[runs])

    table = report.main_table(data, n_resamples=RESAMPLES, comparisons=comparisons)
    baseline_rows = table[[data.baseline_in(r.setup) == r.strategy
                           for r in table.itertuples()]]
    assert len(baseline_rows) == len(GAMMAS)  # one baseline row per combination
    assert baseline_rows.delta.isna().all() and table.delta.notna().sum() == 2 * len(GAMMAS)


def test_a_results_folder_shares_its_baseline_runs_the_same_way(trained):
    """Without the YAML the shared runs are recognised from the records alone."""
    data = report.collect(trained / "results" / "tiny")
    comparisons = report.compare_to_baseline(data, n_resamples=RESAMPLES)
    assert sorted(zip(comparisons.strategy, comparisons.setup, strict=True)) == sorted(
        (strategy, f"cpu fp32 · strategy.gamma={g}") for g in GAMMAS
        for strategy in (focal(g), "weighted_ce"))
    assert (comparisons.seeds == len(SEEDS)).all()


def test_the_report_names_the_baseline_of_each_combination(trained, oct_npz, tmp_path):
    raw = swept(trained, oct_npz, report={"baseline": "focal(gamma=2.0)"})
    path = write_yaml(tmp_path / "focal.yaml", raw)
    done = report.build_report(path, tmp_path / "reports", n_resamples=RESAMPLES)
    text = next(p for p in done if p.suffix == ".md").read_text()
    assert "has no complete run" not in text
    for gamma in GAMMAS:
        assert f"| focal(gamma={float(gamma)}) (baseline) | cpu fp32 · strategy.gamma={gamma} |" \
            in text
    assert "Differences to the baseline `focal (of each sweep combination)`" in text


def test_dry_run_counts_the_shared_runs_once(tmp_path, oct_npz, capsys):
    path = write_yaml(tmp_path / "s.yaml", swept(tmp_path, oct_npz))
    done = cli_in_process(["run", "--dry-run", str(path)], capsys)
    assert done["code"] == 0, done["err"]
    todo = [line for line in done["out"].splitlines() if line.startswith("  to do ")]
    expected = len(SHARED) * len(SEEDS) + len(GAMMAS) * len(SEEDS)
    assert len(todo) == len(expand_grid(load_config(path))) == expected
    for strategy in SHARED:
        assert sum(f"__{strategy}__" in line for line in todo) == len(SEEDS)
    assert f"{expected} runs" in done["out"]
    assert "shared: none, weighted_ce take(s) no swept strategy parameter" in done["out"]


def test_set_changes_only_the_strategies_that_take_the_parameter(tmp_path, oct_npz):
    raw = swept(tmp_path, oct_npz, report={"baseline": "focal(gamma=2.0)"})
    del raw["sweep"]
    path = write_yaml(tmp_path / "s.yaml", raw)
    config = load_config(path, {"strategy.gamma": 3})
    assert [s.label for s in config.strategies] == ["none", "focal(gamma=3.0)", "weighted_ce"]
    assert config.report.baseline == "focal(gamma=3.0)"  # the baseline follows its strategy


@pytest.mark.parametrize(("strategies", "value"), [
    (["none", {"name": "focal", "gamma": 2.0}], "strategy.gama=3"),
    (["none", "weighted_ce"], "strategy.gamma=3"),
])
def test_set_of_a_parameter_no_strategy_takes_exits_2(tmp_path, oct_npz, capsys, strategies,
                                                      value):
    path = write_yaml(tmp_path / "s.yaml", experiment(tmp_path, oct_npz, strategies=strategies))
    done = cli_in_process(["run", "--dry-run", str(path), "--set", value], capsys)
    assert done["code"] == 2
    lines = done["err"].strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in done["err"]
    path_name = value.partition("=")[0]
    assert f"--set {path_name} names a parameter that no strategy of the experiment takes" \
        in lines[0]
    assert not (tmp_path / "results").exists()


def test_a_sweep_of_a_parameter_no_strategy_takes_is_one_problem(tmp_path, oct_npz):
    raw = swept(tmp_path, oct_npz, strategies=["none", "weighted_ce"])
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert error.value.problems == [
        "sweep['strategy.gamma']: strategy.gamma names a parameter that no strategy of the "
        "experiment takes (strategies: none, weighted_ce)."]
