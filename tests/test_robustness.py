"""Robustness (MedMNIST-C): corruptions equal medmnistc's, BE/rBE equal its Evaluator's, and
corrupted evaluation resumes without recomputing what was stored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.extras

from conftest import require_robustness_extra  # noqa: E402

require_robustness_extra()

from conftest import ROOT, experiment  # noqa: E402
from medmnistc.corruptions.registry import CORRUPTIONS_DS  # noqa: E402
from medmnistc.eval import Evaluator  # noqa: E402

from octbench.config import parse_config  # noqa: E402
from octbench.data.preprocess import preprocess_array  # noqa: E402
from octbench.data.render import render_scans  # noqa: E402
from octbench.metrics import compute_metrics  # noqa: E402
from octbench.robustness import CORRUPTIONS, SEVERITIES  # noqa: E402
from octbench.robustness.corruptions import cell_seed, corrupt_images  # noqa: E402
from octbench.robustness.scores import alexnet_baseline, summarize  # noqa: E402


@pytest.fixture(scope="module")
def scans_224() -> np.ndarray:
    return render_scans(np.array([0, 1, 2, 3]), size=224, seed=3)


def medmnistc_reference(images: np.ndarray, name: str, severity: int, seed: int,
                        monkeypatch) -> np.ndarray:
    """What medmnistc's own class gives, step by step as its DatasetManager does it."""
    # medmnistc's MotionBlur calls np.fromstring, which numpy 2 removed; for raw bytes it was
    # exactly np.frombuffer (copied), so the package's own code runs with that stand-in.
    monkeypatch.setattr(np, "fromstring", lambda blob, dtype: np.frombuffer(blob, dtype).copy(),
                        raising=False)
    corruption = CORRUPTIONS_DS["octmnist"][name]
    np.random.seed(cell_seed(name, severity, seed))
    out = []
    for image in images:
        corrupted = corruption.apply(Image.fromarray(image).convert("RGB"), severity - 1)
        out.append(np.array(Image.fromarray(corrupted).convert("L")))
    monkeypatch.undo()
    return np.stack(out)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_are_pixel_identical_to_medmnistc(name, scans_224, monkeypatch):
    for severity in SEVERITIES:
        ours = corrupt_images(scans_224, name, severity, seed=7)
        expected = medmnistc_reference(scans_224, name, severity, 7, monkeypatch)
        np.testing.assert_array_equal(ours, expected, err_msg=f"{name} severity {severity}")
    # severities really differ (the test would pass vacuously on a no-op)
    assert not np.array_equal(corrupt_images(scans_224, name, 1, seed=7),
                              corrupt_images(scans_224, name, 5, seed=7))


def test_smaller_runs_resize_the_corrupted_224px_scan_like_clean_data(scans_224, monkeypatch):
    ours = corrupt_images(scans_224, "speckle_noise", 4, seed=1, size=28)
    full = medmnistc_reference(scans_224, "speckle_noise", 4, 1, monkeypatch)
    expected = np.stack([preprocess_array(image, size=28) for image in full])
    np.testing.assert_array_equal(ours, expected)


def test_corruption_leaves_numpy_random_state_alone(scans_224):
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    corrupt_images(scans_224[:1], "motion_blur", 2, seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_generic_corruptions_work_on_small_gray_scans():
    small = render_scans(np.array([0, 3]), size=28, seed=0)
    for name in CORRUPTIONS:
        out = corrupt_images(small, name, 3, seed=0)
        assert out.shape == small.shape and out.dtype == np.uint8


def test_be_and_rbe_equal_medmnistc_evaluator(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 250)
    evaluator = Evaluator("octmnist", labels[:, None].tolist(), list(CORRUPTIONS),
                          str(tmp_path), "net", "multi-class")

    def predictions(skill: float) -> np.ndarray:
        logits = rng.normal(size=(len(labels), 4))
        logits[np.arange(len(labels)), labels] += skill
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    clean = predictions(2.5)
    evaluator.evaluate_clean(clean)
    cells = {}
    for index, name in enumerate(CORRUPTIONS):
        per_severity = [predictions(2.0 - 0.3 * s - 0.1 * index) for s in range(5)]
        evaluator.evaluate(np.concatenate(per_severity), name)
        cells[name] = {str(s + 1): compute_metrics(labels, p, "abcd")
                       for s, p in enumerate(per_severity)}
    evaluator.output_log = {}
    evaluator.populate_summary()
    ours = summarize(cells, compute_metrics(labels, clean, "abcd"), baseline=alexnet_baseline())
    for name in CORRUPTIONS:
        assert ours["per_corruption"][name]["be"] == pytest.approx(
            evaluator.output_log["be_scores"][name], abs=1e-12)
        assert ours["per_corruption"][name]["rbe"] == pytest.approx(
            evaluator.output_log["rbe_scores"][name], abs=1e-12)
    assert ours["mean"]["be"] == pytest.approx(evaluator.output_log["metrics"]["be"], abs=1e-12)
    assert ours["mean"]["rbe"] == pytest.approx(evaluator.output_log["metrics"]["rbe"], abs=1e-12)
    assert ours["mean"]["clean_error"] == pytest.approx(evaluator.clean_score, abs=1e-12)


def test_unnormalised_scores_for_other_data():
    labels = np.repeat(np.arange(3), 10)
    perfect = np.eye(3)[labels]
    chance = np.full((30, 3), 1 / 3)  # arg-max: always class 0
    cells = {"pixelate": {"1": compute_metrics(labels, chance, "abc")}}
    out = summarize(cells, compute_metrics(labels, perfect, "abc"), baseline=None)
    assert "be" not in out["mean"] and "rbe" not in out["mean"]
    assert out["mean"]["error"] == pytest.approx(2 / 3)
    assert out["mean"]["error_drop"] == pytest.approx(2 / 3)


def _robust_config(tmp_path, oct_npz, results: str) -> dict:
    return experiment(tmp_path, oct_npz, strategies=["none"], results_dir=str(tmp_path / results),
                      train={"epochs": 1, "batch_size": 64, "deterministic": True, "threads": 1},
                      evaluate={"corruptions": ["pixelate", "contrast_down", "speckle_noise"],
                                "severities": [1, 4]})


def test_corrupted_evaluation_resumes_after_a_crash(oct_npz, tmp_path, monkeypatch):
    import octbench.corrupted_eval as corrupted_eval
    import octbench.robustness.cache as cache
    from octbench.experiment import run_experiment

    calls = {"scored": 0, "generated": 0, "crash_at": None}
    real_evaluate, real_corrupt = corrupted_eval.evaluate, cache.corrupt_images

    def counted_evaluate(*args, **kwargs):
        calls["scored"] += 1
        if calls["scored"] == calls["crash_at"]:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    def counted_corrupt(*args, **kwargs):
        calls["generated"] += 1
        return real_corrupt(*args, **kwargs)

    monkeypatch.setattr(corrupted_eval, "evaluate", counted_evaluate)
    monkeypatch.setattr(cache, "corrupt_images", counted_corrupt)

    def record(results: str) -> dict:
        (path,) = (tmp_path / results / "tiny").glob("*/record.json")
        return json.loads(path.read_text())

    calls["crash_at"] = 4  # scoring the 4th of 6 cells
    config = parse_config(_robust_config(tmp_path, oct_npz, "crashed"))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, quiet=True, say=lambda line: None)
    assert record("crashed")["status"] == "interrupted"
    assert calls["generated"] == 4  # the 4th set was generated (and cached) before the crash
    calls.update(scored=0, generated=0, crash_at=None)
    run_experiment(config, quiet=True, say=lambda line: None)
    assert calls["scored"] == 3  # the 3 cells not stored; none of the 3 stored ones again
    assert calls["generated"] == 2  # the 4th set came from the cache
    resumed = record("crashed")
    assert resumed["status"] == "complete"
    assert resumed["robustness"]["timing"]["cells_reused"] == 3
    assert not list((tmp_path / "crashed").rglob("robustness.partial.*"))

    calls.update(scored=0, generated=0)
    run_experiment(parse_config(_robust_config(tmp_path, oct_npz, "straight")), quiet=True,
                   say=lambda line: None)
    assert calls == {"scored": 6, "generated": 0, "crash_at": None}  # every set cached
    straight = record("straight")
    for key in ("cells", "summary", "protocol", "size", "seed", "version"):
        assert resumed["robustness"][key] == straight["robustness"][key], key
    assert resumed["metrics"] == straight["metrics"]
    assert straight["robustness"]["protocol"] == "generic"
    assert "be" not in straight["robustness"]["summary"]["mean"]  # own data: unnormalised
    assert set(straight["robustness"]["cells"]) == {"pixelate", "contrast_down", "speckle_noise"}


def test_evaluate_cli_scores_corruptions_into_the_runs_record(oct_npz, tmp_path):
    from conftest import cli_env, run_cli, write_yaml

    config = experiment(tmp_path, oct_npz, strategies=["none"],
                        train={"epochs": 1, "batch_size": 64, "threads": 1})
    path = write_yaml(tmp_path / "tiny.yaml", config)
    env = cli_env(tmp_path)
    assert run_cli(["run", str(path)], env).returncode == 0
    (record_path,) = (tmp_path / "results" / "tiny").glob("*/record.json")
    before = record_path.read_bytes()
    assert "robustness" not in json.loads(before) or not json.loads(before)["robustness"]

    bad = run_cli(["evaluate", "--run", str(record_path.parent), str(oct_npz),
                   "--corruptions", "blur"], env)
    assert bad.returncode == 2 and "unknown corruption 'blur'" in bad.stderr
    assert "Traceback" not in bad.stderr and record_path.read_bytes() == before

    done = run_cli(["evaluate", "--run", str(record_path.parent), str(oct_npz),
                    "--corruptions", "contrast_down,pixelate", "--severities", "2,5"], env,
                   quiet=False)
    assert done.returncode == 0, done.stderr
    assert "own data: generic corruptions" in done.stdout
    record = json.loads(record_path.read_text())
    section = record["robustness"]
    assert set(section["cells"]) == {"contrast_down", "pixelate"}
    assert set(section["cells"]["pixelate"]) == {"2", "5"}
    assert section["version"] == 1 and section["protocol"] == "generic"
    # everything else in the record is as the run wrote it
    old = json.loads(before)
    assert {k: v for k, v in record.items() if k != "robustness"} == {
        k: v for k, v in old.items() if k != "robustness"}


def test_report_has_the_robustness_section_curves_and_sample_strip(oct_npz, tmp_path):
    from octbench.experiment import run_experiment
    from octbench.report.build import build_report
    from octbench.robustness.cache import corrupted_set

    raw = experiment(tmp_path, oct_npz, strategies=["none", "weighted_ce"],
                     train={"epochs": 1, "batch_size": 64, "threads": 1},
                     evaluate={"corruptions": ["contrast_down", "pixelate"],
                               "severities": [2, 5]})
    config = parse_config(raw)
    lines = []
    run_experiment(config, quiet=True, say=lines.append)
    assert all("corrupted macro-F1" in line for line in lines if "test acc" in line)
    written = build_report(tmp_path / "results" / "tiny", tmp_path / "reports",
                           n_resamples=200)
    text = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    section = text[text.index("## Robustness"):]
    assert "own data: the generic gray-scale corruptions" in section
    assert "balanced error" in section and "| none |" in section and "| weighted_ce |" in section
    names = {p.name for p in written}
    assert {"robustness_curves.png", "robustness_curves.svg", "robustness_samples.png",
            "robustness_samples.svg"} <= names
    # the strip shows the first scan of the very sets that were scored
    (run_dir,) = [d for d in (tmp_path / "results" / "tiny").iterdir() if "__none__" in d.name]
    with np.load(run_dir / "robustness_samples.npz", allow_pickle=False) as samples:
        images = samples["images"]
        assert list(samples["corruptions"]) == ["contrast_down", "pixelate"]
    from octbench.data import load_dataset

    data = load_dataset("npz", path=str(oct_npz), synthetic=True)
    for i, name in enumerate(["contrast_down", "pixelate"]):
        for j, severity in enumerate([2, 5]):
            scored, generated = corrupted_set(data.test.images.numpy(), data.fingerprint, name,
                                              severity, seed=0, size=data.size)
            assert not generated  # cached when the run scored it
            np.testing.assert_array_equal(images[i, j], scored[0])
    record = json.loads((run_dir / "record.json").read_text())
    mean = record["robustness"]["summary"]["mean"]
    cells = record["robustness"]["cells"]
    assert mean["macro_f1"] == pytest.approx(np.mean([m["macro_f1"] for c in cells.values()
                                                      for m in c.values()]))


@pytest.mark.slow
def test_synthetic_twin_recipe_end_to_end(tmp_path):
    """A cut of experiments/robustness_synthetic.yaml: one model, two strategies, one seed, with
    and without corruption training, all six corruptions at two severities, then its report."""
    import yaml

    from octbench.experiment import run_experiment
    from octbench.report.build import build_report

    raw = yaml.safe_load((ROOT / "experiments" / "robustness_synthetic.yaml").read_text())
    raw.update(models=["reference_cnn"], strategies=["none", "balanced_softmax"], seeds=[0],
               results_dir=str(tmp_path / "results"))
    raw["train"]["epochs"] = 1
    raw["evaluate"]["severities"] = [1, 5]
    summary = run_experiment(parse_config(raw), quiet=True, say=lambda line: None)
    assert len(summary.completed) == 4 and summary.ok
    build_report(tmp_path / "results" / raw["name"], tmp_path / "reports", n_resamples=200)
    text = (tmp_path / "reports" / raw["name"] / "report.md").read_text()
    section = text[text.index("## Robustness"):]
    assert "SYNTHETIC" in section and "adapted protocol" in section
    assert section.count("| balanced_softmax |") == 2  # with and without medmnist_c training


def test_octmnist_at_28px_uses_the_224px_test_scans_and_alexnet_normalisation(tmp_path,
                                                                               monkeypatch):
    """Adapted protocol: the 224-px file's test scans are corrupted and resized to 28 px; BE and
    rBE are given. Stand-in OCTMNIST files (same labels at both sizes) replace the real ones."""
    import hashlib

    import torch

    import octbench.data.octmnist as octmnist
    from octbench.corrupted_eval import CorruptionPlan, evaluate_corruptions
    from octbench.data import load_dataset
    from octbench.models import build_model

    rng = np.random.default_rng(0)
    labels = {s: rng.permutation(np.arange(n) % 4) for s, n in
              (("train", 16), ("val", 8), ("test", 8))}
    files = {}
    for size in (28, 224):
        arrays = {}
        for split, y in labels.items():
            arrays[f"{split}_images"] = render_scans(y, size=size, seed=len(y))
            arrays[f"{split}_labels"] = y.astype(np.uint8)[:, None]
        path = tmp_path / f"octmnist_{size}.npz"
        np.savez(path, **arrays)
        files[size] = (path, "https://example.invalid", hashlib.md5(path.read_bytes()).hexdigest())
    monkeypatch.setattr(octmnist, "octmnist_file", lambda size, root: files[size])

    data = load_dataset("octmnist", size=28)
    torch.manual_seed(0)
    model = build_model("reference_cnn", num_classes=4, in_chans=1, img_size=28).eval()
    plan = CorruptionPlan(("contrast_down",), (3,), 0)
    clean = compute_metrics(data.test.labels.numpy(), np.full((8, 4), 0.25), "abcd")
    section = evaluate_corruptions(model, data, plan, clean=clean)
    assert section["protocol"] == "adapted" and not section["comparable"]
    assert section["normalised"] and section["source_size"] == 224 and section["size"] == 28
    mean = section["summary"]["mean"]
    alexnet = alexnet_baseline()
    assert mean["be"] == pytest.approx(mean["error"] / alexnet["raw_scores"]["contrast_down"])
    # the scored set is the 224-px test scans, corrupted, then resized like the clean data
    from octbench.robustness.cache import corrupted_set

    with np.load(files[224][0]) as npz:
        full = npz["test_images"]
    scored, generated = corrupted_set(full, f"md5:{files[224][2]}", "contrast_down", 3, seed=0,
                                      size=28)
    assert not generated
    np.testing.assert_array_equal(scored, corrupt_images(full, "contrast_down", 3, seed=0,
                                                         size=28))
