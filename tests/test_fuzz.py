"""Property-based fuzzing of configs and command lines (hypothesis).

Whatever the input, ``octbench`` ends with exit code 0 or 2 (no run trains here, so 1 never
fits), never a traceback, one ``error:`` line on stderr when it refuses, and nothing outside its
sandbox folder created, modified or deleted. The default budget is small for CI; the ``slow``
variant runs many more examples (``OCTBENCH_FUZZ_EXAMPLES`` per kind, default 2000, repeated for
``OCTBENCH_FUZZ_SECONDS`` if set), e.g.
``OCTBENCH_FUZZ_SECONDS=600 pytest -m slow -s tests/test_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import experiment, tree_digest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octbench import cli

SCAN = Path(__file__).parent / "data" / "NORMAL-12494-1.jpeg"
FAST = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=int(os.environ.get("OCTBENCH_FUZZ_EXAMPLES", 2000)), deadline=None,
                database=None, suppress_health_check=list(HealthCheck))
#: Examples tried in this process, by test (the slow run's figure comes from here).
EXAMPLES = {"configs": 0, "argv": 0}

# --- hostile values ---------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63, 10**21, 1e-300, 1e300, math.nan, math.inf,
                     -math.inf, 0.5, 1.0]),
)
NAMES = st.sampled_from([
    "none", "focal", "weighted_ce", "oversample", "reference_cnn", "timm:resnet18", "timm:",
    "cpu", "auto", "cuda", "cuda:0", "mps", "gpu", "synthetic", "npz", "octmnist", "..", ".",
    "../../outside", "a/b", "x" * 300, "", " ", "é", "\u202e", "null", "~", "-h", "--help",
    "1e-3", ".inf", "[1", "{a: 1}", "*x", "&x", "<<",
])
TEXT = st.one_of(NAMES, st.text(max_size=40))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=8,
)
TRAIN_KEYS = ["epochs", "batch_size", "eval_batch_size", "lr", "optimizer", "momentum",
              "weight_decay", "schedule", "step_every", "step_gamma", "patience", "select_on",
              "precision", "channels_last", "compile", "deterministic", "threads", "epoch"]


def _set(config: dict, path: tuple, value) -> None:
    *parents, last = path
    node = config
    for key in parents:
        if isinstance(node, list):
            node = node[key] if key < len(node) else {}
        else:
            node = node.setdefault(key, {})
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value


PATHS = st.one_of(
    st.sampled_from([("name",), ("data",), ("data", "name"), ("data", "synthetic"),
                     ("data", "path"), ("data", "scale"), ("models",), ("models", 0),
                     ("models", 0, "width"), ("models", 0, "dropout"), ("strategies",),
                     ("strategies", 1), ("strategies", 1, "gamma"), ("strategies", 1, "alpha"),
                     ("seeds",), ("seeds", 0), ("devices",), ("devices", 0), ("train",),
                     ("report",), ("report", "baseline"), ("extra",)]),
    st.sampled_from(TRAIN_KEYS).map(lambda key: ("train", key)),
)
#: Data choices kept cheap: the fixture file, or synthetic data that is invalid or tiny.
DATA = st.one_of(
    VALUES,
    st.fixed_dictionaries({"name": st.just("synthetic"),
                           "scale": st.sampled_from([0, -1, 1e-9, math.nan, math.inf, "x", 2,
                                                     "[1", None, 2**70])}),
)


@st.composite
def configs(draw, data_path: Path):
    config = experiment(Path("."), data_path, strategies=["none", {"name": "focal"}])
    config["results_dir"] = "results"  # relative: inside the sandbox the command runs in
    for _ in range(draw(st.integers(1, 4))):
        path = draw(PATHS)
        value = draw(DATA if path in (("data",),) else VALUES)
        _set(config, path, value)
    return config


# --- the contract -----------------------------------------------------------------------------


@contextlib.contextmanager
def sandbox(shared: Path):
    """A fresh folder to run in, next to a witness folder that must not change."""
    root = Path(tempfile.mkdtemp(dir=shared))
    inside = root / "inside"
    witness = root / "outside"
    inside.mkdir()
    witness.mkdir()
    (witness / "victim.txt").write_text("untouched")
    (witness / "figures").mkdir()
    (witness / "figures" / "mine.png").write_bytes(b"a user's figure")
    before = tree_digest(witness), sorted(p.name for p in shared.iterdir())
    cwd = os.getcwd()
    os.chdir(inside)
    try:
        yield inside
    finally:
        os.chdir(cwd)
        after = tree_digest(witness), sorted(p.name for p in shared.iterdir())
        shutil.rmtree(root, ignore_errors=True)
        assert after == before, "something outside the sandbox changed"


def assert_clean_exit(argv: list[str]) -> None:
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = cli.main(argv)
    except SystemExit as exit:  # argparse's own exits (usage errors, --help)
        code = exit.code
    text = err.getvalue()
    assert code in (0, 2), f"exit {code} for {argv!r}\n{text}"
    assert "Traceback" not in text, text
    if code == 2:
        assert len([line for line in text.splitlines() if "error:" in line]) == 1, text


@pytest.fixture(scope="module")
def shared(tmp_path_factory, oct_npz):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-cache")  # octbench's own cache: allowed to change


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, cache):
    monkeypatch.setenv("OCTBENCH_CACHE", str(cache))
    monkeypatch.delenv("OCTBENCH_PLUGINS", raising=False)


def check_config(config: dict, shared: Path) -> None:
    EXAMPLES["configs"] += 1
    with sandbox(shared) as inside:
        path = inside / "fuzz.yaml"
        try:
            text = yaml.safe_dump(config, allow_unicode=True)
        except yaml.YAMLError:
            return
        path.write_text(text, encoding="utf-8")
        assert_clean_exit(["-q", "run", "--dry-run", str(path)])


SNIPPETS = st.sampled_from([
    "x: !!python/object/apply:os.system ['touch pwned']\n", "x: !!binary aGk=\n",
    "train: {<<: {epochs: 1}, lr: 0.01}\n", "anchor: &a [*a]\n", "? [a, b]\n: 1\n",
    "? {a: 1}\n: 1\n", "seeds: [0, 0.0, '0']\n", "name: &n tiny\nname2: *n\n",
    "train: {epochs: 1e3}\n", "train: {lr: 1e-400}\n", "train: {lr: 0x10}\n",
    "devices: [cpu, AUTO]\n", "\t- tab\n", "name: x\nname: y\n", "---\n---\n", "%YAML 1.1\n",
    "strategies: [{name: focal, gamma: 2}, {name: focal, gamma: 2.0}]\n",
    "models: [{name: reference_cnn}, reference_cnn]\n", "x: *undefined\n", "[1, 2\n",
    "report: {baseline: {a: 1}}\n", "train: !!set {a, b}\n", "data: !!str 1\n",
])


def check_yaml_text(snippets: list[str], data_path: Path, shared: Path) -> None:
    EXAMPLES["configs"] += 1
    base = yaml.safe_dump(experiment(Path("."), data_path, results_dir="results"))
    with sandbox(shared) as inside:
        path = inside / "fuzz.yaml"
        path.write_text(base + "".join(snippets), encoding="utf-8")
        assert_clean_exit(["-q", "run", "--dry-run", str(path)])
        assert not (inside / "pwned").exists()


ARGV_TOKENS = st.one_of(NAMES, st.text(max_size=20), NUMBERS.map(str))


@st.composite
def command_lines(draw, data_path: Path):
    """Argument lists that reach every subcommand's parsing and checks."""
    fixture = str(data_path)
    command = draw(st.sampled_from(["run", "tune", "report", "predict", "info", "show", "synth",
                                    "list", "junk"]))
    extra = draw(st.lists(ARGV_TOKENS, max_size=3))
    small = st.sampled_from(["-1", "0", "1", "3", "99", "100", "65", "100000", "1e9", "x", ""])
    if command == "run":
        argv = ["run", "--dry-run", draw(st.sampled_from(["missing.yaml", fixture, ".", "x"]))]
    elif command == "tune":
        argv = ["tune", draw(st.sampled_from(["missing.yaml", fixture, "."])),
                "--workers", draw(small)]
    elif command == "report":
        argv = ["report", draw(st.sampled_from(["results", "results/..", "..", ".", "missing",
                                                fixture])),
                "--out", draw(st.sampled_from(["reports", "..", ".", "a/../..", "x" * 300])),
                "--resamples", draw(small),
                "--format", draw(st.sampled_from(["md", "csv", "all", "pdf"]))]
    elif command == "predict":
        argv = ["predict", "--run", draw(st.sampled_from([fixture, "..", "nope", str(SCAN)])),
                draw(st.sampled_from([str(SCAN), fixture, "missing.png", "."]))]
    elif command in ("info", "show"):
        argv = ["data", command, draw(st.sampled_from([fixture, "npz", "octmnist", "nope"])),
                "--set", draw(st.sampled_from(["scale=0", "scale=[1", "scale=.nan", "x=1",
                                               "noequals", "path=..", "size=1e9"]))]
        if command == "show":
            argv += ["--per-class", draw(small), "--out",
                     draw(st.sampled_from(["s.png", ".", "s.svg", "../s.png", "a/s.png"]))]
    elif command == "synth":
        argv = ["data", "synth", "--out", draw(st.sampled_from(["x.npz", "../x.npz", ".", "x"])),
                "--set", draw(st.sampled_from(["scale=0", "scale=-1", "scale=.inf",
                                               "seed=1e99", "size=7", "difficulty=[1"]))]
    elif command == "list":
        argv = ["list", draw(st.sampled_from(["models", "strategies", "datasets", "nope"]))]
    else:
        argv = []
    # ".." in an output option is the user's own choice of folder; the witness sits next to
    # the sandbox, one level up, so only a path that climbs two levels could reach it.
    return [*argv, *extra]


def check_argv(argv: list[str], shared: Path) -> None:
    EXAMPLES["argv"] += 1
    with sandbox(shared):
        assert_clean_exit(argv)


def _given_configs(budget):
    @budget
    @given(data=st.data())
    def run(shared, oct_npz, data):
        check_config(data.draw(configs(oct_npz)), shared)
    return run


def _given_yaml(budget):
    @budget
    @given(snippets=st.lists(SNIPPETS, min_size=1, max_size=3))
    def run(shared, oct_npz, snippets):
        check_yaml_text(snippets, oct_npz, shared)
    return run


def _given_argv(budget):
    @budget
    @given(data=st.data())
    def run(shared, oct_npz, data):
        check_argv(data.draw(command_lines(oct_npz)), shared)
    return run


def test_fuzz_configs(shared, oct_npz):
    _given_configs(FAST)(shared, oct_npz)


def test_fuzz_yaml_text(shared, oct_npz):
    _given_yaml(FAST)(shared, oct_npz)


def test_fuzz_command_lines(shared, oct_npz):
    _given_argv(FAST)(shared, oct_npz)


@pytest.mark.slow
def test_fuzz_configs_and_command_lines_long(shared, oct_npz):
    """One pass of ``OCTBENCH_FUZZ_EXAMPLES`` per kind, repeated (fresh random draws) until
    ``OCTBENCH_FUZZ_SECONDS`` have passed, if set."""
    end = time.monotonic() + float(os.environ.get("OCTBENCH_FUZZ_SECONDS", 0))
    while True:
        _given_configs(SLOW)(shared, oct_npz)
        _given_yaml(SLOW)(shared, oct_npz)
        _given_argv(SLOW)(shared, oct_npz)
        if time.monotonic() >= end:
            break
    print(f"fuzz examples: {EXAMPLES}")
