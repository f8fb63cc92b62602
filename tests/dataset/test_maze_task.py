"""Tests of the maze task: encoding, BFS, the shortest-path checker, symmetries and rendering."""

from collections import deque

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import dataset.maze as maze
from dataset.maze import CHARSET, OPEN, PAD, PATH, WALL, MazeTask, dihedral_transform, shortest_distances

# Two shortest S-G paths of 8 moves: through (1, 1) or through (1, 3); going round the bottom takes 10.
QUESTION = ["S   #", "# # #", "     ", " ### ", "    G"]
LABEL = ["So  #", "#o# #", " oooo", " ###o", "    G"]
OTHER_SHORTEST = ["Sooo#", "# #o#", "   oo", " ###o", "    G"]
LONGER = ["So  #", "#o# #", "oo   ", "o### ", "ooooG"]
THROUGH_WALL = ["S   #", "o # #", "o    ", "o### ", "ooooG"]  # 8 moves, but (1, 0) is a wall


def encode(rows: list[str]) -> np.ndarray:
    """Turn grid rows into token ids [1, H*W]."""
    return np.array([[CHARSET.index(char) + 1 for char in "".join(rows)]], dtype=np.uint8)


def edit(rows: list[str], row: int, column: int, char: str) -> list[str]:
    """Return a copy of `rows` with one cell replaced."""
    edited = list(rows)
    edited[row] = edited[row][:column] + char + edited[row][column + 1 :]
    return edited


def simple_bfs(grid: np.ndarray, start: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Map every non-wall cell reachable from `start` in one grid [H, W] to its number of moves."""
    height, width = grid.shape
    distances = {start: 0}
    queue = deque([start])
    while queue:
        row, column = queue.popleft()
        for cell in ((row + 1, column), (row - 1, column), (row, column + 1), (row, column - 1)):
            inside = 0 <= cell[0] < height and 0 <= cell[1] < width
            if inside and cell not in distances and grid[cell] != WALL:
                distances[cell] = distances[(row, column)] + 1
                queue.append(cell)
    return distances


def simple_distance(grid: np.ndarray) -> int:
    """Count S-to-G moves in one grid [H, W] with a plain queue BFS; -1 when G is unreachable."""
    start = tuple(int(i) for i in np.argwhere(grid == maze.START)[0])
    goal = tuple(int(i) for i in np.argwhere(grid == maze.GOAL)[0])
    return simple_bfs(grid, start).get(goal, -1)


def reference_check(question: np.ndarray, prediction: np.ndarray) -> bool:
    """Decide one prediction [H, W] the slow way: the 'o' cells must form a shortest S-G path and nothing else.

    A BFS restricted to S, G and the 'o' cells must reach G in the full grid's shortest distance, and
    there must be exactly distance - 1 'o' cells.
    """
    keeps = np.where(question == OPEN, np.isin(prediction, (OPEN, PATH)), prediction == question).all()
    distance = simple_distance(question)
    if not keeps or distance < 0:
        return False
    ends = np.isin(question, (maze.START, maze.GOAL))
    restricted = np.where(prediction == PATH, OPEN, np.where(ends, question, WALL))
    return simple_distance(restricted) == distance and (prediction == PATH).sum() == distance - 1


def random_mazes(rng: np.random.Generator, count: int, shape: tuple[int, int], wall_density: float) -> np.ndarray:
    """Random questions [count, H*W] with independent walls and random distinct S and G cells (maybe walled in)."""
    grids = np.where(rng.random((count, shape[0] * shape[1])) < wall_density, WALL, OPEN).astype(np.uint8)
    for grid in grids:
        start, goal = rng.choice(grid.size, size=2, replace=False)
        grid[start], grid[goal] = maze.START, maze.GOAL
    return grids


def random_shortest_path_label(question: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mark a random shortest path on one question [H, W] with G reachable, walking back from G."""
    from_start = simple_bfs(question, tuple(int(i) for i in np.argwhere(question == maze.START)[0]))
    label = question.copy()
    row, column = np.argwhere(question == maze.GOAL)[0]
    while from_start[(row, column)] > 1:
        steps = [(row + 1, column), (row - 1, column), (row, column + 1), (row, column - 1)]
        closer = [cell for cell in steps if from_start.get(cell, -1) == from_start[(row, column)] - 1]
        row, column = closer[rng.integers(len(closer))]
        label[row, column] = PATH
    return label


@pytest.fixture
def task() -> MazeTask:
    return MazeTask(grid_shape=(5, 5))


def test_task_interface(task):
    assert MazeTask.name == "maze"
    assert task.vocab_size == 6
    assert task.fill_token == CHARSET.index(" ") + 1
    assert task.answer_tokens == (CHARSET.index(" ") + 1, CHARSET.index("o") + 1)
    assert task.seq_len == 25
    cells = task.cells_to_fill(encode(QUESTION))
    assert cells.sum() == "".join(QUESTION).count(" ")


def test_row_string_round_trip(task):
    for rows in (QUESTION, LABEL, OTHER_SHORTEST):
        assert task.to_row_string(encode(rows)[0]) == "".join(rows)


def test_row_string_rejects_pad(task):
    grid = encode(QUESTION)[0]
    grid[3] = PAD
    with pytest.raises(ValueError, match="token 0 at cell 3"):
        task.to_row_string(grid)


def test_text_rows(task):
    grid = encode(LABEL)[0]
    grid[0] = PAD
    assert task.to_text(grid).splitlines() == ["?o  #", *LABEL[1:]]


def test_check_label_and_alternative(task):
    question = encode(QUESTION)
    assert task.check(question, encode(LABEL)).tolist() == [True]
    assert task.check(question, encode(OTHER_SHORTEST)).tolist() == [True]
    assert not np.array_equal(encode(LABEL), encode(OTHER_SHORTEST))


@pytest.mark.parametrize(
    "case, prediction",
    [
        ("longer path", LONGER),
        ("broken path", edit(LABEL, 2, 2, " ")),
        ("path through a wall", THROUGH_WALL),
        ("changed wall", edit(LABEL, 1, 4, " ")),
        ("stray path cell", edit(LABEL, 4, 0, "o")),
        ("both shortest paths", edit(edit(edit(LABEL, 0, 2, "o"), 0, 3, "o"), 1, 3, "o")),
        ("missing S", edit(LABEL, 0, 0, " ")),
        ("S turned into path", edit(LABEL, 0, 0, "o")),
        ("extra S", edit(LABEL, 4, 0, "S")),
        ("copy of the input", QUESTION),
    ],
)
def test_check_rejects(task, case, prediction):
    assert task.check(encode(QUESTION), encode(prediction)).tolist() == [False], case


def test_check_rejects_pad(task):
    prediction = encode(LABEL)
    prediction[0, 24] = PAD
    assert task.check(encode(QUESTION), prediction).tolist() == [False]


def test_check_adjacent_start_goal():
    task = MazeTask(grid_shape=(1, 4))
    question = encode(["#SG "])
    assert task.check(question, question).tolist() == [True]
    assert task.check(question, encode(["#SGo"])).tolist() == [False]


def test_check_unsolvable_inputs(task):
    walled_in = ["S#  #", "##  #", "     ", " ### ", "    G"]
    no_goal = edit(QUESTION, 4, 4, " ")
    inputs = np.concatenate([encode(walled_in), encode(no_goal)])
    assert task.check(inputs, inputs).tolist() == [False, False]


def test_check_matches_reference():
    rng = np.random.default_rng(3)
    shape = (6, 7)
    task = MazeTask(grid_shape=shape)
    questions = random_mazes(rng, 300, shape, wall_density=0.3)
    reachable = [q for q in questions if simple_distance(q.reshape(shape)) > 0]
    inputs, predictions = [], []
    for question in reachable[:120]:
        label = random_shortest_path_label(question.reshape(shape), rng).reshape(-1)
        perturbed = label.copy()
        cells = rng.choice(np.flatnonzero(question == OPEN), size=2, replace=False)
        perturbed[cells] = np.where(perturbed[cells] == PATH, OPEN, PATH)
        inputs += [question, question, question]
        predictions += [label, perturbed, question]
    inputs, predictions = np.stack(inputs), np.stack(predictions)

    expected = [reference_check(q.reshape(shape), p.reshape(shape)) for q, p in zip(inputs, predictions)]
    assert task.check(inputs, predictions).tolist() == expected
    assert 0 < sum(expected) < len(expected)
    assert all(expected[0::3])


def test_check_chunks_and_cache(task, monkeypatch):
    inputs = np.concatenate([encode(QUESTION)] * 7)
    predictions = np.concatenate([encode(LABEL), encode(LONGER), encode(OTHER_SHORTEST), encode(QUESTION)] * 2)[:7]
    expected = task.check(inputs, predictions)
    monkeypatch.setattr(maze, "CHECK_CHUNK_ROWS", 3)
    monkeypatch.setattr(maze, "DISTANCE_CACHE_MAX_ENTRIES", 1)
    fresh = MazeTask(grid_shape=(5, 5))
    assert fresh.check(inputs, predictions).tolist() == expected.tolist()
    assert fresh.check(inputs[::-1], predictions[::-1]).tolist() == expected[::-1].tolist()


def test_check_shape_mismatch(task):
    with pytest.raises(ValueError, match="equal shapes"):
        task.check(encode(QUESTION), np.concatenate([encode(LABEL)] * 2))
    with pytest.raises(ValueError, match=r"\[N, 25\]"):
        task.check(encode(QUESTION)[:, :24], encode(LABEL)[:, :24])


def test_bfs_matches_simple_bfs():
    rng = np.random.default_rng(0)
    for shape, density in (((7, 7), 0.3), ((5, 9), 0.45), ((1, 6), 0.2)):
        questions = random_mazes(rng, 200, shape, density)
        expected = [simple_distance(q.reshape(shape)) for q in questions]
        assert shortest_distances(questions.reshape(-1, *shape)).tolist() == expected
        assert -1 in expected
        assert max(expected) > 1


def test_bfs_distance_map():
    open_cells = np.array([[1, 1, 1], [0, 0, 1], [1, 1, 1]], dtype=bool)[None]
    sources = np.zeros_like(open_cells)
    sources[0, 0, 0] = True
    distances = maze.bfs_distances(open_cells, sources)
    assert distances[0].tolist() == [[0, 1, 2], [-1, -1, 3], [6, 5, 4]]


def test_find_invalid_puzzle(task):
    assert task.find_invalid_puzzle(encode(QUESTION), encode(LABEL)) is None
    inputs = np.concatenate([encode(QUESTION)] * 3)
    labels = np.concatenate([encode(LABEL), encode(LONGER), encode(THROUGH_WALL)])
    row, problem = task.find_invalid_puzzle(inputs, labels)
    assert row == 1
    assert problem == "answer marks 9 path cells, but a shortest S-G path has 7"
    row, problem = task.find_invalid_puzzle(inputs[2:], labels[2:])
    assert "answer changes '#' to 'o' at row 1, column 0" in problem


def test_symmetry_index_formulas():
    height, width = 4, 4
    grid = np.arange(height * width).reshape(height, width)
    formulas = [
        lambda i, j: (i, j),
        lambda i, j: (j, width - 1 - i),
        lambda i, j: (height - 1 - i, width - 1 - j),
        lambda i, j: (height - 1 - j, i),
        lambda i, j: (i, width - 1 - j),
        lambda i, j: (height - 1 - i, j),
        lambda i, j: (j, i),
        lambda i, j: (width - 1 - j, height - 1 - i),
    ]
    for index, source_of in enumerate(formulas):
        expected = np.array([[grid[source_of(i, j)] for j in range(width)] for i in range(height)])
        assert np.array_equal(dihedral_transform(grid, index), expected), index


def test_symmetry_inverse_and_distinct(task):
    grids = np.concatenate([encode(QUESTION), encode(LABEL)])
    variants = [task.transform(grids, index) for index in task.symmetries()]
    assert task.symmetries() == tuple(range(8))
    assert len({variant[0].tobytes() for variant in variants}) == 8
    for index, variant in zip(task.symmetries(), variants):
        assert np.array_equal(task.transform(variant, maze.DIHEDRAL_INVERSE[index]), grids)
        assert task.check(variant[:1], variant[1:]).tolist() == [True]


def test_symmetries_non_square():
    task = MazeTask(grid_shape=(2, 3))
    grids = encode(["S #", "  G"])
    assert task.symmetries() == (0, 2, 4, 5)
    assert len({task.transform(grids, index).tobytes() for index in task.symmetries()}) == 4
    with pytest.raises(ValueError, match="changes the shape"):
        task.transform(grids, 1)


def test_render_marks_wrong_cells(task):
    ax = Figure().subplots()
    wrong = edit(edit(LABEL, 2, 1, " "), 4, 0, "o")
    task.render(ax, encode(QUESTION)[0], encode(wrong)[0], labels=encode(LABEL)[0])
    outlines = [patch for patch in ax.patches if isinstance(patch, Rectangle)]
    assert sorted(tuple(patch.get_xy()) for patch in outlines) == [(-0.5, 3.5), (0.5, 1.5)]
    assert sorted(text.get_text() for text in ax.texts) == ["G", "S"]
    image = ax.images[0].get_array()
    assert image.shape == (5, 5, 3)
    assert image[1, 0].sum() < image[0, 1].sum() < image[0, 3].sum()  # wall darker than path, path darker than open


def test_render_without_labels(task):
    ax = Figure().subplots()
    task.render(ax, encode(QUESTION)[0], encode(LABEL)[0])
    assert not ax.patches


def test_check_out_of_range_ids(task):
    # 261 would wrap to 5, a path cell, if the ids were cast to uint8 without clipping.
    prediction = encode(LABEL).astype(np.int64)
    assert task.check(encode(QUESTION), prediction).tolist() == [True]
    for value in (-100, 261):
        wrong = prediction.copy()
        wrong[0, 1] = value
        assert task.check(encode(QUESTION), wrong).tolist() == [False], value
