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
    square maze from the reference encodings (vocab 11 / vocab 6). Raises DatasetError when the task's
    grid or vocab disagrees with the metadata's seq_len or vocab_size.
    """
    task = _build_task(metadata)
    if task.seq_len != metadata.seq_len or task.vocab_size != metadata.vocab_size:
        raise DatasetError(
            f"task {task.name} with grid {task.grid_shape[0]}x{task.grid_shape[1]} has {task.seq_len} cells and "
            f"vocab {task.vocab_size}, but the metadata says seq_len {metadata.seq_len} and vocab_size "
            f"{metadata.vocab_size}"
        )
    return task


def _build_task(metadata: PuzzleDatasetMetadata) -> PuzzleTask:
    try:
        if metadata.task == "sudoku":
            return SudokuTask(box_shape=tuple(metadata.box_shape or (3, 3)))
        if metadata.task == "maze":
            side = math.isqrt(metadata.seq_len)
            return MazeTask(grid_shape=tuple(metadata.grid_shape or (side, side)))
    except ValueError as error:
        raise DatasetError(str(error)) from None
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


def task_identity(metadata: PuzzleDatasetMetadata) -> tuple:
    """What must match for a model trained on one split to be scored on another: task, grid, boxes, vocab."""
    task = task_from_metadata(metadata)
    return (task.name, task.grid_shape, getattr(task, "box_shape", None), task.vocab_size)


def check_same_task(trained: PuzzleDatasetMetadata, other: PuzzleDatasetMetadata, where: str) -> None:
    """Raise DatasetError naming `where` unless `other` describes the task `trained` describes."""
    expected, found = task_identity(trained), task_identity(other)
    if expected != found:
        raise DatasetError(
            f"{where}: task {_describe(found)} differs from the training data's {_describe(expected)}; "
            "use a dataset of the same task"
        )


def _describe(identity: tuple) -> str:
    name, (height, width), box_shape, vocab = identity
    boxes = f" with {box_shape[0]}x{box_shape[1]} boxes" if box_shape else ""
    return f"{name} {height}x{width}{boxes} (vocab {vocab})"
