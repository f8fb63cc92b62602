"""Metrics of predicted grids on hand-made cases, with a minimal task so the numbers are easy to check."""

import numpy as np
import pytest

from dataset.common import PuzzleTask
from evaluation.metrics import score_predictions, wilson_interval
from models.head import IGNORE_LABEL


class RowSumTask(PuzzleTask):
    """Toy task: 4 cells, token 1 marks a cell to fill; a prediction is valid when its tokens sum to 14."""

    name = "row_sum"
    grid_shape = (1, 4)
    vocab_size = 6
    fill_token = 1
    answer_tokens = (2, 3, 4, 5)

    def check(self, inputs, predictions):
        return predictions.sum(axis=1) == 14

    def to_row_string(self, grid):
        return "".join(map(str, grid))

    def to_text(self, grid):
        return self.to_row_string(grid)

    def render(self, ax, inputs, grid, labels=None):
        raise NotImplementedError


TASK = RowSumTask()
INPUTS = np.array([[2, 1, 1, 3], [2, 1, 1, 3]])
LABELS = np.array([[2, 4, 5, 3], [2, 4, 5, 3]])


def test_exact_solution_scores_one():
    scores = score_predictions(TASK, INPUTS, LABELS, LABELS)
    for name in ("exact_accuracy", "token_accuracy", "cell_accuracy"):
        assert scores[name].tolist() == [1.0, 1.0]


def test_copy_input_baseline():
    scores = score_predictions(TASK, INPUTS, LABELS, INPUTS)
    assert scores["exact_accuracy"].tolist() == [0.0, 0.0]
    assert scores["token_accuracy"].tolist() == [0.0, 0.0]
    # The givens are right: 2 of 4 cells, which is what the reference's "accuracy" rewards.
    assert scores["cell_accuracy"].tolist() == [0.5, 0.5]


def test_one_wrong_cell_to_fill():
    predictions = np.array([[2, 4, 4, 3], [2, 5, 4, 3]])
    scores = score_predictions(TASK, INPUTS, LABELS, predictions)
    assert scores["exact_accuracy"].tolist() == [0.0, 0.0]
    assert scores["token_accuracy"].tolist() == [0.5, 0.0]
    assert scores["cell_accuracy"].tolist() == [0.75, 0.5]
    # The second prediction differs from the label but passes the task's checker.
    assert scores["valid_accuracy"].tolist() == [0.0, 1.0]


def test_ignored_cells_do_not_count():
    labels = LABELS.copy()
    labels[:, 2] = IGNORE_LABEL
    predictions = np.array([[2, 4, 0, 3], [2, 2, 0, 3]])
    scores = score_predictions(TASK, INPUTS, labels, predictions)
    assert scores["exact_accuracy"].tolist() == [1.0, 0.0]
    assert scores["token_accuracy"].tolist() == [1.0, 0.0]


def test_wilson_interval_bounds():
    low, high = wilson_interval(0, 100)
    assert low == 0.0
    assert 0.0 < high < 0.05
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.404, abs=1e-3)
    assert high == pytest.approx(0.596, abs=1e-3)
