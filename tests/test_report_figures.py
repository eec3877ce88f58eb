"""The figures section: valid PNGs linked from the report; tuning figures only from the
function the caller hands in."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from report_helpers import Built, build, make_grid


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
