"""Bootstrap intervals and paired tests of corrupted metrics from the stored predictions, and
``evaluate --corruptions`` merging into a stored robustness section."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

pytestmark = pytest.mark.extras

from conftest import require_robustness_extra  # noqa: E402

require_robustness_extra()

from conftest import experiment  # noqa: E402

from octbench.config import parse_config  # noqa: E402
from octbench.report.collect import collect  # noqa: E402
from octbench.report.sections.robustness import render_section, robustness_table  # noqa: E402

CELLS = [("pixelate", 2), ("pixelate", 5), ("contrast_down", 2), ("contrast_down", 5)]
RESAMPLES = 300


@pytest.fixture(scope="module")
def results(oct_npz, tmp_path_factory):
    """2 strategies x 2 seeds, 1 epoch, each scored on 2 corruptions x 2 severities."""
    from octbench.experiment import run_experiment

    tmp = tmp_path_factory.mktemp("robust")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OCTBENCH_CACHE", str(tmp / "cache"))
        raw = experiment(tmp, oct_npz, strategies=["none", "weighted_ce"], seeds=[0, 1],
                         train={"epochs": 1, "batch_size": 64, "threads": 1},
                         evaluate={"corruptions": ["pixelate", "contrast_down"],
                                   "severities": [2, 5]})
        summary = run_experiment(parse_config(raw), quiet=True, say=lambda line: None)
    assert summary.ok and len(summary.completed) == 4
    return tmp / "results" / "tiny"


def _copy(results, tmp_path):
    shutil.copytree(results, tmp_path / "tiny")
    return tmp_path / "tiny"


def _stored(folder, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    """labels (N,) and predictions (seeds, N, cells) read straight from the npz files."""
    preds, labels = [], None
    for run_dir in sorted(folder.glob(f"*__{strategy}__*")):
        with np.load(run_dir / "robustness_predictions.npz") as npz:
            labels = npz["labels"].astype(int)
            preds.append(np.stack([npz[f"{n}_s{s}_preds"].astype(int) for n, s in CELLS], 1))
            assert npz["pixelate_s2_scores"].dtype == np.float16
    return labels, np.stack(preds)


def _stratified_rows(labels, rng, batch):
    rows = np.empty((batch, len(labels)), dtype=np.int64)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        rows[:, members] = members[rng.integers(0, len(members), (batch, len(members)))]
    return rows


def _distribution(labels, statistic):
    """The statistic on RESAMPLES class-stratified resamples drawn as the report draws them."""
    rng = np.random.default_rng(0)
    values = []
    for start in range(0, RESAMPLES, 500):
        for row in _stratified_rows(labels, rng, min(500, RESAMPLES - start)):
            values.append(statistic(row))
    return np.array(values)


def _mean_f1(labels, preds, items):
    """Mean corrupted macro-F1 over seeds (sklearn), each corruption averaged over severities."""
    return np.mean([np.mean([f1_score(labels[items], seed[items, j], labels=range(4),
                                      average="macro", zero_division=0)
                             for j in range(len(CELLS))]) for seed in preds])


def test_intervals_and_paired_test_equal_an_independent_recomputation(results):
    data = collect(results)
    table = robustness_table(data, n_resamples=RESAMPLES).set_index("strategy")
    labels, ours = _stored(results, "weighted_ce")
    _, base = _stored(results, "none")
    every = np.arange(len(labels))
    row = table.loc["weighted_ce"]
    assert row["intervals"]
    assert row["corrupted_macro_f1_mean"] == pytest.approx(_mean_f1(labels, ours, every),
                                                           abs=1e-12)
    values = _distribution(labels, lambda items: _mean_f1(labels, ours, items))
    low, high = np.percentile(values, [2.5, 97.5])
    assert (row["corrupted_macro_f1_low"], row["corrupted_macro_f1_high"]) == pytest.approx(
        (low, high), abs=1e-12)
    assert low < high

    def error(items):  # own data: the unnormalised balanced error
        return np.mean([np.mean([1 - balanced_accuracy_score(labels[items], seed[items, j])
                                 for j in range(len(CELLS))]) for seed in ours])
    low, high = np.percentile(_distribution(labels, error), [2.5, 97.5])
    assert (row["error_low"], row["error_high"]) == pytest.approx((low, high), abs=1e-12)

    deltas = _distribution(labels, lambda items: _mean_f1(labels, ours, items)
                           - _mean_f1(labels, base, items))
    p = min(1.0, 2 * (min(np.sum(deltas <= 0), np.sum(deltas >= 0)) + 1) / (RESAMPLES + 1))
    assert row["p_holm"] == pytest.approx(p, abs=1e-12)  # one comparison: Holm leaves it
    assert np.isnan(table.loc["none", "p_holm"])  # the baseline is not compared with itself
    text = "\n".join(render_section(data, robustness_table(data, n_resamples=RESAMPLES), []))
    assert f"[{row['corrupted_macro_f1_low']:.3f}, {row['corrupted_macro_f1_high']:.3f}]" in text
    assert "[n/a]" not in text


def test_records_without_stored_predictions_fall_back_to_mean_and_std(results, tmp_path):
    folder = _copy(results, tmp_path)
    for path in folder.glob("*/robustness_predictions.npz"):
        path.unlink()
    data = collect(folder)
    table = robustness_table(data, n_resamples=RESAMPLES)
    assert not table["intervals"].any()
    assert table["corrupted_macro_f1_low"].isna().all() and table["p_holm"].isna().all()
    assert not table["seed_p_holm"].isna().all()  # the across-seed test still stands
    text = "\n".join(render_section(data, table, []))
    assert "[n/a]" in text and "no robustness_predictions.npz" in text
    assert not data.warnings  # an old record is no fault


def test_a_stored_predictions_file_that_does_not_fit_is_refused_with_a_warning(results,
                                                                             tmp_path):
    folder = _copy(results, tmp_path)
    victim = sorted(folder.glob("*__none__*"))[0] / "robustness_predictions.npz"
    with np.load(victim) as npz:
        arrays = dict(npz)
    arrays["pixelate_s2_preds"] = np.zeros(10**6, np.uint8)  # not the 80 test items
    np.savez(victim, **arrays)
    other = sorted(folder.glob("*__weighted_ce__*"))[0] / "robustness_predictions.npz"
    arrays = {k: v for k, v in np.load(other).items()}
    arrays["contrast_down_s5_preds"] = (arrays["contrast_down_s5_preds"] + 1) % 4  # stale
    np.savez(other, **arrays)
    linked = sorted(folder.glob("*__none__*"))[1] / "robustness_predictions.npz"
    outside = tmp_path / "elsewhere.npz"
    linked.rename(outside)
    linked.symlink_to(outside)  # a link planted in a copied folder is not followed out of it
    data = collect(folder)
    table = robustness_table(data, n_resamples=RESAMPLES).set_index("strategy")
    assert not table["intervals"].any()
    warnings = "\n".join(data.warnings)
    assert "has shape (1000000,)" in warnings
    assert "is not the record's" in warnings
    assert "leave" in warnings or "outside" in warnings or "refusing" in warnings, warnings


def test_evaluate_merges_new_cells_into_the_stored_section(results, tmp_path):
    from conftest import cli_env, run_cli

    folder = _copy(results, tmp_path)
    run_dir = sorted(folder.glob("*__weighted_ce__*"))[0]
    before = json.loads((run_dir / "record.json").read_text())["robustness"]
    with np.load(run_dir / "robustness_predictions.npz") as npz:
        stored = dict(npz)
    env = cli_env(tmp_path)
    env["OCTBENCH_CACHE"] = str(results.parent.parent / "cache")
    data = json.loads((run_dir / "record.json").read_text())["config"]["data"]["path"]
    done = run_cli(["evaluate", "--run", str(run_dir), data, "--corruptions", "speckle_noise",
                    "--severities", "3"], env)
    assert done.returncode == 0, done.stderr
    after = json.loads((run_dir / "record.json").read_text())["robustness"]
    assert set(after["cells"]) == {"pixelate", "contrast_down", "speckle_noise"}
    for name in ("pixelate", "contrast_down"):
        assert after["cells"][name] == before["cells"][name]  # kept exactly
    assert list(after["cells"]["speckle_noise"]) == ["3"]
    assert after["timing"]["cells_kept"] == 4 and after["timing"]["cells_scored"] == 1
    # each corruption weighs the same in the mean, whatever its number of severities
    per_corruption = [np.mean([m["macro_f1"] for m in cells.values()])
                      for cells in after["cells"].values()]
    assert after["summary"]["mean"]["macro_f1"] == pytest.approx(np.mean(per_corruption))
    with np.load(run_dir / "robustness_predictions.npz") as npz:
        for key, value in stored.items():
            np.testing.assert_array_equal(npz[key], value)
        assert npz["speckle_noise_s3_preds"].shape == (80,)
    with np.load(run_dir / "robustness_samples.npz") as samples:
        assert list(samples["corruptions"]) == ["contrast_down", "pixelate", "speckle_noise"]
        assert list(samples["severities"]) == [2, 3, 5]
    assert not list(run_dir.glob("robustness.partial.*"))
    # the merged file fits the merged record; pooled with a seed scored on fewer sets, no
    # interval (its seeds differ in the sets scored) rather than a wrong one
    from octbench.report.sections.robustness import load_predictions

    data = collect(folder)
    (merged,) = [r for r in data.runs if r.record.run_id == run_dir.name]
    assert load_predictions(data, merged).preds.shape == (80, 5)
    table = robustness_table(data, n_resamples=RESAMPLES).set_index("strategy")
    assert not data.warnings
    assert not table.loc["weighted_ce", "intervals"] and table.loc["none", "intervals"]


def test_rescoring_a_cell_replaces_only_it_and_another_seed_replaces_the_section(
        results, tmp_path, monkeypatch):
    import torch

    from octbench.corrupted_eval import CorruptionPlan, evaluate_corruptions
    from octbench.data import load_dataset
    from octbench.metrics import compute_metrics
    from octbench.models import build_model
    from octbench.results import ResultsStore

    monkeypatch.setenv("OCTBENCH_CACHE", str(results.parent.parent / "cache"))
    folder = _copy(results, tmp_path)
    store = ResultsStore(folder)
    record = store.read(sorted(folder.glob("*__none__*"))[0].name)
    data = load_dataset("npz", path=record.config["data"]["path"], synthetic=True)
    torch.manual_seed(123)  # another model: a re-scored cell visibly changes
    model = build_model("reference_cnn", num_classes=4, in_chans=1, img_size=28).eval()
    clean = compute_metrics(data.test.labels.numpy(), np.full((80, 4), 0.25), data.class_names)
    with np.load(store.run_dir(record.run_id) / "robustness_predictions.npz") as npz:
        stored = dict(npz)
    section = evaluate_corruptions(model, data, CorruptionPlan(("pixelate",), (5,), 0),
                                   clean=clean, store=store, run_id=record.run_id,
                                   previous=record.robustness)
    old = record.robustness["cells"]
    assert section["cells"]["pixelate"]["5"] != old["pixelate"]["5"]
    assert section["cells"]["pixelate"]["2"] == old["pixelate"]["2"]
    assert section["cells"]["contrast_down"] == old["contrast_down"]
    with np.load(store.run_dir(record.run_id) / "robustness_predictions.npz") as npz:
        assert not np.array_equal(npz["pixelate_s5_scores"], stored["pixelate_s5_scores"])
        np.testing.assert_array_equal(npz["pixelate_s2_scores"], stored["pixelate_s2_scores"])

    other_seed = evaluate_corruptions(model, data, CorruptionPlan(("pixelate",), (5,), 1),
                                      clean=clean, store=store, run_id=record.run_id,
                                      previous=record.robustness)
    assert other_seed["cells"].keys() == {"pixelate"} and other_seed["seed"] == 1
    assert list(other_seed["cells"]["pixelate"]) == ["5"]
