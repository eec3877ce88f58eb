"""The Ray executor on a real local Ray instance and a two-node Ray cluster on this machine.

One Ray instance (2 CPUs) serves the whole module; ``run --address`` subprocesses connect to it.
Every test runs under a watchdog (``faulthandler``) and every subprocess has a timeout, so a
hanging Ray can never hold up the suite. The reference for every result is the same grid trained
by the local executor: Ray runs must equal it run for run (``deterministic: true``, 1 thread).
"""

from __future__ import annotations

import faulthandler
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    PLUGINS,
    ROOT,
    assert_usage_error,
    cli_env,
    cli_in_process,
    experiment,
    leftovers,
    make_npz,
    run_cli,
    run_outcome,
    write_yaml,
)

import octbench.data
import octbench.experiment
from octbench import cli, executors
from octbench.config import Component, parse_config
from octbench.data import data_fingerprint
from octbench.errors import OctbenchError
from octbench.executors import ray as ray_driver
from octbench.executors import ray_address
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.progress import GridProgress
from octbench.results import COMPLETE, INTERRUPTED, ResultsStore

ray = pytest.importorskip("ray", reason="the Ray executor needs the [ray] extra (.ci/run has it)")
pytestmark = pytest.mark.extras  # .ci/run's second phase selects these

WAIT = 300  # seconds for any one subprocess or Ray call; the build machine is shared
#: A test is hung, not slow, after this: it runs at most two subprocesses of WAIT each.
HUNG = 2 * WAIT + 120


@pytest.fixture(autouse=True)
def watchdog():
    """End the whole test process (with tracebacks) if a test hangs."""
    faulthandler.dump_traceback_later(HUNG, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> Path:
    """The folder where a test puts the fault.json of the worker-faults plugin."""
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def ray_instance(faults):
    """One local Ray instance for the module; executors find it initialised and reuse it.

    Its two GPUs are Ray's fake ones (a resource count): tasks that ask for them get
    CUDA_VISIBLE_DEVICES set by Ray, which is all the GPU binding tests need.
    """
    # Its workers import the test plugins that `run` names in $OCTBENCH_PLUGINS, and the
    # worker-faults plugin reads $OCTBENCH_TEST_FAULTS: workers inherit the environment of
    # this moment.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(
            filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))
        patch.setenv("OCTBENCH_TEST_FAULTS", str(faults))
        ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def inject_fault(faults: Path, run_id: str, epoch: int, action: str) -> None:
    """Arm the worker-faults plugin: ``action`` once ``run_id`` has finished ``epoch`` epochs."""
    (faults / "fault.taken").unlink(missing_ok=True)
    (faults / "fault.json").write_text(json.dumps({"run": run_id, "epoch": epoch,
                                                   "action": action}))


def grid_config(home: Path, data: Path, **changes) -> dict:
    """2 strategies x 1 seed, 4 epochs of a tiny CNN: a few seconds per run on 2 cores."""
    return experiment(home, data, **{
        "strategies": ["none", "oversample"],
        "train": {"epochs": 4, "batch_size": 64, "lr": 2.0e-3, "schedule": "cosine",
                  "deterministic": True, "threads": 1}, **changes})


def outcome(root: Path) -> dict[str, dict]:
    return run_outcome(root, ("dataset",))



@pytest.fixture(scope="module")
def reference(tmp_path_factory, oct_npz):
    """The grid trained by the local executor (the default), in this process."""
    home = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    summary = run_experiment(parse_config(grid_config(home, oct_npz)), quiet=True,
                             say=lambda _: None)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    assert summary.ok and len(summary.completed) == 2
    return outcome(home / "results" / "tiny")


def test_ray_records_equal_the_local_executors(tmp_path, oct_npz, reference, ray_instance,
                                               restore_torch):
    """The reference sets train.threads: 1; here it is left open, so Ray's default (1 thread
    per run) is written into each run's config: the same ids, and the same records, as local.
    Progress comes from the workers: a start line when a run starts, then its epochs."""
    raw = grid_config(tmp_path, oct_npz)
    del raw["train"]["threads"]
    config = parse_config(raw)
    messages, lines = [], io.StringIO()
    executor = executors.RayExecutor()
    progress = GridProgress([4, 4], stream=lines, tty=False)
    summary = run_experiment(config, quiet=True, say=messages.append, executor=executor,
                             progress=progress)
    assert summary.ok and len(summary.completed) == 2, messages
    root = tmp_path / "results" / "tiny"
    assert outcome(root) == reference
    assert leftovers(root) == []
    for record in ResultsStore(root).records():  # the node that trained it is recorded
        assert record.hardware["type"] == "cpu" and record.hardware["ray_node"]
        assert record.hardware["threads"] == record.config["train"]["threads"] == 1
        log_file = root / record.run_id / ResultsStore.LOG
        assert log_file.read_text().startswith(f"octbench run {record.run_id} on Ray node ")
    assert any("[synthetic data]" in m for m in messages)
    # Each worker process fetched the data once, whatever number of runs it trained.
    pids = {pid for pid, _ in executor.workers.values()}
    assert sum(loaded for _, loaded in executor.workers.values()) == len(pids) >= 1
    text = lines.getvalue().splitlines()
    for run_id in outcome(root):
        start = [i for i, line in enumerate(text) if f"start {run_id} on cpu, Ray node" in line]
        assert len(start) == 1, text
    assert sum("epoch 4/4:" in line for line in text) == 2, text
    first_epoch = next(i for i, line in enumerate(text) if "epoch 1/4:" in line)
    assert "start" in text[0] and first_epoch > 0


def test_stacked_grid_on_ray_gives_the_records_of_the_local_stacked_grid(tmp_path, oct_npz,
                                                                        ray_instance,
                                                                        restore_torch):
    """`run --executor ray --stack 4`: one task trains the 4 runs as one stack (the local
    executor's plan), the driver writes each run's files; every record equals the one the
    local executor writes with --stack 4 (same stacked arithmetic, 1 thread: bit for bit)."""
    config = grid_config(tmp_path / "local", oct_npz, seeds=[0, 1])
    config["train"]["epochs"] = 2
    summary = run_experiment(parse_config(config), quiet=True, say=lambda _: None,
                             executor=executors.LocalExecutor(stack=4))
    assert summary.ok and len(summary.completed) == 4
    local = outcome(tmp_path / "local" / "results" / "tiny")

    config["results_dir"] = str(tmp_path / "ray" / "results")
    path = write_yaml(tmp_path / "tiny.yaml", config)
    argv = ["run", str(path), "--executor", "ray", "--address", ray_instance, "--stack", "4"]
    dry = run_cli([*argv, "--dry-run"], cli_env(tmp_path), timeout=WAIT)
    assert dry.returncode == 0 and "stacking (--stack 4): 1 stack(s) of 4 runs" in dry.stdout
    done = run_cli(argv, cli_env(tmp_path), timeout=WAIT)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "ray" / "results" / "tiny"
    assert outcome(root) == local
    assert leftovers(root) == []
    records = ResultsStore(root).records()
    assert len(records) == 4 and {r.timing["stack"] for r in records} == {4}
    for record in records:  # one task trained them: each run's log is the stack's
        log_text = (root / record.run_id / ResultsStore.LOG).read_text()
        assert log_text.startswith("octbench run stack of 4 runs: ")
        assert all(r.run_id in log_text.splitlines()[0] for r in records)
        assert record.hardware["ray_node"]


def test_corrupted_evaluation_on_ray_equals_local_and_only_the_driver_writes(
        tmp_path, oct_npz, ray_instance, restore_torch):
    """The worker scores the corrupted sets without the run folder; the driver writes the
    section, the stored predictions and the sample strip, as a local run does."""
    import numpy as np

    pytest.importorskip("medmnistc", reason="the robustness extra is not installed")
    pytest.importorskip("wand.image", reason="Wand needs the ImageMagick library")
    corrupted = {"evaluate": {"corruptions": ["pixelate"], "severities": [2]},
                 "strategies": ["none"]}
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    for home, executor in ((local, None), (on_ray, executors.RayExecutor())):
        raw = grid_config(home, oct_npz, **corrupted)
        raw["train"]["epochs"] = 1
        summary = run_experiment(parse_config(raw), quiet=True, say=lambda _: None,
                                 **({"executor": executor} if executor else {}))
        assert summary.ok and len(summary.completed) == 1
    (run,) = [p.name for p in (local / "results" / "tiny").iterdir() if p.is_dir()]
    folders = [home / "results" / "tiny" / run for home in (local, on_ray)]
    sections = [ResultsStore(f.parent).read(run).robustness for f in folders]
    assert sections[0]["cells"] == sections[1]["cells"] and sections[0]["cells"]
    assert sections[0]["summary"] == sections[1]["summary"]
    for name in (ResultsStore.ROBUSTNESS_PREDICTIONS, ResultsStore.ROBUSTNESS_SAMPLES):
        with np.load(folders[0] / name) as ours, np.load(folders[1] / name) as theirs:
            assert ours.files == theirs.files
            for key in ours.files:
                np.testing.assert_array_equal(ours[key], theirs[key])
    assert not list(folders[1].glob("robustness.partial.*"))
    assert leftovers(folders[1].parent) == []


def test_worker_killed_mid_run_resumes_from_its_epoch_checkpoint(
        tmp_path, oct_npz, reference, ray_instance, faults, restore_torch, caplog, monkeypatch):
    """SIGKILL the worker right after epoch 2 of one run: Ray retries the task, which resumes
    from the epoch checkpoint kept on the driver's side; the grid ends complete, equal to the
    reference. The worker kills itself (the worker-faults plugin), so nothing races."""
    config = parse_config(grid_config(tmp_path, oct_npz))
    root = tmp_path / "results" / "tiny"
    victim = expand_grid(config)[1].run_id
    inject_fault(faults, victim, 2, "kill-worker")
    monkeypatch.setenv("OCTBENCH_PLUGINS", "octbench_worker_faults")
    caplog.set_level(logging.INFO, logger="octbench")
    summary = run_experiment(config, quiet=True, say=lambda _: None,
                             executor=executors.RayExecutor())
    assert (faults / "fault.taken").is_file(), "the fault never fired"
    assert summary.ok and len(summary.completed) == 2
    resumed = [r.getMessage() for r in caplog.records if "resumed after epoch" in r.getMessage()]
    assert len(resumed) == 1 and resumed[0].startswith(f"{victim} resumed after epoch 2 on "), \
        resumed
    # the run's log is the second attempt's, which says it resumed
    assert f"resuming {victim} after epoch 2" in (root / victim / "run.log").read_text()
    assert outcome(root) == reference  # no duplicate, partial or different record
    assert leftovers(root) == []


def test_driver_interrupted_then_rerun_finishes_exactly_the_missing_runs(
        tmp_path, oct_npz, reference, ray_instance, faults):
    """Ctrl-C on `run --executor ray --address ...` when the driver hears that the first run
    finished its first epoch: exit 130, in-flight runs recorded interrupted; the same command
    again completes the grid, equal to the reference."""
    raw = grid_config(tmp_path, oct_npz)
    path = write_yaml(tmp_path / "tiny.yaml", raw)
    root = tmp_path / "results" / "tiny"
    first = expand_grid(parse_config(raw))[0].run_id
    inject_fault(faults, first, 1, "interrupt-driver")
    argv = ["run", str(path), "--executor", "ray", "--address", ray_instance]
    env = cli_env(tmp_path, "octbench_worker_faults", OCTBENCH_TEST_FAULTS=str(faults))
    done = run_cli(argv, env, timeout=WAIT)
    assert done.returncode == 130, done.stderr
    assert (faults / "fault.taken").is_file(), "the fault never fired"
    statuses = {r.run_id: r.status for r in ResultsStore(root).records()}
    assert statuses[first] == INTERRUPTED, statuses
    assert set(statuses.values()) <= {INTERRUPTED, COMPLETE}
    done = run_cli(argv, cli_env(tmp_path), timeout=WAIT)
    assert done.returncode == 0, done.stderr
    complete = sum(s == COMPLETE for s in statuses.values())
    assert f"{2 - complete} trained, {complete} already complete" in done.stdout
    assert outcome(root) == reference
    assert leftovers(root) == []


def test_impossible_resources_exit_2_and_write_nothing(tmp_path, oct_npz, ray_instance, capsys,
                                                      monkeypatch):
    path = write_yaml(tmp_path / "tiny.yaml", grid_config(tmp_path, oct_npz))
    # The module's instance has (fake) GPUs: here the cluster reports its nodes without them.
    nodes = ray.nodes
    monkeypatch.setattr(ray, "nodes", lambda: [
        {**n, "Resources": {k: v for k, v in n["Resources"].items() if k != "GPU"}}
        for n in nodes()])
    for options, expect in ((["--gpus-per-run", "0.25"], "has no GPU"),
                            (["--cpus-per-run", "64"], "no node of the Ray cluster")):
        assert_usage_error(cli_in_process(["run", str(path), "--executor", "ray", *options],
                                          capsys), expect)
        assert not (tmp_path / "results").exists()


def test_big_data_file_missing_on_a_node_is_named_before_training(tmp_path, oct_npz,
                                                                   ray_instance, monkeypatch):
    """Files above the object-store limit are read by each worker: a node without the file
    is named up front. The driver sees a file; the workers look for one that is not there."""
    missing = tmp_path / "elsewhere" / "tiny.npz"
    config = parse_config(grid_config(tmp_path, missing))
    monkeypatch.setattr(ray_driver, "OBJECT_STORE_LIMIT", 0)
    # In the driver only: its checks see a file; the workers' own check looks for `missing`.
    monkeypatch.setattr(ray_driver, "data_file", lambda data: oct_npz)
    monkeypatch.setattr(octbench.experiment, "check_available", lambda name, **params: None)
    # (the run ids need the data's content fingerprint, which the driver reads from its file)
    monkeypatch.setattr(octbench.data, "data_fingerprint",
                        lambda name, **params: data_fingerprint(name, path=str(oct_npz)))
    with pytest.raises(OctbenchError) as error:
        run_experiment(config, quiet=True, say=lambda _: None, executor=executors.RayExecutor())
    message = str(error.value)
    assert f"data file {missing} is larger than 0 GiB" in message
    assert f"missing on node(s) {socket.gethostname()} (" in message
    assert not (tmp_path / "results").exists()  # nothing written


def test_big_data_file_is_read_by_each_worker(tmp_path, oct_npz, reference, ray_instance,
                                              monkeypatch, restore_torch):
    monkeypatch.setattr(ray_driver, "OBJECT_STORE_LIMIT", 0)
    put = []
    monkeypatch.setattr(ray, "put", lambda value, **kw: put.append(value))
    config = parse_config(grid_config(tmp_path, oct_npz))
    summary = run_experiment(config, quiet=True, say=lambda _: None,
                             executor=executors.RayExecutor())
    assert summary.ok and not put  # nothing went through the object store
    assert outcome(tmp_path / "results" / "tiny") == reference


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_start(args: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    """`ray start ... --block` in ``cwd``, its output in ``log``; returns once it has started."""
    cwd.mkdir(parents=True, exist_ok=True)
    ray_cli = Path(sys.executable).with_name("ray")
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(ray_cli), "start", "--block", "--disable-usage-stats", *args], cwd=cwd,
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + WAIT
    while "Ray runtime started" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return process


def _stop(process: subprocess.Popen) -> None:
    """Stop a `ray start --block` and everything it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def test_two_node_cluster_worker_without_the_data_file(tmp_path, oct_npz, reference):
    """`ray start --head` (no CPUs: it trains nothing) and `ray start --address` (2 CPUs) in
    other folders; the driver reads the data once and deletes it (test plugin), so the
    worker node trains every run from the object store and the driver writes every file."""
    port = _free_port()
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(PLUGINS), env.get("PYTHONPATH", "")])
    env["RAY_ADDRESS"] = ""
    # Joining a cluster with token authentication (Ray's default) needs this for `ray start`;
    # `octbench run --address` finds the token by itself.
    env["RAY_AUTH_MODE"] = "token"
    head = _ray_start(["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                       "--node-ip-address=127.0.0.1"], tmp_path / "head", env,
                      tmp_path / "head.log")
    node = None
    try:
        address = f"127.0.0.1:{port}"
        node = _ray_start([f"--address={address}", "--num-cpus=2",
                           "--node-ip-address=127.0.0.1"], tmp_path / "node", env,
                          tmp_path / "node.log")
        driver = tmp_path / "driver"
        driver.mkdir()
        (driver / "tiny.npz").write_bytes(oct_npz.read_bytes())
        config = grid_config(driver, Path("tiny.npz"))
        config["data"] = {"name": "vanishing_npz", "path": "tiny.npz"}
        path = write_yaml(driver / "tiny.yaml", config)
        done = subprocess.run(
            [sys.executable, "-m", "octbench", "-q", "run", str(path), "--executor", "ray",
             "--address", address], cwd=driver, capture_output=True, text=True, timeout=WAIT,
            env={**cli_env(tmp_path, "octbench_vanishing_data"),
                 "PYTHONPATH": env["PYTHONPATH"], "RAY_ADDRESS": ""})
        assert done.returncode == 0, done.stderr
        assert not (driver / "tiny.npz").exists()  # nobody could read the file after the driver
        assert not list((tmp_path / "node").iterdir())  # the worker wrote nothing in its folder
        records = ResultsStore(driver / "results" / "tiny").records()
        assert len(records) == 2 and all(r.status == COMPLETE for r in records)
        assert len({r.hardware["ray_node"] for r in records}) == 1  # the one node with CPUs
        got = outcome(driver / "results" / "tiny")
        assert [{k: v for k, v in e.items() if k not in ("config", "dataset")}
                for e in got.values()] == \
            [{k: v for k, v in e.items() if k not in ("config", "dataset")}
             for e in reference.values()]

        # Sweeps over data settings on the same cluster: Ray is joined once per `run` and kept
        # for every dataset (before, the second dataset hung), and the records equal local ones.
        sweeps = {
            "size": experiment(driver, Path("unused"), name="sizes", strategies=["none"],
                               data={"name": "synthetic", "scale": 0.005, "cache": False},
                               sweep={"data.size": [28, 64]},
                               train={"epochs": 2, "batch_size": 64, "deterministic": True,
                                      "threads": 1}),
            "path": grid_config(driver, oct_npz, name="paths", strategies=["none"],
                                sweep={"data.path": [str(oct_npz),
                                                     str(make_npz(driver / "b.npz", seed=1))]}),
        }
        for kind, sweep in sweeps.items():
            path = write_yaml(driver / f"{kind}.yaml", sweep)
            done = subprocess.run(
                [sys.executable, "-m", "octbench", "-q", "run", str(path), "--executor", "ray",
                 "--address", address], cwd=driver, capture_output=True, text=True,
                timeout=WAIT, env={**cli_env(tmp_path), "PYTHONPATH": env["PYTHONPATH"],
                                   "RAY_ADDRESS": ""})
            assert done.returncode == 0, (kind, done.stderr)
            got = outcome(driver / "results" / sweep["name"])
            assert len(got) == 2, kind
            assert got == _local_outcome(tmp_path / f"local-{kind}", sweep), kind
    finally:
        if node is not None:
            _stop(node)
        _stop(head)


# ---------------------------------------------------------------------------------------------
# sweeps over data settings: Ray is started (or joined) once per `run` and kept up


def _local_outcome(home: Path, config: dict) -> dict:
    threads = torch.get_num_threads()
    try:
        summary = run_experiment(parse_config({**config, "results_dir": str(home / "results")}),
                                 quiet=True, say=lambda _: None)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    assert summary.ok
    return outcome(home / "results" / config["name"])


def test_sweep_over_data_size_finishes_on_ray_with_the_local_records(tmp_path, ray_instance):
    """Before, Ray was shut down after the first dataset and the next one hung for ever."""
    config = experiment(tmp_path, Path("unused"), strategies=["none"],
                        data={"name": "synthetic", "scale": 0.005, "cache": False},
                        sweep={"data.size": [28, 64]},
                        train={"epochs": 2, "batch_size": 64, "deterministic": True,
                               "threads": 1})
    path = write_yaml(tmp_path / "sweep.yaml", config)
    done = run_cli(["run", str(path), "--executor", "ray", "--address", ray_instance],
                   cli_env(tmp_path), timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert "2 trained, 0 already complete" in done.stdout
    got = outcome(tmp_path / "results" / "tiny")
    assert got == _local_outcome(tmp_path / "local", config)
    assert {e["config"]["data"]["size"] for e in got.values()} == {28, 64}


def test_sweep_over_data_path_finishes_on_ray_and_failures_keep_their_traceback(
        tmp_path, oct_npz, ray_instance):
    """Two data files, a model that trains and one that raises (test plugin): the trained runs
    equal the local ones; the failed ones keep the whole traceback beside their record."""
    other = make_npz(tmp_path / "other.npz", seed=1)
    config = grid_config(tmp_path, oct_npz, strategies=["none"],
                         sweep={"data.path": [str(oct_npz), str(other)]})
    config["train"]["epochs"] = 2
    good = dict(config)
    config["models"] = [*config["models"], {"name": "faulty_cnn", "fault": "raise", "after": 3}]
    path = write_yaml(tmp_path / "sweep.yaml", config)
    done = run_cli(["run", str(path), "--executor", "ray", "--address", ray_instance],
                   cli_env(tmp_path, "octbench_faulty_models"), timeout=WAIT)
    assert done.returncode == 1, done.stderr
    assert "2 trained, 0 already complete, 0 skipped, 2 failed" in done.stdout
    root = tmp_path / "results" / "tiny"
    got = outcome(root)
    expected = _local_outcome(tmp_path / "local", good)
    assert {k: got[k] for k in expected} == expected
    for record in ResultsStore(root).records():
        trace = root / record.run_id / ResultsStore.TRACEBACK
        assert (root / record.run_id / ResultsStore.LOG).is_file()
        if record.status == COMPLETE:
            assert not trace.exists()
            continue
        assert record.error == "RuntimeError: injected fault in faulty_cnn.forward"
        text = trace.read_text()
        assert text.startswith("Traceback (most recent call last)")
        assert "in forward" in text and "in train_one_epoch" in text  # the frames, not a line


# ---------------------------------------------------------------------------------------------
# GPUs (Ray's fake ones) and a cluster that cannot start the runs


def test_gpu_runs_never_land_in_a_process_bound_to_another_gpu(tmp_path, oct_npz, ray_instance):
    """CUDA binds a process to the GPU it first used; Ray reuses worker processes. With the
    executor's options for a GPU run (0.25 GPU each on 2 GPUs), each task must see the devices
    its process first saw: a process never serves two GPU tasks."""
    executor = executors.RayExecutor(gpus_per_run=0.25)
    executor.check([], Component("npz", {"path": str(oct_npz)}))
    spec = expand_grid(parse_config(grid_config(tmp_path, oct_npz, devices=["cuda"])))[0]
    assert executor._resources(spec) == {"num_cpus": 1, "num_gpus": 0.25}

    def probe(_):
        import os
        import time

        seen = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        first = os.environ.setdefault("OCTBENCH_TEST_FIRST_GPU", seen)  # what CUDA would keep
        time.sleep(0.2)
        return os.getpid(), first, seen

    task = executor._task(probe, spec)  # as train_on_worker is sent for this run
    results = ray.get([task.remote(i) for i in range(8)])
    assert all(first == seen for _, first, seen in results), results
    assert {seen for _, _, seen in results} <= {"0", "1"}
    assert len({pid for pid, _, _ in results}) == 8  # a fresh process for every GPU task
    cpu_spec = expand_grid(parse_config(grid_config(tmp_path, oct_npz)))[0]
    cpu_task = executor._task(probe, cpu_spec)
    pids = {pid for pid, _, _ in ray.get([cpu_task.remote(i) for i in range(4)])}
    assert len(pids) < 4  # CPU workers are reused (and keep their data)


@pytest.fixture
def cpus_taken(ray_instance):
    """An actor holding both CPUs of the module's instance, so no run can start."""
    @ray.remote(num_cpus=2)
    class Holder:
        def ready(self):
            return True

    holder = Holder.remote()
    ray.get(holder.ready.remote())
    yield holder
    ray.kill(holder)


def test_runs_that_cannot_start_are_explained_and_exit_2_on_request(tmp_path, oct_npz,
                                                                    cpus_taken, capsys):
    path = write_yaml(tmp_path / "tiny.yaml", grid_config(tmp_path, oct_npz))
    started = time.monotonic()
    err = assert_usage_error(cli_in_process(["run", str(path), "--executor", "ray",
                                             "--stuck-after", "0.02", "--on-stuck", "exit"],
                                            capsys),
                       "2 run(s) have waited", "none is training: each asks CPU 1, GPU 0")
    assert "CPU 0 free of 2" in err and "1 node(s) alive" in err
    assert time.monotonic() - started < 60
    assert not list((tmp_path / "results" / "tiny").glob("*/record.json"))  # nothing recorded


def test_runs_that_cannot_start_are_explained_then_waited_for(tmp_path, oct_npz, cpus_taken,
                                                              restore_torch):
    """The default: say why, keep waiting. The test frees the CPUs when the message comes."""
    config = parse_config(grid_config(tmp_path, oct_npz, strategies=["none"]))
    told = []

    class FreeOnMessage(logging.Handler):
        def emit(self, record):
            if "have waited" in record.getMessage() and not told:
                told.append(record.getMessage())
                ray.kill(cpus_taken)

    handler = FreeOnMessage()
    logging.getLogger("octbench").addHandler(handler)
    try:
        summary = run_experiment(config, quiet=True, say=lambda _: None,
                                 executor=executors.RayExecutor(stuck_after=1.0))
    finally:
        logging.getLogger("octbench").removeHandler(handler)
    assert len(told) == 1 and "still waiting (--on-stuck exit stops instead)" in told[0]
    assert summary.ok and len(summary.completed) == 1


# ---------------------------------------------------------------------------------------------
# --address that leads nowhere: exit 2 within seconds, naming the address


def _run_address(tmp_path, oct_npz, address, capsys) -> tuple[int, str, float]:
    path = write_yaml(tmp_path / "tiny.yaml", grid_config(tmp_path, oct_npz))
    started = time.monotonic()
    code = cli.main(["run", str(path), "--executor", "ray", "--address", address])
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "results").exists()
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    return code, err, time.monotonic() - started


def test_address_auto_without_a_cluster_exits_2(tmp_path, oct_npz, capsys, monkeypatch):
    from ray._private import services

    # Ray looks for clusters by process name: other Ray instances on this machine (another test
    # run's) must not count, so the search finds none, or a record of a cluster long gone.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    code, err, seconds = _run_address(tmp_path, oct_npz, "auto", capsys)
    assert code == 2 and "--address auto: no Ray cluster is running on this machine" in err
    assert "`ray start --head`" in err and seconds < 30
    port = _free_port()
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: f"127.0.0.1:{port}")
    code, err, seconds = _run_address(tmp_path, oct_npz, "auto", capsys)
    assert code == 2 and "--address auto (= " in err and f":{port})" in err
    assert "Connection refused" in err and seconds < 30


def test_address_of_a_server_that_is_not_ray_exits_2(tmp_path, oct_npz, capsys):
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    server = HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        code, err, seconds = _run_address(tmp_path, oct_npz, address, capsys)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2 and f"something listens at --address {address}, but it is not a Ray" in err
    assert "check the port" in err and seconds < 30


def test_address_that_drops_packets_exits_2(tmp_path, oct_npz, capsys):
    """A listening socket whose accept queue is full drops new connection requests (Linux)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        fillers = []
        try:
            for _ in range(3):  # fill the queue; later SYNs go unanswered
                filler = socket.socket()
                filler.settimeout(1)
                try:
                    filler.connect(server.getsockname())
                except OSError:
                    pass
                fillers.append(filler)
            code, err, seconds = _run_address(tmp_path, oct_npz, address, capsys)
        finally:
            for filler in fillers:
                filler.close()
    assert code == 2 and f"--address {address}" in err
    assert "no answer from" in err or "it is not a Ray cluster" in err
    assert seconds <= 2 * ray_address.CONNECT_TIMEOUT + 5
