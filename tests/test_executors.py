"""Grid slices for SLURM arrays (``--shard K/N``) and the executor options without Ray."""

from __future__ import annotations

import sys

import pytest
from conftest import experiment, tree_digest, write_yaml

from octbench import cli
from octbench.config import parse_config
from octbench.errors import OctbenchError
from octbench.results import COMPLETE, ResultsStore
from octbench.runner import Shard, expand_grid, run_experiment


def big_grid(tmp_path, oct_npz, **changes):
    """A 2 models x 4 strategies x 3 seeds x 2 devices grid (48 runs), never trained here."""
    config = experiment(tmp_path, oct_npz, seeds=[0, 1, 2], devices=["cpu", "cuda"],
                        models=[{"name": "reference_cnn", "width": 0.25}, "reference_cnn"])
    config.update(changes)
    return parse_config(config)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_cover_the_grid_and_stable(tmp_path, oct_npz, count):
    specs = expand_grid(big_grid(tmp_path, oct_npz))
    ids = [spec.run_id for spec in specs]
    slices = [{i for i in ids if Shard(k, count).holds(i)} for k in range(1, count + 1)]
    assert sum(len(s) for s in slices) == len(ids) == 48  # disjoint ...
    assert set().union(*slices) == set(ids)  # ... and covering
    if count > 1:
        assert all(len(s) < len(ids) for s in slices)
    # Stable: the grid expanded in another order, with more runs, puts each old run in its slice.
    reordered = big_grid(tmp_path, oct_npz, seeds=[2, 1, 0, 5], strategies=[
        {"name": "focal", "gamma": 2.0}, "none", "oversample", "weighted_ce"])
    for k in range(1, count + 1):
        again = {s.run_id for s in expand_grid(reordered) if Shard(k, count).holds(s.run_id)}
        assert again & set(ids) == slices[k - 1]


def test_shard_parsing_counts_from_one():
    assert Shard.parse("1/4") == Shard(1, 4) and Shard.parse("4/4") == Shard(4, 4)
    for bad in ("0/4", "5/4", "3/2", "1/0", "a/b", "2", "-1/2", ""):
        with pytest.raises(OctbenchError):
            Shard.parse(bad)


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
    code = cli.main(["run", str(path), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert 'pip install "octbench[ray]"' in err and 'pip install -e ".[ray]"' in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert tree_digest(tmp_path / "results") == {}
