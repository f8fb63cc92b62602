"""Sudoku as a puzzle task: token encoding, the vectorised rule checker, text and plot views, and augmentation.

Tokens follow the TRM/HRM reference: PAD 0, blank 1 and digit d -> d + 1, so a 9x9 grid has vocab 11.
Grids are flat in row-major order. Box shape (box_rows, box_cols) means boxes box_rows rows tall and
box_cols columns wide; the grid side is n = box_rows * box_cols.
"""

from typing import Any

import numpy as np

from dataset.common import CsvRows, PuzzleTask, strings_to_array
from dataset.sudoku_generator import SUPPORTED_BOX_SHAPES

PAD_TOKEN = 0
BLANK_TOKEN = 1
DIGIT_OFFSET = 1
"""Token of digit d is d + DIGIT_OFFSET."""

AUGMENT_CHUNK = 1 << 16
"""Augmented grids gathered per step, which bounds the int64 index arrays to about 40 MB for 9x9."""


class SudokuTask(PuzzleTask):
    """Sudoku with n x n grids of n boxes; supported box shapes are 2x2, 2x3 and 3x3."""

    name = "sudoku"

    def __init__(self, box_shape: tuple[int, int] = (3, 3)):
        box_shape = (int(box_shape[0]), int(box_shape[1]))
        if box_shape not in SUPPORTED_BOX_SHAPES:
            raise ValueError(f"box shape {box_shape} is not supported; choose one of {SUPPORTED_BOX_SHAPES}")
        self.box_shape = box_shape
        self.side = box_shape[0] * box_shape[1]
        self.grid_shape = (self.side, self.side)
        self.vocab_size = self.side + 2
        self.fill_token = BLANK_TOKEN
        self.answer_tokens = tuple(range(DIGIT_OFFSET + 1, DIGIT_OFFSET + self.side + 1))
        self.units = _unit_cells(box_shape)

    def metadata_extras(self) -> dict[str, Any]:
        return {**super().metadata_extras(), "box_shape": list(self.box_shape)}

    def is_digit(self, tokens: np.ndarray) -> np.ndarray:
        """Mark the digit tokens (givens in a puzzle, filled cells in a solution): any shape -> bool."""
        tokens = np.asarray(tokens)
        return (tokens > DIGIT_OFFSET) & (tokens <= DIGIT_OFFSET + self.side)

    # -----------------------------------------------------------------------------------------
    # Checking

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Decide which predictions solve their puzzles.

        inputs, predictions: [N, n*n] integer token ids. A prediction is correct when every cell contains
        a digit, every row, column and box contains each digit once, and every given of the input is kept.
        Returns bool [N].
        """
        inputs, predictions = np.asarray(inputs), np.asarray(predictions)
        if inputs.shape != predictions.shape or inputs.ndim != 2 or inputs.shape[1] != self.seq_len:
            raise ValueError(
                f"inputs {inputs.shape} and predictions {predictions.shape} must both be [N, {self.seq_len}]"
            )
        # Digit d becomes bit d-1 and any other token becomes 0. A unit of n cells ORs to all n bits
        # exactly when it contains every digit once, so a blank or PAD cell also fails its units.
        bit_of_token = np.zeros(self.vocab_size + 1, dtype=np.uint16)
        bit_of_token[list(self.answer_tokens)] = 1 << np.arange(self.side, dtype=np.uint16)
        bits = bit_of_token[np.clip(predictions, 0, self.vocab_size)]  # [N, n*n]
        unit_masks = np.bitwise_or.reduce(bits[:, self.units], axis=2)  # [N, 3n]
        units_valid = (unit_masks == (1 << self.side) - 1).all(axis=1)

        givens_kept = (~self.is_digit(inputs) | (predictions == inputs)).all(axis=1)
        return units_valid & givens_kept

    def find_violation(self, puzzle: np.ndarray, solution: np.ndarray) -> str | None:
        """Describe the first reason why `solution` does not solve `puzzle`, for error messages.

        puzzle, solution: [n*n] token ids. Returns None when the solution is correct.
        """
        side = self.side
        for cell in np.flatnonzero(~self.is_digit(solution)):
            return f"has a blank at {_cell_name(cell, side)}; expected a digit 1-{side}"
        for cell in np.flatnonzero(self.is_digit(puzzle) & (solution != puzzle)):
            return (
                f"puts {solution[cell] - DIGIT_OFFSET} at {_cell_name(cell, side)} "
                f"where the question gives {puzzle[cell] - DIGIT_OFFSET}"
            )
        for unit_index, cells in enumerate(self.units):
            digits, counts = np.unique(solution[cells], return_counts=True)
            if (counts > 1).any():
                digit = int(digits[counts > 1][0]) - DIGIT_OFFSET
                return f"has digit {digit} twice in {self._unit_name(unit_index)}"
        return None

    def _unit_name(self, unit_index: int) -> str:
        kind, index = divmod(unit_index, self.side)
        if kind == 0:
            return f"row {index + 1}"
        if kind == 1:
            return f"column {index + 1}"
        box_rows, box_cols = self.box_shape
        top = (index // (self.side // box_cols)) * box_rows
        left = (index % (self.side // box_cols)) * box_cols
        return f"the box of rows {top + 1}-{top + box_rows}, columns {left + 1}-{left + box_cols}"

    # -----------------------------------------------------------------------------------------
    # Encoding and views

    def encode_column(self, rows: CsvRows, column: str) -> np.ndarray:
        """Convert the `question` or `answer` strings to token ids, uint8 [N, n*n].

        `.` and `0` are blanks and `1`..`n` are digits. Raises DatasetError naming the line of a wrong
        length or a character outside that alphabet.
        """
        alphabet = "." + "123456789"[: self.side] + "0"
        codes = strings_to_array(rows, column, self.seq_len, alphabet)
        codes[codes == len(alphabet) - 1] = 0
        return codes + BLANK_TOKEN

    def to_row_string(self, grid: np.ndarray) -> str:
        grid = np.asarray(grid)
        if grid.shape != (self.seq_len,) or not (self.is_digit(grid) | (grid == BLANK_TOKEN)).all():
            raise ValueError(f"expected {self.seq_len} tokens of blanks and digits, got {grid.tolist()}")
        return "".join("." if token == BLANK_TOKEN else str(token - DIGIT_OFFSET) for token in grid.tolist())

    def to_text(self, grid: np.ndarray) -> str:
        """Render one grid [n*n] as rows of digits, `.` for a blank, `?` for PAD or an invalid token."""
        box_rows, box_cols = self.box_shape
        cells = np.asarray(grid).reshape(self.grid_shape)
        lines = []
        for row in range(self.side):
            if row and row % box_rows == 0:
                lines.append("-+-".join(["-" * (2 * box_cols - 1)] * (self.side // box_cols)))
            boxes = [
                " ".join(_cell_text(token, self.side) for token in cells[row, left : left + box_cols])
                for left in range(0, self.side, box_cols)
            ]
            lines.append(" | ".join(boxes))
        return "\n".join(lines)

    def render(self, ax: Any, inputs: np.ndarray, grid: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Draw one grid on matplotlib axes: givens in black, filled digits in blue, wrong cells shaded red.

        inputs, grid, labels: [n*n] token ids. A cell is wrong when `grid` differs from `labels` there.
        """
        from matplotlib.patches import Rectangle

        side = self.side
        box_rows, box_cols = self.box_shape
        inputs, grid = np.asarray(inputs), np.asarray(grid)
        ax.set_xlim(0, side)
        ax.set_ylim(side, 0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])

        if labels is not None:
            for cell in np.flatnonzero(grid != np.asarray(labels)):
                row, column = divmod(int(cell), side)
                ax.add_patch(Rectangle((column, row), 1, 1, facecolor="#f4a3a3", edgecolor="none"))
        for index in range(side + 1):
            ax.axhline(index, color="black", linewidth=2.5 if index % box_rows == 0 else 0.6)
            ax.axvline(index, color="black", linewidth=2.5 if index % box_cols == 0 else 0.6)

        given = self.is_digit(inputs)
        for cell in np.flatnonzero(self.is_digit(grid)):
            row, column = divmod(int(cell), side)
            color = "black" if given[cell] else "tab:blue"
            ax.text(column + 0.5, row + 0.5, str(grid[cell] - DIGIT_OFFSET), ha="center", va="center", color=color)


def _unit_cells(box_shape: tuple[int, int]) -> np.ndarray:
    """Cell indices of every row, column and box, in that order: int64 [3n, n]."""
    box_rows, box_cols = box_shape
    side = box_rows * box_cols
    cells = np.arange(side * side).reshape(side, side)
    boxes = cells.reshape(side // box_rows, box_rows, side // box_cols, box_cols).transpose(0, 2, 1, 3)
    return np.concatenate([cells, cells.T, boxes.reshape(side, side)])


def _cell_name(cell: int, side: int) -> str:
    row, column = divmod(int(cell), side)
    return f"row {row + 1}, column {column + 1}"


def _cell_text(token: int, side: int) -> str:
    if token == BLANK_TOKEN:
        return "."
    if DIGIT_OFFSET < token <= DIGIT_OFFSET + side:
        return str(token - DIGIT_OFFSET)
    return "?"


# ---------------------------------------------------------------------------------------------
# Dataset transforms


def reveal_givens(
    inputs: np.ndarray, labels: np.ndarray, min_givens: int, rng: np.random.Generator
) -> np.ndarray:
    """Copy random cells of the solution into each puzzle until it has at least `min_givens` givens.

    inputs, labels: [N, n*n] token ids of puzzles and their solutions. Puzzles that already have
    `min_givens` givens come back unchanged. Returns the new inputs, same shape and dtype.
    """
    is_given = inputs > BLANK_TOKEN
    missing = np.maximum(min_givens - is_given.sum(axis=1), 0)  # [N]

    # Rank the blank cells of each puzzle in random order. Givens sort last, so they are never picked.
    keys = rng.random(inputs.shape)
    keys[is_given] = 2.0
    rank = keys.argsort(axis=1).argsort(axis=1)
    return np.where(rank < missing[:, None], labels, inputs).astype(inputs.dtype)


def augment(
    task: SudokuTask, inputs: np.ndarray, labels: np.ndarray, num_aug: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Make `num_aug` symmetry variants of each puzzle, applying the same transform to puzzle and solution.

    A variant relabels the digits, shuffles the bands and the rows inside each band, shuffles the stacks
    and the columns inside each stack, and transposes with probability 1/2 when boxes are square.
    inputs, labels: [N, n*n] token ids. Returns (inputs, labels) [N * (num_aug + 1), n*n] uint8 in groups
    of num_aug + 1 rows: the original first, then its variants.
    """
    num_puzzles, num_cells = inputs.shape
    group_size = num_aug + 1
    out_inputs = np.empty((num_puzzles * group_size, num_cells), dtype=np.uint8)
    out_labels = np.empty_like(out_inputs)
    out_inputs[::group_size] = inputs
    out_labels[::group_size] = labels
    if num_aug == 0:
        return out_inputs, out_labels

    num_variants = num_puzzles * num_aug
    cell_orders, token_maps = _draw_variants(task, num_variants, rng)
    for start in range(0, num_variants, AUGMENT_CHUNK):
        variants = np.arange(start, min(start + AUGMENT_CHUNK, num_variants))
        sources = variants // num_aug
        targets = sources * group_size + 1 + variants % num_aug
        cell_order = _cell_indices(task, cell_orders, variants)  # [chunk, n*n]
        token_map = token_maps[variants]  # [chunk, vocab]
        for source, target in ((inputs, out_inputs), (labels, out_labels)):
            moved = np.take_along_axis(source[sources], cell_order, axis=1)
            target[targets] = np.take_along_axis(token_map, moved, axis=1)
    return out_inputs, out_labels


def _draw_variants(
    task: SudokuTask, count: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Draw every random choice of `count` variants up front, so the output does not depend on chunking.

    Returns the row and column orders plus transpose flags, and the token maps uint8 [count, vocab].
    """
    box_rows, box_cols = task.box_shape
    num_bands, num_stacks = task.side // box_rows, task.side // box_cols

    def permutations(*shape: int) -> np.ndarray:
        return rng.permuted(np.broadcast_to(np.arange(shape[-1], dtype=np.uint8), (count, *shape)), axis=-1)

    row_order = permutations(num_bands)[:, :, None] * box_rows + permutations(num_bands, box_rows)
    column_order = permutations(num_stacks)[:, :, None] * box_cols + permutations(num_stacks, box_cols)
    # Transposing a 6x6 grid would turn 2x3 boxes into 3x2 boxes, which is a different puzzle shape.
    if box_rows == box_cols:
        transpose = rng.random(count) < 0.5
    else:
        transpose = np.zeros(count, dtype=bool)

    token_maps = np.empty((count, task.vocab_size), dtype=np.uint8)
    token_maps[:, PAD_TOKEN] = PAD_TOKEN
    token_maps[:, BLANK_TOKEN] = BLANK_TOKEN
    token_maps[:, DIGIT_OFFSET + 1 :] = permutations(task.side) + DIGIT_OFFSET + 1
    orders = {
        "rows": row_order.reshape(count, task.side),
        "columns": column_order.reshape(count, task.side),
        "transpose": transpose,
    }
    return orders, token_maps


def _cell_indices(task: SudokuTask, orders: dict[str, np.ndarray], variants: np.ndarray) -> np.ndarray:
    """Source cell of every output cell for the chosen variants: int64 [len(variants), n*n]."""
    side = task.side
    rows = orders["rows"][variants].astype(np.int64)
    columns = orders["columns"][variants].astype(np.int64)
    cells = rows[:, :, None] * side + columns[:, None, :]  # [chunk, n, n]
    transpose = orders["transpose"][variants]
    cells[transpose] = cells[transpose].transpose(0, 2, 1)
    return cells.reshape(len(variants), side * side)
