"""Grid slices for SLURM arrays (``--shard K/N``) and the executor options without Ray."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from conftest import assert_usage_error, cli_in_process, experiment, tree_digest, write_yaml

from octbench import cli
from octbench.config import parse_config
from octbench.errors import OctbenchError
from octbench.executors import LocalExecutor, RayExecutor
from octbench.experiment import run_experiment
from octbench.grid import GridIds, Shard, configured_grid, expand_grid, with_threads
from octbench.report import collect, load_records
from octbench.results import COMPLETE, ResultsStore


def big_grid(tmp_path, oct_npz, **changes):
    """A 2 models x 4 strategies x 3 seeds x 2 devices grid (48 runs), never trained here."""
    config = experiment(tmp_path, oct_npz, seeds=[0, 1, 2], devices=["cpu", "cuda"],
                        models=[{"name": "reference_cnn", "width": 0.25}, "reference_cnn"])
    config.update(changes)
    return parse_config(config)


def _slices(specs, count: int) -> list[set[str]]:
    return [{s.run_id for s in Shard(k, count).select(specs)} for k in range(1, count + 1)]


@pytest.mark.parametrize("count", [1, *range(2, 65)])
def test_shards_are_disjoint_cover_the_grid_and_balanced(tmp_path_factory, oct_npz, count):
    grid = _big_grid_specs(tmp_path_factory, oct_npz)
    ids = [spec.run_id for spec in grid["specs"]]
    slices = _slices(grid["specs"], count)
    assert sum(len(s) for s in slices) == len(ids) == 48  # disjoint ...
    assert set().union(*slices) == set(ids)  # ... and covering
    sizes = [len(s) for s in slices]
    assert max(sizes) - min(sizes) <= 1, sizes  # balanced: 48 over 48 shards is one run each
    assert min(sizes) == 48 // count
    # The order the grid was written in does not matter.
    assert _slices(grid["reordered"], count) == slices


def _big_grid_specs(tmp_path_factory, oct_npz) -> dict:
    # Expanded once per module (hashing the data and configs 64 times is slow on 2 cores).
    if not _GRIDS:
        home = tmp_path_factory.mktemp("grid")
        _GRIDS["specs"] = expand_grid(big_grid(home, oct_npz))
        _GRIDS["reordered"] = expand_grid(big_grid(home, oct_npz, seeds=[2, 1, 0], strategies=[
            {"name": "focal", "gamma": 2.0}, "none", "oversample", "weighted_ce"]))
    return _GRIDS


_GRIDS: dict = {}


def test_four_runs_over_two_shards_are_two_and_two(tmp_path, oct_npz):
    specs = expand_grid(parse_config(experiment(tmp_path, oct_npz)))
    assert [len(s) for s in _slices(specs, 2)] == [2, 2]


def _slurm(task, low, high, count):
    return {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(low),
            "SLURM_ARRAY_TASK_MAX": str(high), "SLURM_ARRAY_TASK_COUNT": str(count)}


def test_shard_auto_reads_the_slurm_array_variables():
    # --array=0-3 and --array=1-4: the first task is shard 1 of 4.
    assert Shard.parse("auto", _slurm(0, 0, 3, 4)) == Shard(1, 4)
    assert Shard.parse("auto", _slurm(3, 0, 3, 4)) == Shard(4, 4)
    assert Shard.parse("auto", _slurm(1, 1, 4, 4)) == Shard(1, 4)
    assert Shard.parse("auto", _slurm(4, 1, 4, 4)) == Shard(4, 4)
    # auto/N: task ids are shard numbers, so a resubmitted --array=3,5 of 6 keeps its slices.
    assert Shard.parse("auto/6", _slurm(5, 3, 5, 2)) == Shard(5, 6)
    assert Shard.parse("auto/6", _slurm(3, 3, 5, 2)) == Shard(3, 6)
    with pytest.raises(OctbenchError, match=r"number of shards is unknown; give it: "
                                            r"--shard auto/N"):
        Shard.parse("auto", _slurm(5, 3, 5, 2))  # a subset: the count is not the shards'
    with pytest.raises(OctbenchError, match=r"SLURM_ARRAY_TASK_ID, which is not set here"):
        Shard.parse("auto", {})
    with pytest.raises(OctbenchError, match="K must be between 1 and N"):
        Shard.parse("auto/4", _slurm(0, 0, 3, 4))  # auto/N wants --array=1-N
    with pytest.raises(OctbenchError, match="needs"):
        Shard.parse("auto", {"SLURM_ARRAY_TASK_ID": "2"})
    with pytest.raises(OctbenchError, match="N must be a whole number"):
        Shard.parse("auto/x", _slurm(1, 1, 4, 4))


def test_dry_run_with_shard_auto_and_every_shard(tmp_path, oct_npz, capsys, monkeypatch):
    path = write_yaml(tmp_path / "grid.yaml", experiment(tmp_path, oct_npz, seeds=[0, 1, 2]))
    for name, value in _slurm(2, 1, 3, 3).items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run", str(path), "--dry-run", "--shard", "auto"]) == 0
    auto = capsys.readouterr().out
    assert "(shard 2/3)" in auto
    assert cli.main(["run", str(path), "--dry-run", "--shard", "all/3"]) == 0
    out = capsys.readouterr().out
    listed, current = {}, None
    for line in out.splitlines():
        if "(shard " in line:
            current = line.split("(shard ")[1].rstrip(")")
            listed[current] = set()
        elif line.startswith("  to do"):
            listed[current].add(line.split()[2])
    assert sorted(listed) == ["1/3", "2/3", "3/3"]
    assert [len(v) for v in listed.values()] == [4, 4, 4]
    assert set().union(*listed.values()) == {s.run_id for s in with_threads(expand_grid(
        parse_config(experiment(tmp_path, oct_npz, seeds=[0, 1, 2]))), 1)}
    assert {line.split()[2] for line in auto.splitlines() if line.startswith("  to do")} \
        == listed["2/3"]


def test_dry_run_lists_only_the_shard(tmp_path, oct_npz, capsys):
    path = write_yaml(tmp_path / "grid.yaml", experiment(tmp_path, oct_npz, seeds=[0, 1, 2]))
    listed = {}
    for k in (1, 2):
        assert cli.main(["run", str(path), "--dry-run", "--shard", f"{k}/2"]) == 0
        out = capsys.readouterr().out
        assert f"(shard {k}/2)" in out
        listed[k] = {line.split()[-1] for line in out.splitlines() if line.startswith("  to do")}
    assert not listed[1] & listed[2]
    assert listed[1] | listed[2] == {s.run_id for s in expand_grid(parse_config(
        experiment(tmp_path, oct_npz, seeds=[0, 1, 2])))}


def test_shard_trains_only_its_slice_and_the_report_folder_merges(tmp_path, oct_npz,
                                                                   restore_torch):
    """Two shards into one folder (as a SLURM array does) leave the complete grid."""
    config = parse_config(experiment(tmp_path, oct_npz, strategies=["none", "weighted_ce"],
                                     seeds=[0, 1], train={"epochs": 1, "batch_size": 64,
                                                          "threads": 1}))
    ids = {s.run_id for s in expand_grid(config)}
    store = ResultsStore(tmp_path / "results" / "tiny")
    trained = {}
    for k in (1, 2):
        messages = []
        summary = run_experiment(config, quiet=True, say=messages.append, shard=Shard(k, 2))
        trained[k] = set(summary.completed)
        assert summary.ok and not summary.already_complete
        assert f"Shard {k}/2 holds {len(trained[k])} of the 4 runs" in messages[0]
        assert {r.run_id for r in store.records()} == set().union(*trained.values())
    assert not trained[1] & trained[2] and trained[1] | trained[2] == ids
    assert all(r.status == COMPLETE for r in store.records())
    again = run_experiment(config, quiet=True, say=lambda _: None)
    assert set(again.already_complete) == ids and not again.completed


def test_ray_executor_without_ray_names_the_install_command(tmp_path, oct_npz, monkeypatch,
                                                           capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when not installed
    path = write_yaml(tmp_path / "grid.yaml", experiment(tmp_path, oct_npz))
    assert_usage_error(cli_in_process(["run", str(path), "--executor", "ray"], capsys),
                       'pip install "octbench[ray]"', 'pip install -e ".[ray]"')
    assert tree_digest(tmp_path / "results") == {}


def test_the_thread_count_is_part_of_a_run_and_its_id(tmp_path, oct_npz, restore_torch):
    """Left open in the config, the executor's thread count is written into each run's config
    (and so its id): 1 and 2 threads are two runs; an explicit train.threads is kept."""
    raw = experiment(tmp_path, oct_npz, strategies=["none"],
                     train={"epochs": 1, "batch_size": 64, "deterministic": True})
    config = parse_config(raw)
    assert LocalExecutor(cpus_per_run=3).threads == 3
    assert LocalExecutor().threads == torch.get_num_threads()  # all cores, as before
    assert RayExecutor().threads == 1 and RayExecutor(cpus_per_run=2).threads == 2
    store = ResultsStore(tmp_path / "results" / "tiny")
    for threads in (1, 2):
        summary = run_experiment(config, quiet=True, say=lambda _: None,
                                 executor=LocalExecutor(cpus_per_run=threads))
        assert summary.ok and len(summary.completed) == 1 and not summary.already_complete
    records = {r.config["train"]["threads"]: r for r in store.records()}
    assert sorted(records) == [1, 2]
    assert all(r.hardware["threads"] == t for t, r in records.items())
    assert records[1].run_id != records[2].run_id
    # A report of the YAML finds the grid's runs whatever their thread count.
    path = write_yaml(tmp_path / "grid.yaml", raw)
    assert {r.run_id for r in load_records(path)[2]} == {r.run_id for r in records.values()}
    assert collect(path).expected == 1
    # Also at a thread count this machine could not give (a big Ray node's), and not otherwise.
    grid = GridIds(configured_grid(config))
    big = expand_grid(config, threads=64)[0]
    assert big.train.threads == 64 and big.run_id not in {r.run_id for r in records.values()}
    assert expand_grid(config)[0].train.threads == torch.get_num_threads()  # local default
    record = dataclasses.replace(records[1], run_id=big.run_id, config=big.config())
    assert grid.holds(record) and grid.runs == 1
    assert not grid.holds(dataclasses.replace(record, config=records[2].config))
    explicit = parse_config({**raw, "train": {**raw["train"], "threads": 1}})
    again = run_experiment(explicit, quiet=True, say=lambda _: None,
                           executor=LocalExecutor(cpus_per_run=2))
    assert again.already_complete == [records[1].run_id] and not again.completed


def test_ray_only_options_need_the_ray_executor(tmp_path, oct_npz, capsys):
    path = write_yaml(tmp_path / "grid.yaml", experiment(tmp_path, oct_npz))
    for option in (["--stuck-after", "5"], ["--on-stuck", "exit"]):
        assert_usage_error(cli_in_process(["run", str(path), *option], capsys),
                           f"{option[0]} needs --executor ray")
    assert tree_digest(tmp_path / "results") == {}
