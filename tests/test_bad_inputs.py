"""The bad-input table: every row exits with code 2 and one message naming the problem and the
fix, prints no traceback, and leaves existing results byte-identical.

The same table is the README's troubleshooting section. Rows run ``octbench.cli.main`` in this
process (a traceback would surface here as an exception); a few also run as real subprocesses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    assert_usage_error,
    cli_env,
    experiment,
    run_cli,
    tree_digest,
    write_yaml,
)

from octbench import cli


@dataclass
class Workspace:
    """A temp folder with a valid experiment, a valid npz file and existing results."""

    root: Path
    data: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    def config(self, **changes) -> dict:
        config = experiment(self.root, self.data, strategies=["none", "focal"])
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        return config

    def yaml(self, config: dict | None = None, text: str | None = None, **changes) -> str:
        path = self.root / "exp.yaml"
        if text is None:
            write_yaml(path, config if config is not None else self.config(**changes))
        else:
            path.write_text(text)
        return str(path)

    def train(self, **changes) -> str:
        return self.yaml(train={"epochs": 2, **changes})

    def npz(self, transform: Callable[[dict], None] | None = None, name: str = "bad.npz") -> str:
        with np.load(self.data) as npz:
            arrays = {k: npz[k] for k in npz.files}
        if transform is not None:
            transform(arrays)
        path = self.root / name
        np.savez(path, **arrays)
        return str(path)

    def run_on(self, data: dict) -> list[str]:
        return ["run", self.yaml(data=data)]


def _truncated(ws: Workspace) -> str:
    path = ws.root / "truncated.npz"
    path.write_bytes(ws.data.read_bytes()[: ws.data.stat().st_size // 2])
    return str(path)


def _text_as_npz(ws: Workspace) -> str:
    path = ws.root / "notes.npz"
    path.write_text("these are notes, not arrays\n")
    return str(path)


def _fake_octmnist(ws: Workspace) -> str:
    folder = ws.root / "medmnist"
    folder.mkdir(exist_ok=True)
    (folder / "octmnist.npz").write_bytes(ws.data.read_bytes())  # right layout, wrong MD5
    return str(folder)


def _checkpoint(ws: Workspace) -> str:
    import torch

    from octbench.models import build_model

    model = build_model("reference_cnn", width=0.25)
    path = ws.root / "best.pt"
    torch.save({"model": model.state_dict(),
                "model_config": {"name": "reference_cnn", "width": 0.25},
                "class_names": ["CNV", "DME", "DRUSEN", "NORMAL"], "img_size": 28,
                "logit_offset": None, "epoch": 1}, path)
    return str(path)


def _not_weights(ws: Workspace) -> str:
    path = ws.root / "weights.pth"
    path.write_text("these are notes, not weights\n")
    return str(path)


def _folder(ws: Workspace, layout: dict[str, dict[str, int]]) -> str:
    """An image folder ``{split: {class: number of scans}}`` of copies of tests/data scans."""
    scans = sorted((Path(__file__).parent / "data").glob("*.jpeg"))
    root = ws.root / "scans"
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (root / split / name / f"{i}.jpeg").write_bytes(scans[i].read_bytes())
    return str(root)


def _one_class(arrays: dict) -> None:
    arrays.pop("class_names")
    for split in ("train", "val", "test"):
        arrays[f"{split}_labels"] = np.zeros_like(arrays[f"{split}_labels"])


def _not_an_image(ws: Workspace) -> str:
    path = ws.root / "scan.png"
    path.write_text("not a PNG at all")
    return str(path)


def _set(key: str, value) -> Callable[[dict], None]:
    def change(arrays: dict) -> None:
        arrays[key] = value(arrays) if callable(value) else value
    return change


@dataclass(frozen=True)
class Bad:
    """One row: the input, how to make it, and what the message must say (problem, fix)."""

    id: str
    argv: Callable[[Workspace], list[str]]
    expect: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    #: the optional module the row needs (its extra installs it); skipped without it
    needs: str | None = None


TABLE = [
    # --- experiment YAML --------------------------------------------------------------------
    Bad("yaml-syntax-error", lambda ws: ["run", ws.yaml(text="name: x\nmodels: [reference_cnn\n")],
        ("YAML syntax error at line 3", "exp.yaml")),
    Bad("empty-file", lambda ws: ["run", ws.yaml(text="")],
        ("the file is empty", "see experiments/quickstart.yaml")),
    Bad("not-a-mapping", lambda ws: ["run", ws.yaml(text="- reference_cnn\n- focal\n")],
        ("the top level must be a mapping of keys to values, got a list",)),
    Bad("duplicate-keys", lambda ws: ["run", ws.yaml(text="name: x\nseeds: [0]\nseeds: [1]\n")],
        ("duplicate key 'seeds' (first on line 2)",)),
    Bad("unknown-key", lambda ws: ["run", ws.yaml(modles=["reference_cnn"])],
        ("unknown top-level key 'modles'", "Did you mean 'models'?")),
    Bad("misplaced-key", lambda ws: ["run", ws.yaml(epochs=3)],
        ("unknown top-level key 'epochs'", "It belongs under 'train:' (train.epochs)")),
    Bad("unknown-train-key", lambda ws: ["run", ws.train(epoch=3)],
        ("unknown key 'train.epoch'", "Did you mean 'epochs'?")),
    Bad("wrong-type", lambda ws: ["run", ws.train(batch_size="large")],
        ("train.batch_size must be an int. Got 'large' instead.",)),
    Bad("epochs-0", lambda ws: ["run", ws.yaml(train={"epochs": 0})],
        ("train.epochs must be >= 1 and <= 10000. Got 0 instead.",)),
    Bad("negative-learning-rate", lambda ws: ["run", ws.train(lr=-1e-3)],
        ("train.lr must be > 0. Got -0.001 instead.",)),
    Bad("bad-choice", lambda ws: ["run", ws.train(optimizer="adma")],
        ("train.optimizer must be one of 'adam', 'adamw', 'sgd'", "Did you mean 'adam'?")),
    Bad("unknown-model", lambda ws: ["run", ws.yaml(models=["reference_cn"])],
        ("unknown model 'reference_cn'", "Did you mean 'reference_cnn'?", "Choices:")),
    Bad("unknown-timm-model", lambda ws: ["run", ws.yaml(models=["timm:resnet181"])],
        ("unknown timm model 'resnet181'", "Did you mean")),
    Bad("unknown-strategy", lambda ws: ["run", ws.yaml(strategies=["none", "focall"])],
        ("unknown strategy 'focall'", "Did you mean 'focal'?", "Choices:")),
    Bad("unknown-dataset", lambda ws: ["run", ws.yaml(data={"name": "synthtic"})],
        ("unknown dataset 'synthtic'", "Did you mean 'synthetic'?", "Choices:")),
    Bad("unknown-parameter", lambda ws: ["run", ws.yaml(strategies=[
        "none", {"name": "focal", "gama": 2}])],
        ("unknown parameter 'gama' of strategy 'focal'", "Did you mean 'gamma'?")),
    Bad("parameter-out-of-range", lambda ws: ["run", ws.yaml(strategies=[
        "none", {"name": "focal", "gamma": -1}])],
        ("'gamma' parameter of strategy 'focal'", "must be >= 0. Got -1")),
    Bad("missing-parameter", lambda ws: ["run", ws.yaml(data={"name": "npz"})],
        ("dataset 'npz' needs the parameter 'path'",)),
    Bad("empty-grid", lambda ws: ["run", ws.yaml(models=[])],
        ("'models' is empty, so the grid has no runs", "list at least one entry")),
    Bad("duplicate-grid-entry", lambda ws: ["run", ws.yaml(seeds=[0, 0])],
        ("'seeds' lists 0 twice", "must be unique")),
    Bad("bad-device", lambda ws: ["run", ws.yaml(devices=["gpu"])],
        ("devices[0] must be one of cpu, cuda, cuda:N, mps, auto. Got 'gpu' instead.",)),
    Bad("bad-selection-metric", lambda ws: ["run", ws.train(select_on="f1")],
        ("train.select_on must be a validation metric", "Got 'f1' instead")),
    Bad("baseline-not-in-grid", lambda ws: ["run", ws.yaml(report={"baseline": "oversample"})],
        ("report.baseline 'oversample' is not among the strategies", "name one of them")),
    # --- data -------------------------------------------------------------------------------
    Bad("data-missing-file", lambda ws: ws.run_on({"name": "npz", "path": "no/such.npz"}),
        ("data file no/such.npz does not exist", "check `data.path`")),
    Bad("data-truncated-npz", lambda ws: ws.run_on({"name": "npz", "path": _truncated(ws)}),
        ("the file may be truncated or not an npz archive", "download or write it again")),
    Bad("data-not-an-npz", lambda ws: ws.run_on({"name": "npz", "path": _text_as_npz(ws)}),
        ("cannot read", "notes.npz as an .npz file")),
    Bad("data-wrong-keys", lambda ws: ws.run_on({"name": "npz", "path": ws.npz(
        lambda a: a.update(x_train=a.pop("train_images")))}),
        ("is not a MedMNIST-format file: missing train_images", "expected keys")),
    Bad("data-wrong-dtype", lambda ws: ws.run_on({"name": "npz", "path": ws.npz(
        _set("val_images", lambda a: a["val_images"].astype(np.float32) / 255))}),
        ("val_images has dtype float32; expected uint8 (0-255)",)),
    Bad("data-wrong-shape", lambda ws: ws.run_on({"name": "npz", "path": ws.npz(
        _set("test_images", lambda a: a["test_images"][:, :, :20]))}),
        ("test_images has shape (80, 28, 20); expected (N, H, W) grayscale with H == W",)),
    Bad("data-mixed-sizes", lambda ws: ws.run_on({"name": "npz", "path": ws.npz(
        _set("test_images", lambda a: np.zeros((80, 32, 32), np.uint8)))}),
        ("test_images are 32 px but other splits are 28 px",)),
    Bad("data-labels-out-of-range", lambda ws: ws.run_on({"name": "npz", "path": ws.npz(
        _set("train_labels", lambda a: a["train_labels"] + 4))}),
        ("train_labels range over [4, 7]; expected 0...3 (CNV, DME, DRUSEN, NORMAL)",)),
    Bad("data-class-names-wrong-length", lambda ws: ws.run_on(
        {"name": "npz", "path": str(ws.data), "class_names": ["a", "b", "c", "d", "e"]}),
        ("5 class names (a, b, c, d, e) but the labels only go up to 3",
         "give exactly one name per label 0...3")),
    Bad("data-label-outside-class-names", lambda ws: ws.run_on(
        {"name": "npz", "path": str(ws.data), "class_names": ["a", "b", "c"]}),
        ("train_labels range over [0, 3]; expected 0...2 (a, b, c), one label per class name",)),
    Bad("data-one-class", lambda ws: ws.run_on({"name": "npz", "path": ws.npz(_one_class)}),
        ("has one class only (label 0)", "Add the other classes' images")),
    Bad("folder-empty-class", lambda ws: ws.run_on({"name": "folder", "path": _folder(
        ws, {"train": {"CNV": 2, "NORMAL": 0}, "test": {"CNV": 1, "NORMAL": 1}})}),
        ("has empty class folder(s) train/NORMAL/", "remove the folders")),
    Bad("folder-without-train", lambda ws: ws.run_on({"name": "folder", "path": _folder(
        ws, {"training": {"CNV": 1, "NORMAL": 1}, "test": {"CNV": 1, "NORMAL": 1}})}),
        ("has no train/ folder", "expected DIR/train/<class>/*.png")),
    Bad("folder-one-class", lambda ws: ws.run_on({"name": "folder", "path": _folder(
        ws, {"train": {"CNV": 3}, "test": {"CNV": 1}})}),
        ("train/ has 1 class folder(s) ['CNV']; a classifier needs at least 2",)),
    Bad("data-empty-split", lambda ws: ws.run_on({"name": "npz", "path": ws.npz(
        lambda a: a.update(val_images=a["val_images"][:0], val_labels=a["val_labels"][:0]))}),
        ("the val split is empty",)),
    Bad("data-count-mismatch", lambda ws: ws.run_on({"name": "npz", "path": ws.npz(
        _set("test_labels", lambda a: a["test_labels"][:-1]))}),
        ("test has 80 images but 79 labels",)),
    Bad("data-md5-mismatch", lambda ws: ws.run_on({"name": "octmnist", "root": _fake_octmnist(ws)}),
        ("fails its MD5 check (expected c68d92d5b585d8d81f7112f81e2d0842)",
         "Delete it and download")),
    Bad("data-octmnist-offline", lambda ws: ws.run_on({"name": "octmnist",
                                                       "root": str(ws.root / "empty")}),
        ("OCTMNIST is not available", "does not exist", "Offline, use `data: {name: synthetic}`")),
    # --- models and weights -----------------------------------------------------------------
    Bad("timm-unknown-parameter", lambda ws: ["run", ws.yaml(models=[
        {"name": "timm:resnet18", "drop_rat": 0.1}])],
        ("unknown parameter 'drop_rat' of timm model 'resnet18' at models[0]",
         "Did you mean 'drop_rate'?")),
    Bad("pretrained-own-model", lambda ws: ["run", ws.yaml(models=[
        {"name": "reference_cnn", "pretrained": True}])],
        ("models[0].pretrained: model 'reference_cnn' has no pretrained weights",
         "{name: timm:resnet18, pretrained: true}")),
    Bad("weights-file-unreadable", lambda ws: ["run", ws.yaml(models=[
        {"name": "timm:resnet10t", "pretrained": _not_weights(ws)}])],
        ("models[0].pretrained: cannot read", "weights.pth as model weights",
         "safetensors.torch.save_file")),
    Bad("augment-unknown", lambda ws: ["run", ws.train(augment=["hflp"])],
        ("train.augment[0]: unknown augmentation 'hflp'.", "Did you mean 'hflip'?")),
    # --- sweeps -----------------------------------------------------------------------------
    Bad("sweep-unknown-path", lambda ws: ["run", ws.yaml(sweep={"train.lrr": [1.0e-3]})],
        ("sweep['train.lrr']: unknown path 'train.lrr'.", "Did you mean 'train.lr'?")),
    Bad("sweep-empty-values", lambda ws: ["run", ws.yaml(sweep={"train.lr": []})],
        ("sweep['train.lr'] must be a non-empty list of values",)),
    Bad("sweep-invalid-value", lambda ws: ["run", ws.yaml(sweep={"train.optimizer": [
        "adam", "adma"]})],
        ("sweep['train.optimizer'][1] = 'adma': train.optimizer must be one of",
         "Did you mean 'adam'?")),
    # --- disk -------------------------------------------------------------------------------
    Bad("results-folder-unwritable", lambda ws: [
        "run", ws.yaml(results_dir=str(ws.root / "exp.yaml" / "results"))],
        ("is not writable (Not a directory)", "choose another `results_dir`",
         "Nothing was trained")),
    Bad("results-dir-empty", lambda ws: ["run", ws.yaml(results_dir="")],
        ("'results_dir' must be a folder path. Got '' instead.",)),
    # --- command line -----------------------------------------------------------------------
    Bad("missing-config-file", lambda ws: ["run", str(ws.root / "nope.yaml")],
        ("nope.yaml does not exist; check the path",)),
    Bad("unknown-subcommand", lambda ws: ["rn", "x.yaml"],
        ("invalid choice: 'rn'", "Did you mean 'run'?", "see `octbench --help`")),
    Bad("no-subcommand", lambda ws: [],
        ("the following arguments are required: COMMAND", "see `octbench --help`")),
    Bad("run-without-config", lambda ws: ["run"],
        ("the following arguments are required: config", "see `octbench run --help`")),
    Bad("bad-option-value", lambda ws: ["list", "modelz"],
        ("invalid choice: 'modelz'", "Did you mean 'models'?")),
    Bad("unknown-option", lambda ws: ["run", "--epochs", "3", ws.yaml()],
        ("unrecognized arguments: --epochs", "see `octbench --help`")),
    Bad("report-nothing-there", lambda ws: ["report", str(ws.root / "results" / "nothing")],
        ("is neither an experiment YAML nor a results folder",
         "pass e.g. experiments/quickstart.yaml")),
    Bad("missing-plugin", lambda ws: ["list", "models"],
        ("cannot import plugin module 'octbench_no_such_plugin'", "add its folder to PYTHONPATH"),
        env=(("OCTBENCH_PLUGINS", "octbench_no_such_plugin"),)),
    # --- scaling out (executors, shards) ----------------------------------------------------
    Bad("executor-unknown", lambda ws: ["run", ws.yaml(), "--executor", "slurm"],
        ("invalid choice: 'slurm'", "choose from 'local', 'ray'")),
    Bad("gpus-per-run-0", lambda ws: ["run", ws.yaml(), "--executor", "ray",
                                      "--gpus-per-run", "0"],
        ("--gpus-per-run must be a share of one GPU in (0, 1]", "got 0")),
    Bad("gpus-per-run-above-1", lambda ws: ["run", ws.yaml(), "--executor", "ray",
                                            "--gpus-per-run", "2"],
        ("--gpus-per-run must be a share of one GPU in (0, 1]", "got 2")),
    Bad("gpus-per-run-without-ray", lambda ws: ["run", ws.yaml(), "--gpus-per-run", "0.5"],
        ("--gpus-per-run needs --executor ray",)),
    Bad("cpus-per-run-0", lambda ws: ["run", ws.yaml(), "--cpus-per-run", "0"],
        ("--cpus-per-run must be an integer >= 1; got 0",)),
    Bad("shard-3-of-2", lambda ws: ["run", ws.yaml(), "--shard", "3/2"],
        ("--shard 3/2: K must be between 1 and N (2)", "#SBATCH --array=1-N")),
    Bad("shard-not-k-of-n", lambda ws: ["run", ws.yaml(), "--shard", "2"],
        ("--shard must look like K/N",)),
    Bad("ray-address-unreachable", lambda ws: ["run", ws.yaml(), "--executor", "ray",
                                               "--address", "127.0.0.1:1"],
        ("cannot reach a Ray cluster at --address 127.0.0.1:1", "ray start --head"),
        needs="ray"),
    # --- predict ----------------------------------------------------------------------------
    Bad("predict-not-an-image", lambda ws: ["predict", "--run", _checkpoint(ws),
                                            _not_an_image(ws)],
        ("cannot read OCT scan", "scan.png", "1 of 1 files could not be read")),
    Bad("predict-unknown-run", lambda ws: ["predict", "--run", "nope",
                                           "--results-dir", str(ws.results),
                                           "tests/data/NORMAL-12494-1.jpeg"],
        ("no trained run 'nope'", "pass a run id")),
]


@pytest.fixture
def ws(tmp_path, oct_npz, monkeypatch) -> Workspace:
    """A workspace whose results folder already holds a finished run (fake, but real files)."""
    monkeypatch.delenv("OCTBENCH_PLUGINS", raising=False)
    run = tmp_path / "results" / "tiny" / "reference_cnn__none__seed0__cpu__00000000"
    run.mkdir(parents=True)
    (run / "record.json").write_text('{"status": "complete"}\n')
    (run / "predictions.npz").write_bytes(hashlib.sha256(b"p").digest())
    (run / "best.pt").write_bytes(hashlib.sha256(b"b").digest())
    return Workspace(tmp_path, oct_npz)


def test_table_is_big_enough():
    assert len(TABLE) >= 25
    assert len({row.id for row in TABLE}) == len(TABLE)


@pytest.mark.parametrize("row", [
    pytest.param(row, id=row.id, marks=[pytest.mark.extras] if row.needs else [])
    for row in TABLE])
def test_bad_input(row: Bad, ws: Workspace, capsys, monkeypatch):
    if row.needs:  # without the module the message is "not installed" (test_executors.py)
        pytest.importorskip(row.needs, reason=f"the [{row.needs}] extra is not installed")
    for key, value in row.env:
        monkeypatch.setenv(key, value)
    argv = row.argv(ws)
    before = tree_digest(ws.results)
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse exits by itself
        code = exit.code
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in err
    for text in row.expect:
        assert text in err, f"{text!r} missing from:\n{err}"
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 + (row.id == "predict-not-an-image"), err  # + the per-file line
    assert tree_digest(ws.results) == before


SUBPROCESS_ROWS = ["unknown-subcommand", "data-truncated-npz"]


@pytest.mark.parametrize("row_id", SUBPROCESS_ROWS)
def test_bad_input_in_a_real_process(row_id: str, ws: Workspace, tmp_path):
    """The same contract seen from the shell: exit status 2, stderr only, no traceback."""
    (row,) = [r for r in TABLE if r.id == row_id]
    argv = row.argv(ws)
    before = tree_digest(ws.results)
    done = run_cli(argv, cli_env(tmp_path))
    assert_usage_error(done, *row.expect)
    assert done.stdout == ""
    assert tree_digest(ws.results) == before


def test_valid_workspace_config_runs_dry(ws: Workspace, capsys):
    """The base of every row is valid: each row breaks exactly one thing."""
    assert cli.main(["run", "--dry-run", ws.yaml()]) == 0
    assert "2 runs" in capsys.readouterr().out
    assert yaml.safe_load(Path(ws.yaml()).read_text())["name"] == "tiny"
