"""`python -m dataset.inspect` and `dataset.render.save_grid_figure`."""

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from dataset.common import PuzzleTask, read_split
from dataset.inspect import main
from dataset.render import save_grid_figure
from dataset.sudoku import SudokuTask

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must directly follow the PNG signature."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE
    assert header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


class RecordingTask(PuzzleTask):
    """A 2x3 task that draws nothing but records the rows each `render` call receives."""

    name = "recording"

    def __init__(self):
        self.grid_shape = (2, 3)
        self.vocab_size = 4
        self.fill_token = 1
        self.answer_tokens = (2, 3)
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def check(self, inputs, predictions):
        return np.ones(len(inputs), dtype=bool)

    def to_row_string(self, grid):
        return "".join(map(str, grid))

    def to_text(self, grid):
        return "\n".join(" ".join(map(str, row)) for row in np.asarray(grid).reshape(self.grid_shape))

    def render(self, ax: Any, inputs, grid, labels=None):
        self.calls.append((np.asarray(inputs), np.asarray(grid), None if labels is None else np.asarray(labels)))
        ax.imshow(np.asarray(grid).reshape(self.grid_shape), vmin=0, vmax=self.vocab_size - 1)


# ---------------------------------------------------------------------------------------------
# The command line


def test_inspect_prints_splits(loader_sudoku_dir, capsys):
    assert main([str(loader_sudoku_dir)]) == 0
    output = capsys.readouterr().out
    assert "== split train ==" in output
    assert "== split test ==" in output
    assert "task: sudoku, grid 4x4" in output
    assert "groups: 6, puzzles: 12, examples: 12" in output
    assert "builder arguments: seed=0, num_aug=1" in output
    assert "source sha256: " + "ab" * 32 in output
    assert "label tokens: 2: " in output


def test_inspect_prints_decoded_grids(loader_sudoku_dir, capsys):
    assert main([str(loader_sudoku_dir), "--split", "train", "--count", "3"]) == 0
    output = capsys.readouterr().out
    _, data = read_split(loader_sudoku_dir, "train")
    task = SudokuTask(box_shape=(2, 2))
    assert "== split test ==" not in output
    for example in range(3):
        assert f"example {example} (puzzle {example}, group {example // 2}, identifier 0)" in output
        puzzle_lines = task.to_text(data.inputs[example]).splitlines()
        label_lines = task.to_text(data.labels[example]).splitlines()
        for puzzle_line, label_line in zip(puzzle_lines, label_lines):
            assert f"{puzzle_line}    {label_line}" in output
    assert "example 3 " not in output


def test_inspect_givens_statistics(loader_sudoku_dir, capsys):
    assert main([str(loader_sudoku_dir), "--split", "test", "--count", "0"]) == 0
    output = capsys.readouterr().out
    _, data = read_split(loader_sudoku_dir, "test")
    givens = (np.asarray(data.inputs) > 1).sum(axis=1)
    assert f"givens per example: min {givens.min()}, mean {givens.mean():.2f}, max {givens.max()}" in output
    assert "example 0" not in output


def test_inspect_renders_png(loader_sudoku_dir, tmp_path, capsys):
    figure_path = tmp_path / "figures" / "sudoku.png"
    assert main([str(loader_sudoku_dir), "--render", str(figure_path)]) == 0
    assert f"saved 4 grids of split train to {figure_path}" in capsys.readouterr().out
    width, height = png_size(figure_path)
    assert width >= 300
    assert height >= 300
    assert figure_path.stat().st_size > 5_000
    pixels = imread(figure_path)
    assert pixels.std() > 0.05
    # Readable by others like any file the user writes, and no temporary file left beside it.
    assert figure_path.stat().st_mode & 0o044 == 0o044 & ~_umask()
    assert [path.name for path in figure_path.parent.iterdir()] == ["sudoku.png"]
    assert list(figure_path.parent.iterdir()) == [figure_path]


def test_inspect_missing_directory(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main([str(missing)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"error: {missing}: dataset directory not found. Build it with python -m dataset.build_" in error


def test_inspect_missing_split(loader_sudoku_dir, capsys):
    assert main([str(loader_sudoku_dir), "--split", "val"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "split 'val' not found (splits present: train, test)" in error


def test_inspect_directory_without_splits(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no split with a dataset.json found" in capsys.readouterr().err


def test_inspect_render_needs_examples(loader_sudoku_dir, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([str(loader_sudoku_dir), "--count", "0", "--render", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "x.png").exists()


def test_inspect_runs_as_module(loader_sudoku_dir):
    result = subprocess.run(
        [sys.executable, "-m", "dataset.inspect", str(loader_sudoku_dir), "--split", "test", "--count", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "example 0 (puzzle 0, group 0, identifier 0)" in result.stdout


# ---------------------------------------------------------------------------------------------
# The figure


def test_figure_panels_get_their_rows(tmp_path):
    task = RecordingTask()
    rng = np.random.default_rng(0)
    inputs, grids, labels = (rng.integers(0, 4, (5, 6)) for _ in range(3))
    save_grid_figure(task, inputs, grids, tmp_path / "five.png", labels=labels, titles=list("abcde"), columns=2)
    assert len(task.calls) == 5
    for index, (inputs_row, grid_row, labels_row) in enumerate(task.calls):
        np.testing.assert_array_equal(inputs_row, inputs[index])
        np.testing.assert_array_equal(grid_row, grids[index])
        np.testing.assert_array_equal(labels_row, labels[index])
    width, height = png_size(tmp_path / "five.png")
    # Two columns by three rows of square panels.
    assert height > width


def test_figure_without_labels(tmp_path):
    task = RecordingTask()
    grids = np.full((2, 6), 2)
    save_grid_figure(task, grids, grids, tmp_path / "two.png")
    assert [labels_row for _, _, labels_row in task.calls] == [None, None]
    width, height = png_size(tmp_path / "two.png")
    assert width > height


@pytest.mark.parametrize(
    "grids_shape, inputs_shape, labels_shape, num_titles, message",
    [
        ((2, 5), (2, 5), None, None, r"grids must have shape \[N, 6\]"),
        ((0, 6), (0, 6), None, None, "N >= 1"),
        ((2, 6), (3, 6), None, None, "inputs .* must have the shape of grids"),
        ((2, 6), (2, 6), (2, 5), None, "labels .* must have the shape of grids"),
        ((2, 6), (2, 6), None, 3, "got 3 titles for 2 grids"),
    ],
)
def test_figure_rejects_bad_shapes(tmp_path, grids_shape, inputs_shape, labels_shape, num_titles, message):
    labels = None if labels_shape is None else np.zeros(labels_shape, dtype=int)
    titles = None if num_titles is None else ["t"] * num_titles
    with pytest.raises(ValueError, match=message):
        save_grid_figure(
            RecordingTask(), np.zeros(inputs_shape, dtype=int), np.zeros(grids_shape, dtype=int),
            tmp_path / "bad.png", labels=labels, titles=titles,
        )
    assert not (tmp_path / "bad.png").exists()


def test_figure_sudoku_highlights_errors(tmp_path):
    # Drawing a wrong prediction must change the picture: the task shades the wrong cells.
    task = SudokuTask(box_shape=(2, 2))
    solution = np.array([[2, 3, 4, 5, 4, 5, 2, 3, 3, 2, 5, 4, 5, 4, 3, 2]])
    wrong = solution.copy()
    wrong[0, :4] = [3, 2, 5, 4]
    save_grid_figure(task, solution, wrong, tmp_path / "plain.png")
    save_grid_figure(task, solution, wrong, tmp_path / "marked.png", labels=solution)
    assert not np.array_equal(imread(tmp_path / "plain.png"), imread(tmp_path / "marked.png"))


def test_inspect_maze(loader_maze_dir, tmp_path, capsys):
    assert main([str(loader_maze_dir), "--count", "1", "--render", str(tmp_path / "maze.png")]) == 0
    output = capsys.readouterr().out
    assert "task: maze, grid 5x5" in output
    # The maze has 6 open cells: 3 become path cells and 3 stay open.
    assert "cells to fill per example: min 6, mean 6.00, max 6" in output
    assert "label tokens: 1: 17 (68.0%), 2: 3 (12.0%), 3: 1 (4.0%), 4: 1 (4.0%), 5: 3 (12.0%)" in output
    assert "#S  #    #Soo#" in output
    assert "# # #    # #o#" in output
    assert png_size(tmp_path / "maze.png")[0] >= 300


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
