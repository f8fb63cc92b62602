"""Tests of the random maze generator."""

from collections import Counter, deque

import numpy as np
import pytest

from dataset.common import DatasetError
from dataset.maze import GOAL, OPEN, PATH, START, WALL, MazeTask
from dataset.maze_generator import (
    MazeGeneratorConfig,
    _draw_maze,
    default_min_path_cells,
    double_sweep_distances,
    generate_mazes,
)

SMALL = MazeGeneratorConfig(grid_shape=(10, 10), min_path_cells=20, max_path_cells=26)


def max_bfs_distance(open_cells: np.ndarray) -> int:
    """Compute the maximum BFS distance between two open cells of one grid [H, W] with a queue BFS per cell."""
    height, width = open_cells.shape
    longest = 0
    for start in zip(*np.nonzero(open_cells)):
        distances = {start: 0}
        queue = deque([start])
        while queue:
            row, column = queue.popleft()
            for cell in ((row + 1, column), (row - 1, column), (row, column + 1), (row, column - 1)):
                if 0 <= cell[0] < height and 0 <= cell[1] < width and open_cells[cell] and cell not in distances:
                    distances[cell] = distances[(row, column)] + 1
                    queue.append(cell)
        longest = max(longest, max(distances.values()))
    return longest


@pytest.fixture(scope="module")
def small_mazes() -> tuple[np.ndarray, np.ndarray]:
    return generate_mazes(SMALL, 150, np.random.default_rng(0))


def test_generated_labels_valid(small_mazes):
    inputs, labels = small_mazes
    assert inputs.shape == labels.shape == (150, 100)
    assert inputs.dtype == labels.dtype == np.uint8
    assert MazeTask(grid_shape=(10, 10)).check(inputs, labels).all()
    assert ((inputs == START).sum(axis=1) == 1).all()
    assert ((inputs == GOAL).sum(axis=1) == 1).all()
    assert not (inputs == PATH).any()
    assert np.array_equal(np.where(labels == PATH, OPEN, labels), inputs)


def test_generated_path_lengths(small_mazes):
    path_cells = (small_mazes[1] == PATH).sum(axis=1)
    assert path_cells.min() >= SMALL.min_path_cells
    assert path_cells.max() <= SMALL.max_path_cells
    assert len(set(path_cells.tolist())) > 2


def test_generated_wall_density():
    config = MazeGeneratorConfig(grid_shape=(15, 15), wall_density=0.3, min_path_cells=30)
    inputs, _ = generate_mazes(config, 100, np.random.default_rng(1))
    assert abs((inputs == WALL).mean() - 0.3) < 0.02


def test_generated_mazes_distinct(small_mazes):
    inputs = small_mazes[0]
    assert len({row.tobytes() for row in inputs}) == len(inputs)
    assert len({row.tobytes() for row in inputs == WALL}) == len(inputs)


def test_generator_seeded():
    first = generate_mazes(SMALL, 30, np.random.default_rng(7))
    again = generate_mazes(SMALL, 30, np.random.default_rng(7))
    other = generate_mazes(SMALL, 30, np.random.default_rng(8))
    assert np.array_equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_generator_prefix_stable(small_mazes):
    fewer = generate_mazes(SMALL, 40, np.random.default_rng(0))
    assert np.array_equal(fewer[0], small_mazes[0][:40])
    assert np.array_equal(fewer[1], small_mazes[1][:40])


def test_generator_exclude(small_mazes):
    excluded = {row.tobytes() for row in small_mazes[0][:20]}
    inputs, _ = generate_mazes(SMALL, 20, np.random.default_rng(0), exclude=excluded)
    assert not excluded & {row.tobytes() for row in inputs}
    assert np.array_equal(inputs[0], small_mazes[0][20])


def test_generator_non_square():
    config = MazeGeneratorConfig(grid_shape=(6, 11), min_path_cells=12)
    inputs, labels = generate_mazes(config, 40, np.random.default_rng(2))
    assert inputs.shape == (40, 66)
    assert MazeTask(grid_shape=(6, 11)).check(inputs, labels).all()
    assert ((labels == PATH).sum(axis=1) >= 12).all()


def test_generator_gives_up():
    # A fully open 4x4 grid has no two cells more than 6 moves apart, so 10 path cells are impossible.
    config = MazeGeneratorConfig(grid_shape=(4, 4), wall_density=0.0, min_path_cells=10, max_grids_without_maze=4096)
    with pytest.raises(DatasetError, match="no new maze with 10 or more path cells in 4096 random 4x4 grids"):
        generate_mazes(config, 1, np.random.default_rng(0))


def test_generator_config_checks():
    with pytest.raises(ValueError, match="width of 1 to 64"):
        MazeGeneratorConfig(grid_shape=(10, 65))
    with pytest.raises(ValueError, match="wall_density"):
        MazeGeneratorConfig(wall_density=1.0)
    with pytest.raises(ValueError, match="below min_path_cells"):
        MazeGeneratorConfig(min_path_cells=10, max_path_cells=9)


def test_generator_runs_out_of_mazes():
    # 3x3 grids have exactly 16 mazes with 5 path cells: the U shapes, each walked either way.
    config = MazeGeneratorConfig(grid_shape=(3, 3), min_path_cells=5, max_grids_without_maze=50_000)
    inputs, _ = generate_mazes(config, 16, np.random.default_rng(0))
    assert len({row.tobytes() for row in inputs}) == 16
    with pytest.raises(DatasetError, match="request fewer puzzles"):
        generate_mazes(config, 17, np.random.default_rng(0))


def test_generator_zero_count():
    inputs, labels = generate_mazes(SMALL, 0, np.random.default_rng(0))
    assert inputs.shape == labels.shape == (0, 100)


def test_start_goal_uniform_over_pairs():
    # The 8 cells around a walled centre: 8 ordered pairs are 4 moves apart, and each corner-to-corner
    # pair has two shortest paths.
    open_cells = np.ones((3, 3), dtype=bool)
    open_cells[1, 1] = False
    config = MazeGeneratorConfig(grid_shape=(3, 3), min_path_cells=3)
    rng = np.random.default_rng(0)
    pairs, corner_paths = Counter(), Counter()
    for _ in range(4000):
        question, answer = _draw_maze(open_cells, config, rng)
        start, goal = int(np.flatnonzero(question == START)[0]), int(np.flatnonzero(question == GOAL)[0])
        pairs[(start, goal)] += 1
        if (start, goal) == (0, 8):
            corner_paths[tuple(np.flatnonzero(answer == PATH))] += 1
    assert set(pairs) == {(0, 8), (8, 0), (2, 6), (6, 2), (1, 7), (7, 1), (3, 5), (5, 3)}
    assert all(400 <= count <= 600 for count in pairs.values())
    assert set(corner_paths) == {(1, 2, 5), (3, 6, 7)}
    assert min(corner_paths.values()) >= 0.35 * sum(corner_paths.values())


def test_double_sweep_bounds():
    rng = np.random.default_rng(4)
    open_cells = rng.random((60, 6, 6)) >= 0.35
    swept = double_sweep_distances(open_cells, rng)
    exact = np.array([max_bfs_distance(grid) for grid in open_cells])
    assert (swept <= exact).all()
    assert (swept == exact).mean() > 0.6  # the first BFS may start in a small component


def test_double_sweep_exact_on_corridor():
    # A snake-shaped corridor is a tree, where the double sweep finds the longest path from any start.
    corridor = np.array(["......", "#####.", "......", ".#####", "......"])
    open_cells = np.array([[char == "." for char in row] for row in corridor])
    swept = double_sweep_distances(np.repeat(open_cells[None], 20, axis=0), np.random.default_rng(0))
    assert swept.tolist() == [max_bfs_distance(open_cells)] * 20


def test_default_min_path_cells():
    assert default_min_path_cells(30) == 108
    assert default_min_path_cells(10) < default_min_path_cells(15) < default_min_path_cells(20) < 108
