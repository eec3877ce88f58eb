"""Stacked training (``run --stack N``): N runs as one stacked model give the records of the same
runs trained one by one.

Why not bit-identical: a stacked convolution is one grouped convolution and a stacked linear
layer one batched matrix product, whose sums run in another order than the single layers'
(logits agree to ~1e-7). Everything random is the run's own (initial weights, batch order,
sampler, dropout masks, augmentation), so the difference stays at rounding level for these short
runs: loss curves agree to 2e-3 (relative) and test macro-F1 to 0.02 (here it is equal). The
contract, and why longer runs agree in distribution only, is in docs/guide/stacking.md.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cli_env, experiment, leftovers, run_cli, run_outcome, write_yaml
from torch import nn

from octbench.config import parse_config
from octbench.engine import make_optimizer
from octbench.executors import LocalExecutor
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.models import build_model
from octbench.results import ResultsStore
from octbench.stacked_runs import DEFAULT_STACK, plan_stacks
from octbench.stacking import (
    StackedDropout,
    build_stacked,
    load_members,
    stack_optimizer_state,
    stacking_problem,
    store_members,
    unstack_optimizer_state,
)

LOSS_RTOL = 2e-3
F1_TOLERANCE = 0.02
FIELDS = ("parameters", "schema_version", "model_init", "dataset", "sweep", "kind")


def grid_config(root, data, **train):
    config = experiment(root, data, strategies=["none", "oversample"], seeds=[0, 1])
    config["train"] = {**config["train"], **train}
    return config


def trained(root, config, stack: int) -> dict:
    summary = run_experiment(parse_config(config), quiet=True, say=lambda _: None,
                             executor=LocalExecutor(stack=stack))
    assert summary.ok and not summary.busy
    return run_outcome(root / "results" / config["name"], FIELDS)


def assert_same_runs(stacked: dict, alone: dict) -> None:
    """Same run ids, statuses, settings and selection; curves and scores within tolerance."""
    assert sorted(stacked) == sorted(alone)
    for run_id, one in alone.items():
        other = stacked[run_id]
        for key in ("status", "config", "epochs_trained", "best_epoch", *FIELDS):
            assert other[key] == one[key], (run_id, key)
        assert [h["epoch"] for h in other["history"]] == [h["epoch"] for h in one["history"]]
        np.testing.assert_allclose([h["train_loss"] for h in other["history"]],
                                   [h["train_loss"] for h in one["history"]], rtol=LOSS_RTOL)
        assert [h["lr"] for h in other["history"]] == [h["lr"] for h in one["history"]]
        for split in ("val", "test"):
            assert other["metrics"][split]["macro_f1"] == pytest.approx(
                one["metrics"][split]["macro_f1"], abs=F1_TOLERANCE), (run_id, split)
        assert other["weights"].keys() == one["weights"].keys()
        assert {k: v[:2] for k, v in other["predictions"].items()} == \
            {k: v[:2] for k, v in one["predictions"].items()}  # dtype and shape


@pytest.fixture(scope="module")
def two_ways(tmp_path_factory, oct_npz):
    """2 strategies (one oversamples) x 2 seeds, early stopping on: one by one, then stacked."""
    found = {}
    for name, stack in (("alone", 1), ("stacked", 4)):
        root = tmp_path_factory.mktemp(name)
        config = grid_config(root, oct_npz, epochs=5, patience=1)
        found[name] = (root, trained(root, config, stack))
    return found


def test_stacked_grid_gives_the_records_of_runs_trained_one_by_one(two_ways, restore_torch):
    root, stacked = two_ways["stacked"]
    assert_same_runs(stacked, two_ways["alone"][1])
    assert leftovers(root / "results") == []
    records = ResultsStore(root / "results" / "tiny").records()
    assert len(records) == 4 and {r.timing["stack"] for r in records} == {4}
    alone = ResultsStore(two_ways["alone"][0] / "results" / "tiny").records()
    assert all("stack" not in r.timing for r in alone)
    # the same record fields, timing aside
    assert {tuple(sorted(vars(r))) for r in records} == {tuple(sorted(vars(r))) for r in alone}


def test_a_member_that_stops_early_does_not_stop_the_others(two_ways):
    _, stacked = two_ways["stacked"]
    trained_epochs = sorted(e["epochs_trained"] for e in stacked.values())
    assert trained_epochs[0] < trained_epochs[-1], trained_epochs  # someone stopped first
    assert trained_epochs == sorted(e["epochs_trained"] for e in two_ways["alone"][1].values())


def test_runs_whose_epochs_or_heads_differ_train_in_separate_stacks(tmp_path, oct_npz,
                                                                     restore_torch):
    # undersample draws 4 x the smallest class per epoch, the others the whole split
    results = {}
    for name, stack in (("alone", 1), ("stacked", 4)):
        # ldam_drw trains a cosine head: another architecture, so another stack
        config = experiment(tmp_path / name, oct_npz, seeds=[0],
                            strategies=["none", "undersample", "weighted_ce", "ldam_drw"])
        config["train"] = {**config["train"], "epochs": 2}
        results[name] = trained(tmp_path / name, config, stack)
    assert_same_runs(results["stacked"], results["alone"])
    images = {k: e["history"][0]["train_images"] for k, e in results["stacked"].items()}
    assert sorted(images.values()) == [4 * 50, 600, 600, 600]


def test_runs_that_differ_in_learning_rate_stack_each_with_its_own(tmp_path, oct_npz,
                                                                   restore_torch):
    """A sweep over train.lr: its runs join one stack, each member stepping with its own lr
    (and its own cosine schedule), as the runs alone do."""
    results = {}
    for name, stack in (("alone", 1), ("stacked", 4)):
        config = experiment(tmp_path / name, oct_npz, seeds=[0],
                            strategies=["none", "oversample"],
                            sweep={"train.lr": [1.0e-3, 5.0e-3]})
        config["train"] = {**config["train"], "epochs": 2}
        if name == "stacked":
            groups = plan_stacks(expand_grid(parse_config(config)), stack)
            assert [len(g) for g in groups] == [4]
        results[name] = trained(tmp_path / name, config, stack)
    assert_same_runs(results["stacked"], results["alone"])
    first_lrs = {e["history"][0]["lr"] for e in results["stacked"].values()}
    assert first_lrs == {1.0e-3, 5.0e-3}, first_lrs


def test_kill_9_mid_stack_and_rerun_gives_the_uninterrupted_result(tmp_path, oct_npz,
                                                                   two_ways):
    """kill -9 inside the 3rd epoch checkpoint of the stack (after epoch 1 of member 3): members
    1-2 resume after epoch 1, members 3-4 start again; nothing lost or duplicated."""
    path = write_yaml(tmp_path / "tiny.yaml", grid_config(tmp_path, oct_npz, epochs=5,
                                                          patience=1))
    env = cli_env(tmp_path, "octbench_faults", OCTBENCH_FAULT="mid-write:resume.pt:3:KILL")
    killed = run_cli(["run", str(path), "--stack", "4"], env)
    assert killed.returncode == -9, killed.stderr
    results = tmp_path / "results" / "tiny"
    assert len(list(results.glob("*/resume.pt"))) == 2
    assert not list(results.glob("*/record.json"))
    rerun = run_cli(["run", str(path), "--stack", "4"], cli_env(tmp_path), quiet=False)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("resuming") == 2 and "Traceback" not in rerun.stderr
    found = run_outcome(results, FIELDS)
    assert_same_runs(found, two_ways["stacked"][1])
    assert leftovers(results) == []
    again = run_cli(["run", str(path), "--stack", "4"], cli_env(tmp_path))
    assert again.returncode == 0 and "already complete" in again.stdout
    assert run_outcome(results, FIELDS) == found  # completed members are not retrained


# ---------------------------------------------------------------------------------------------
# the stacked layers, against the single models they stand for


def _members(name: str, n: int):
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(build_model(name, width=0.25) if name == "reference_cnn"
                      else build_model(name))
    return models


@pytest.mark.parametrize("name", ["reference_cnn", "reference_cnn_2conv", "resnet18_28",
                                  "reference_cnn+cosine_head"])
def test_stacked_step_gives_each_member_its_own_logits_gradients_and_dropout(name):
    n = 3
    models = _members(name.split("+")[0], n)
    if name.endswith("cosine_head"):  # LDAM's head
        from octbench.models.heads import use_cosine_head

        models = [use_cosine_head(m) for m in models]
    generators = [torch.Generator().manual_seed(10 + i) for i in range(n)]
    stacked = build_stacked(models[0], n, generators=generators).train()
    load_members(stacked, models)
    xs = [torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(i))
          for i in range(n)]
    ys = [torch.tensor([0, 1, 2, 3])] * n
    logits = stacked(torch.cat(xs, dim=1)).view(4, n, -1)
    sum(F.cross_entropy(logits[:, i], ys[i]) for i in range(n)).backward()
    grads = dict(stacked.named_parameters())
    for i, model in enumerate(models):
        torch.manual_seed(10 + i)  # the run alone draws dropout from the global generator
        model.train()
        alone = model(xs[i])
        torch.testing.assert_close(logits[:, i], alone, rtol=1e-4, atol=1e-5)
        F.cross_entropy(alone, ys[i]).backward()
        for pname, p in model.named_parameters():
            torch.testing.assert_close(grads[pname].grad.view(n, *p.shape)[i], p.grad,
                                       rtol=1e-3, atol=1e-5)


def test_weights_and_optimizer_state_go_into_the_stack_and_back_unchanged():
    models = _members("reference_cnn", 2)
    optimizers = [make_optimizer(m.parameters(), "adam", lr=1e-3) for m in models]
    for model, optimizer in zip(models, optimizers, strict=True):
        model(torch.randn(2, 1, 28, 28)).sum().backward()
        optimizer.step()
    stacked = build_stacked(models[0], 2)
    load_members(stacked, models)
    state = stack_optimizer_state([o.state_dict() for o in optimizers], stacked, models[0])
    copies = [copy.deepcopy(m) for m in models]
    for m in copies:
        for p in m.parameters():
            p.data.zero_()
    store_members(stacked, copies)
    for model, back in zip(models, copies, strict=True):
        for (k, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
    for i, optimizer in enumerate(optimizers):
        back = unstack_optimizer_state(state, i, 2, models[0])
        original = optimizer.state_dict()
        assert back["param_groups"] == original["param_groups"]
        for index, entries in original["state"].items():
            for key, value in entries.items():
                assert torch.equal(back["state"][index][key], value), (index, key)


def test_stacked_dropout_draws_the_mask_torch_draws_on_the_cpu():
    x = torch.rand(5, 3 * 7)
    dropout = StackedDropout(3, 0.5, [torch.Generator().manual_seed(i) for i in range(3)])
    out = dropout.train()(x).view(5, 3, 7)
    for i in range(3):
        torch.manual_seed(i)
        assert torch.equal(out[:, i], F.dropout(x.view(5, 3, 7)[:, i], 0.5, training=True))


class ChannelMixer(nn.Module):
    """A forward that reorders channels (or reshapes by a fixed count): stacked, it would mix
    the members' features."""

    def __init__(self, reshape: bool):
        super().__init__()
        self.reshape = reshape
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x).mean(dim=(2, 3))
        return self.head(h[:, :4] if self.reshape else h.flip(1))


def test_a_model_that_cannot_stack_says_why():
    assert stacking_problem(build_model("reference_cnn"), in_chans=1, img_size=28) is None
    assert "GRU" in stacking_problem(nn.Sequential(nn.GRU(2, 2)), in_chans=1, img_size=28)
    assert "mixes" in stacking_problem(ChannelMixer(False), in_chans=1, img_size=28)
    assert "does not run stacked" in stacking_problem(ChannelMixer(True), in_chans=1,
                                                      img_size=28)


def test_stacks_group_only_runs_that_share_every_training_setting(tmp_path, oct_npz):
    config = experiment(tmp_path, oct_npz, seeds=[0, 1, 2],
                        models=[{"name": "reference_cnn", "width": 0.25}, "reference_cnn_2conv"],
                        strategies=["none", "focal"])
    specs = expand_grid(parse_config(config))
    groups = plan_stacks(specs, 4)
    assert [len(g) for g in groups] == [4, 2, 4, 2]
    assert all(len({s.model.label for s in g}) == 1 for g in groups)
    assert sorted(s.run_id for g in groups for s in g) == sorted(s.run_id for s in specs)
    assert [len(g) for g in plan_stacks(specs, None)] == [1] * 12  # off on the CPU by default
    for setting in ({"compile": True}, {"precision": "fp16"}):  # these always train alone
        alone = experiment(tmp_path, oct_npz)
        alone["train"] = {**alone["train"], **setting}
        assert {len(g) for g in plan_stacks(expand_grid(parse_config(alone)), 4)} == {1}


def test_stack_option_on_the_command_line(tmp_path, oct_npz):
    path = write_yaml(tmp_path / "tiny.yaml", experiment(tmp_path, oct_npz))
    dry = run_cli(["run", str(path), "--dry-run", "--stack", "3"], cli_env(tmp_path))
    assert dry.returncode == 0, dry.stderr
    assert "stacking (--stack 3): 1 stack(s) of 3 runs, 1 run(s) alone" in dry.stdout
    default = run_cli(["run", str(path), "--dry-run"], cli_env(tmp_path))
    assert "stacking: off (default); every run trains alone" in default.stdout
    # the device's default comes with its reason, from the one table of defaults
    size, reason = DEFAULT_STACK["cpu"]
    assert f"default stack for cpu: {size} ({reason})" in default.stdout
    assert "bit-identical" in reason and "measured" in reason  # why it is off, with figures
    for bad in (["--stack", "0"], ["--stack", "x"]):
        refused = run_cli(["run", str(path), *bad], cli_env(tmp_path))
        assert refused.returncode == 2, (bad, refused.stderr)
        assert "--stack" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "results").exists()



# ---------------------------------------------------------------------------------------------
# CUDA (deselected by default; benchmarks/gpu_check.sh runs them on a GPU machine)

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m cuda)")
def test_stacked_grid_on_cuda_matches_runs_one_by_one(tmp_path, restore_torch):
    found = {}
    for name, size in (("alone", 1), ("stacked", 12)):
        config = {
            "name": "cuda", "data": {"name": "synthetic", "scale": 0.02},
            "models": ["reference_cnn"],
            "strategies": ["none", "oversample", "ldam_drw", {"name": "focal", "gamma": 2.0}],
            "seeds": [0, 1, 2], "devices": ["cuda"], "results_dir": str(tmp_path / name),
            "train": {"epochs": 3, "precision": "bf16", "schedule": "cosine"},
        }
        found[name] = trained(tmp_path / name, config, size)
    alone, stacked = found["alone"], found["stacked"]
    assert sorted(stacked) == sorted(alone)
    # On CUDA the stack's dropout masks come from the device generator (not each run's own),
    # and bf16 rounds differently in a grouped convolution: equal in distribution, not draw
    # for draw. Each run stays close to its twin, and the grid's mean does not move.
    gaps = [stacked[k]["metrics"]["test"]["macro_f1"] - alone[k]["metrics"]["test"]["macro_f1"]
            for k in alone]
    assert max(abs(g) for g in gaps) < 0.1 and abs(np.mean(gaps)) < 0.03, gaps
    for run_id, entry in stacked.items():
        assert entry["status"] == "complete" and entry["config"] == alone[run_id]["config"]
        np.testing.assert_allclose(entry["history"][0]["train_loss"],
                                   alone[run_id]["history"][0]["train_loss"], rtol=0.05)


@pytest.mark.slow
def test_gpu_check_script_rehearses_on_the_cpu():
    """benchmarks/gpu_check.sh --dry: the GPU machine's commands at tiny size on the CPU."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry"], cwd=root,
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "local, stacked (--stack 4)" in done.stdout and "SYNTHETIC DATA" in done.stdout
    if "Ray is not installed" not in done.stderr:  # Ray packs stacks as well as single runs
        assert "ray, 1 per cpu (" in done.stdout and "stacks of 4)" in done.stdout


def test_a_member_whose_loss_diverges_fails_alone_and_the_others_finish(tmp_path, oct_npz,
                                                                       restore_torch):
    # alpha 1e39 overflows float32: that member's loss is infinite from the first batch
    diverging = {"name": "focal", "gamma": 2.0, "alpha": [1e39] * 4}
    found = {}
    for name, stack in (("alone", 1), ("stacked", 2)):
        config = experiment(tmp_path / name, oct_npz, seeds=[0], strategies=["none", diverging])
        config["train"] = {**config["train"], "epochs": 2}
        run_experiment(parse_config(config), quiet=True, say=lambda _: None,
                       executor=LocalExecutor(stack=stack))
        found[name] = run_outcome(tmp_path / name / "results" / "tiny", FIELDS)
    statuses = {k.split("__")[1]: e["status"] for k, e in found["stacked"].items()}
    assert sorted(statuses.values()) == ["complete", "failed"], statuses
    records = ResultsStore(tmp_path / "stacked" / "results" / "tiny").records()
    failed = next(r for r in records if r.status == "failed")
    assert "training loss became" in failed.error
    assert_same_runs({k: e for k, e in found["stacked"].items() if e["status"] == "complete"},
                     {k: e for k, e in found["alone"].items() if e["status"] == "complete"})
