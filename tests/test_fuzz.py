"""Property-based fuzzing of configs and command lines (hypothesis).

Whatever the input, ``octbench`` ends with exit code 0 or 2 (no run trains here, so 1 never
fits), never a traceback, one ``error:`` line on stderr when it refuses, and nothing outside its
sandbox folder created, modified or deleted. Kinds of input: experiment configs, YAML text
(alias bombs included), command lines, sweeps, ``--set`` values, tuning ``search:`` spaces, and
results folders with crafted records and prediction files.

The default budget is small for CI; the ``slow`` variant runs many more examples
(``OCTBENCH_FUZZ_EXAMPLES`` per kind, default 2000, or ``OCTBENCH_FUZZ_EXAMPLES_<KIND>`` for one
kind, repeated for ``OCTBENCH_FUZZ_SECONDS`` if set), one test per kind so that the kinds can
run one after another, e.g. ``OCTBENCH_FUZZ_SECONDS=600 pytest -m slow -s tests/test_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_usage_error, experiment, tree_digest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octbench import cli

SCAN = Path(__file__).parent / "data" / "NORMAL-12494-1.jpeg"
FAST = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
#: Examples tried in this process, by kind (the slow run's figure comes from here).
EXAMPLES = {"configs": 0, "yaml": 0, "argv": 0, "sweeps": 0, "set_values": 0, "search": 0,
            "records": 0}


def slow_settings(kind: str) -> settings:
    examples = os.environ.get(f"OCTBENCH_FUZZ_EXAMPLES_{kind.upper()}",
                              os.environ.get("OCTBENCH_FUZZ_EXAMPLES", 2000))
    return settings(max_examples=int(examples), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

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
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        else:  # an earlier step put a scalar where this path goes on: nothing to set
            return
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
        assert_usage_error((code, text))


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
    # alias bombs: as a sweep list, as train.lr, nested in a mapping
    "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\nl1: &l1 [*l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0]\n"
    "l2: &l2 [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1]\nl3: &l3 [*l2, *l2, *l2, *l2, *l2, *l2]\n"
    "l4: &l4 [*l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3]\nl5: &l5 [*l4, *l4, *l4, *l4, *l4, *l4]\n",
    "sweep: {train.lr: *l5}\n", "train: {lr: *l5}\n", "sweep: {train.lr: [*l1]}\n",
    "sweep: {train.lr: [1, 1.0]}\n", "sweep: {strategy.gamma: [1, 2.0]}\n",
    "x: " + "[" * 200 + "]" * 200 + "\n",
])


def check_yaml_text(snippets: list[str], data_path: Path, shared: Path) -> None:
    EXAMPLES["yaml"] += 1
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


# --- sweeps, --set values, search spaces ----------------------------------------------------

SWEEP_PATHS = st.sampled_from([
    "train.lr", "train.epochs", "train.batch_size", "train.optimizer", "train.augment",
    "data.size", "data.path", "data.synthetic", "model.width", "model.dropout",
    "models.0.width", "strategy.gamma", "strategies.0.gamma", "strategy.alpha", "seeds", "name",
    "train", "model", "train.lr.x", "x.y", "", "report.baseline", "results_dir",
])
SWEEP_VALUES = st.one_of(
    st.lists(VALUES, max_size=5), VALUES,
    st.lists(NUMBERS, min_size=1, max_size=6),
    st.sampled_from([0, 1, 2, 3, 2_600, 20_000]).map(lambda n: [1e-4 * (i + 1) for i in range(n)]),
    st.sampled_from([[1, 1.0], [0.001, 1e-3], [2, 2.0, 3], [True, 1], [0, False], [28, 28.0]]),
)


@st.composite
def sweep_configs(draw, data_path: Path):
    config = experiment(Path("."), data_path,
                        strategies=draw(st.sampled_from([["none", "focal"], ["focal"],
                                                         [{"name": "focal", "gamma": 1.0}]])))
    config["results_dir"] = "results"
    if draw(st.booleans()):
        config["report"] = {"baseline": draw(st.sampled_from(["focal", "none", "x"]))}
    config["sweep"] = draw(st.dictionaries(SWEEP_PATHS, SWEEP_VALUES, max_size=3))
    return config


def check_sweep(config: dict, shared: Path) -> None:
    EXAMPLES["sweeps"] += 1
    with sandbox(shared) as inside:
        path = inside / "fuzz.yaml"
        try:
            text = yaml.safe_dump(config, allow_unicode=True)
        except yaml.YAMLError:
            return
        path.write_text(text, encoding="utf-8")
        assert_clean_exit(["-q", "run", "--dry-run", str(path),
                           *(["--max-runs", "12000"] if len(text) % 2 else [])])


SET_KEYS = st.sampled_from(["scale", "class_names", "path", "synthetic", "seed", "size",
                            "skip_bad", "x", "", "cache", "name", "val_fraction"])
SET_TEXT = st.one_of(
    TEXT, NUMBERS.map(str),
    VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True, width=10_000).strip()),
    st.sampled_from([
        "&a [*a]", "[" * 60 + "]" * 60, "-1", "2**32", "4294967296", "²", "١", "1_000", "0x10",
        ".nan", "-.inf", "[&a [1,2,3,4,5,6,7,8,9,0], [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]]",
        "&b [&a [x,x,x,x,x,x,x,x,x,x], " + ", ".join(["*a"] * 30) + "]",
        "{a: &a [1,1,1,1,1,1,1,1,1,1,1,1], b: [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]}",
        "[CNV\x1b[2J, DME, DRUSEN, NORMAL]", "\"NORMAL\\r\"", "!!python/name:os.system",
    ]),
)


@st.composite
def set_command_lines(draw, data_path: Path):
    command = draw(st.sampled_from(["info", "show", "evaluate"]))
    sets = []
    for _ in range(draw(st.integers(1, 3))):
        sets += ["--set", f"{draw(SET_KEYS)}={draw(SET_TEXT)}"]
    if command == "evaluate":  # no checkpoint: the --set values are read first or refused
        return ["evaluate", "--run", "nope", str(data_path), *sets]
    extra = ["--out", "s.png", "--per-class", "1"] if command == "show" else []
    return ["data", command, str(data_path), *sets, *extra]


def check_set_argv(argv: list[str], shared: Path) -> None:
    EXAMPLES["set_values"] += 1
    with sandbox(shared):
        assert_clean_exit(argv)


SEARCH_SPECS = st.one_of(
    VALUES, st.lists(VALUES, max_size=6),
    st.sampled_from([1, 5, 1_001, 20_000]).map(lambda n: list(range(n))),
    st.fixed_dictionaries({"type": st.sampled_from(["float", "int", "categorical", "x", None])},
                          optional={"low": NUMBERS, "high": NUMBERS, "log": VALUES,
                                    "step": NUMBERS, "choices": st.lists(VALUES, max_size=5)}),
)


@st.composite
def search_spaces(draw):
    keys = st.one_of(SWEEP_PATHS, st.sampled_from(["strategy", "model", "train.lr"]))
    raw = {"study": draw(st.sampled_from(["s", "../x", "ok-study"])), "base": "base.yaml",
           "search": draw(st.one_of(st.dictionaries(keys, SEARCH_SPECS, max_size=3), VALUES))}
    for key, values in (("n_trials", NUMBERS), ("seeds_per_trial", NUMBERS),
                        ("objective", VALUES), ("sampler", VALUES), ("pruner", VALUES)):
        if draw(st.booleans()):
            raw[key] = draw(values)
    return raw


def check_search(raw: dict, data_path: Path, shared: Path) -> None:
    """A tuning space is parsed (never tuned: a valid one would train) to a TuneConfig or one
    OctbenchError, within seconds, whatever its values."""
    from octbench.errors import OctbenchError
    from octbench.tuning import parse_tune_config

    EXAMPLES["search"] += 1
    with sandbox(shared) as inside:
        base = experiment(Path("."), data_path, results_dir="results")
        (inside / "base.yaml").write_text(yaml.safe_dump(base))
        start = time.monotonic()
        try:
            parse_tune_config(raw, source="fuzz.yaml", base_dir=inside)
        except OctbenchError as error:
            assert str(error)
        assert time.monotonic() - start < 30


# --- results folders with crafted records and predictions ------------------------------------

RECORD_PATHS = st.sampled_from([
    ("status",), ("seed",), ("run_id",), ("model",), ("strategy",), ("device",), ("kind",),
    ("metrics",), ("metrics", "test"), ("metrics", "test", "accuracy"),
    ("metrics", "test", "per_class"), ("metrics", "test", "confusion"), ("history",),
    ("history", 0), ("history", 0, "epoch"), ("timing",), ("timing", "seconds_per_epoch"),
    ("dataset",), ("dataset", "class_names"), ("dataset", "class_counts"),
    ("dataset", "class_counts", "test"), ("dataset", "fingerprint"), ("dataset", "size"),
    ("config",), ("sweep",), ("best_epoch",), ("schema_version",), ("created_utc",),
])
#: JSON text that json.dumps never writes, spliced into a record as it is.
RAW_JSON = [
    "Infinity", "-Infinity", "NaN", "1" + "0" * 400, "1e400", "[" * 5000 + "]" * 5000,
    '"\\u001b[2J"', "-1", "18446744073709551616", '{"a": {"b": {"c": [[[[[[[[[]]]]]]]]]}}}',
]
RAW_TEXT = st.sampled_from(RAW_JSON)
PREDICTIONS = st.sampled_from(["valid", "shape", "dtype", "labels", "huge", "missing", "text",
                               "object", "uint64", "nan"])


def write_predictions(path: Path, kind: str, rng: np.random.Generator) -> None:
    from report_helpers import N_TEST

    scores = rng.random((N_TEST, 4)).astype(np.float32)
    labels = np.repeat(np.arange(4), N_TEST // 4).astype(np.uint8)
    if kind == "shape":
        scores = scores[:, :3]
    elif kind == "dtype":
        scores = (scores * 100).astype(np.int64)
    elif kind == "labels":
        labels = labels + 4
    elif kind == "uint64":
        labels = np.full(N_TEST, 2**63 + 1, np.uint64)
    elif kind == "nan":
        scores[0, 0] = np.nan
    elif kind == "text":
        path.write_text("not an npz")
        return
    elif kind == "object":
        np.savez(path, test_scores=np.array([{"a": 1}] * N_TEST, dtype=object),
                 test_labels=labels)
        return
    arrays = {"test_scores": scores, "test_labels": labels}
    if kind == "missing":
        arrays.pop("test_scores")
    np.savez(path, **arrays)
    if kind == "huge":
        with zipfile.ZipFile(path, "a") as archive:
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                buffer, {"descr": "<f4", "fortran_order": False, "shape": (2**31, 4)})
            archive.writestr("val_scores.npy", buffer.getvalue())
            archive.writestr("test_extra.npy", buffer.getvalue())


@st.composite
def crafted_results(draw):
    changes = draw(st.lists(st.tuples(RECORD_PATHS, st.one_of(VALUES, RAW_TEXT)), max_size=3))
    return changes, draw(PREDICTIONS), draw(st.integers(0, 2**32 - 1))


def check_results(crafted, shared: Path) -> None:
    from report_helpers import write_run

    from octbench.results import ResultsStore

    EXAMPLES["records"] += 1
    changes, predictions, seed = crafted
    with sandbox(shared) as inside:
        store = ResultsStore(inside / "results" / "demo")
        for run in range(2):
            record = write_run(store, seed=run)
        folder = store.root / record.run_id
        data = json.loads((folder / "record.json").read_text())
        raw = {}
        for path, value in changes:
            if isinstance(value, str) and value in RAW_JSON:
                marker = f"@@raw{len(raw)}@@"
                raw[f'"{marker}"'] = value
                value = marker
            try:
                _set(data, path, value)
            except (AttributeError, TypeError, IndexError):
                pass  # an earlier change made a parent a scalar: nothing to set below it
        text = json.dumps(data, default=str)
        for marker, value in raw.items():
            text = text.replace(marker, value)
        (folder / "record.json").write_text(text)
        write_predictions(folder / "predictions.npz", predictions, np.random.default_rng(seed))
        assert_clean_exit(["-q", "report", str(store.root), "--format", "csv", "--out",
                           "reports", "--resamples", "100"])


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


def _given_sweeps(budget):
    @budget
    @given(data=st.data())
    def run(shared, oct_npz, data):
        check_sweep(data.draw(sweep_configs(oct_npz)), shared)
    return run


def _given_set_values(budget):
    @budget
    @given(data=st.data())
    def run(shared, oct_npz, data):
        check_set_argv(data.draw(set_command_lines(oct_npz)), shared)
    return run


def _given_search(budget):
    @budget
    @given(raw=search_spaces())
    def run(shared, oct_npz, raw):
        check_search(raw, oct_npz, shared)
    return run


def _given_records(budget):
    @budget
    @given(crafted=crafted_results())
    def run(shared, oct_npz, crafted):
        check_results(crafted, shared)
    return run


KINDS = {"configs": _given_configs, "yaml": _given_yaml, "argv": _given_argv,
         "sweeps": _given_sweeps, "set_values": _given_set_values, "search": _given_search,
         "records": _given_records}


def test_fuzz_configs(shared, oct_npz):
    _given_configs(FAST)(shared, oct_npz)


def test_fuzz_sweeps(shared, oct_npz):
    _given_sweeps(FAST)(shared, oct_npz)


def test_fuzz_set_values(shared, oct_npz):
    _given_set_values(FAST)(shared, oct_npz)


def test_fuzz_search_spaces(shared, oct_npz):
    _given_search(FAST)(shared, oct_npz)


def test_fuzz_crafted_results(shared, oct_npz):
    _given_records(FAST)(shared, oct_npz)


def test_fuzz_yaml_text(shared, oct_npz):
    _given_yaml(FAST)(shared, oct_npz)


def test_fuzz_command_lines(shared, oct_npz):
    _given_argv(FAST)(shared, oct_npz)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_fuzz_long(shared, oct_npz, kind):
    """One pass of the kind's example budget, repeated (fresh random draws) until
    ``OCTBENCH_FUZZ_SECONDS`` have passed, if set."""
    end = time.monotonic() + float(os.environ.get("OCTBENCH_FUZZ_SECONDS", 0))
    while True:
        KINDS[kind](slow_settings(kind))(shared, oct_npz)
        if time.monotonic() >= end:
            break
    print(f"fuzz examples: {EXAMPLES}")
