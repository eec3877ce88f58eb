"""Hyperparameter tuning with Optuna, end to end on a tiny MedMNIST-format file.

Storage behaviour is tested for real: a SQLite study killed with SIGKILL mid-trial and rerun, two
worker processes sharing a journal file, and (with ``OCTBENCH_TEST_POSTGRES_URL``, set by
``.ci/run`` after ``.ci/postgres.sh start``) two workers sharing a PostgreSQL server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, cli_env, experiment, imports_torch, tree_digest, write_yaml

from octbench.cli import main
from octbench.config import load_config
from octbench.results import load_results
from octbench.tuning import (
    DEFAULT_PRUNER,
    load_tune_config,
    open_storage,
    parse_tune_config,
    study_figures,
    study_summary,
)
from octbench.tuning.objective import make_objective

FINISHED = ("COMPLETE", "PRUNED")


def tune_dict(tmp_path: Path, data_path: Path, **overrides) -> dict:
    """A tiny study: reference CNN (width 0.25), 2 epochs, lr and focal gamma searched."""
    config = experiment(tmp_path, data_path, strategies=[{"name": "focal", "gamma": 2.0}])
    config["train"]["epochs"] = 2
    config.update({
        "study": "tiny-tune",
        "search": {"train.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
                   "strategy.gamma": {"type": "float", "low": 0.0, "high": 3.0}},
        "n_trials": 3,
        "pruner": "none",
    })
    config.update(overrides)
    return config


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path, so experiments/generated/ lands there, with a private data cache."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def load(tmp_path: Path, name: str = "tiny-tune", storage: str | None = None) -> optuna.Study:
    root = tmp_path / "results" / name
    spec = storage or (f"journal:{root / 'journal.log'}" if (root / "journal.log").exists()
                       else f"sqlite:///{root / 'study.db'}")
    return optuna.load_study(study_name=name, storage=open_storage(spec))


# ---------------------------------------------------------------------------------------------
# Bad input: one clear message, exit code 2, nothing written


BAD = {
    "unknown path": ({"search": {"train.lrr": [0.1]}}, "search.train.lrr",
                     "Did you mean 'lr'?"),
    "unknown section": ({"search": {"trian.lr": [0.1]}}, "search.trian.lr",
                        "unknown top-level key 'trian'"),
    "param of no strategy": ({"strategies": ["none"], "search": {"strategy.gamma": [1.0]}},
                             "search.strategy.gamma: strategy.gamma names a parameter that "
                             "no strategy of the experiment takes (strategies: none)", ""),
    "low > high": ({"search": {"train.lr": {"type": "float", "low": 0.1, "high": 0.01}}},
                   "search.train.lr: low (0.1) is greater than high (0.01)", "swap"),
    "empty categorical": ({"search": {"train.optimizer": {"type": "categorical",
                                                          "choices": []}}},
                          "search.train.optimizer.choices must be a non-empty list", ""),
    "log with low <= 0": ({"search": {"train.weight_decay": {"type": "float", "low": 0.0,
                                                             "high": 0.1, "log": True}}},
                          "search.train.weight_decay: a log scale needs low > 0", ""),
    "value out of range": ({"search": {"train.lr": {"type": "float", "low": 0.0,
                                                    "high": 0.1}}},
                           "search.train.lr = 0.0: train.lr must be > 0", ""),
    "unknown pruner": ({"pruner": "medain"}, "unknown pruner 'medain'",
                       "Did you mean 'median'?"),
    "unknown sampler": ({"sampler": {"name": "cmaes"}}, "unknown sampler 'cmaes'",
                        "Choices: tpe, random"),
    "bad pruner parameter": ({"pruner": {"name": "median", "warmup": 2}},
                             "unknown parameter 'pruner.warmup'", "n_warmup_steps"),
    "data searched": ({"search": {"data.scale": [0.1]}}, "data cannot be searched", ""),
    "no budget": ({"n_trials": None}, "set 'n_trials'", "'timeout'"),
    "two models": ({"models": ["reference_cnn", "reference_cnn_2conv"]},
                   "a trial trains one model", "choices"),
    "wrong direction": ({"objective": {"metric": "ece", "direction": "maximize"}},
                        "contradicts the metric", "minimize"),
}


def test_the_tuning_package_reads_studies_without_torch(tmp_path):
    # The report imports the package (a study's figures and summary); only trials pay for torch.
    assert not imports_torch("import octbench.tuning", tmp_path)
    assert imports_torch("import octbench.tuning.objective", tmp_path)
    assert imports_torch("import octbench.tuning.workers", tmp_path)


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_tuning_yaml_exits_2_and_writes_nothing(case, in_tmp, oct_npz, capsys):
    overrides, message, hint = BAD[case]
    path = write_yaml(in_tmp / "tune.yaml", tune_dict(in_tmp, oct_npz, **overrides))
    before = tree_digest(in_tmp)
    assert main(["-q", "tune", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and hint in err and "Traceback" not in err
    assert tree_digest(in_tmp) == before and not (in_tmp / "results").exists()


def test_every_problem_is_reported_at_once(tmp_path, oct_npz):
    raw = tune_dict(tmp_path, oct_npz, n_trials=0, pruner="medain", search={
        "train.lr": {"type": "float", "low": 1.0, "high": 0.1},
        "train.optimizer": {"type": "categorical", "choices": []}})
    with pytest.raises(Exception) as info:
        parse_tune_config(raw, source="tune.yaml")
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert "tune.yaml" in str(info.value)


@pytest.mark.parametrize("storage", ["postgresql://nobody@127.0.0.1:1/nothing",
                                     "nosuchdb://x/y", "journal:/no/such/folder/j.log"])
def test_unreachable_storage_exits_2_and_writes_nothing(storage, in_tmp, oct_npz, capsys):
    path = write_yaml(in_tmp / "tune.yaml", tune_dict(in_tmp, oct_npz))
    before = tree_digest(in_tmp)
    assert main(["-q", "tune", str(path), "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert "cannot open the Optuna storage" in err and "Traceback" not in err
    assert tree_digest(in_tmp) == before and not (in_tmp / "results").exists()


def test_sqlite_cannot_be_shared_by_workers(in_tmp, oct_npz, capsys):
    path = write_yaml(in_tmp / "tune.yaml", tune_dict(in_tmp, oct_npz))
    url = f"sqlite:///{in_tmp / 'x.db'}"
    assert main(["-q", "tune", str(path), "--workers", "2", "--storage", url]) == 2
    assert "SQLite is not safe for several processes" in capsys.readouterr().err
    assert not (in_tmp / "x.db").exists()


def test_base_file_with_inline_overrides(tmp_path, oct_npz):
    base = experiment(tmp_path, oct_npz)  # four strategies
    write_yaml(tmp_path / "exp" / "base.yaml", base)
    path = write_yaml(tmp_path / "exp" / "tune.yaml", {
        "base": "base.yaml", "train": {"epochs": 1}, "n_trials": 2,
        "search": {"strategy": ["none", "focal", "oversample"], "strategy.gamma": [1.0, 3.0],
                   "models.0.dropout": {"type": "float", "low": 0.0, "high": 0.5}}})
    config = load_tune_config(path)
    assert config.study == "tune" and config.base["name"] == "tune"
    assert config.base["train"] == {**base["train"], "epochs": 1}  # deep-merged
    assert [p.path for p in config.search] == ["strategy", "strategy.gamma", "model.dropout"]
    assert config.sampler == {"name": "tpe", "seed": 0}
    assert config.pruner == {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1}


def test_named_median_pruner_keeps_default_warmup(tmp_path, oct_npz):
    config = parse_tune_config(tune_dict(tmp_path, oct_npz, pruner="median"))
    assert config.pruner == DEFAULT_PRUNER
    config = parse_tune_config(tune_dict(tmp_path, oct_npz, pruner={"name": "median",
                                                                       "n_warmup_steps": 4}))
    assert config.pruner == {**DEFAULT_PRUNER, "n_warmup_steps": 4}


# ---------------------------------------------------------------------------------------------
# A study end to end


def test_small_study_end_to_end(in_tmp, oct_npz, capsys):
    raw = tune_dict(in_tmp, oct_npz, search={
        **tune_dict(in_tmp, oct_npz)["search"],
        "strategy": {"type": "categorical", "choices": ["none", "focal"]},
        "train.batch_size": [32, 64]})
    path = write_yaml(in_tmp / "tune.yaml", raw)
    assert main(["-q", "tune", str(path)]) == 0
    out = capsys.readouterr().out
    assert "best trial" in out and "[synthetic data]" in out

    study = load(in_tmp)
    assert sorted(states(study)) == ["COMPLETE"] * 3
    for trial in study.trials:  # gamma only where the chosen strategy has it
        assert ("strategy.gamma" in trial.params) == (trial.params["strategy"] == "focal")
        assert len(trial.intermediate_values) == 2  # one report per epoch

    generated = in_tmp / "experiments" / "generated" / "tiny-tune-best.yaml"
    assert generated.read_text().startswith("# Generated by `octbench tune")
    best = load_config(generated)
    assert best.name == "tiny-tune-best" and best.seeds == (0, 1, 2)
    assert best.train.lr == float(f"{study.best_params['train.lr']:.4g}")  # what trials used
    # The tuned strategy last, the baseline (none) kept beside it for the report to compare.
    assert best.strategies[-1].name == study.best_params["strategy"]
    assert best.strategies[0].name == "none" and best.report.baseline == "none"
    assert len(best.strategies) == (1 if study.best_params["strategy"] == "none" else 2)
    assert best.train.batch_size == study.best_params["train.batch_size"]

    # Trials are run records of kind "trial" that never saw the test split.
    frame = load_results(in_tmp / "results" / "tiny-tune")
    assert len(frame) == 3 and set(frame.kind) == {"trial"} and set(frame.status) == {"complete"}
    assert not any(c.startswith("test_") for c in frame.columns)
    record = json.loads(next((in_tmp / "results").rglob("record.json")).read_text())
    assert "test" not in record["metrics"] and record["dataset"]["synthetic"] is True
    assert record["dataset"]["class_counts"]["test"] == [0, 0, 0, 0]
    values = sorted(frame.val_macro_f1)
    assert sorted(t.value for t in study.trials) == pytest.approx(values)

    figures = study_figures(in_tmp / "results" / "tiny-tune", in_tmp / "figures")
    # 3 complete trials are too few for an importance figure (fANOVA on 3 points).
    assert {p.name for p in figures} == {"tiny-tune-history.png", "tiny-tune-curves.png"}
    assert all(p.stat().st_size > 1000 and p.with_suffix(".svg").is_file() for p in figures)

    # The study's own report: banner, the trial table, the best trial, the real hint.
    from octbench.report import build_report

    report = build_report(in_tmp / "results" / "tiny-tune", in_tmp / "reports",
                          n_resamples=100, draw_study=study_figures,
                          summarise_study=study_summary)[0].read_text()
    assert "**SYNTHETIC DATA.**" in report and "## Tuning study `tiny-tune`" in report
    assert "| Trial | State | val macro_f1 | Epochs |" in report
    best_trial = study.best_trial
    assert f"**Best trial: {best_trial.number}**, val macro_f1 {best_trial.value:.4f}" in report
    for trial in study.trials:
        assert f"| {trial.number}" in report
    assert "python -m octbench run experiments/generated/tiny-tune-best.yaml" in report
    assert "STUDY-best" not in report and "no data" not in report
    assert "every run of the grid is complete" not in report
    assert "No parameter-importance figure: 3 complete trial(s)" in report

    # A rerun finds the study complete: no new trial, the same best configuration.
    assert main(["-q", "tune", str(path)]) == 0
    assert len(load(in_tmp).trials) == 3
    assert load_config(generated) == best


def test_changed_search_space_is_refused(in_tmp, oct_npz, capsys):
    raw = tune_dict(in_tmp, oct_npz, n_trials=1)
    raw["train"]["epochs"] = 1
    path = write_yaml(in_tmp / "tune.yaml", raw)
    assert main(["-q", "tune", str(path)]) == 0
    raw["search"]["train.lr"]["high"] = 0.1
    write_yaml(path, raw)
    before = tree_digest(in_tmp)
    assert main(["-q", "tune", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already exists with a different search" in err and "another `study:` name" in err
    assert tree_digest(in_tmp) == before


def test_seed_averaged_objective(in_tmp, oct_npz):
    path = write_yaml(in_tmp / "tune.yaml", tune_dict(in_tmp, oct_npz, n_trials=1,
                                                      seeds_per_trial=2))
    assert main(["-q", "tune", str(path)]) == 0
    trial = load(in_tmp).trials[0]
    frame = load_results(in_tmp / "results" / "tiny-tune")
    assert sorted(frame.seed) == [0, 1]
    assert trial.value == pytest.approx(frame.val_macro_f1.mean())
    # Step seed * epochs + epoch reports the running mean: the finished seeds' values and the
    # current seed's value at that epoch.
    records = {r["seed"]: r for r in (json.loads(p.read_text()) for p in
                                      (in_tmp / "results").rglob("record.json"))}
    curve = {s: [h["val_macro_f1"] for h in records[s]["history"]] for s in (0, 1)}
    final0 = records[0]["metrics"]["val"]["macro_f1"]
    assert trial.intermediate_values == pytest.approx(
        {0: curve[0][0], 1: curve[0][1], 2: (final0 + curve[1][0]) / 2,
         3: (final0 + curve[1][1]) / 2})


def test_objective_works_with_a_plain_optuna_study(tmp_path, oct_npz):
    config = parse_tune_config(tune_dict(tmp_path, oct_npz))
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    study.optimize(make_objective(config), n_trials=1)
    trial = study.trials[0]
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [0]
    # A pruned run leaves no record or checkpoint behind.
    assert not list((tmp_path / "results").rglob("record.json"))
    assert not list((tmp_path / "results").rglob("*.pt"))


def test_hyperband_pruner(in_tmp, oct_npz):
    raw = tune_dict(in_tmp, oct_npz, n_trials=4, pruner={"name": "hyperband", "min_resource": 1,
                                                         "reduction_factor": 2})
    assert main(["-q", "tune", str(write_yaml(in_tmp / "tune.yaml", raw))]) == 0
    assert len([s for s in states(load(in_tmp)) if s in FINISHED]) == 4


def test_failing_trials_stop_the_study(in_tmp, oct_npz, capsys):
    # fp16 is unavailable on the CPU: every run is SKIPPED, so every trial fails.
    raw = tune_dict(in_tmp, oct_npz, search={"train.precision": ["fp16"]})
    path = write_yaml(in_tmp / "tune.yaml", raw)
    assert main(["-q", "tune", str(path)]) == 1
    out = capsys.readouterr().out
    assert "5 trials failed in a row" in out and "fp16 is not supported" in out
    assert "no trial completed" in out
    assert states(load(in_tmp)) == ["FAIL"] * 5


# ---------------------------------------------------------------------------------------------
# Several processes, kills and servers


def start_tune(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "octbench", "-q", "tune", *args], cwd=cwd,
                            env=cli_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    return out


def sqlite_trials(db: Path) -> list[tuple[int, str, int]]:
    """(number, state, reported epochs) per trial, read without disturbing the writer."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5) as connection:
            return connection.execute(
                "SELECT t.number, t.state, COUNT(v.trial_intermediate_value_id) FROM trials t "
                "LEFT JOIN trial_intermediate_values v ON v.trial_id = t.trial_id "
                "GROUP BY t.trial_id ORDER BY t.number").fetchall()
    except sqlite3.Error:  # not created yet, or locked by the writer for a moment
        return []


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_study_resumes_to_exactly_n_trials(signum, tmp_path, oct_npz):
    raw = tune_dict(tmp_path, oct_npz, n_trials=3)
    raw["train"]["epochs"] = 6
    path = write_yaml(tmp_path / "tune.yaml", raw)
    db = tmp_path / "results" / "tiny-tune" / "study.db"
    proc = start_tune([str(path)], tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        # Mid-trial: a trial is RUNNING and has reported at least one epoch.
        if any(state == "RUNNING" and epochs >= 1 for _, state, epochs in sqlite_trials(db)):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the study ended before it could be stopped"
    os.kill(proc.pid, signum)
    proc.communicate(timeout=60)
    running = [n for n, state, _ in sqlite_trials(db) if state == "RUNNING"]
    if signum == signal.SIGKILL:
        assert len(running) == 1  # nobody could mark it: the rerun must
        interrupted = running[0]
    else:
        assert proc.returncode == 130 and not running  # failed and queued for retry at once
        interrupted = next(n for n, state, _ in sqlite_trials(db) if state == "FAIL")

    out = finish(start_tune([str(path)], tmp_path))
    assert ("left RUNNING by a killed process" in out) == (signum == signal.SIGKILL)
    study = load(tmp_path)
    assert len([s for s in states(study) if s in FINISHED]) == 3
    assert "RUNNING" not in states(study) and "WAITING" not in states(study)
    assert states(study).count("FAIL") == 1
    # The stopped trial was retried with its parameters and resumed from its checkpoint.
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == interrupted)
    assert retry.state.name == "COMPLETE"
    assert retry.params == study.trials[interrupted].params
    assert sorted(retry.intermediate_values) == list(range(6))
    assert not list((tmp_path / "results").rglob("resume.pt"))


def test_two_workers_share_a_journal_study(tmp_path, oct_npz):
    path = write_yaml(tmp_path / "tune.yaml", tune_dict(tmp_path, oct_npz, n_trials=4))
    out = finish(start_tune([str(path), "--workers", "2"], tmp_path))
    assert "starting 2 worker processes" not in out  # progress: not under -q
    assert "best trial" in out and "wrote experiments/generated/tiny-tune-best.yaml" in out
    root = tmp_path / "results" / "tiny-tune"
    assert (root / "journal.log").is_file() and not (root / "study.db").exists()
    study = load(tmp_path)
    assert len([s for s in states(study) if s in FINISHED]) == 4
    assert "RUNNING" not in states(study)
    owners = [t.user_attrs["octbench_worker"].split("|")[1] for t in study.trials]
    assert len(set(owners)) == 2, f"one worker ran every trial: {owners}"
    assert (tmp_path / "experiments" / "generated" / "tiny-tune-best.yaml").is_file()


@pytest.mark.postgres
def test_postgres_two_workers(tmp_path, oct_npz):
    url = os.environ.get("OCTBENCH_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set OCTBENCH_TEST_POSTGRES_URL (bash .ci/postgres.sh start; "
                    "export OCTBENCH_TEST_POSTGRES_URL=$(bash .ci/postgres.sh url))")
    name = f"pg-{uuid.uuid4().hex[:8]}"
    path = write_yaml(tmp_path / "tune.yaml", tune_dict(tmp_path, oct_npz, study=name,
                                                        n_trials=4))
    try:
        out = finish(start_tune([str(path), "--workers", "2", "--storage", url], tmp_path))
        assert "starting 2 worker processes" not in out  # progress: not under -q
        study = load(tmp_path, name, storage=url)
        assert len([s for s in states(study) if s in FINISHED]) == 4
        assert "RUNNING" not in states(study)
        recorded = json.loads((tmp_path / "results" / name / "study.json").read_text())
        assert recorded["storage_kind"] == "url"
        # A rerun without --storage must be told where the study lives.
        rerun = subprocess.run([sys.executable, "-m", "octbench", "-q", "tune", str(path)],
                               cwd=tmp_path, env=cli_env(tmp_path), capture_output=True,
                               text=True, timeout=120)
        assert rerun.returncode == 2 and "pass that URL again with --storage" in rerun.stderr
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=url)


def test_example_tune_yaml_is_valid():
    config = load_tune_config(ROOT / "experiments" / "tune.yaml")
    assert config.n_trials and config.base["data"]["name"] == "synthetic"
    assert yaml.safe_load((ROOT / "experiments" / "tune.yaml").read_text())["study"] == \
        config.study


class PruneFromStep(optuna.pruners.BasePruner):
    """Asks to prune every trial that has reported ``step`` or later."""

    def __init__(self, step: int):
        self.step = step

    def prune(self, study, trial) -> bool:
        return trial.last_step is not None and trial.last_step >= self.step


@pytest.mark.parametrize("epochs, seeds, state, reported", [
    (2, 1, "COMPLETE", 2),   # asked to prune only at the last epoch: the trial completes
    (2, 2, "PRUNED", 2),     # the last epoch of seed 0 is not the trial's last step
    (3, 1, "PRUNED", 2),     # before the last epoch, pruning works as the pruner says
])
def test_a_trial_is_never_pruned_at_its_last_step(in_tmp, oct_npz, epochs, seeds, state,
                                                  reported, restore_torch):
    raw = tune_dict(in_tmp, oct_npz, n_trials=1, seeds_per_trial=seeds)
    raw["train"]["epochs"] = epochs
    config = parse_tune_config(raw)
    study = optuna.create_study(direction="maximize", pruner=PruneFromStep(1))
    study.optimize(make_objective(config), n_trials=1)
    trial = study.trials[0]
    assert trial.state.name == state
    assert len(trial.intermediate_values) == reported


@pytest.mark.slow  # two tuning processes, ~40 s on the 2-core build machine
def test_worker_killed_on_another_host_is_failed_by_heartbeat_and_retried(tmp_path, oct_npz):
    """Two hosts share a journal file. The worker posing as host 'elsewhere' is SIGKILLed in its
    first trial (after epoch 1's checkpoint, fault plugin); its process id means nothing here,
    so only the heartbeat tells it died. The worker here fails the stale trial, retries it and
    finishes the study's trial count (before: it counted the dead trial and stopped short)."""
    path = write_yaml(tmp_path / "tune.yaml", tune_dict(tmp_path, oct_npz, n_trials=2))
    root = tmp_path / "results" / "tiny-tune"
    root.mkdir(parents=True)
    storage = f"journal:{(root / 'journal.log').resolve()}"
    heartbeat = {"OCTBENCH_TEST_HEARTBEAT": "1:3"}
    elsewhere = cli_env(tmp_path, "octbench_elsewhere", "octbench_faults", **heartbeat,
                        OCTBENCH_TEST_HOST="elsewhere",
                        OCTBENCH_FAULT="after-replace:resume.pt:1:KILL")
    killed = subprocess.run([sys.executable, "-m", "octbench", "-q", "tune", str(path),
                             "--storage", storage], cwd=tmp_path, env=elsewhere,
                            capture_output=True, text=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    study = load(tmp_path)
    assert states(study) == ["RUNNING"]
    assert study.trials[0].user_attrs["octbench_worker"].startswith("elsewhere|")
    time.sleep(3 + 1)  # the dead worker's last heartbeat is now older than the grace period
    here = subprocess.run([sys.executable, "-m", "octbench", "-q", "tune", str(path),
                           "--storage", storage], cwd=tmp_path,
                          env=cli_env(tmp_path, "octbench_elsewhere", **heartbeat),
                          capture_output=True, text=True, timeout=240)
    assert here.returncode == 0, here.stdout + here.stderr
    study = load(tmp_path)
    assert sorted(states(study)) == ["COMPLETE", "COMPLETE", "FAIL"]
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state.name == "COMPLETE" and retry.params == study.trials[0].params
    assert all(t.system_attrs.get("octbench_heartbeat") for t in study.trials)
