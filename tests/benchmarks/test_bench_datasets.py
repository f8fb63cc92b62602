"""Dataset and checker benchmarks on small stand-in inputs: the builders accept them and the rows are complete."""

import pytest

import benchmarks.datasets as datasets
from benchmarks.checkers import measure_checkers


@pytest.fixture
def small_stand_ins(monkeypatch):
    """No real data, few generated puzzles and 2 Sudoku augmentations, so that both builds take seconds."""
    monkeypatch.delenv(datasets.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(datasets, "STAND_IN_SUDOKU_PUZZLES", 3)
    monkeypatch.setattr(datasets, "STAND_IN_MAZES", 2)
    monkeypatch.setattr(datasets, "SUDOKU_AUGMENTATIONS", 2)


def test_builds_on_stand_ins(small_stand_ins, tmp_path):
    rows = datasets.measure_builds(tmp_path, warmup=0, repeats=1, seed=0)
    assert [row["name"] for row in rows] == ["sudoku 1k x 1000", "maze 1k x 8"]
    for row in rows:
        assert row["source"].startswith("stand-in CSVs")
        assert row["seconds"]["min"] > 0
        assert row["peak_rss_mib"]["max"] > 10  # a Python process with numpy


def test_stand_in_row_counts(small_stand_ins, tmp_path):
    datasets.write_stand_in_csvs(tmp_path, seed=0)
    for names, counts in ((datasets.SUDOKU_CSVS, datasets.SUDOKU_ROWS), (datasets.MAZE_CSVS, datasets.MAZE_ROWS)):
        for split, name in names.items():
            lines = (tmp_path / name).read_text().splitlines()
            assert lines[0] == "source,question,answer,rating"
            assert len(lines) - 1 == counts[split]


def test_real_data_needs_every_file(small_stand_ins, monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.DATA_DIR_VARIABLE, str(tmp_path))
    assert datasets.real_data_dir() is None
    datasets.write_stand_in_csvs(tmp_path, seed=0)
    assert datasets.real_data_dir() == tmp_path


def test_failed_build_raises(tmp_path):
    with pytest.raises(RuntimeError, match="dataset.build_sudoku_dataset failed"):
        datasets.run_build("dataset.build_sudoku_dataset", ["--train-csv", str(tmp_path / "missing.csv"),
                                                             "--test-csv", str(tmp_path / "missing.csv"),
                                                             "--output-dir", str(tmp_path / "out")])


def test_checker_rows():
    rows = measure_checkers(sudoku_count=200, maze_count=40, warmup=0, repeats=2)
    assert [row["predictions_per_run"] for row in rows] == [200, 40]
    for row in rows:
        rate = row["predictions_per_second"]
        assert rate["min"] <= rate["median"] <= rate["max"]
