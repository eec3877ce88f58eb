"""`octbench predict` and `octbench data` on a model trained briefly on synthetic data."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from octbench.cli import main
from octbench.data import OCT_CLASSES

SCANS = sorted((Path(__file__).parent / "data").glob("*.jpeg"))


def test_predict_every_real_scan(trained_run, capsys):
    results, run_id = trained_run
    assert len(SCANS) == 6
    code = main(["predict", "--run", run_id, "--results-dir", str(results), "--json",
                 *map(str, SCANS)])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in rows] == [s.name for s in SCANS]
    for row in rows:
        assert row["error"] is None
        assert set(row["probabilities"]) == set(OCT_CLASSES)
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert row["top_class"] == max(row["probabilities"], key=row["probabilities"].get)


def test_predict_accepts_a_checkpoint_path_and_a_run_prefix(trained_run, capsys):
    results, run_id = trained_run
    checkpoint = next(results.glob(f"*/{run_id}/best.pt"))
    assert main(["predict", "--run", str(checkpoint), str(SCANS[0])]) == 0
    by_path = capsys.readouterr().out
    assert main(["predict", "--run", run_id[:20], "--results-dir", str(results),
                 str(SCANS[0])]) == 0
    assert capsys.readouterr().out == by_path
    assert main(["predict", "--run", f"trained/{run_id[:20]}", "--results-dir", str(results),
                 str(SCANS[0])]) == 0
    assert capsys.readouterr().out == by_path
    assert SCANS[0].name in by_path and "CNV" in by_path


def test_bad_files_get_their_own_error_and_the_rest_are_predicted(trained_run, tmp_path,
                                                                  capsys):
    results, run_id = trained_run
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    empty = tmp_path / "empty.jpeg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes(SCANS[0].read_bytes()[:2000])
    missing = tmp_path / "missing.png"
    code = main(["predict", "--run", run_id, "--results-dir", str(results), str(not_image),
                 str(SCANS[1]), str(empty), str(truncated), str(missing)])
    assert code == 2
    out, err = capsys.readouterr()
    assert SCANS[1].name in out and "Traceback" not in err
    for bad in (not_image, empty, truncated, missing):
        assert sum(bad.name in line for line in err.splitlines()) == 1, err
    assert "4 of 5 files could not be read" in err


def test_unknown_run_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", "--run", "nope", "--results-dir", str(tmp_path),
                 str(SCANS[0])]) == 2
    assert "no trained run 'nope'" in capsys.readouterr().err


def test_data_synth_writes_a_medmnist_file_that_stays_synthetic(tmp_path, capsys):
    out = tmp_path / "synth.npz"
    assert main(["data", "synth", "--out", str(out), "--set", "scale=0.005",
                 "--set", "test_scale=0.02"]) == 0
    assert "generated in" in capsys.readouterr().out
    with np.load(out) as npz:
        assert npz["train_images"].dtype == np.uint8 and npz["train_labels"].shape[1] == 1
        assert np.bincount(npz["test_labels"][:, 0]).tolist() == [5, 5, 5, 5]
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[SYNTHETIC DATA]" in text and "largest:smallest class 5.9:1" in text


def test_data_show_and_info_figure_write_pngs(tmp_path, capsys):
    grid, chart = tmp_path / "grid.png", tmp_path / "dist.png"
    assert main(["data", "show", "--set", "scale=0.005", "--out", str(grid),
                 "--per-class", "3"]) == 0
    assert main(["data", "info", "--set", "scale=0.005", "--figure", str(chart)]) == 0
    for path in (grid, chart):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_predict_works_from_a_copied_run_folder(trained_run, tmp_path, capsys):
    results, run_id = trained_run
    copy = tmp_path / "elsewhere"
    shutil.copytree(next(results.glob(f"*/{run_id}")), copy)
    assert main(["predict", "--run", str(copy), str(SCANS[2])]) == 0


def test_data_show_draws_raw_scans_next_to_model_inputs(tmp_path, capsys):
    out = tmp_path / "scans.png"
    assert main(["data", "show", *map(str, SCANS[:3]), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["data", "show", str(SCANS[0]), str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "bad.png" in capsys.readouterr().err
