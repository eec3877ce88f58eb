"""Reports: numbers recomputed independently (scikit-learn / scipy), figures, exports, edge cases.

Results are fabricated (records + predictions written through ResultsStore), so no test trains.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from octbench import report
from octbench.cli import main
from octbench.errors import OctbenchError
from octbench.metrics import compute_metrics
from octbench.results import COMPLETE, FAILED, SKIPPED, ResultsStore, RunRecord

CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]
N_TEST = 120
RESAMPLES = 100  # the least build_report takes: tests stay fast
#: Strength of the true class's logit per strategy: "oversample" is clearly better than "none".
QUALITY = {"none": 1.0, "weighted_ce": 1.2, "oversample": 2.5}


def dataset(name: str = "synthetic", size: int = 28, synthetic: bool = True,
            test: int = N_TEST // 4) -> dict:
    return {"name": name, "synthetic": synthetic, "size": size, "class_names": CLASSES,
            "class_counts": {"train": [1000, 300, 230, 1380], "val": [110, 34, 26, 153],
                             "test": [test] * 4},
            "source": {"scale": 0.03}}


def write_run(store: ResultsStore, *, model="cnn", strategy="none", seed=0, device="cpu",
              precision="fp32", status=COMPLETE, data=None, quality=None, hardware=None,
              run_id=None, predictions=True, speed=1500.0, error=None, sweep=None,
              config=None) -> RunRecord:
    """Write one fabricated run: scores whose true-class logit is raised by ``quality``."""
    data = data or dataset()
    run_id = run_id or f"{model}__{strategy}__seed{seed}__{device}-{precision}"
    labels = np.repeat(np.arange(4), N_TEST // 4)
    rng = np.random.default_rng([seed, sum(map(ord, strategy)), len(device)])
    logits = rng.normal(size=(N_TEST, 4))
    logits[np.arange(N_TEST), labels] += QUALITY.get(strategy, 1.0) if quality is None else quality
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    fields = {}
    if status == COMPLETE:
        test = compute_metrics(labels, scores, CLASSES)
        fields = dict(
            metrics={"test": test, "val": {"macro_f1": 0.5 + 0.01 * seed}},
            best_epoch=2, epochs_trained=3,
            history=[{"epoch": e, "train_loss": 1.4 / e + 0.01 * seed,
                      "val_macro_f1": 0.3 + 0.1 * e + 0.01 * seed} for e in (1, 2, 3)],
            timing={"train_seconds": 30.0, "seconds_per_epoch": 10.0,
                    "train_images_per_s": speed, "eval_images_per_s": 4 * speed},
        )
        if predictions:
            store.save_predictions(run_id, test_scores=scores.astype(np.float32),
                                   test_labels=labels.astype(np.uint8)[:, None],
                                   val_scores=scores.astype(np.float32), val_labels=labels)
    record = RunRecord(
        run_id=run_id, experiment="demo", status=status, model=model, strategy=strategy,
        seed=seed, device=device, precision=precision, dataset=data, git_commit="abc1234",
        hardware=hardware if hardware is not None else {
            "type": "cpu", "name": "Test CPU", "threads": 2, "torch": "2.5.0"},
        versions={"octbench": "0.1.0"}, created_utc=f"2025-01-0{seed + 1}T10:00:00+00:00",
        error=error, sweep=sweep or {}, config=config or {}, **fields)
    store.write(record)
    return record


def make_grid(folder: Path, strategies=tuple(QUALITY), seeds=range(3)) -> Path:
    store = ResultsStore(folder)
    for strategy in strategies:
        for seed in seeds:
            write_run(store, strategy=strategy, seed=seed)
    return folder


@dataclass(frozen=True)
class Built:
    """One report of 3 strategies x 3 seeds (+ a failed and a skipped run), built once."""

    folder: Path
    out: Path
    text: str
    data: report.ReportData
    table: pd.DataFrame
    comparisons: pd.DataFrame


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("grid")
    folder = make_grid(root / "results" / "demo")
    write_run(ResultsStore(folder), strategy="focal", seed=0, status=FAILED,
              error="RuntimeError: out of memory")
    write_run(ResultsStore(folder), strategy="focal", seed=1, status=SKIPPED, hardware={},
              error="device 'cuda' is not available: no CUDA GPU is visible")
    paths = report.build_report(folder, root / "reports", formats=("md", "csv"),
                                n_resamples=RESAMPLES)
    data = report.collect(folder)
    comparisons = report.compare_to_baseline(data, n_resamples=RESAMPLES)
    table = report.main_table(data, n_resamples=RESAMPLES, comparisons=comparisons)
    return Built(folder, root / "reports" / "demo", well_formed(paths[0].read_text()), data,
                 table, comparisons)


@pytest.fixture
def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip drawing (about a second per report) where a test reads only the text."""
    monkeypatch.setattr("octbench.report.build._make_figures", lambda *args, **kwargs: [])


def build(folder: Path, tmp_path: Path, **kwargs) -> str:
    paths = report.build_report(folder, tmp_path / "reports", n_resamples=RESAMPLES, **kwargs)
    return well_formed(paths[0].read_text())


def well_formed(text: str) -> str:
    """Check that every markdown table keeps one column count (a stray | would shift cells)."""
    table: list[int] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append(len(re.findall(r"(?<!\\)\|", line)))
        elif table:
            assert len(set(table)) == 1, f"ragged table near: {line!r}"
            table = []
    return text


def stored(folder: Path, strategy: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, scores) of each seed of a strategy, read straight from predictions.npz."""
    out = []
    for seed in range(3):
        with np.load(folder / f"cnn__{strategy}__seed{seed}__cpu-fp32" / "predictions.npz") as f:
            out.append((f["test_labels"].ravel().astype(int), f["test_scores"].astype(float)))
    return out


def ece_reference(labels: np.ndarray, scores: np.ndarray, bins: int = 15) -> float:
    """Guo et al. (2017) ECE, written with a plain loop over bins."""
    confidence, correct = scores.max(axis=1), scores.argmax(axis=1) == labels
    total = 0.0
    for m in range(bins):
        inside = (confidence > m / bins) & (confidence <= (m + 1) / bins)
        if m == 0:
            inside |= confidence == 0
        if inside.any():
            total += inside.sum() / len(labels) * abs(correct[inside].mean()
                                                      - confidence[inside].mean())
    return total


SKLEARN = {
    "accuracy": lambda y, s: accuracy_score(y, s.argmax(1)),
    "balanced_accuracy": lambda y, s: balanced_accuracy_score(y, s.argmax(1)),
    "macro_f1": lambda y, s: f1_score(y, s.argmax(1), average="macro", zero_division=0),
    "macro_auc": lambda y, s: roc_auc_score(y, s, multi_class="ovr", average="macro"),
    "ece": ece_reference,
}


# ---------------------------------------------------------------------------------------------
# Numbers


def test_main_table_recomputed_with_sklearn(built: Built) -> None:
    table = built.table.set_index("strategy")
    for strategy in QUALITY:
        runs = stored(built.folder, strategy)
        row = table.loc[strategy]
        assert row.seeds == 3
        for metric, fn in SKLEARN.items():
            values = [fn(y, s) for y, s in runs]
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
            cell = f"{np.mean(values):.3f}".replace("-", "−")
            assert re.search(rf"\*?\*?{cell}\*?\*? ± {np.std(values, ddof=1):.3f}", built.text)
            if metric in report.CI_METRICS:
                assert row[f"{metric}_low"] <= row[f"{metric}_mean"] <= row[f"{metric}_high"]
                assert f"[{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]" in built.text
            else:
                assert math.isnan(row[f"{metric}_low"])


@pytest.mark.parametrize("metric", ["macro_f1", "macro_auc"])
def test_confidence_interval_recomputed_with_scipy(built: Built, metric: str) -> None:
    row = built.table.set_index("strategy").loc["weighted_ce"]
    runs = stored(built.folder, "weighted_ce")
    labels = runs[0][0]

    def pooled(items):  # the metric of every seed on the same resampled items, averaged
        return np.mean([SKLEARN[metric](labels[items], s[items]) for _, s in runs])

    values = [pooled(items) for items in class_stratified_draws(labels)]
    low, high = np.percentile(values, [2.5, 97.5])
    assert row[f"{metric}_low"] == pytest.approx(low, abs=1e-9)
    assert row[f"{metric}_high"] == pytest.approx(high, abs=1e-9)


def class_stratified_draws(labels: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """The report's default resamples, drawn here independently: per class (in label order),
    as many items with replacement as that class has, each item keeping its class's place."""
    rng = np.random.default_rng(seed)
    rows = np.empty((RESAMPLES, len(labels)), dtype=int)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rows[:, members] = members[rng.integers(0, len(members), (RESAMPLES, len(members)))]
    assert all((np.bincount(labels[r]) == np.bincount(labels)).all() for r in rows)
    return list(rows)


def test_unstratified_interval_recomputed_with_scipy(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "demo"
    store = ResultsStore(folder)
    for seed in range(3):
        write_run(store, strategy="weighted_ce", seed=seed)
    built = report.build_report(folder, tmp_path / "reports", n_resamples=RESAMPLES,
                                stratify="none")
    assert "items resampled freely" in built[0].read_text()
    table = report.main_table(report.collect(folder, stratify="none"), n_resamples=RESAMPLES)
    runs = stored(folder, "weighted_ce")
    labels = runs[0][0]

    def pooled(items):
        return np.mean([SKLEARN["macro_f1"](labels[items], s[items]) for _, s in runs])

    expected = scipy.stats.bootstrap(
        (np.arange(N_TEST),), pooled, n_resamples=RESAMPLES, method="percentile", paired=True,
        vectorized=False, batch=500, rng=np.random.default_rng(0)).confidence_interval
    assert table.macro_f1_low[0] == pytest.approx(expected.low, abs=1e-9)
    assert table.macro_f1_high[0] == pytest.approx(expected.high, abs=1e-9)


def test_paired_test_and_holm_recomputed(built: Built) -> None:
    comparisons = built.comparisons.set_index("strategy")
    assert set(comparisons.index) == {"weighted_ce", "oversample"}
    base, runs = stored(built.folder, "none"), stored(built.folder, "oversample")
    labels = runs[0][0]
    f1 = SKLEARN["macro_f1"]
    delta = np.mean([f1(y, s) - f1(y, b) for (y, s), (_, b) in zip(runs, base, strict=True)])
    assert comparisons.loc["oversample", "macro_f1_delta"] == pytest.approx(delta, abs=1e-12)

    def diff(items):  # the same resampled items for all seeds of both strategies
        return (np.mean([f1(labels[items], s[items]) for _, s in runs])
                - np.mean([f1(labels[items], b[items]) for _, b in base]))

    deltas = np.array([diff(items) for items in class_stratified_draws(labels)])
    tail = min(np.sum(deltas <= 0), np.sum(deltas >= 0))
    p = min(1.0, 2 * (tail + 1) / (RESAMPLES + 1))
    assert comparisons.loc["oversample", "macro_f1_p"] == pytest.approx(p)
    seeds_t = scipy.stats.ttest_rel([f1(y, s) for y, s in runs], [f1(y, b) for y, b in base])
    assert comparisons.loc["oversample", "seed_t_p"] == pytest.approx(seeds_t.pvalue)
    # Holm for two tests: the smaller p times 2, the larger times 1, kept monotone.
    raw = comparisons["macro_f1_p"]
    small, large = raw.idxmin(), raw.idxmax()
    assert comparisons.loc[small, "macro_f1_p_holm"] == pytest.approx(min(1, 2 * raw[small]))
    assert comparisons.loc[large, "macro_f1_p_holm"] == pytest.approx(
        min(1, max(2 * raw[small], raw[large])))
    assert comparisons.loc["oversample", "macro_f1_p_holm"] < 0.05  # a real, large gain


def test_report_names_test_correction_and_verdicts(built: Built) -> None:
    assert "**Test used:** a paired bootstrap over the test items" in built.text
    assert "Holm–Bonferroni over all comparisons of each metric" in built.text
    comparisons = built.comparisons.set_index("strategy")
    for strategy in ("weighted_ce", "oversample"):
        section = built.text.split("## Differences to the baseline")[1].split("\n## ")[0]
        row = next(line for line in section.splitlines() if line.startswith(f"| {strategy} "))
        verdict = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        p = comparisons.loc[strategy, "macro_f1_p_holm"]
        delta = comparisons.loc[strategy, "macro_f1_delta"]
        seed_p = comparisons.loc[strategy, "seed_t_p_holm"]
        expected = "not significant" if p >= 0.05 else "better" if delta > 0 else "worse"
        if p < 0.05 and not seed_p < 0.05:
            expected += " on the test items, not confirmed across seeds"
        assert verdict == expected


def test_best_value_bold_by_direction(built: Built) -> None:
    for metric in ("macro_f1", "ece"):
        means = built.table[f"{metric}_mean"]
        best = means.max() if metric == "macro_f1" else means.min()
        worst = means.min() if metric == "macro_f1" else means.max()
        assert f"**{best:.3f}**" in built.text
        assert f"**{worst:.3f}**" not in built.text


def test_per_class_recall_and_f1_match_sklearn(built: Built) -> None:
    table = report.per_class_table(built.data).set_index("strategy")
    for strategy in QUALITY:
        per_seed = [precision_recall_fscore_support(y, s.argmax(1), labels=range(4),
                                                    zero_division=0)
                    for y, s in stored(built.folder, strategy)]
        for i, name in enumerate(CLASSES):
            recall = [p[1][i] for p in per_seed]
            f1 = [p[2][i] for p in per_seed]
            assert table.loc[strategy, f"recall_{name}_mean"] == pytest.approx(np.mean(recall))
            assert table.loc[strategy, f"f1_{name}_mean"] == pytest.approx(np.mean(f1))
    assert "DRUSEN (train 230)" in built.text and "the rarest training class" in built.text


# ---------------------------------------------------------------------------------------------
# Header, labelling, references


def test_header_and_synthetic_labelling(built: Built) -> None:
    text = built.text
    assert "SYNTHETIC DATA" in text.split("\n## ")[0]  # in the header, before any section
    assert "9 complete, 1 failed, 1 skipped" in text
    assert "abc1234" in text and "Test CPU, 2 threads" in text
    assert "out of memory" in text and "no CUDA GPU is visible" in text
    assert "test split is balanced (30 per class)" in text
    for section in text.split("\n## ")[1:]:
        title = section.splitlines()[0]
        if title.startswith(("Results", "Differences", "Per-class", "Figures")):
            assert "SYNTHETIC DATA" in title
        if title.startswith(("Results", "Differences", "Per-class")):
            assert "*Test split of **synthetic data** (28 px, generated by octbench — not " \
                "OCTMNIST).*" in section
    assert "MedMNIST v2" not in text  # never published rows beside synthetic numbers


@pytest.mark.parametrize(("size", "test", "shown"), [(28, 250, True), (64, 250, True),
                                                     (28, 100, False)])
def test_published_rows_only_for_real_octmnist_and_apart_unless_same_protocol(
        tmp_path: Path, size: int, test: int, shown: bool, no_figures: None) -> None:
    # (the class counts are the records' metadata; the predictions stay small)
    store = ResultsStore(tmp_path / "results" / "real")
    for seed in range(3):
        write_run(store, seed=seed, data=dataset("octmnist", size, synthetic=False, test=test))
    text = build(store.root, tmp_path)
    assert ("ResNet-18 (28)" in text and "medmnist v2 [1]" in text) is shown
    if shown:  # written without the MedMNIST v2 recipe (100 epochs), so apart from ours
        apart = text[text.index("**Different protocol**"):]
        assert "| ResNet-18 (28) | 28 | 0.743 | 0.943 | medmnist v2 [1] |" in apart
        assert f"size 28 vs {size}" in apart if size != 28 else "size 28 vs" not in apart
    assert "SYNTHETIC" not in text


def test_a_sweep_over_sizes_compares_within_each_size_beside_its_published_results(
        tmp_path: Path, no_figures: None) -> None:
    store = ResultsStore(tmp_path / "results" / "sizes")
    for size in (28, 64, 128):
        for strategy in ("none", "weighted_ce"):
            for seed in range(3):
                write_run(store, strategy=strategy, seed=seed, sweep={"data.size": size},
                          data=dataset("octmnist", size, synthetic=False, test=250),
                          run_id=f"cnn__{strategy}__seed{seed}__size={size}")
    data = report.collect(store.root)
    comparisons = report.compare_to_baseline(data, n_resamples=RESAMPLES)
    assert sorted(comparisons.setup) == [f"cpu fp32 · data.size={s}" for s in (128, 28, 64)]
    assert (comparisons.seeds == 3).all()  # each pairs the 3 seeds of its own size
    text = build(store.root, tmp_path)
    published = text[text.index("**Published results on OCTMNIST"):]
    beside, apart = published.split("**Different protocol**")
    assert "| ours: cnn / none (cpu fp32 · data.size=64) | 64 |" in beside
    assert "ResNet-18 (28)" not in beside  # no run here was trained as MedMNIST v2 did
    assert "| VGG16, ImageNet-pretrained (128, padded to 224) | 128 | 0.905 | n/a |" in apart


# ---------------------------------------------------------------------------------------------
# Devices


def test_device_table_merges_machines_and_checks_parity(tmp_path: Path, no_figures: None
                                                        ) -> None:
    folder = make_grid(tmp_path / "results" / "demo", strategies=("none", "oversample"))
    # Runs copied in from a GPU machine: same seeds, fp16, ten times faster.
    gpu = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1, "cuda": "12.4"}
    for strategy in ("none", "oversample"):
        for seed in range(3):
            write_run(ResultsStore(folder), strategy=strategy, seed=seed, device="cuda",
                      precision="fp16", hardware=gpu, speed=15000.0)
    data = report.collect(folder)
    devices = report.device_table(data).set_index("device")
    assert devices.loc["cuda", "speedup"] == pytest.approx(10.0)
    assert devices.loc["cuda", "paired"] == 6
    cpu, cuda = ({(r.record.strategy, r.record.seed): r for r in data.runs
                  if r.record.device == d} for d in ("cpu", "cuda"))
    diffs = [cuda[k].test["macro_f1"] - cpu[k].test["macro_f1"] for k in cpu]
    agree = [np.mean(cuda[k].scores.argmax(1) == cpu[k].scores.argmax(1)) for k in cpu]
    assert devices.loc["cuda", "delta_macro_f1"] == pytest.approx(np.mean(diffs))
    assert devices.loc["cuda", "agreement"] == pytest.approx(np.mean(agree))
    assert bool(devices.loc["cpu", "is_reference"])
    text = build(folder, tmp_path)
    assert "NVIDIA H100 80GB HBM3" in text and "Test CPU" in text
    assert "10.0×" in text
    assert "| cpu fp32 |" in text and "| cuda fp16 |" in text  # one row per setup, never pooled


# ---------------------------------------------------------------------------------------------
# Figures and exports


def test_figures_are_valid_pngs(built: Built) -> None:
    figures = sorted((built.out / "figures").glob("*.png"))
    assert {p.name for p in figures} == {"confusion.png", "training_curves.png",
                                         "macro_f1_ci.png", "throughput.png", "ranking_cd.png"}
    for path in figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert min(image.size) > 200
        assert f"](figures/{path.name})" in built.text


def test_tuning_figures_come_from_the_function_the_caller_hands_in(
        tmp_path: Path, no_figures: None) -> None:
    # `octbench tune` names the best experiment <study>-best; its study lives in <study>.
    folder = make_grid(tmp_path / "results" / "quick-best", strategies=("none",), seeds=(0,))
    study = tmp_path / "results" / "quick"
    study.mkdir()
    (study / "study.json").write_text("{}")
    seen = []

    def study_figures(study_dir, out_dir):
        seen.append(Path(study_dir))
        path = Path(out_dir) / "quick-history.png"
        Image.new("RGB", (300, 200), "white").save(path)
        return [path]

    text = build(folder, tmp_path, draw_study=study_figures)
    assert seen == [study]
    assert "Hyper-parameter tuning" in text and "](figures/quick-history.png)" in text
    assert "Hyper-parameter tuning" not in build(folder, tmp_path)  # no hard dependency


def test_csv_export_is_one_tidy_row_per_run(built: Built) -> None:
    frame = pd.read_csv(built.out / "runs.csv")
    assert len(frame) == 11 and frame.run_id.is_unique
    assert frame.synthetic.all()
    assert set(frame.status) == {"complete", "failed", "skipped"}
    row = frame[(frame.strategy == "none") & (frame.seed == 1)].iloc[0]
    y, s = stored(built.folder, "none")[1]
    assert row.test_macro_f1 == pytest.approx(SKLEARN["macro_f1"](y, s))
    assert row.test_recall_DRUSEN == pytest.approx(np.mean(s.argmax(1)[y == 2] == 2))
    assert math.isnan(frame[frame.status == "skipped"].iloc[0].test_accuracy)


def test_medmnist_evaluator_rescores_export(built: Built) -> None:
    folder = built.out / "medmnist"
    files = sorted(folder.glob("octmnist_test_*.csv"))
    assert len(files) == 9
    table = built.table.set_index("strategy")
    target = next(f for f in files if "@synthetic-cnn-oversample-seed1-cpu-fp32" in f.name)
    # The real entry point, pointed at the exported labels: medmnist reads ~/.medmnist.
    env = {**os.environ, "HOME": str(folder)}
    done = subprocess.run([sys.executable, "-m", "medmnist", "evaluate", str(target)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    auc, acc = map(float, re.search(r"AUC=([\d.]+), ACC=([\d.]+)", done.stdout).groups())
    assert acc == pytest.approx(table.loc["oversample", "accuracy_values"][1], abs=1e-12)
    assert auc == pytest.approx(table.loc["oversample", "macro_auc_values"][1], abs=1e-9)
    # Every file, in process, read the way Evaluator.parse_and_evaluate reads it.
    from medmnist import Evaluator

    evaluator = Evaluator("octmnist", "test", root=str(folder / ".medmnist"))
    for path in files:
        scores = pd.read_csv(path, index_col=0, header=None).sort_index().values
        metrics = evaluator.evaluate(scores)
        name_auc, name_acc = map(float, re.search(r"\[AUC\]([\d.]+)_\[ACC\]([\d.]+)@",
                                                  path.name).groups())
        assert f"{metrics.AUC:.3f}" == f"{name_auc:.3f}"
        assert f"{metrics.ACC:.3f}" == f"{name_acc:.3f}"
    assert "not OCTMNIST" in (folder / "README.md").read_text()


# ---------------------------------------------------------------------------------------------
# Edge cases: the report renders, says n/a and warns, never raises


def _no_results(store: ResultsStore) -> None:
    store.root.mkdir(parents=True)


def _only_failed(store: ResultsStore) -> None:
    for seed in range(2):
        write_run(store, seed=seed, status=FAILED, error="ValueError: loss is NaN")
    write_run(store, seed=2, status=SKIPPED, hardware={}, error="no CUDA GPU is visible")


def _one_seed(store: ResultsStore) -> None:
    write_run(store, strategy="none", seed=0)
    write_run(store, strategy="oversample", seed=0)


def _nan_metrics(store: ResultsStore) -> None:
    # A run whose predictions are gone and whose AUC was undefined (stored as JSON null).
    record = write_run(store, strategy="none", seed=0, predictions=False)
    raw = json.loads(record.to_json())
    raw["metrics"]["test"]["macro_auc"] = None
    (store.run_dir(record.run_id) / "record.json").write_text(json.dumps(raw))
    write_run(store, strategy="oversample", seed=0)
    bad = write_run(store, strategy="weighted_ce", seed=0)
    store.save_predictions(bad.run_id, test_scores=np.full((N_TEST, 4), np.nan),
                           test_labels=np.zeros(N_TEST, dtype=np.uint8))


def _odd_names(store: ResultsStore) -> None:
    for seed in range(3):
        write_run(store, model="cnn|v2*", strategy="none", seed=seed, run_id=f"a{seed}")
        write_run(store, model="cnn|v2*", strategy="focal|*x*_", seed=seed, run_id=f"b{seed}")


def _different_items(store: ResultsStore) -> None:
    # Seed 1 was tested on another ordering of the items: its seeds cannot be pooled.
    for seed in range(2):
        record = write_run(store, seed=seed)
    arrays = store.predictions(record.run_id)
    order = np.random.default_rng(0).permutation(N_TEST)
    store.save_predictions(record.run_id, test_scores=arrays["test_scores"][order],
                           test_labels=arrays["test_labels"][order])


@pytest.mark.parametrize("make", [_no_results, _only_failed, _one_seed, _nan_metrics,
                                  _odd_names, _different_items],
                         ids=lambda f: f.__name__.strip("_"))
def test_edge_cases_render(tmp_path: Path, make) -> None:
    folder = tmp_path / "results" / "demo"
    make(ResultsStore(folder))
    paths = report.build_report(folder, tmp_path / "reports", formats=("md", "csv"),
                                n_resamples=RESAMPLES)
    text = well_formed(paths[0].read_text())
    assert text.startswith("# octbench report: demo")
    assert "## How to read this report" in text
    if make is not _odd_names:
        assert "⚠" in text
    if make in (_no_results, _only_failed):
        assert "no run record" in text or "no run is complete" in text
    if make is _nan_metrics:
        assert "n/a" in text
    if make is _one_seed:
        assert "only 1 seed(s)" in text
        assert "| untestable with one seed | better on the test items; across seeds untestable " \
            "with one seed |" in text
    if make is _nan_metrics:
        assert "no readable test predictions" in text and "cannot be scored" in text
    if make is _different_items:
        assert "cannot be pooled" in text
    if make is _odd_names:
        assert r"cnn\|v2\*" in text and r"focal\|\*x\*\_" in text  # and tables stay whole


def test_cli_prints_summary_and_writes_report(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    folder = make_grid(tmp_path / "results" / "demo", strategies=("none", "weighted_ce"),
                       seeds=(0, 1))
    out = tmp_path / "out"
    code = main(["report", str(folder), "--out", str(out), "--resamples", "100", "--format",
                 "all", "--baseline", "weighted_ce"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC DATA" in printed and "macro_f1" in printed
    assert f"wrote {out / 'demo' / 'report.md'}" in printed
    evaluator_files = [line for line in printed.splitlines()
                       if line.startswith(f"wrote {out / 'demo' / 'medmnist' / 'octmnist_test_'}")]
    assert len(evaluator_files) == 4  # one medmnist Evaluator file per run
    files = sorted(p for p in (out / "demo").rglob("*") if p.is_file())
    assert any(p.suffix == ".svg" for p in files)
    assert [f"wrote {p}" for p in files] == sorted(
        line for line in printed.splitlines() if line.startswith("wrote "))  # every file
    assert "Differences to the baseline `weighted_ce`" in (out / "demo" / "report.md").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit) as refused:  # argparse refuses the range itself
        main(["report", str(folder), "--resamples", "5", "--out", str(out)])
    assert refused.value.code == 2


def test_yaml_source_reports_its_grid_and_baseline(tmp_path: Path, no_figures: None) -> None:
    from octbench.config import load_config
    from octbench.grid import expand_grid

    yaml = tmp_path / "demo.yaml"
    yaml.write_text(f"name: demo\ndata: {{name: synthetic, scale: 0.01}}\n"
                    f"models: [reference_cnn]\nstrategies: [none, weighted_ce, oversample]\n"
                    f"seeds: [0, 1, 2]\nreport: {{baseline: weighted_ce}}\n"
                    f"results_dir: {tmp_path / 'results'}\n")
    specs = expand_grid(load_config(yaml))
    store = ResultsStore(tmp_path / "results" / "demo")
    for spec in specs[:-1]:  # the last run has not been trained yet
        write_run(store, model=spec.model.label, strategy=spec.strategy.label, seed=spec.seed,
                  run_id=spec.run_id)
    write_run(store, strategy="stale", run_id="from-an-older-config")
    text = build(yaml, tmp_path)
    assert "Differences to the baseline `weighted_ce`" in text
    assert "8 complete, 0 failed, 0 skipped — 9 in the experiment's grid, 1 not run yet" in text
    assert "stale" not in text


def test_md_escape_keeps_tables_intact() -> None:
    assert report.md_escape("a|b") == r"a\|b"
    assert report.md_escape("*x*") == r"\*x\*"
    assert report.md_escape("weighted_ce") == "weighted_ce"
    assert report.md_escape("_x_") == r"\_x\_"
    assert report.md_escape("two\nlines") == "two lines"


# --- bootstrap design and seed wording ----------------------------------------------------------


def test_groups_bootstrap_resamples_whole_groups(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "demo"
    store = ResultsStore(folder)
    patients = np.arange(N_TEST) // 4  # 30 patients with 4 scans each
    for strategy in ("none", "oversample"):
        for seed in range(3):
            record = write_run(store, strategy=strategy, seed=seed)
            arrays = store.predictions(record.run_id)
            store.save_predictions(record.run_id, **arrays, test_groups=patients)
    data = report.collect(folder, stratify="groups")
    table = report.main_table(data, n_resamples=RESAMPLES)
    runs = stored(folder, "oversample")
    labels = runs[0][0]

    def pooled(groups):  # independent cluster bootstrap: draw patients, take all their scans
        items = np.concatenate([np.flatnonzero(patients == g) for g in groups])
        return np.mean([SKLEARN["macro_f1"](labels[items], s[items]) for _, s in runs])

    expected = scipy.stats.bootstrap(
        (np.arange(30),), pooled, n_resamples=RESAMPLES, method="percentile", paired=True,
        vectorized=False, batch=500, rng=np.random.default_rng(0)).confidence_interval
    row = table.set_index("strategy").loc["oversample"]
    assert row.macro_f1_low == pytest.approx(expected.low, abs=1e-9)
    assert row.macro_f1_high == pytest.approx(expected.high, abs=1e-9)
    text = report.build_report(folder, tmp_path / "reports", n_resamples=RESAMPLES,
                               stratify="groups")[0].read_text()
    assert "cluster bootstrap" in text
    with pytest.raises(OctbenchError, match="stratify must be class, groups or none"):
        report.build_report(folder, tmp_path / "reports", stratify="patients")


def test_groups_requested_without_groups_falls_back_to_classes_and_says_so(
        tmp_path: Path) -> None:
    folder = tmp_path / "results" / "demo"
    for seed in range(2):
        write_run(ResultsStore(folder), strategy="none", seed=seed)
    data = report.collect(folder, stratify="groups")
    report.main_table(data, n_resamples=RESAMPLES)
    assert any("resampled within classes instead" in w for w in data.warnings)


def test_seed_wording_for_identical_one_and_constant_differences() -> None:
    from octbench.report.markdown import _verdict, seed_wording

    def row(differences, p=0.5, seed_p=math.nan, delta=0.0):
        return pd.Series({"seed_differences": differences, "seed_t_p_holm": seed_p,
                          "macro_f1_p_holm": p, "macro_f1_delta": delta})

    assert seed_wording(row([0.0, 0.0, 0.0])) == "identical on every seed (3 seeds)"
    assert _verdict(row([0.0, 0.0, 0.0], p=1.0)) == "identical on every seed"
    assert seed_wording(row([0.1])) == "untestable with one seed"
    assert _verdict(row([0.1], p=0.01, delta=0.1)) == (
        "better on the test items; across seeds untestable with one seed")
    assert seed_wording(row([0.02, 0.02])).startswith("the same difference on every seed")
    assert seed_wording(row([0.01, 0.03], seed_p=0.2)) == "Holm p = 0.200"
    assert _verdict(row([0.01, 0.03], p=0.01, seed_p=0.2, delta=0.02)) == (
        "better on the test items, not confirmed across seeds")
    assert seed_wording(row([])) == "n/a (no paired seed)"


def test_terminal_summary_columns_stay_aligned_with_long_names(tmp_path, capsys):
    from octbench.report import print_summary

    store = ResultsStore(tmp_path / "demo")
    long_name = "timm:efficientnet_b0(pretrained=True,drop_rate=0.2)"
    for model in ("cnn", long_name):
        write_run(store, model=model, strategy="none")
    print_summary(tmp_path / "demo")
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith(("model ", "cnn ", long_name))]
    assert len(lines) == 3
    # every column starts (names) or ends (numbers) where its header does, whatever the length
    # of the model name
    header, *rows = lines
    for title in ("strategy", "setup"):
        start = header.index(title)
        assert all(row[start - 1] == " " and row[start] != " " for row in rows), title
    edge = re.search(r"\baccuracy\b", header).end()
    assert all(row[edge - 1] != " " and row[edge] == " " for row in rows)
