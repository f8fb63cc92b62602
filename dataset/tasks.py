"""Closed registry of puzzle tasks, and the lookup from dataset metadata to a task."""

import math

from dataset.common import DatasetError, PuzzleDatasetMetadata, PuzzleTask
from dataset.maze import MazeTask
from dataset.sudoku import SudokuTask

TASKS: dict[str, type[PuzzleTask]] = {"sudoku": SudokuTask, "maze": MazeTask}

# Encodings of datasets built by the reference builders, which store no task name.
REFERENCE_SUDOKU_VOCAB = 11
REFERENCE_MAZE_VOCAB = 6


def task_from_metadata(metadata: PuzzleDatasetMetadata) -> PuzzleTask:
    """Build the task that a split's metadata describes.

    Uses the `task`, `grid_shape` and `box_shape` extras when present; otherwise infers Sudoku 9x9 or a
    square maze from the reference encodings (vocab 11 / vocab 6).
    """
    if metadata.task == "sudoku":
        return SudokuTask(box_shape=tuple(metadata.box_shape or (3, 3)))
    if metadata.task == "maze":
        side = math.isqrt(metadata.seq_len)
        return MazeTask(grid_shape=tuple(metadata.grid_shape or (side, side)))
    if metadata.task is not None:
        raise DatasetError(f"unknown task {metadata.task!r}; known tasks: {', '.join(TASKS)}")

    side = math.isqrt(metadata.seq_len)
    if metadata.vocab_size == REFERENCE_SUDOKU_VOCAB and metadata.seq_len == 81:
        return SudokuTask(box_shape=(3, 3))
    if metadata.vocab_size == REFERENCE_MAZE_VOCAB and side * side == metadata.seq_len:
        return MazeTask(grid_shape=(side, side))
    raise DatasetError(
        f"cannot infer the task from vocab_size {metadata.vocab_size} and seq_len {metadata.seq_len}; "
        "add a 'task' field to dataset.json"
    )
