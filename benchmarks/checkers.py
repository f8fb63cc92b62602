"""Checker throughput: predictions scored per second by the Sudoku and maze rule checkers.

Every tenth prediction is broken, so both the accept and the reject paths run. The maze checker caches
each input maze's S-to-G distance. Each run therefore starts from a new `MazeTask`, and its predictions
cover `MAZE_DISTINCT` distinct mazes, which is the cost of a first evaluation of a test set that size.
"""

import numpy as np

from benchmarks.machine import load_average
from benchmarks.measure import time_runs
from benchmarks.workloads import sudoku_batch
from dataset.maze import OPEN, PATH, MazeTask
from dataset.maze_generator import MazeGeneratorConfig, generate_mazes
from dataset.sudoku import SudokuTask

MAZE_DISTINCT = 20


def measure_checkers(sudoku_count: int, maze_count: int, warmup: int, repeats: int, seed: int = 0) -> list[dict]:
    """Measure the predictions per second of `SudokuTask.check` (9x9) and `MazeTask.check` (30x30)."""
    rng = np.random.default_rng(seed)

    sudoku = sudoku_batch(sudoku_count, seed=seed)
    sudoku_inputs, sudoku_predictions = sudoku["inputs"].numpy(), sudoku["labels"].numpy().copy()
    sudoku_predictions[::10, 40] = sudoku_predictions[::10, 41]  # two equal digits in row 5
    sudoku_task = SudokuTask()
    sudoku_timing = time_runs(lambda: sudoku_task.check(sudoku_inputs, sudoku_predictions), warmup, repeats)

    mazes, paths = generate_mazes(MazeGeneratorConfig(), MAZE_DISTINCT, rng)
    rows = np.arange(maze_count) % MAZE_DISTINCT
    maze_inputs, maze_predictions = mazes[rows], paths[rows].copy()
    maze_predictions[::10][maze_predictions[::10] == PATH] = OPEN  # the path is erased
    maze_timing = time_runs(lambda: MazeTask().check(maze_inputs, maze_predictions), warmup, repeats)

    return [
        {
            "name": name,
            "predictions_per_run": count,
            "repeats": repeats,
            "predictions_per_second": timing.rate(count),
            "load_average": load_average(),
        }
        for name, count, timing in (
            ("sudoku 9x9", sudoku_count, sudoku_timing),
            (f"maze 30x30 ({MAZE_DISTINCT} distinct mazes)", maze_count, maze_timing),
        )
    ]
