"""Sudoku generator and solution counter: uniqueness, minimality, givens range and seeding."""

import numpy as np
import pytest

from dataset.sudoku_generator import count_solutions, generate_puzzles


def brute_force_count(puzzle: np.ndarray, box_shape: tuple[int, int], limit: int = 2) -> int:
    """Count solutions up to `limit` by plain backtracking over the cells in order, with no propagation."""
    box_rows, box_cols = box_shape
    side = box_rows * box_cols
    grid = [int(digit) for digit in puzzle]

    def fits(cell: int, digit: int) -> bool:
        row, column = divmod(cell, side)
        top, left = row - row % box_rows, column - column % box_cols
        for index in range(side):
            if grid[row * side + index] == digit or grid[index * side + column] == digit:
                return False
        for r in range(top, top + box_rows):
            for c in range(left, left + box_cols):
                if grid[r * side + c] == digit:
                    return False
        return True

    def search(cell: int, remaining_limit: int) -> int:
        while cell < side * side and grid[cell]:
            cell += 1
        if cell == side * side:
            return 1
        found = 0
        for digit in range(1, side + 1):
            if fits(cell, digit):
                grid[cell] = digit
                found += search(cell + 1, remaining_limit - found)
                grid[cell] = 0
                if found >= remaining_limit:
                    break
        return found

    return search(0, limit)


def is_solution_of(solution: np.ndarray, puzzle: np.ndarray, box_shape: tuple[int, int]) -> bool:
    """Whether a digit grid fills the puzzle's blanks, keeps its givens and follows the rules."""
    box_rows, box_cols = box_shape
    side = box_rows * box_cols
    grid = solution.reshape(side, side)
    given = puzzle > 0
    units = [grid[r] for r in range(side)] + [grid[:, c] for c in range(side)]
    units += [grid[t : t + box_rows, l : l + box_cols].ravel() for t in range(0, side, box_rows)
              for l in range(0, side, box_cols)]
    rules_kept = all(sorted(unit.tolist()) == list(range(1, side + 1)) for unit in units)
    return rules_kept and (solution[given] == puzzle[given]).all()


@pytest.mark.parametrize("box_shape, count", [((2, 2), 40), ((2, 3), 25)])
def test_generated_small_puzzles_unique_and_minimal(box_shape, count):
    puzzles, solutions = generate_puzzles(box_shape, count, np.random.default_rng(0))
    assert puzzles.shape == solutions.shape == (count, (box_shape[0] * box_shape[1]) ** 2)
    assert puzzles.dtype == np.uint8
    assert len({puzzle.tobytes() for puzzle in puzzles}) == count
    for puzzle, solution in zip(puzzles, solutions):
        assert is_solution_of(solution, puzzle, box_shape)
        assert brute_force_count(puzzle, box_shape) == 1
        for cell in np.flatnonzero(puzzle):
            weaker = puzzle.copy()
            weaker[cell] = 0
            assert brute_force_count(weaker, box_shape) == 2, f"given at cell {cell} is not needed"


def test_generated_9x9_unique_and_minimal():
    box_shape = (3, 3)
    puzzles, solutions = generate_puzzles(box_shape, 4, np.random.default_rng(1))
    for puzzle, solution in zip(puzzles, solutions):
        assert is_solution_of(solution, puzzle, box_shape)
        assert count_solutions(puzzle, box_shape) == 1
        # 17 is the known minimum number of givens of a 9x9 puzzle with a unique solution.
        assert (puzzle > 0).sum() >= 17
        for cell in np.flatnonzero(puzzle):
            weaker = puzzle.copy()
            weaker[cell] = 0
            assert count_solutions(weaker, box_shape) == 2


def test_givens_range_is_respected():
    box_shape = (3, 3)
    puzzles, _ = generate_puzzles(box_shape, 6, np.random.default_rng(2), min_givens=40, max_givens=45)
    givens = (puzzles > 0).sum(axis=1)
    assert (givens >= 40).all()
    assert (givens <= 45).all()
    for puzzle in puzzles:
        assert count_solutions(puzzle, box_shape) == 1


def test_max_givens_discards_large_minimal_puzzles():
    puzzles, _ = generate_puzzles((2, 3), 15, np.random.default_rng(3), max_givens=9)
    assert ((puzzles > 0).sum(axis=1) <= 9).all()


def test_impossible_givens_range_raises():
    # No 4x4 puzzle with 3 or fewer givens has a unique solution (the minimum is 4).
    with pytest.raises(ValueError, match="widen the givens range"):
        generate_puzzles((2, 2), 1, np.random.default_rng(0), max_givens=3)
    with pytest.raises(ValueError, match="invalid"):
        generate_puzzles((2, 2), 1, np.random.default_rng(0), min_givens=10, max_givens=5)


def test_generator_seeded():
    first = generate_puzzles((2, 3), 5, np.random.default_rng(7))
    second = generate_puzzles((2, 3), 5, np.random.default_rng(7))
    other = generate_puzzles((2, 3), 5, np.random.default_rng(8))
    assert (first[0] == second[0]).all()
    assert (first[1] == second[1]).all()
    assert (first[0] != other[0]).any()


def test_count_solutions_known_cases():
    box_shape = (2, 2)
    solution = np.array([1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1])
    assert count_solutions(solution, box_shape) == 1
    # Blanking a 2x2 rectangle of digits {1, 2} that can swap gives exactly two solutions.
    swappable = solution.copy()
    swappable[[0, 1, 8, 9]] = 0
    assert brute_force_count(swappable, box_shape, limit=10) == 2
    assert count_solutions(swappable, box_shape, limit=10) == 2
    assert count_solutions(np.zeros(16), box_shape, limit=1000) == 288
    conflicting = np.zeros(16)
    conflicting[[0, 1]] = 1
    assert count_solutions(conflicting, box_shape) == 0


def test_count_solutions_matches_brute_force_on_partial_grids():
    box_shape = (2, 3)
    rng = np.random.default_rng(4)
    _, solutions = generate_puzzles(box_shape, 10, rng)
    for solution in solutions:
        for keep in (6, 9, 12):
            puzzle = solution.copy()
            puzzle[rng.choice(36, size=36 - keep, replace=False)] = 0
            assert count_solutions(puzzle, box_shape, limit=50) == brute_force_count(puzzle, box_shape, limit=50)


def test_count_solutions_hard_9x9():
    # A 21-given puzzle with a unique solution. Naked and hidden singles alone leave 60 of its cells open.
    puzzle = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."
    digits = np.array([0 if char == "." else int(char) for char in puzzle])
    assert count_solutions(digits, (3, 3)) == 1
    weaker = digits.copy()
    weaker[0] = 0
    assert count_solutions(weaker, (3, 3)) == 2


def test_count_solutions_rejects_wrong_length():
    with pytest.raises(ValueError, match="expected 81"):
        count_solutions(np.zeros(80), (3, 3))
