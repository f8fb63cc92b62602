"""The demo driver: a run with a budget of a few steps, its output directory rules and its budget arithmetic."""

import json
import logging

import pytest

from dataset.common import read_metadata
from experiments.demo import DemoError, OUTPUT_MARKER, epochs_for_steps, main, prepare_output_dir, run_demo


@pytest.mark.slow
def test_demo_small_budget(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="demo")
    output = tmp_path / "demo"
    summary = run_demo(output, data=None, steps=12, seeds=[0], max_eval_examples=8)

    assert (output / OUTPUT_MARKER).is_file()
    assert read_metadata(output / "sudoku-4x4", "test").task == "sudoku"
    runs = {path.name for path in (output / "runs").iterdir()}
    assert runs == {"trm-seed0", "flow_matching-seed0"}
    trm_reports = list((output / "runs" / "trm-seed0").glob("eval_test_*.json"))
    dfm_reports = sorted(path.name for path in (output / "runs" / "flow_matching-seed0").glob("eval_test_*.json"))
    assert len(trm_reports) == 1
    assert json.loads(trm_reports[0].read_text())["budgets"] == [1, 2, 4, 8, 16]
    assert [name.rsplit("_", 1)[1] for name in dfm_reports] == ["euler.json", "greedy.json"]

    steps = {json.loads((output / "runs" / name / "config.json").read_text())["epochs"] for name in runs}
    assert len(steps) == 1  # both models get the same budget
    cells = {cell["label"]: cell for cell in summary["datasets"][0]["cells"]}
    settings = [result["setting"] for result in cells["flow_matching (source=mask)"]["inference"]
                if result["split"] == "test"]
    assert settings == ["sampler=euler", "sampler=greedy"]
    assert (output / "report" / "report.md").is_file()
    assert str(output / "report" / "report.md") in caplog.text
    assert "trm (mlp_t=false): test exact" in caplog.text


def test_budget_fits_steps(tmp_path, sudoku4):
    metadata = read_metadata(sudoku4, "train")
    examples_per_epoch = metadata.total_groups * metadata.mean_puzzle_examples
    # 24 training puzzles per epoch and 64 per step: one step is 2.67 epochs, too few for 6 evaluations.
    for steps, evaluations in ((1, 3), (50, 6), (1518, 6)):
        epochs, interval = epochs_for_steps(sudoku4, steps)
        assert epochs % interval == 0
        assert epochs // interval == evaluations
        realised = int(epochs * examples_per_epoch / 64)
        assert realised >= 1
        assert abs(realised - steps) <= evaluations * examples_per_epoch / 64


def test_rerun_replaces_own_output(tmp_path):
    output = tmp_path / "demo"
    prepare_output_dir(output, data=None)
    (output / "runs").mkdir()
    (output / "runs" / "stale.txt").write_text("old")
    prepare_output_dir(output, data=None)
    assert (output / OUTPUT_MARKER).is_file()
    assert not (output / "runs").exists()


def test_foreign_output_kept(tmp_path, capsys):
    output = tmp_path / "mine"
    output.mkdir()
    (output / "notes.txt").write_text("keep")
    assert main(["--output", str(output), "--steps", "1"]) == 2
    error = capsys.readouterr().err
    assert "was not written by the demo" in error
    assert len(error.strip().splitlines()) == 1
    assert (output / "notes.txt").read_text() == "keep"


def test_data_inside_output_rejected(tmp_path, sudoku4):
    with pytest.raises(DemoError, match="lies inside --output"):
        prepare_output_dir(sudoku4.parent, data=sudoku4)
    assert (sudoku4 / "train" / "dataset.json").is_file()


def test_missing_data_rejected(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "demo"), "--data", str(tmp_path / "absent")]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "absent" / "train" / "dataset.json") in error
    assert not (tmp_path / "demo").exists()
