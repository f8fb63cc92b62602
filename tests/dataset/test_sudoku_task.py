"""SudokuTask: encoding, the rule checker, text and plot views, augmentation and --reveal-to."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dataset.common import CsvRows, DatasetError  # noqa: E402
from dataset.sudoku import BLANK_TOKEN, SudokuTask, augment, reveal_givens  # noqa: E402

BOX_SHAPES = [(2, 2), (2, 3), (3, 3)]


def pattern_solution(box_shape: tuple[int, int]) -> np.ndarray:
    """A valid solution from the classic shifted-rows construction, as digits [n, n]."""
    box_rows, box_cols = box_shape
    side = box_rows * box_cols
    rows, columns = np.indices((side, side))
    return (box_cols * (rows % box_rows) + rows // box_rows + columns) % side + 1


def unit_validity(digits: np.ndarray, box_shape: tuple[int, int]) -> tuple[bool, bool, bool]:
    """Whether all rows, all columns and all boxes of a digit grid [n, n] are permutations of 1..n."""
    box_rows, box_cols = box_shape
    side = box_rows * box_cols
    expected = list(range(1, side + 1))
    boxes = digits.reshape(side // box_rows, box_rows, side // box_cols, box_cols).transpose(0, 2, 1, 3)
    rows_valid = all(sorted(row) == expected for row in digits.tolist())
    columns_valid = all(sorted(column) == expected for column in digits.T.tolist())
    boxes_valid = all(sorted(box) == expected for box in boxes.reshape(side, side).tolist())
    return rows_valid, columns_valid, boxes_valid


def is_valid_solution(digits: np.ndarray, box_shape: tuple[int, int]) -> bool:
    return all(unit_validity(digits, box_shape))


def make_pairs(box_shape: tuple[int, int], count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Puzzle/solution token pairs [count, n*n]: relabelled pattern solutions with random blanks."""
    rng = np.random.default_rng(seed)
    base = pattern_solution(box_shape).ravel()
    side = box_shape[0] * box_shape[1]
    solutions = np.stack([rng.permutation(side)[base - 1] + 1 for _ in range(count)]) + 1
    blanks = rng.random(solutions.shape) < 0.6
    puzzles = np.where(blanks, BLANK_TOKEN, solutions)
    return puzzles.astype(np.uint8), solutions.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Construction and encoding


def test_task_attributes_per_box_shape():
    for box_shape, side in [((2, 2), 4), ((2, 3), 6), ((3, 3), 9)]:
        task = SudokuTask(box_shape=box_shape)
        assert task.grid_shape == (side, side)
        assert task.seq_len == side * side
        assert task.vocab_size == side + 2
        assert task.fill_token == 1
        assert task.answer_tokens == tuple(range(2, side + 2))
        assert task.name == "sudoku"
        assert task.metadata_extras() == {"task": "sudoku", "grid_shape": [side, side], "box_shape": list(box_shape)}


def test_task_rejects_unsupported_box_shape():
    with pytest.raises(ValueError, match="not supported"):
        SudokuTask(box_shape=(3, 2))


def test_encode_column_blanks_and_digits():
    task = SudokuTask(box_shape=(2, 2))
    rows = CsvRows(
        path="x.csv",
        sources=["", ""],
        questions=["1.3.0000........", "4321............"],
        answers=["1234341221434321", "4321123434122143"],
        ratings=np.array([-1.0, -1.0]),
        line_numbers=np.array([2, 3]),
    )
    tokens = task.encode_column(rows, "question")
    assert tokens.dtype == np.uint8
    assert tokens[0, :4].tolist() == [2, 1, 4, 1]
    assert (tokens[0, 4:] == 1).all()
    assert tokens[1, :4].tolist() == [5, 4, 3, 2]
    assert task.to_row_string(tokens[0]) == "1.3............."


def test_encode_column_rejects_digit_beyond_side():
    task = SudokuTask(box_shape=(2, 2))
    rows = CsvRows("small.csv", [""], ["5..............."], ["1234341221434321"], np.array([-1.0]), np.array([7]))
    with pytest.raises(DatasetError, match=r"small.csv:7: question contains '5'"):
        task.encode_column(rows, "question")


def test_to_row_string_rejects_pad():
    task = SudokuTask(box_shape=(2, 2))
    with pytest.raises(ValueError, match="blanks and digits"):
        task.to_row_string(np.zeros(16, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Checker


@pytest.mark.parametrize("box_shape", BOX_SHAPES)
def test_check_hand_made_cases(box_shape):
    task = SudokuTask(box_shape=box_shape)
    box_rows, _ = box_shape
    digits = pattern_solution(box_shape)
    solution = (digits + 1).ravel().astype(np.uint8)
    puzzle = solution.copy()
    puzzle[1::3] = BLANK_TOKEN

    # Each broken grid violates exactly the rule it is named after, as unit_validity confirms below.
    row_broken = digits.copy()
    row_broken[[0, 1], 0] = row_broken[[1, 0], 0]  # swap two cells of one column inside one box
    column_broken = digits.copy()
    column_broken[0, [0, 1]] = column_broken[0, [1, 0]]  # swap two cells of one row inside one box
    box_broken = digits.copy()
    box_broken[[0, box_rows]] = box_broken[[box_rows, 0]]  # swap two rows of different bands
    for broken, expected in [(row_broken, (False, True, True)), (column_broken, (True, False, True)),
                             (box_broken, (True, True, False))]:
        assert unit_validity(broken, box_shape) == expected

    # Swapping digits 1 and 2 everywhere gives another valid grid that changes the givens 1 and 2.
    relabelled = np.choose(digits - 1, [2, 1, *range(3, task.side + 1)])
    assert unit_validity(relabelled, box_shape) == (True, True, True)
    blank_left = solution.copy()
    blank_left[1] = BLANK_TOKEN
    pad_left = solution.copy()
    pad_left[1] = 0

    cases = {
        "correct": (solution, True),
        "duplicate in a row": ((row_broken + 1).ravel(), False),
        "duplicate in a column": ((column_broken + 1).ravel(), False),
        "duplicate in a box": ((box_broken + 1).ravel(), False),
        "changed given": ((relabelled + 1).ravel(), False),
        "blank left": (blank_left, False),
        "pad left": (pad_left, False),
        "copy of the input": (puzzle, False),
    }
    predictions = np.stack([grid for grid, _ in cases.values()])
    scores = task.check(np.repeat(puzzle[None], len(cases), axis=0), predictions)
    for (name, (_, expected)), score in zip(cases.items(), scores):
        assert bool(score) == expected, name
    assert scores.dtype == bool
    assert scores.shape == (len(cases),)


def test_check_wrong_box_shape_sees_box_duplicate():
    # A 6x6 grid valid for 3x2 boxes is not valid for 2x3 boxes, so the checker must use 2 rows x 3 columns.
    task = SudokuTask(box_shape=(2, 3))
    transposed_boxes = pattern_solution((3, 2))
    assert not is_valid_solution(transposed_boxes, (2, 3))
    grid = (transposed_boxes + 1).ravel()[None]
    assert not task.check(np.full_like(grid, BLANK_TOKEN), grid)[0]


@pytest.mark.parametrize("box_shape", BOX_SHAPES)
def test_check_matches_plain_checker_on_perturbed_grids(box_shape):
    task = SudokuTask(box_shape=box_shape)
    side = task.side
    rng = np.random.default_rng(3)
    _, solutions = make_pairs(box_shape, count=600, seed=3)
    digits = solutions.astype(np.int64) - 1
    # A third stay valid, a third get one cell overwritten (sometimes by the same digit), a third get two
    # cells swapped (sometimes of equal digits).
    for index, grid in enumerate(digits):
        first, second = rng.choice(side * side, size=2, replace=False)
        if index % 3 == 1:
            grid[first] = rng.integers(1, side + 1)
        elif index % 3 == 2:
            grid[[first, second]] = grid[[second, first]]
    expected = np.array([is_valid_solution(grid.reshape(side, side), box_shape) for grid in digits])
    assert 0.3 < expected.mean() < 0.9
    blanks = np.full(digits.shape, BLANK_TOKEN)
    assert (task.check(blanks, digits + 1) == expected).all()


def test_check_rejects_shape_mismatch():
    task = SudokuTask(box_shape=(2, 2))
    with pytest.raises(ValueError, match=r"\[N, 16\]"):
        task.check(np.ones((2, 16)), np.ones((2, 15)))


def test_find_violation_names_the_problem():
    task = SudokuTask(box_shape=(3, 3))
    solution = (pattern_solution((3, 3)) + 1).ravel()
    puzzle = np.full(81, BLANK_TOKEN)
    puzzle[4] = solution[4]
    assert task.find_violation(puzzle, solution) is None

    blank = solution.copy()
    blank[10] = BLANK_TOKEN
    assert task.find_violation(puzzle, blank) == "has a blank at row 2, column 2; expected a digit 1-9"

    changed = solution.copy()
    changed[4] = 2 if solution[4] != 2 else 3
    assert "where the question gives" in task.find_violation(puzzle, changed)
    assert "row 1, column 5" in task.find_violation(puzzle, changed)

    duplicate = solution.copy()
    duplicate[80] = duplicate[79]
    assert task.find_violation(puzzle, duplicate) == f"has digit {duplicate[79] - 1} twice in row 9"


# ---------------------------------------------------------------------------------------------
# Views


def test_to_text_4x4_layout():
    task = SudokuTask(box_shape=(2, 2))
    grid = np.array([2, 1, 4, 5, 4, 5, 2, 3, 3, 2, 5, 4, 5, 4, 3, 1], dtype=np.uint8)
    assert task.to_text(grid) == "1 . | 3 4\n3 4 | 1 2\n----+----\n2 1 | 4 3\n4 3 | 2 ."


def test_to_text_6x6_box_separators():
    task = SudokuTask(box_shape=(2, 3))
    lines = task.to_text(np.full(36, BLANK_TOKEN)).splitlines()
    assert len(lines) == 8
    assert lines[0] == ". . . | . . ."
    assert lines[2] == "------+------"
    assert lines[5] == "------+------"


def test_render_colours_and_wrong_cells():
    task = SudokuTask(box_shape=(2, 2))
    labels = (pattern_solution((2, 2)) + 1).ravel()
    inputs = labels.copy()
    inputs[8:] = BLANK_TOKEN
    prediction = labels.copy()
    prediction[15] = labels[14]
    prediction[14] = BLANK_TOKEN

    figure, ax = plt.subplots()
    task.render(ax, inputs, prediction, labels)
    texts = ax.texts
    colours = [text.get_color() for text in texts]
    assert len(texts) == 15
    assert colours.count("black") == 8
    assert len(ax.patches) == 2
    thick = [line for line in ax.lines if line.get_linewidth() > 1]
    assert len(thick) == 6
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# Augmentation and reveal


@pytest.mark.parametrize("box_shape", BOX_SHAPES)
def test_augment_keeps_pairs_valid(box_shape):
    task = SudokuTask(box_shape=box_shape)
    puzzles, solutions = make_pairs(box_shape, count=20, seed=1)
    num_aug = 7
    aug_inputs, aug_labels = augment(task, puzzles, solutions, num_aug, np.random.default_rng(0))

    assert aug_inputs.shape == (20 * (num_aug + 1), task.seq_len)
    assert aug_inputs.dtype == np.uint8
    assert (aug_inputs[:: num_aug + 1] == puzzles).all()
    assert (aug_labels[:: num_aug + 1] == solutions).all()
    assert task.check(aug_inputs, aug_labels).all()
    for grid in aug_labels:
        assert is_valid_solution(grid.reshape(task.grid_shape) - 1, box_shape)
    # Blanks move with the cells, so each variant keeps its puzzle's number of givens.
    givens = (aug_inputs != BLANK_TOKEN).sum(axis=1).reshape(20, num_aug + 1)
    assert (givens == givens[:, :1]).all()


@pytest.mark.parametrize("box_shape", BOX_SHAPES)
def test_augment_changes_grids(box_shape):
    task = SudokuTask(box_shape=box_shape)
    puzzles, solutions = make_pairs(box_shape, count=10, seed=2)
    num_aug = 5
    aug_inputs, aug_labels = augment(task, puzzles, solutions, num_aug, np.random.default_rng(0))
    groups = aug_labels.reshape(10, num_aug + 1, task.seq_len)
    changed = (groups[:, 1:] != groups[:, :1]).any(axis=2)
    assert changed.mean() > 0.9
    distinct = {grid.tobytes() for grid in aug_inputs}
    assert len(distinct) > 0.9 * len(aug_inputs)


def marked_row_positions(task: SudokuTask, num_aug: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Augment a puzzle whose first row is PAD (which augmentation never relabels) and find that row again.

    Returns, per variant, the output row filled with PAD (-1 if none) and the output column filled with
    PAD (-1 if none). A transposed variant has a PAD column instead of a PAD row.
    """
    side = task.side
    marked = np.full((1, side * side), BLANK_TOKEN, dtype=np.uint8)
    marked[0, :side] = 0
    solution = (pattern_solution(task.box_shape) + 1).reshape(1, -1).astype(np.uint8)
    inputs, _ = augment(task, marked, solution, num_aug, np.random.default_rng(seed))
    pads = inputs[1:].reshape(num_aug, side, side) == 0
    full_rows = pads.all(axis=2)
    full_columns = pads.all(axis=1)
    rows = np.where(full_rows.any(axis=1), full_rows.argmax(axis=1), -1)
    columns = np.where(full_columns.any(axis=1), full_columns.argmax(axis=1), -1)
    return rows, columns


def test_augment_transposes_square_boxes():
    task = SudokuTask(box_shape=(3, 3))
    rows, columns = marked_row_positions(task, num_aug=400, seed=5)
    assert ((rows >= 0) != (columns >= 0)).all()
    assert 0.35 < (columns >= 0).mean() < 0.65
    # Band and row-in-band shuffles together can move the first row to any row.
    assert set(rows[rows >= 0].tolist()) == set(range(9))
    assert set(columns[columns >= 0].tolist()) == set(range(9))


def test_augment_never_transposes_2x3_boxes():
    task = SudokuTask(box_shape=(2, 3))
    rows, columns = marked_row_positions(task, num_aug=200, seed=5)
    assert (columns == -1).all()
    assert set(rows.tolist()) == set(range(6))


def test_augment_same_seed_same_bytes():
    task = SudokuTask(box_shape=(3, 3))
    puzzles, solutions = make_pairs((3, 3), count=5, seed=4)
    first = augment(task, puzzles, solutions, 9, np.random.default_rng(11))
    second = augment(task, puzzles, solutions, 9, np.random.default_rng(11))
    other = augment(task, puzzles, solutions, 9, np.random.default_rng(12))
    assert all((a == b).all() for a, b in zip(first, second))
    assert (first[0] != other[0]).any()


def test_augment_zero_variants_returns_originals():
    task = SudokuTask(box_shape=(2, 2))
    puzzles, solutions = make_pairs((2, 2), count=4, seed=0)
    inputs, labels = augment(task, puzzles, solutions, 0, np.random.default_rng(0))
    assert (inputs == puzzles).all()
    assert (labels == solutions).all()


def test_reveal_givens_reaches_target():
    task = SudokuTask(box_shape=(3, 3))
    puzzles, solutions = make_pairs((3, 3), count=50, seed=6)
    puzzles[0] = solutions[0]
    before = (puzzles != BLANK_TOKEN).sum(axis=1)
    target = 45
    revealed = reveal_givens(puzzles, solutions, target, np.random.default_rng(0))

    after = (revealed != BLANK_TOKEN).sum(axis=1)
    assert (after == np.maximum(before, target)).all()
    assert task.check(revealed, solutions).all()
    kept = puzzles != BLANK_TOKEN
    assert (revealed[kept] == puzzles[kept]).all()
    assert revealed.dtype == puzzles.dtype
