"""The Ray executor on a real local Ray instance and a two-node Ray cluster on this machine.

One Ray instance (2 CPUs) serves the whole module; ``run --address`` subprocesses connect to it.
Every test runs under a watchdog (``faulthandler``) and every subprocess has a timeout, so a
hanging Ray can never hold up the suite. The reference for every result is the same grid trained
by the local executor: Ray runs must equal it run for run (``deterministic: true``, 1 thread).
"""

from __future__ import annotations

import faulthandler
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
    cli_env,
    experiment,
    leftovers,
    run_cli,
    run_outcome,
    start_cli,
    write_yaml,
)

from octbench import cli, executors, runner
from octbench.config import parse_config
from octbench.data import data_fingerprint
from octbench.results import COMPLETE, INTERRUPTED, ResultsStore
from octbench.runner import run_experiment

ray = pytest.importorskip("ray", reason="the Ray executor needs the [ray] extra (.ci/run has it)")
pytestmark = pytest.mark.extras  # .ci/run's second phase selects these

WAIT = 240  # seconds for any one Ray test or subprocess; the build machine is shared


@pytest.fixture(autouse=True)
def watchdog():
    """End the whole test process (with tracebacks) if a test hangs."""
    faulthandler.dump_traceback_later(WAIT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module; executors find it initialised and reuse it."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def grid_config(home: Path, data: Path, **changes) -> dict:
    """2 strategies x 1 seed, 4 epochs of a tiny CNN: a few seconds per run on 2 cores."""
    return experiment(home, data, strategies=["none", "oversample"],
                      train={"epochs": 4, "batch_size": 64, "lr": 2.0e-3, "schedule": "cosine",
                             "deterministic": True, "threads": 1}, **changes)


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


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def ray_workers_running() -> list[int]:
    """Process ids of this test process's Ray workers executing an octbench run.

    Only descendants of this process (its Ray instance's raylet started them) count: other Ray
    instances on the machine, e.g. another test run's, are never touched.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(b"ray::train_on_worker"):
                continue
            pid = ancestor = int(entry.name)
            while ancestor > 1 and ancestor != os.getpid():
                ancestor = _parent(ancestor)
        except (OSError, ValueError, IndexError):
            continue
        if ancestor == os.getpid():
            found.append(pid)
    return found


def test_ray_records_equal_the_local_executors(tmp_path, oct_npz, reference, ray_instance,
                                               restore_torch):
    config = parse_config(grid_config(tmp_path, oct_npz))
    messages = []
    summary = run_experiment(config, quiet=True, say=messages.append,
                             executor=executors.RayExecutor())
    assert summary.ok and len(summary.completed) == 2, messages
    root = tmp_path / "results" / "tiny"
    assert outcome(root) == reference
    assert leftovers(root) == []
    for record in ResultsStore(root).records():  # the node that trained it is recorded
        assert record.hardware["type"] == "cpu" and record.hardware["ray_node"]
        assert record.hardware["threads"] == 1
    assert any("[synthetic data]" in m for m in messages)


def test_worker_killed_mid_run_resumes_from_its_epoch_checkpoint(tmp_path, oct_npz, reference,
                                                                  ray_instance, restore_torch,
                                                                  caplog):
    """SIGKILL the worker during a run: Ray retries the task, which resumes from the epoch
    checkpoint kept on the driver's side; the grid ends complete, equal to the reference."""
    config = parse_config(grid_config(tmp_path, oct_npz))
    root = tmp_path / "results" / "tiny"
    killed = []

    def kill_a_worker_after_its_first_epoch():
        deadline = time.monotonic() + WAIT
        while not killed and time.monotonic() < deadline:
            if any(root.glob("*/resume.pt")):
                for pid in ray_workers_running():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_worker_after_its_first_epoch, daemon=True)
    killer.start()
    caplog.set_level(logging.INFO, logger="octbench")
    # 2 CPUs per run on a 2-CPU instance: one run at a time, so the worker killed is the one
    # whose checkpoint exists.
    summary = run_experiment(config, quiet=True, say=lambda _: None,
                             executor=executors.RayExecutor(cpus_per_run=2))
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    assert summary.ok and len(summary.completed) == 2
    resumed = [r.getMessage() for r in caplog.records if "resumed after epoch" in r.getMessage()]
    assert len(resumed) == 1, resumed
    epoch = int(resumed[0].split("resumed after epoch ")[1].split()[0])
    assert 1 <= epoch < 4  # not from epoch 0
    assert outcome(root) == reference  # no duplicate, partial or different record
    assert leftovers(root) == []


def test_driver_interrupted_then_rerun_finishes_exactly_the_missing_runs(tmp_path, oct_npz,
                                                                         reference, ray_instance):
    """Ctrl-C on `run --executor ray --address ...`: exit 130, in-flight runs recorded
    interrupted; the same command again completes the grid, equal to the reference."""
    path = write_yaml(tmp_path / "tiny.yaml", grid_config(tmp_path, oct_npz))
    root = tmp_path / "results" / "tiny"
    argv = ["run", str(path), "--executor", "ray", "--address", ray_instance]
    process = start_cli(argv, cli_env(tmp_path))
    deadline = time.monotonic() + WAIT
    while not any(root.glob("*/resume.pt")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 130, err
    statuses = {r.run_id: r.status for r in ResultsStore(root).records()}
    assert INTERRUPTED in statuses.values(), statuses
    assert set(statuses.values()) <= {INTERRUPTED, COMPLETE}
    done = run_cli(argv, cli_env(tmp_path), timeout=WAIT)
    assert done.returncode == 0, done.stderr
    complete = sum(s == COMPLETE for s in statuses.values())
    assert f"{2 - complete} trained, {complete} already complete" in done.stdout
    assert outcome(root) == reference
    assert leftovers(root) == []


def test_impossible_resources_exit_2_and_write_nothing(tmp_path, oct_npz, ray_instance, capsys):
    path = write_yaml(tmp_path / "tiny.yaml", grid_config(tmp_path, oct_npz))
    for options, expect in ((["--gpus-per-run", "0.25"], "has no GPU"),
                            (["--cpus-per-run", "64"], "no node of the Ray cluster")):
        code = cli.main(["run", str(path), "--executor", "ray", *options])
        err = capsys.readouterr().err
        assert code == 2 and expect in err and "Traceback" not in err, err
        assert len([line for line in err.splitlines() if "error:" in line]) == 1
        assert not (tmp_path / "results").exists()


def test_big_data_file_missing_on_a_node_is_named_before_training(tmp_path, oct_npz,
                                                                   ray_instance, monkeypatch):
    """Files above the object-store limit are read by each worker: a node without the file
    is named up front. The driver sees a file; the workers look for one that is not there."""
    missing = tmp_path / "elsewhere" / "tiny.npz"
    config = parse_config(grid_config(tmp_path, missing))
    monkeypatch.setattr(executors, "OBJECT_STORE_LIMIT", 0)
    # In the driver only: its checks see a file; the workers' own check looks for `missing`.
    monkeypatch.setattr(executors, "data_file", lambda data: oct_npz)
    monkeypatch.setattr(runner, "check_available", lambda name, **params: None)
    # (the run ids need the data's content fingerprint, which the driver reads from its file)
    monkeypatch.setattr(runner, "data_fingerprint",
                        lambda name, **params: data_fingerprint(name, path=str(oct_npz)))
    with pytest.raises(executors.OctbenchError) as error:
        run_experiment(config, quiet=True, say=lambda _: None, executor=executors.RayExecutor())
    message = str(error.value)
    assert f"data file {missing} is larger than 0 GiB" in message
    assert f"missing on node(s) {socket.gethostname()} (" in message
    assert not (tmp_path / "results").exists()  # nothing written


def test_big_data_file_is_read_by_each_worker(tmp_path, oct_npz, reference, ray_instance,
                                              monkeypatch, restore_torch):
    monkeypatch.setattr(executors, "OBJECT_STORE_LIMIT", 0)
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
    finally:
        if node is not None:
            _stop(node)
        _stop(head)
