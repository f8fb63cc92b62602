"""Offline generator of Sudoku puzzles with exactly one solution, and the solution counter it relies on.

A puzzle is made from a random complete grid by blanking cells in random order, keeping each blank only
while the solution stays unique. Stopping early gives more givens (easier puzzles); going through every
cell gives a minimal puzzle, in which no given can be removed without losing uniqueness.

Grids here are flat lists or arrays of n*n digits in row-major order, 0 for a blank and 1..n for a digit.
The solver keeps one bitmask of candidate digits per cell (bit d-1 for digit d) and combines constraint
propagation (naked and hidden singles) with branching on the cell that has the fewest candidates.
"""

import functools
from dataclasses import dataclass

import numpy as np

SUPPORTED_BOX_SHAPES = ((2, 2), (2, 3), (3, 3))
MAX_ATTEMPTS_PER_PUZZLE = 1000
"""Complete grids tried for one puzzle before giving up on a givens range that is too narrow."""


@dataclass(frozen=True)
class _Geometry:
    """Cell tables of one grid size: the units (rows, columns, boxes) and each cell's peers."""

    side: int
    num_cells: int
    all_digits: int  # bitmask with the n digit bits set
    units: tuple[tuple[int, ...], ...]
    peers: tuple[tuple[int, ...], ...]
    unit_ids: tuple[tuple[int, int, int], ...]  # per cell: its row, column and box unit index
    bit_counts: tuple[int, ...]  # popcount of every candidate mask


@functools.cache
def _geometry(box_shape: tuple[int, int]) -> _Geometry:
    if tuple(box_shape) not in SUPPORTED_BOX_SHAPES:
        raise ValueError(f"box shape {box_shape} is not supported; choose one of {SUPPORTED_BOX_SHAPES}")
    box_rows, box_cols = box_shape
    side = box_rows * box_cols
    rows = [tuple(r * side + c for c in range(side)) for r in range(side)]
    columns = [tuple(r * side + c for r in range(side)) for c in range(side)]
    boxes = [
        tuple((top + r) * side + left + c for r in range(box_rows) for c in range(box_cols))
        for top in range(0, side, box_rows)
        for left in range(0, side, box_cols)
    ]
    units = tuple(rows + columns + boxes)

    unit_ids, peers = [], []
    for cell in range(side * side):
        row, column = divmod(cell, side)
        box = (row // box_rows) * (side // box_cols) + column // box_cols
        unit_ids.append((row, side + column, 2 * side + box))
        peer_set = set(rows[row]) | set(columns[column]) | set(boxes[box])
        peer_set.discard(cell)
        peers.append(tuple(sorted(peer_set)))

    return _Geometry(
        side=side,
        num_cells=side * side,
        all_digits=(1 << side) - 1,
        units=units,
        peers=tuple(peers),
        unit_ids=tuple(unit_ids),
        bit_counts=tuple(bin(mask).count("1") for mask in range(1 << side)),
    )


# ---------------------------------------------------------------------------------------------
# Constraint propagation on candidate bitmasks


def _initial_candidates(grid: list[int], geometry: _Geometry) -> list[int] | None:
    """Build the candidate masks of a grid with all naked and hidden singles applied.

    Returns None when the grid has no solution.
    """
    used = [0] * len(geometry.units)
    candidates = [geometry.all_digits] * geometry.num_cells
    for cell, digit in enumerate(grid):
        if digit:
            bit = 1 << (digit - 1)
            for unit in geometry.unit_ids[cell]:
                if used[unit] & bit:
                    return None
                used[unit] |= bit
            candidates[cell] = bit

    for cell, digit in enumerate(grid):
        if not digit:
            row, column, box = geometry.unit_ids[cell]
            mask = geometry.all_digits & ~(used[row] | used[column] | used[box])
            if not mask:
                return None
            candidates[cell] = mask

    # Singles among the blank cells were computed from the givens but not yet removed from their peers.
    for cell, digit in enumerate(grid):
        mask = candidates[cell]
        if not digit and not mask & (mask - 1) and not _place(candidates, cell, mask, geometry):
            return None
    if not _place_hidden_singles(candidates, geometry):
        return None
    return candidates


def _place(candidates: list[int], cell: int, bit: int, geometry: _Geometry) -> bool:
    """Put digit `bit` in `cell` and remove it from the peers, following any naked singles this creates.

    Returns False on a contradiction (a cell left without candidates), and `candidates` is then invalid.
    """
    pending = [(cell, bit)]
    peers = geometry.peers
    while pending:
        cell, bit = pending.pop()
        candidates[cell] = bit
        for peer in peers[cell]:
            mask = candidates[peer]
            if mask & bit:
                mask ^= bit
                if not mask:
                    return False
                candidates[peer] = mask
                if not mask & (mask - 1):
                    pending.append((peer, mask))
    return True


def _place_hidden_singles(candidates: list[int], geometry: _Geometry) -> bool:
    """Place every digit that fits in only one cell of a unit until none is left. Returns False on a contradiction."""
    all_digits = geometry.all_digits
    changed = True
    while changed:
        changed = False
        for unit in geometry.units:
            seen_once = seen_twice = 0
            for cell in unit:
                mask = candidates[cell]
                seen_twice |= seen_once & mask
                seen_once |= mask
            if seen_once != all_digits:
                return False
            hidden = seen_once & ~seen_twice
            if not hidden:
                continue
            for cell in unit:
                mask = candidates[cell] & hidden
                if not mask or mask == candidates[cell]:
                    continue
                if mask & (mask - 1) or not _place(candidates, cell, mask, geometry):
                    return False
                changed = True
    return True


def _most_constrained_cell(candidates: list[int], geometry: _Geometry) -> int:
    """Index of an undecided cell with the fewest candidates, or -1 when every cell is decided."""
    best_cell, best_count = -1, geometry.side + 1
    bit_counts = geometry.bit_counts
    for cell, mask in enumerate(candidates):
        if mask & (mask - 1):
            count = bit_counts[mask]
            if count < best_count:
                best_cell, best_count = cell, count
                if count == 2:
                    break
    return best_cell


def _count_from(candidates: list[int], geometry: _Geometry, limit: int) -> int:
    """Count solutions reachable from propagated candidates, stopping once `limit` are found."""
    cell = _most_constrained_cell(candidates, geometry)
    if cell < 0:
        return 1
    found = 0
    remaining = candidates[cell]
    while remaining:
        bit = remaining & -remaining
        remaining ^= bit
        branch = candidates.copy()
        if _place(branch, cell, bit, geometry) and _place_hidden_singles(branch, geometry):
            found += _count_from(branch, geometry, limit - found)
            if found >= limit:
                break
    return found


def count_solutions(grid: np.ndarray | list[int], box_shape: tuple[int, int], limit: int = 2) -> int:
    """Count the solutions of a puzzle, stopping at `limit` (so 2 means "more than one").

    grid: [n*n] digits, 0 for a blank. Givens that break the rules give 0.
    """
    geometry = _geometry(tuple(box_shape))
    cells = [int(digit) for digit in grid]
    if len(cells) != geometry.num_cells:
        raise ValueError(f"grid has {len(cells)} cells, expected {geometry.num_cells} for box shape {box_shape}")
    candidates = _initial_candidates(cells, geometry)
    if candidates is None:
        return 0
    return _count_from(candidates, geometry, limit)


# ---------------------------------------------------------------------------------------------
# Generation


def _random_solution_from(candidates: list[int], geometry: _Geometry, rng: np.random.Generator) -> list[int] | None:
    """Complete propagated candidates into one solution, trying digits in random order. Returns None if impossible."""
    cell = _most_constrained_cell(candidates, geometry)
    if cell < 0:
        return [mask.bit_length() for mask in candidates]
    mask = candidates[cell]
    bits = [1 << digit for digit in range(geometry.side) if mask >> digit & 1]
    for index in rng.permutation(len(bits)):
        branch = candidates.copy()
        if _place(branch, cell, bits[index], geometry) and _place_hidden_singles(branch, geometry):
            solution = _random_solution_from(branch, geometry, rng)
            if solution is not None:
                return solution
    return None


def _another_solution_exists(puzzle: list[int], cell: int, digit: int, geometry: _Geometry) -> bool:
    """Whether the puzzle has a solution with a digit other than `digit` in the blank `cell`.

    When the puzzle with `digit` in that cell has a unique solution, the result decides whether blanking
    the cell broke uniqueness. This is cheaper than counting, because no branch has to reach the known solution.
    """
    candidates = _initial_candidates(puzzle, geometry)
    if candidates is None:
        return False
    excluded = candidates[cell] & ~(1 << (digit - 1))
    if not excluded:
        return False
    candidates[cell] = excluded
    if not excluded & (excluded - 1) and not _place(candidates, cell, excluded, geometry):
        return False
    if not _place_hidden_singles(candidates, geometry):
        return False
    return _count_from(candidates, geometry, limit=1) > 0


def _blank_cells(solution: list[int], geometry: _Geometry, rng: np.random.Generator, min_givens: int) -> list[int]:
    """Blank cells of a solution in random order while the solution stays unique, down to `min_givens` givens.

    With min_givens 0 every cell is tried once, which yields a minimal puzzle: blanking a cell that was
    kept would still break uniqueness later, since removing givens only adds solutions.
    """
    puzzle = solution.copy()
    givens = geometry.num_cells
    for cell in rng.permutation(geometry.num_cells):
        if givens <= min_givens:
            break
        digit = puzzle[cell]
        puzzle[cell] = 0
        if _another_solution_exists(puzzle, int(cell), digit, geometry):
            puzzle[cell] = digit
        else:
            givens -= 1
    return puzzle


def generate_puzzles(
    box_shape: tuple[int, int],
    count: int,
    rng: np.random.Generator,
    min_givens: int = 0,
    max_givens: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate `count` distinct puzzles with exactly one solution each.

    Givens are removed down to `min_givens`, or until the puzzle is minimal when `min_givens` is 0. A
    puzzle that becomes minimal with more than `max_givens` givens (default n*n) is discarded, and a new
    grid is drawn. Returns (puzzles, solutions), each uint8 [count, n*n] digits with 0 for a blank.
    Raises ValueError for an invalid givens range, or when MAX_ATTEMPTS_PER_PUZZLE grids in a row give no
    new puzzle in the range.
    """
    geometry = _geometry(tuple(box_shape))
    max_givens = geometry.num_cells if max_givens is None else max_givens
    if not 0 <= min_givens <= max_givens <= geometry.num_cells:
        raise ValueError(
            f"givens range {min_givens}..{max_givens} is invalid; expected 0 <= min <= max <= {geometry.num_cells}"
        )

    empty = _initial_candidates([0] * geometry.num_cells, geometry)
    puzzles, solutions, seen = [], [], set()
    failed_attempts = 0
    while len(puzzles) < count:
        solution = _random_solution_from(empty.copy(), geometry, rng)
        puzzle = _blank_cells(solution, geometry, rng, min_givens)
        key = bytes(puzzle)
        if sum(digit > 0 for digit in puzzle) > max_givens or key in seen:
            failed_attempts += 1
            if failed_attempts >= MAX_ATTEMPTS_PER_PUZZLE:
                raise ValueError(
                    f"no new {geometry.side}x{geometry.side} puzzle with {min_givens}..{max_givens} givens after "
                    f"{failed_attempts} tries ({len(puzzles)} of {count} made); widen the givens range or ask for fewer"
                )
            continue
        failed_attempts = 0
        seen.add(key)
        puzzles.append(puzzle)
        solutions.append(solution)

    shape = (count, geometry.num_cells)
    return np.array(puzzles, dtype=np.uint8).reshape(shape), np.array(solutions, dtype=np.uint8).reshape(shape)
