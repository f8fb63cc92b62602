"""Metrics of predicted grids, computed the same way for every architecture from decoded predictions.

Per example (then averaged over examples):
    exact_accuracy   every supervised cell right (the number papers report)
    token_accuracy   fraction right among the cells to fill (Sudoku blanks, maze open cells); 1 when none
    cell_accuracy    fraction right among all supervised cells, givens included (the reference's "accuracy")
    valid_accuracy   the task's rule checker accepts the prediction (e.g. a different shortest maze path)
"""

import math

import numpy as np

from dataset.common import PuzzleTask
from models.head import IGNORE_LABEL


def score_predictions(task: PuzzleTask, inputs: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> dict[str, np.ndarray]:
    """Score a batch: inputs, labels (IGNORE_LABEL on unsupervised cells), predictions [N, L] -> float [N] each."""
    supervised = labels != IGNORE_LABEL
    correct = (predictions == labels) & supervised
    to_fill = task.cells_to_fill(inputs) & supervised

    supervised_count = supervised.sum(1)
    fill_count = to_fill.sum(1)
    fill_correct = (correct & to_fill).sum(1)
    return {
        "exact_accuracy": (correct.sum(1) == supervised_count).astype(np.float64),
        "token_accuracy": np.where(fill_count > 0, fill_correct / np.maximum(fill_count, 1), 1.0),
        "cell_accuracy": correct.sum(1) / np.maximum(supervised_count, 1),
        "valid_accuracy": task.check(inputs, predictions).astype(np.float64),
    }


def wilson_interval(successes: float, count: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (well-behaved at 0 and 1, unlike the normal one)."""
    if count == 0:
        return (0.0, 1.0)
    p = successes / count
    denominator = 1 + z * z / count
    centre = (p + z * z / (2 * count)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
    return (max(0.0, centre - half_width), min(1.0, centre + half_width))
