"""Odd and hostile inputs, round two: crafted records, predictions and resume states, YAML alias
bombs and huge sweeps, links planted in folders someone hands over, odd command-line numbers.

The contract of every case: exit code 2 with one ``error:`` line (or a correct exit 0, said
per case), no traceback, within a time bound, with memory below 2 GiB, and nothing created,
changed or deleted outside the folders octbench was told to use (a canary file behind each
link). Cases that could hang or exhaust memory run together in one child process whose data
segment is limited (``RLIMIT_DATA``, 4 GiB), so a case that allocates what a file declares
fails with a MemoryError instead of taking the machine, and whose resident peak must stay
below 2 GiB.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    ROOT,
    assert_usage_error,
    cli_env,
    experiment,
    make_npz,
    tree_digest,
    write_yaml,
)
from conftest import cli_in_process as in_process
from report_helpers import N_TEST, write_run

from octbench.config import MAX_YAML_NODES
from octbench.results import ResultsStore, read_record
from octbench.untrusted import printable

SCAN = Path(__file__).parent / "data" / "NORMAL-12494-1.jpeg"
MEMORY_LIMIT = 2 * 2**30
#: Address space reserved but never touched (thread arenas) counts in the data segment: the hard
#: limit sits above the 2 GiB that the resident peak is held to, below what a crafted file
#: declares (5 GiB).
DATA_LIMIT = 4 * 2**30
#: Seconds the whole batch of limited cases may take (each case: about a second or less).
BATCH_SECONDS = 240

# --- the limited child process ----------------------------------------------------------------

DRIVER = """
import contextlib, io, json, resource, sys, time
resource.setrlimit(resource.RLIMIT_DATA, ({limit}, {limit}))
from octbench import cli
results = {{}}
for name, argv in json.loads(sys.argv[1]).items():
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except SystemExit as exit:
        code = exit.code
    except BaseException as error:  # a traceback: reported, never hidden
        import traceback
        code, err = "crash", io.StringIO(err.getvalue() + traceback.format_exc())
    results[name] = {{"code": code, "out": out.getvalue(), "err": err.getvalue(),
                     "seconds": time.monotonic() - start,
                     "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}
print(json.dumps(results))
"""


def run_limited(cases: dict[str, list[str]], cwd: Path, env: dict[str, str]) -> dict[str, dict]:
    """Run each argv through ``cli.main`` in one child process with a bounded data segment;
    each result has the child's resident peak so far (``peak_rss``, bytes)."""
    done = subprocess.run(
        [sys.executable, "-c", DRIVER.format(limit=DATA_LIMIT), json.dumps(cases)], cwd=cwd,
        env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])},
        capture_output=True, text=True, timeout=BATCH_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def assert_refused(result: dict, *expect: str, code: int = 2) -> None:
    """The harness's contract: the exit code, one error line when refused, no traceback."""
    text = result["err"] + result["out"]
    if code == 2:
        assert_usage_error(result)
    assert result["code"] == code, f"exit {result['code']}\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    for part in expect:
        assert part in text, f"{part!r} missing from:\n{text[-3000:]}"


# --- files a stranger could hand over ---------------------------------------------------------


def laughs(levels: int = 8) -> tuple[str, str]:
    """A YAML "billion laughs": anchors a..., each alias list 10 times the one before."""
    names = "abcdefghij"[:levels + 1]
    lines = [f"{names[0]}: &{names[0]} [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for before, name in zip(names, names[1:], strict=False):
        lines.append(f"{name}: &{name} [{', '.join([f'*{before}'] * 10)}]")
    return "\n".join(lines), names[-1]


def laughs_inline(levels: int = 8) -> str:
    """The same bomb as one flow value (for ``--set``)."""
    text = "&a0 [x, x, x, x, x, x, x, x, x, x]"
    for level in range(1, levels + 1):
        text = f"[{text}, &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]]"
    return text


def npz_declaring(path: Path, arrays: dict[str, np.ndarray], huge: dict[str, tuple]) -> Path:
    """An npz whose members in ``huge`` declare the given shape (float32) but hold no data."""
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as archive:
        for name, shape in huge.items():
            header = {"descr": "<f4", "fortran_order": False, "shape": shape}
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, header)  # magic + header, no data
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def crafted_record(store: ResultsStore, run_id: str, change) -> Path:
    """A valid fabricated run whose record.json ``change(record_dict)`` then alters."""
    write_run(store, strategy="weighted_ce", run_id=run_id)
    path = store.root / run_id / "record.json"
    record = json.loads(path.read_text())
    text = change(record)
    path.write_text(text if isinstance(text, str) else json.dumps(record))
    return path


def _set(*keys, value):
    def change(record):
        node = record
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


@dataclass
class Hostile:
    """A workspace: experiment folder, results, and an ``outside`` folder with canaries."""

    root: Path
    data: Path

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    def canary(self, name: str, content: bytes = b"canary: must stay as it is") -> Path:
        path = self.outside / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def yaml(self, name: str = "exp", text: str | None = None, **changes) -> str:
        path = self.root / f"{name}.yaml"
        if text is not None:
            path.write_text(text)
        else:
            write_yaml(path, experiment(self.root, self.data, **changes))
        return str(path)

    def demo(self, name: str = "demo") -> ResultsStore:
        """A results folder with two valid fabricated runs (so a report has something)."""
        store = ResultsStore(self.root / "results" / name)
        for seed in (0, 1):
            write_run(store, seed=seed)
        return store


@pytest.fixture
def hostile(tmp_path, oct_npz, monkeypatch) -> Hostile:
    monkeypatch.delenv("OCTBENCH_PLUGINS", raising=False)
    ws = Hostile(tmp_path, oct_npz)
    ws.canary("victim.txt")
    return ws


# --- the limited batch: hangs and memory blow-ups of round two --------------------------------


def test_bombs_and_declared_sizes_stay_bounded(hostile, tmp_path):
    ws = hostile
    bomb, last = laughs()
    store = ws.demo()
    folder = store.root
    # predictions.npz declaring 5 GiB of test scores; labels as uint64 >= 2**63
    big = ws.demo("big")
    assert len(list(big.root.iterdir())) == 2  # the two demo runs
    for run in sorted(big.root.iterdir()):
        npz_declaring(run / "predictions.npz", {"test_labels": np.zeros(N_TEST, np.uint8)},
                      {"test_scores": (1_250_000_000, 1)})
    huge_labels = ws.demo("labels")
    assert len(list(huge_labels.root.iterdir())) == 2
    for run in sorted(huge_labels.root.iterdir()):
        np.savez(run / "predictions.npz", test_scores=np.full((N_TEST, 4), 0.25, np.float32),
                 test_labels=np.full(N_TEST, 2**63 + 5, np.uint64))
    # records: nested 100,000 deep, a metric of 10**400, NaN and strings in metrics,
    # 10,000 class names, a history epoch 'abc', fingerprints of two JSON types
    crafted_record(store, "deep", lambda r: json.dumps(r)[:-1] + ', "x": '
                   + "[" * 100_000 + "]" * 100_000 + "}")
    crafted_record(store, "big-int", lambda r: json.dumps(r).replace(
        '"seed": 0', '"seed": 1' + "0" * 400))
    crafted_record(store, "nan-metric", _set("metrics", "test", "accuracy", value="NaN"))
    crafted_record(store, "many-classes", _set("dataset", "class_names",
                                               value=[f"c{i}" for i in range(10_000)]))
    crafted_record(store, "epoch-abc", lambda r: r["history"][0].update(epoch="abc"))
    crafted_record(store, "int-fingerprint", _set("dataset", "fingerprint", value=12345))
    crafted_record(store, "int-split", _set("metrics", "test", value=2**64))
    crafted_record(store, "list-metric", _set("metrics", "test", "accuracy", value=[]))
    # a past record with seconds_per_epoch: Infinity (read by the dry-run estimate)
    past = ResultsStore(ws.root / "results" / "tiny")
    crafted_record(past, "infinite", lambda r: json.dumps(r).replace(
        '"seconds_per_epoch": 10.0', '"seconds_per_epoch": Infinity'))
    # an npz of labels >= 2**63 without class names (one name per label would be made);
    # a checkpoint declaring 10,000 classes
    arrays = dict(np.load(ws.data))
    arrays.pop("class_names")
    arrays["train_labels"] = np.full(len(arrays["train_labels"]), 2**63 + 5, np.uint64)
    np.savez(ws.root / "uint64.npz", **arrays)
    import torch

    torch.save({"model": {}, "model_config": {"name": "reference_cnn"}, "img_size": 28,
                "class_names": [f"c{i}" for i in range(10_000)]}, ws.root / "many.pt")
    before = tree_digest(ws.outside), tree_digest(ws.root / "results")
    cases = {
        "npz-uint64-labels": ["data", "info", str(ws.root / "uint64.npz")],
        "checkpoint-10k-classes": ["predict", "--run", str(ws.root / "many.pt"), str(SCAN)],
        "laughs-sweep": ["run", "--dry-run", ws.yaml(
            "laughs-sweep", text=yaml.safe_dump(experiment(ws.root, ws.data))
            + bomb + f"\nsweep: {{train.lr: *{last}}}\n")],
        "laughs-lr": ["run", "--dry-run", ws.yaml("laughs-lr", text=yaml.safe_dump(
            {k: v for k, v in experiment(ws.root, ws.data).items() if k != "train"})
            + bomb + f"\ntrain: {{lr: *{last}}}\n")],
        "laughs-set": ["data", "info", "synthetic", "--set", f"scale={laughs_inline()}"],
        "sweep-million": ["run", "--dry-run", ws.yaml("million", sweep={
            "train.lr": [(i + 1) * 1e-5 for i in range(1000)],
            "train.momentum": [i / 1000 for i in range(1000)]})],
        "lr-20000": ["run", "--dry-run", ws.yaml("lr20k", sweep={
            "train.lr": [(i + 1) * 1e-7 for i in range(20_000)]})],
        "report-5gib": ["report", str(big.root), "--out", str(tmp_path / "reports"),
                        "--resamples", "100"],
        "report-uint64": ["report", str(huge_labels.root), "--out", str(tmp_path / "reports"),
                          "--resamples", "100"],
        "report-crafted": ["report", str(folder), "--out", str(tmp_path / "reports"),
                           "--format", "csv"],
        "dry-run-infinity": ["run", "--dry-run", ws.yaml(
            "tiny", results_dir=str(ws.root / "results"))],
    }
    results = run_limited(cases, ws.root, cli_env(tmp_path))
    for name, result in results.items():
        assert result["seconds"] < 60, (name, result["seconds"])
        assert result["peak_rss"] < MEMORY_LIMIT, (name, result["peak_rss"])
    alias = f"expands to more than {MAX_YAML_NODES:,} values"
    assert_refused(results["npz-uint64-labels"], "train_labels range over [9223372036854775813",
                   "expected labels from 0 to 99")
    assert_refused(results["checkpoint-10k-classes"],
                   "class_names must list 2 to 100 names, got 10,000 entries")
    assert_refused(results["laughs-sweep"], alias)
    assert_refused(results["laughs-lr"], alias)
    assert_refused(results["laughs-set"], alias)
    assert_refused(results["sweep-million"], "the grid has 4,000,000 runs",
                   "1,000,000 sweep combinations", "--max-runs N")
    assert_refused(results["lr-20000"], "the grid has 80,000 runs")
    # Reports stand on the other runs; each unusable file is named with its problem (exit 0:
    # the folder is valid, a run without readable predictions keeps its stored metrics and
    # the report says so).
    assert_refused(results["report-5gib"], code=0)
    assert_refused(results["report-uint64"], code=0)
    for name, problem in [("big", "array 'test_scores' has shape (1250000000, 1); expected "
                                  f"({N_TEST}, 4)"),
                          ("labels", "test_labels range over [9223372036854775813, ")]:
        text = (tmp_path / "reports" / name / "report.md").read_text().replace("\\", "")
        assert text.count(problem) == 2, (problem, text[:3000])
    report = results["report-crafted"]
    assert_refused(report, code=0)
    for run_id, problem in [
            ("deep", "nest"), ("big-int", "holds an integer of 401 digits"),
            ("nan-metric", "field 'metrics.test.accuracy' must be a finite number or null"),
            ("many-classes", "must name 2 to 100 classes, got 10,000"),
            ("epoch-abc", "field 'history[0].epoch' must be a finite number or null"),
            ("int-fingerprint", "field 'dataset.fingerprint' must be a string"),
            ("int-split", "field 'metrics.test' must be a JSON object"),
            ("list-metric", "field 'metrics.test.accuracy' must be a finite number or null")]:
        line = next((li for li in report["err"].splitlines() if f"/{run_id}/" in li), "")
        assert "skipped" in line and problem in line, (run_id, report["err"][-2000:])
    assert_refused(results["dry-run-infinity"], "to do", code=0)
    assert (tree_digest(ws.outside), tree_digest(ws.root / "results")) == before


def test_crafted_record_checks_agree_with_an_independent_reading(hostile):
    """What the schema check accepts is what a plain JSON reader reads (no coercion), and a
    record whose test split lacks a class (absent_classes lists names) is accepted."""
    store = hostile.demo()
    crafted_record(store, "absent", _set("metrics", "test", "absent_classes", value=["DME"]))
    paths = sorted(store.root.glob("*/record.json"))
    assert len(paths) >= 2, paths  # the demo's runs and the crafted one
    for path in paths:
        plain = json.loads(path.read_text())
        checked = read_record(path)
        assert checked.metrics == plain["metrics"] and checked.seed == plain["seed"]
        assert checked.history == plain["history"]


# --- links planted in folders someone hands over ----------------------------------------------


def _study_folder(ws: Hostile, kind: str) -> Path:
    folder = ws.root / "results" / "study"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({"study": "s", "storage_kind": kind}))
    return folder


def test_report_never_opens_a_study_db_linked_out_of_its_folder(hostile, tmp_path, capsys):
    canary = hostile.outside / "other.db"
    sqlite3.connect(canary).close()  # an empty SQLite file elsewhere
    before = canary.read_bytes()
    folder = _study_folder(hostile, "sqlite")
    (folder / "study.db").symlink_to(canary)
    hostile.demo("study")
    result = in_process(["report", str(folder), "--study", str(folder),
                         "--out", str(tmp_path / "reports")], capsys)
    assert_refused(result, "study.db leads to", "outside")
    assert canary.read_bytes() == before  # no Optuna tables created in it


def test_tune_never_creates_a_database_through_a_dangling_link(hostile, tmp_path, capsys):
    target = hostile.outside / "made-by-link.db"
    config = _tune_yaml(hostile)
    folder = hostile.root / "results" / "linked"
    folder.mkdir(parents=True)
    (folder / "study.db").symlink_to(target)
    before = tree_digest(hostile.outside)
    result = in_process(["tune", config], capsys)
    assert_refused(result, "study.db leads to", "Remove the link")
    assert not target.exists() and tree_digest(hostile.outside) == before


def test_tune_workers_never_append_to_a_journal_linked_elsewhere(hostile, tmp_path, capsys):
    canary = hostile.canary("notes.log", b"a user's log\n")
    config = _tune_yaml(hostile)
    folder = hostile.root / "results" / "linked"
    folder.mkdir(parents=True)
    (folder / "journal.log").symlink_to(canary)
    result = in_process(["tune", config, "--workers", "2"], capsys)
    assert_refused(result, "journal.log leads to")
    assert canary.read_bytes() == b"a user's log\n"


def _tune_yaml(ws: Hostile) -> str:
    ws.yaml("base", strategies=["none"], train={"epochs": 1})
    path = ws.root / "tune.yaml"
    path.write_text(yaml.safe_dump({
        "study": "linked", "base": "base.yaml", "n_trials": 1,
        "search": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}))
    return str(path)


def test_export_refuses_a_run_folder_linked_out_of_the_results(hostile, tmp_path, capsys):
    pytest.importorskip("mlflow", reason="export mlflow needs the [mlflow] extra")
    store = hostile.demo()
    elsewhere = hostile.outside / "someone-elses-run"
    (store.root / next(p.name for p in store.root.iterdir())).rename(elsewhere)
    (store.root / "linked-run").symlink_to(elsewhere)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    before = tree_digest(hostile.outside)
    result = in_process(["export", "mlflow", str(store.root), "--tracking-uri", uri], capsys)
    assert_refused(result, "linked-run", "outside")
    assert tree_digest(hostile.outside) == before
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # nothing sent anywhere


def test_export_skips_a_crafted_record_by_the_shared_check(hostile, tmp_path, capsys):
    pytest.importorskip("mlflow", reason="export mlflow needs the [mlflow] extra")
    store = hostile.demo()
    crafted_record(store, "epoch-abc", lambda r: r["history"][0].update(epoch="abc"))
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    result = in_process(["export", "mlflow", str(store.root), "--tracking-uri", uri], capsys)
    assert_refused(result, "exported 2 run(s)", "1 unreadable (skipped)", code=0)
    assert "field 'history[0].epoch'" in result["err"]


def _scan_folder(ws: Hostile) -> Path:
    root = ws.root / "scans"
    for split in ("train", "test"):
        for name in ("CNV", "NORMAL"):
            (root / split / name).mkdir(parents=True)
            for i in range(10 if split == "train" else 2):  # enough to split val off
                (root / split / name / f"{i}.jpeg").write_bytes(SCAN.read_bytes())
    return root


@pytest.mark.parametrize("link", ["scan-to-file", "class-folder"])
def test_image_folder_links_leaving_the_dataset_are_refused(hostile, link, capsys):
    root = _scan_folder(hostile)
    canary = hostile.canary("passwd.png", SCAN.read_bytes())
    if link == "scan-to-file":
        (root / "train" / "CNV" / "evil.png").symlink_to(canary)
    else:
        (hostile.outside / "DRUSEN").mkdir()
        (hostile.outside / "DRUSEN" / "x.jpeg").write_bytes(SCAN.read_bytes())
        (root / "train" / "DRUSEN").symlink_to(hostile.outside / "DRUSEN")
    before = tree_digest(hostile.outside)
    config = hostile.yaml(data={"name": "folder", "path": str(root)})
    for argv in (["run", "--dry-run", config], ["data", "info", str(root)], ["run", config]):
        result = in_process(argv, capsys)
        assert_refused(result, "link(s) leading outside it", "remove the links")
    assert tree_digest(hostile.outside) == before
    assert not (hostile.root / "cache").exists() or not list((hostile.root / "cache").rglob(
        "*.npz"))  # nothing cached from it


def test_a_link_inside_the_dataset_folder_is_fine(hostile, capsys):
    root = _scan_folder(hostile)
    (root / "test" / "CNV" / "again.jpeg").symlink_to(root / "train" / "CNV" / "0.jpeg")
    result = in_process(["data", "info", str(root)], capsys)
    assert_refused(result, "CNV", code=0)


# --- resume states ----------------------------------------------------------------------------


def _one_run(ws: Hostile, tmp_path) -> tuple[str, ResultsStore, str]:
    from octbench.config import load_config
    from octbench.grid import expand_grid

    config = ws.yaml(strategies=["none"], train={"epochs": 1, "batch_size": 64, "threads": 1})
    loaded = load_config(config)
    (spec,) = expand_grid(loaded)
    return config, ResultsStore(Path(loaded.results_dir) / loaded.name), spec.run_id


def test_resume_state_claiming_the_last_epoch_without_a_best_model_restarts(
        hostile, tmp_path, capsys, restore_torch):
    import torch

    config, store, run_id = _one_run(hostile, tmp_path)
    store.save_state(run_id, ResultsStore.RESUME, {
        "model": {}, "optimizer": {}, "order_rng": torch.Generator().get_state(), "rng": {},
        "state": {"epoch": 1, "history": [{"epoch": 1}], "best": None}})
    result = in_process(["run", config], capsys)
    assert_refused(result, "is inconsistent", "claims 1 trained epoch(s) but holds no best model",
                   "starts from scratch", "1 trained", code=0)
    assert read_record(store.root / run_id / "record.json").status == "complete"
    assert not (store.root / run_id / ResultsStore.RESUME).exists()


def test_a_resume_state_linked_out_of_the_run_folder_is_refused(hostile, tmp_path, capsys,
                                                                restore_torch):
    config, store, run_id = _one_run(hostile, tmp_path)
    canary = hostile.canary("weights.pt")
    (store.root / run_id).mkdir(parents=True)
    (store.root / run_id / ResultsStore.RESUME).symlink_to(canary)
    result = in_process(["run", config], capsys)
    assert_refused(result, "resume.pt leads to", "Remove the link")
    assert "UnsafePath" not in result["err"]
    assert canary.read_bytes() == b"canary: must stay as it is"
    assert (store.root / run_id / ResultsStore.RESUME).is_symlink()  # not deleted either


# --- sizes the model cannot take --------------------------------------------------------------


def test_images_below_the_models_minimum_are_refused_before_training(hostile, capsys):
    tiny = make_npz(hostile.root / "one-pixel.npz", size=1)
    config = hostile.yaml(data={"name": "npz", "path": str(tiny), "synthetic": True})
    result = in_process(["run", config], capsys)
    assert_refused(result, "cannot take the data's 1 px images",
                   "it needs images of at least 8 px")
    assert not (hostile.root / "results").exists() or not list(
        (hostile.root / "results").rglob("record.json"))


# --- sweeps -----------------------------------------------------------------------------------


def test_numerically_equal_sweep_values_make_one_run(hostile, capsys, caplog):
    config = hostile.yaml(strategies=["none"], sweep={"train.lr": [1, 1.0, 0.5]})
    result = in_process(["run", "--dry-run", config], capsys)
    assert_refused(result, "2 runs", code=0)
    assert "lists 1 and 1.0, which are equal and make the same runs" in result["err"]


def test_sweep_values_with_mixed_key_types_are_refused_not_crashed(hostile, capsys):
    """A mapping as a sweep value whose keys are a name and a number (1e-3 reads as a float)."""
    config = hostile.yaml(text=yaml.safe_dump(experiment(hostile.root, hostile.data))
                          + "sweep: {train.lr: [{none: null, 1e-3: null}, 0.1]}\n")
    result = in_process(["run", "--dry-run", config], capsys)
    assert_refused(result, "sweep['train.lr'][0]", "train.lr must be a float")


@pytest.mark.parametrize("report", [None, {"baseline": "focal"}])
def test_strategy_parameter_sweeps_keep_their_baseline(hostile, report, capsys):
    config = hostile.yaml(strategies=["focal"], sweep={"strategy.gamma": [1.0, 3.0]},
                          **({"report": report} if report else {}))
    result = in_process(["run", "--dry-run", config], capsys)
    assert_refused(result, "2 runs", "focal-gamma=1.0", "focal-gamma=3.0", code=0)


def test_max_runs_raises_the_grid_limit(hostile, capsys):
    config = hostile.yaml(seeds=list(range(3)))  # 4 strategies x 3 seeds = 12 runs
    assert_refused(in_process(["run", "--dry-run", "--max-runs", "11", config], capsys),
                   "the grid has 12 runs", "more than the limit of 11")
    assert_refused(in_process(["run", "--dry-run", "--max-runs", "12", config], capsys),
                   "12 runs", code=0)


# --- names printed from files -----------------------------------------------------------------


def test_class_names_with_escape_codes_are_printed_escaped(hostile, capsys):
    import torch

    from octbench.models import build_model

    names = ["CNV\x1b[2J", "DME\rNORMAL: forged", "DRUSEN\u202e", "NORMAL"]
    model = build_model("reference_cnn", width=0.25)
    path = hostile.root / "best.pt"
    torch.save({"model": model.state_dict(), "model_config": {"name": "reference_cnn",
                                                                "width": 0.25},
                "class_names": names, "img_size": 28, "logit_offset": None, "epoch": 1}, path)
    result = in_process(["predict", "--run", str(path), str(SCAN)], capsys)
    assert result["code"] == 0, result
    assert not any(c in result["out"] for c in "\x1b\r\u202e"), repr(result["out"])
    assert "CNV\\x1b[2J" in result["out"] and "DME\\rNORMAL: forged" in result["out"]
    assert printable("a\tb\x00c\u2028d", keep="\t") == "a\tb\\x00c\\u2028d"


# --- numbers on the command line --------------------------------------------------------------


@pytest.mark.parametrize("argv, expect", [
    (["run", "{yaml}", "--shard", "²/³"], "--shard must look like K/N in digits 0-9"),
    (["run", "{yaml}", "--shard", "1/٢"], "--shard must look like K/N in digits 0-9"),
    (["run", "{yaml}", "--cpus-per-run", "١"], "must be a whole number in digits 0-9"),
    (["run", "{yaml}", "--executor", "ray", "--gpus-per-run", "nan"], "such as 0.25"),
    (["run", "{yaml}", "--max-runs", "1_000"], "from 1 to 10,000,000 in digits 0-9"),
    (["report", "{yaml}", "--resamples", "١٠٠٠"], "from 100 to 100,000 in digits 0-9"),
    (["report", "{yaml}", "--resamples", "99"], "from 100 to 100,000, got 99"),
    (["tune", "{yaml}", "--workers", " 2"], "in digits 0-9"),
    (["data", "synth", "--out", "{out}", "--set", "seed=-1"], "(data.seed) must be >= 0"),
    (["data", "synth", "--out", "{out}", "--set", "seed=4294967296"],
     "(data.seed) must be >= 0 and <= 4294967295. Got 4294967296"),
    (["data", "synth", "--out", "{out}", "--set", "seed=2**32"], "must be an int"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_command_line_numbers_are_ascii_and_in_range(hostile, argv, expect, capsys):
    yaml_path = hostile.yaml()
    argv = [a.format(yaml=yaml_path, out=hostile.root / "s.npz") for a in argv]
    assert_refused(in_process(argv, capsys), expect)
    assert not (hostile.root / "s.npz").exists()


def test_a_per_class_entry_that_is_not_an_object_is_skipped_with_its_problem(hostile, tmp_path,
                                                                            capsys):
    """``per_class: {none: null}`` in a crafted record: the record check names it, and a CSV
    report stands on the other runs (it crashed the runs table before)."""
    store = hostile.demo()
    path = crafted_record(store, "per-class-null",
                          _set("metrics", "test", "per_class", value={"none": None}))
    with pytest.raises(ValueError, match=r"metrics\.test\.per_class\.none' must be a JSON object"):
        read_record(path)
    result = in_process(["report", str(store.root), "--format", "csv", "--out",
                         str(tmp_path / "csv")], capsys)
    assert result["code"] == 0, result
    line = next((li for li in result["err"].splitlines() if "/per-class-null/" in li), "")
    assert "skipped" in line and "per_class.none' must be a JSON object" in line, result["err"]
    rows = (tmp_path / "csv" / "demo" / "runs.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and not any("per-class-null" in row for row in rows)
