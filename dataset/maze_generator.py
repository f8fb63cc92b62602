"""Random mazes with the statistics of Maze-Hard: independent random walls and a far-apart S and G.

The 1,500 Maze-Hard mazes at hand (sapientinc/maze-30x30-hard-1k: the train split and half of the
test split) look like independent random walls. 37.2 % of cells are walls, the outer border is not
walled, and open and walled 2x2 blocks occur at the rates that independent cells give. S and G are
109 to 153 moves apart (108 to 152 path cells), although their Manhattan distance averages only 20.
Such long shortest paths are rare: at 37 % walls, a random start cell has a cell 109 moves away in
about 0.2 % of 30x30 grids.

Maze-Hard's path lengths and S/G positions agree with drawing random walls and a uniformly random S
and G, and rejecting pairs outside the range. That process picks a grid with probability
proportional to c, its number of ordered (S, G) pairs in range. Run directly, it would need an
estimated 2 * 10^4 BFS runs per maze, so the generator

1. draws a batch of grids with independent walls;
2. passes a grid when a double-sweep BFS (from a random open cell to a farthest cell, then from there
   to a farthest cell again) finds a shortest path with at least the minimum number of path cells.
   That holds for about 1.5 % of 30x30 grids at 37 % walls. The sweep gives a lower bound on the
   longest shortest path, so a few suitable grids are skipped;
3. counts c with a BFS from every open cell of a passing grid at once, and keeps the grid with
   probability min(1, c / cap), where cap = `pair_share_cap` * (H*W)^2. Grids with more than cap
   pairs in range (about 7 % of the passing 30x30 grids at the default cap) are under-weighted;
4. draws (S, G) uniformly from the c pairs;
5. marks one shortest path, taking a uniformly random neighbour one move closer to G at each step.

benchmarks/bench_maze_build.py prints these statistics for Maze-Hard and for generated mazes. The BFS
here runs on bit-packed rows (one uint64 per grid row), so grids are at most 64 cells wide.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np

from dataset.common import DatasetError
from dataset.maze import GOAL, OPEN, PATH, START, WALL, bfs_distances

MAX_WIDTH = 64

MAZE_HARD_SIDE = 30
MAZE_HARD_MIN_PATH_CELLS = 108
PATH_CELLS_EXPONENT = 1.18
"""Growth of long shortest paths with the grid side. The 99th percentile of the double-sweep path
cells of random grids at 37 % walls is 30, 49 and 110 at sides 10, 15 and 30 (measured with
benchmarks/bench_maze_build.py), about side ** 1.18. So `default_min_path_cells` keeps mazes about as
rare among random grids as Maze-Hard's at every size."""


def default_min_path_cells(side: int) -> int:
    """Scale Maze-Hard's minimum of 108 path cells on 30x30 grids to side x side grids."""
    return round(MAZE_HARD_MIN_PATH_CELLS * (side / MAZE_HARD_SIDE) ** PATH_CELLS_EXPONENT)


@dataclass(frozen=True)
class MazeGeneratorConfig:
    """Settings of `generate_mazes`. Path lengths count the 'o' cells between S and G."""

    grid_shape: tuple[int, int] = (MAZE_HARD_SIDE, MAZE_HARD_SIDE)
    wall_density: float = 0.37
    """Probability that a cell is a wall, independently of the other cells."""
    min_path_cells: int = MAZE_HARD_MIN_PATH_CELLS
    max_path_cells: int | None = None
    """Upper bound on the path cells; None means no bound."""
    pair_share_cap: float = 0.005
    """Share of the (H*W)^2 ordered cell pairs above which a grid's in-range pairs stop raising its chance
    to be kept. Lower values trade fidelity to Maze-Hard for speed."""
    grids_per_batch: int = 1024
    """Random grids drawn and swept at once."""
    max_grids_without_maze: int = 200_000
    """Random grids drawn without keeping a maze before `generate_mazes` gives up."""

    def __post_init__(self) -> None:
        height, width = self.grid_shape
        if height < 1 or not 1 <= width <= MAX_WIDTH or height * width < 2:
            raise ValueError(f"grid_shape {self.grid_shape} must have at least 2 cells and a width of 1 to {MAX_WIDTH}")
        if not 0.0 <= self.wall_density < 1.0:
            raise ValueError(f"wall_density {self.wall_density} must be in [0, 1)")
        if self.min_path_cells < 0:
            raise ValueError(f"min_path_cells {self.min_path_cells} must be at least 0")
        if self.max_path_cells is not None and self.max_path_cells < self.min_path_cells:
            raise ValueError(f"max_path_cells {self.max_path_cells} is below min_path_cells {self.min_path_cells}")
        if self.pair_share_cap <= 0.0:
            raise ValueError(f"pair_share_cap {self.pair_share_cap} must be positive")


def generate_mazes(
    config: MazeGeneratorConfig,
    count: int,
    rng: np.random.Generator,
    exclude: set[bytes] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate `count` distinct mazes and their labels.

    Returns (inputs, labels), uint8 token ids [count, H*W]. No question equals another or one whose
    bytes are in `exclude`. The mazes depend only on `config` and the state of `rng`, and the first k
    mazes of a call are the same for every count >= k. Raises DatasetError when
    `config.max_grids_without_maze` random grids in a row yield no new maze.
    """
    height, width = config.grid_shape
    seen = set(exclude or ())
    inputs, labels = [], []
    grids_without_maze = 0

    while len(inputs) < count:
        open_cells = rng.random((config.grids_per_batch, height, width)) >= config.wall_density
        longest = double_sweep_distances(open_cells, rng)

        found = len(inputs)
        # A shortest path of d moves has d - 1 path cells.
        for grid in np.flatnonzero(longest > config.min_path_cells):
            if len(inputs) == count:
                break
            maze = _draw_maze(open_cells[grid], config, rng)
            if maze is None or maze[0].tobytes() in seen:
                continue
            seen.add(maze[0].tobytes())
            inputs.append(maze[0])
            labels.append(maze[1])

        grids_without_maze = 0 if len(inputs) > found else grids_without_maze + config.grids_per_batch
        if grids_without_maze >= config.max_grids_without_maze:
            raise DatasetError(
                f"found no new maze with {config.min_path_cells} or more path cells in {grids_without_maze} random "
                f"{height}x{width} grids at wall density {config.wall_density}; lower --min-path-length, "
                "change --wall-density or request fewer puzzles"
            )

    if not count:
        empty = np.zeros((0, height * width), dtype=np.uint8)
        return empty, empty.copy()
    return np.stack(inputs), np.stack(labels)


def double_sweep_distances(open_cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Find a lower bound on the longest shortest path of each grid, in moves.

    Runs a BFS from a random open cell to a farthest cell, then a BFS from there. open_cells: bool
    [B, H, W] with W <= 64. Returns int64 [B]; 0 for a grid without open cells.
    """
    open_rows = _pack_rows(open_cells)
    starts = _single_cell_rows(_random_open_cells(open_cells, rng), open_cells.shape[1:])
    far_rows, _ = _farthest_cells(open_rows, starts)
    _, distances = _farthest_cells(open_rows, far_rows)
    return distances


def _draw_maze(
    open_cells: np.ndarray, config: MazeGeneratorConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """Turn one grid of open cells [H, W] with an in-range pair into a maze, or reject it.

    Returns (question, answer) as uint8 token ids [H*W], or None when the grid is not kept (step 3 of
    the module docstring).
    """
    height, width = open_cells.shape
    sources = np.flatnonzero(open_cells)
    min_distance = config.min_path_cells + 1
    max_distance = None if config.max_path_cells is None else config.max_path_cells + 1

    # frontiers[d - min_distance, :, s] contains the cells exactly d moves from source s.
    layers = _bfs_frontiers(_pack_rows(open_cells[None]), _single_cell_rows(sources, (height, width)))
    frontiers = np.stack(list(islice(layers, min_distance - 1, max_distance)))
    counts = np.bitwise_count(frontiers).reshape(-1)
    pair_count = int(counts.sum())
    if rng.random() * config.pair_share_cap * (height * width) ** 2 >= pair_count:
        return None

    cumulative = np.cumsum(counts, dtype=np.int64)
    pick = int(rng.integers(pair_count))
    word = int(np.searchsorted(cumulative, pick, side="right"))
    layer, row, source = np.unravel_index(word, frontiers.shape)
    bits = int(frontiers[layer, row, source])
    for _ in range(pick - int(cumulative[word] - counts[word])):
        bits &= bits - 1
    start = int(sources[source])
    goal = int(row) * width + (bits & -bits).bit_length() - 1

    question = np.where(open_cells, OPEN, WALL).astype(np.uint8).reshape(-1)
    question[start] = START
    question[goal] = GOAL
    answer = question.copy()
    answer[_trace_shortest_path(open_cells, start, goal, rng)] = PATH
    return question, answer


def _trace_shortest_path(open_cells: np.ndarray, start: int, goal: int, rng: np.random.Generator) -> list[int]:
    """Walk from start to goal, each move to a random neighbour one move closer to the goal.

    open_cells: bool [H, W]; start, goal: flat indices. Returns the flat indices of the cells strictly
    between start and goal, in walking order.
    """
    height, width = open_cells.shape
    goal_cell = np.zeros(open_cells.size, dtype=bool)
    goal_cell[goal] = True
    to_goal = bfs_distances(open_cells[None], goal_cell.reshape(1, height, width))[0]

    path = []
    row, column = divmod(start, width)
    while to_goal[row, column] > 1:
        closer = [
            (row + d_row, column + d_column)
            for d_row, d_column in ((-1, 0), (1, 0), (0, -1), (0, 1))
            if 0 <= row + d_row < height and 0 <= column + d_column < width
            and to_goal[row + d_row, column + d_column] == to_goal[row, column] - 1
        ]
        row, column = closer[rng.integers(len(closer))]
        path.append(row * width + column)
    return path


def _farthest_cells(open_rows: np.ndarray, start_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BFS from one cell per grid; returns a farthest cell (uint64 [H, B], one bit) and its distance [B]."""
    last_frontier = start_rows.copy()
    distances = np.zeros(start_rows.shape[1], dtype=np.int64)
    for distance, frontier in enumerate(_bfs_frontiers(open_rows, start_rows), start=1):
        growing = frontier.any(axis=0)
        np.copyto(last_frontier, frontier, where=growing)
        distances[growing] = distance

    # Keep the lowest set bit of the first non-empty row, a deterministic pick among the farthest.
    first_row = np.argmax(last_frontier != 0, axis=0)
    grids = np.arange(start_rows.shape[1])
    words = last_frontier[first_row, grids]
    farthest = np.zeros_like(last_frontier)
    farthest[first_row, grids] = words & (~words + np.uint64(1))
    return farthest, distances


def _bfs_frontiers(open_rows: np.ndarray, start_rows: np.ndarray) -> Iterator[np.ndarray]:
    """Yield the BFS frontiers at distance 1, 2, ... until no grid grows.

    open_rows: uint64 [H, B], or [H, 1] for one grid shared by every start. Bit c of row r is set when
    cell (r, c) is open. start_rows: uint64 [H, B]. Yields uint64 [H, B], the cells first reached at
    that distance. Rows come first so that moving between rows shifts contiguous memory.
    """
    one_column = np.uint64(1)
    reached = start_rows.copy()
    frontier = start_rows
    while True:
        grown = (frontier << one_column) | (frontier >> one_column)
        grown[1:] |= frontier[:-1]
        grown[:-1] |= frontier[1:]
        # Bits shifted past the row width land outside the open mask, so this also clips them.
        frontier = grown & open_rows & ~reached
        if not frontier.any():
            return
        reached |= frontier
        yield frontier


def _pack_rows(cells: np.ndarray) -> np.ndarray:
    """Pack bool grids [B, H, W] with W <= 64 into uint64 rows [H, B], bit c for column c."""
    weights = np.uint64(1) << np.arange(cells.shape[-1], dtype=np.uint64)
    return (cells * weights).sum(axis=-1, dtype=np.uint64).T.copy()


def _single_cell_rows(cells: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bit-pack one cell per grid: flat indices [B] into H x W grids -> uint64 rows [H, B]."""
    row, column = np.divmod(cells, shape[1])
    rows = np.zeros((shape[0], len(cells)), dtype=np.uint64)
    rows[row, np.arange(len(cells))] = np.uint64(1) << column.astype(np.uint64)
    return rows


def _random_open_cells(open_cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pick one open cell per grid [B, H, W] uniformly; returns flat indices [B].

    A grid without open cells gets cell 0, which the BFS then never leaves.
    """
    keys = np.where(open_cells, rng.random(open_cells.shape), -1.0).reshape(len(open_cells), -1)
    return np.argmax(keys, axis=1)
