"""Robustness options without the extra: validation, run ids, and the one-line install hint."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT, experiment

from octbench.config import ConfigError, load_config, parse_config
from octbench.errors import OctbenchError
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.robustness import CORRUPTIONS, SEVERITIES


def test_config_accepts_medmnist_c_and_lists_and_refuses_unknown(oct_npz, tmp_path):
    config = parse_config(experiment(tmp_path, oct_npz, evaluate={"corruptions": "medmnist_c"}))
    assert config.evaluate.corruptions == CORRUPTIONS and config.evaluate.severities == SEVERITIES
    config = parse_config(experiment(tmp_path, oct_npz, evaluate={
        "corruptions": ["pixelate"], "severities": [5, 1], "seed": 3}))
    assert (config.evaluate.corruptions, config.evaluate.severities, config.evaluate.seed) == (
        ("pixelate",), (1, 5), 3)
    with pytest.raises(ConfigError) as error:
        parse_config(experiment(tmp_path, oct_npz, evaluate={
            "corruptions": ["pixelat"], "severities": [6], "sed": 1}))
    text = str(error.value)
    assert "unknown corruption 'pixelat'" in text and "pixelate" in text
    assert "evaluate.severities" in text and "evaluate.sed" in text


def test_recipe_round_trips_and_corruptions_leave_run_ids_alone(oct_npz, tmp_path):
    config = load_config(ROOT / "experiments" / "robustness.yaml")
    assert parse_config(config.to_dict()) == config
    assert config.evaluate.corruptions == CORRUPTIONS
    plain = parse_config(experiment(tmp_path, oct_npz))
    scored = parse_config(experiment(tmp_path, oct_npz, evaluate={"corruptions": "medmnist_c"}))
    assert [s.run_id for s in expand_grid(plain)] == [s.run_id for s in expand_grid(scored)]
    assert all(s.corruptions is None for s in expand_grid(plain))
    assert all(s.corruptions.cells()[0] == ("pixelate", 1) for s in expand_grid(scored))


@pytest.mark.parametrize("options", [{"evaluate": {"corruptions": ["pixelate"]}},
                                     {"train": {"epochs": 1, "augment": ["medmnist_c"]}}])
def test_missing_extra_fails_before_training_with_the_install_hint(oct_npz, tmp_path,
                                                                   monkeypatch, options):
    for module in ("medmnistc", "medmnistc.corruptions", "medmnistc.corruptions.registry",
                   "medmnistc.corruptions.filter"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    config = parse_config(experiment(tmp_path, oct_npz, **options))
    with pytest.raises(OctbenchError, match=r'pip install "octbench\[robustness\]"'):
        run_experiment(config, quiet=True, say=lambda line: None)
    assert not (tmp_path / "results").exists()  # nothing was trained or created


def _robustness_extra_missing() -> bool:
    try:
        import cv2  # noqa: F401
        import medmnistc  # noqa: F401
        import wand.image  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.extras  # a config asking for corruptions needs the extra even to check the runs
@pytest.mark.skipif(_robustness_extra_missing(), reason="robustness extra not installed: "
                    'pip install "octbench[robustness]" (and the ImageMagick library)')
def test_complete_runs_without_corrupted_evaluation_get_the_command_to_score_them(oct_npz,
                                                                                  tmp_path):
    raw = experiment(tmp_path, oct_npz, strategies=["none"],
                     train={"epochs": 1, "batch_size": 64, "threads": 1})
    run_experiment(parse_config(raw), quiet=True, say=lambda line: None)
    raw["evaluate"] = {"corruptions": ["pixelate"], "severities": [2]}
    lines = []
    summary = run_experiment(parse_config(raw), quiet=True, say=lines.append)
    assert len(summary.already_complete) == 1 and not summary.completed  # not retrained
    (hint,) = [line for line in lines if "no corrupted evaluation" in line]
    assert "--corruptions pixelate --severities 2 --corruption-seed 0" in hint
