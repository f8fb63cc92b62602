"""Maze task: token encoding, a batched BFS, the rule checker and the 8 grid symmetries.

A maze is an H x W grid stored row-major as H*W tokens. The characters of the Maze-Hard CSVs map to
token ids 1..5 in the order of `CHARSET` ('#' wall, ' ' open, 'S' start, 'G' goal, 'o' path); 0 is PAD.
A question has walls, open cells, one S and one G. Its answer marks with 'o' the cells of one shortest
S-to-G path (4-neighbour moves through open cells), S and G excluded, so a BFS distance of d moves
gives d - 1 path cells.
"""

from typing import Any, ClassVar

import numpy as np

from dataset.common import PuzzleTask

CHARSET = "# SGo"
PAD, WALL, OPEN, START, GOAL, PATH = range(6)
CHARS_BY_TOKEN = "?" + CHARSET
"""Character of each token id; PAD shows as '?' in text."""

DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
"""Index of the symmetry that undoes symmetry i (see `dihedral_transform`)."""
SHAPE_KEEPING_SYMMETRIES = (0, 2, 4, 5)
"""The symmetries that map an H x W grid to an H x W grid when H != W."""

CHECK_CHUNK_ROWS = 8192
"""Predictions scored at once by `MazeTask.check`, which keeps the temporary arrays of one chunk to a few
tens of MiB for 30x30 grids."""
DISTANCE_CACHE_MAX_ENTRIES = 16384
"""Input grids whose S-to-G distance a `MazeTask` remembers before it starts over (15 MB of keys at 30x30)."""


def dihedral_transform(grids: np.ndarray, index: int) -> np.ndarray:
    """Apply one of the 8 symmetries of the square to the last two axes of `grids` [..., H, W].

    0 identity, 1-3 rotation by 90, 180 and 270 degrees counter-clockwise, 4 left-right flip,
    5 up-down flip, 6 transpose, 7 anti-transpose. Indices 1, 3, 6 and 7 swap H and W.
    """
    if index == 0:
        return grids
    if 1 <= index <= 3:
        return np.rot90(grids, k=index, axes=(-2, -1))
    if index == 4:
        return grids[..., :, ::-1]
    if index == 5:
        return grids[..., ::-1, :]
    if index == 6:
        return np.swapaxes(grids, -2, -1)
    if index == 7:
        return np.rot90(np.swapaxes(grids, -2, -1), k=2, axes=(-2, -1))
    raise ValueError(f"symmetry index {index} is invalid, expected 0..7")


def bfs_distances(open_cells: np.ndarray, sources: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """Compute 4-neighbour BFS distances from the source cells through open cells, one grid per batch row.

    open_cells, sources, targets: bool [B, H, W]. Returns int32 [B, H, W], the number of moves from the
    nearest source, -1 where a cell is unreachable. With `targets`, a grid stops growing once it reaches
    any of its target cells, so cells farther than that target also keep -1.
    """
    distances = np.full(open_cells.shape, -1, dtype=np.int32)
    # Arrays of the grids still growing; finished grids are copied out and dropped, so late steps
    # only touch the long searches.
    active = np.arange(len(open_cells))
    active_open = open_cells
    active_targets = targets
    frontier = sources & open_cells
    reached = frontier.copy()
    active_distances = np.where(frontier, 0, -1).astype(np.int32)

    step = 0
    while True:
        keep = frontier.any(axis=(1, 2))
        if active_targets is not None:
            keep &= ~(frontier & active_targets).any(axis=(1, 2))
        if not keep.all():
            distances[active[~keep]] = active_distances[~keep]
            active, active_open, frontier, reached, active_distances = (
                array[keep] for array in (active, active_open, frontier, reached, active_distances)
            )
            if active_targets is not None:
                active_targets = active_targets[keep]
        if not len(active):
            return distances

        grown = np.zeros_like(frontier)
        grown[:, 1:, :] |= frontier[:, :-1, :]
        grown[:, :-1, :] |= frontier[:, 1:, :]
        grown[:, :, 1:] |= frontier[:, :, :-1]
        grown[:, :, :-1] |= frontier[:, :, 1:]
        frontier = grown & active_open & ~reached
        reached |= frontier
        step += 1
        active_distances[frontier] = step


def shortest_distances(grids: np.ndarray) -> np.ndarray:
    """Count the moves of a shortest S-to-G path in each maze.

    grids: [N, H, W] token ids. Returns int32 [N]; -1 where G is unreachable or the grid does not have
    exactly one S and one G.
    """
    starts = grids == START
    goals = grids == GOAL
    distances = bfs_distances(grids != WALL, starts, targets=goals)
    at_goal = np.where(goals, distances, 0).sum(axis=(1, 2), dtype=np.int64)
    one_each = (starts.sum(axis=(1, 2)) == 1) & (goals.sum(axis=(1, 2)) == 1)
    return np.where(one_each & (at_goal > 0), at_goal, -1).astype(np.int32)


class MazeTask(PuzzleTask):
    """Shortest-path mazes: fill the open cells of one shortest S-to-G path with 'o'.

    Token ids: PAD 0, '#' 1, ' ' 2, 'S' 3, 'G' 4, 'o' 5 (the TRM/HRM maze builder's encoding).
    """

    name: ClassVar[str] = "maze"
    vocab_size = 6
    fill_token = OPEN
    answer_tokens = (OPEN, PATH)

    def __init__(self, grid_shape: tuple[int, int] = (30, 30)):
        height, width = grid_shape
        if height < 1 or width < 1:
            raise ValueError(f"grid_shape {grid_shape} must have positive height and width")
        self.grid_shape = (int(height), int(width))
        # Maps the bytes of an input grid to its S-to-G distance; test sets are scored many times.
        self._distance_cache: dict[bytes, int] = {}

    # -----------------------------------------------------------------------------------------
    # Checking

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Decide which predictions mark exactly one shortest S-to-G path of their mazes.

        inputs, predictions: [N, H*W] token ids. Returns bool [N]. A prediction is solved when it keeps
        every wall, S and G, has only ' ' or 'o' on open cells, and its 'o' cells form a path from S
        to G as short as the BFS distance in the input. Any shortest path counts, not only the label's.
        Inputs without exactly one S and one G, or with G unreachable, are never solved.
        """
        inputs = self._as_grids(inputs)
        predictions = self._as_grids(predictions)
        if inputs.shape != predictions.shape:
            raise ValueError(f"inputs {inputs.shape} and predictions {predictions.shape} must have equal shapes")

        distances = self._cached_distances(inputs)
        solved = np.empty(len(inputs), dtype=bool)
        for begin in range(0, len(inputs), CHECK_CHUNK_ROWS):
            rows = slice(begin, begin + CHECK_CHUNK_ROWS)
            solved[rows] = _marks_shortest_path(inputs[rows], predictions[rows], distances[rows])
        return solved

    def find_invalid_puzzle(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[int, str] | None:
        """Find the first puzzle whose question or answer breaks the maze rules.

        inputs, labels: [N, H*W] token ids without PAD. Returns (row, problem) for the first bad row, or
        None when every question has one S, one G and no 'o', and every answer marks one shortest path.
        """
        grids = self._as_grids(inputs)
        bad = (grids == PATH).any(axis=(1, 2))
        bad |= (grids == START).sum(axis=(1, 2)) != 1
        bad |= (grids == GOAL).sum(axis=(1, 2)) != 1
        bad |= ~self.check(inputs, labels)
        if not bad.any():
            return None
        row = int(np.argmax(bad))
        return row, self._describe_problem(grids[row], self._as_grids(labels)[row])

    def _describe_problem(self, question: np.ndarray, answer: np.ndarray) -> str:
        """Explain why one question [H, W] and answer [H, W] fail `find_invalid_puzzle`."""
        if (question == PATH).any():
            row, column = np.argwhere(question == PATH)[0]
            return f"question has 'o' at row {row}, column {column} (0-based); path cells belong only in the answer"
        for token in (START, GOAL):
            count = int((question == token).sum())
            if count != 1:
                return f"question has {count} '{CHARS_BY_TOKEN[token]}' cells, expected exactly 1"

        changed = np.where(question == OPEN, (answer != OPEN) & (answer != PATH), answer != question)
        if changed.any():
            row, column = np.argwhere(changed)[0]
            before, after = CHARS_BY_TOKEN[question[row, column]], CHARS_BY_TOKEN[answer[row, column]]
            return (
                f"answer changes {before!r} to {after!r} at row {row}, column {column} (0-based); "
                "an answer may only turn open cells ' ' into path cells 'o'"
            )

        distance = int(shortest_distances(question[None])[0])
        if distance < 0:
            return "G is not reachable from S in the question"
        path_cells = int((answer == PATH).sum())
        if path_cells != distance - 1:
            return f"answer marks {path_cells} path cells, but a shortest S-G path has {distance - 1}"
        return "answer's 'o' cells do not form one connected path from S to G"

    def _cached_distances(self, grids: np.ndarray) -> np.ndarray:
        """Look up or compute the S-to-G distance of each grid [N, H, W]; returns int32 [N]."""
        rows = np.ascontiguousarray(grids).reshape(len(grids), -1)
        distinct, inverse = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))), return_inverse=True)
        keys = [row.tobytes() for row in distinct]

        missing = [i for i, key in enumerate(keys) if key not in self._distance_cache]
        if missing:
            missing_grids = np.frombuffer(b"".join(keys[i] for i in missing), dtype=np.uint8)
            found = shortest_distances(missing_grids.reshape(len(missing), *self.grid_shape))
            if len(self._distance_cache) + len(missing) > DISTANCE_CACHE_MAX_ENTRIES:
                self._distance_cache.clear()
            self._distance_cache.update((keys[i], int(distance)) for i, distance in zip(missing, found))

        distinct_distances = np.array([self._distance_cache[key] for key in keys], dtype=np.int32)
        return distinct_distances[inverse.reshape(-1)]

    # -----------------------------------------------------------------------------------------
    # Symmetries

    def symmetries(self) -> tuple[int, ...]:
        """List the `dihedral_transform` indices that keep this task's grid shape, identity first."""
        height, width = self.grid_shape
        return tuple(range(8)) if height == width else SHAPE_KEEPING_SYMMETRIES

    def transform(self, grids: np.ndarray, index: int) -> np.ndarray:
        """Apply symmetry `index` to flattened grids [N, H*W]; returns a new uint8 array [N, H*W]."""
        if index not in self.symmetries():
            raise ValueError(
                f"symmetry {index} changes the shape of {self.grid_shape} grids; use one of {self.symmetries()}"
            )
        moved = dihedral_transform(self._as_grids(grids), index)
        return np.ascontiguousarray(moved).reshape(len(grids), -1)

    # -----------------------------------------------------------------------------------------
    # Text and pictures

    def to_row_string(self, grid: np.ndarray) -> str:
        """Encode one grid [H*W] of token ids 1..5 as its CSV string of H*W characters."""
        tokens = np.asarray(grid).reshape(-1)
        if len(tokens) != self.seq_len:
            raise ValueError(f"grid has {len(tokens)} cells, expected {self.seq_len} for {self.grid_shape}")
        bad = (tokens < WALL) | (tokens > PATH)
        if bad.any():
            raise ValueError(f"token {tokens[bad][0]} at cell {np.flatnonzero(bad)[0]} has no maze character")
        return np.frombuffer(CHARSET.encode(), dtype=np.uint8)[tokens - 1].tobytes().decode()

    def to_text(self, grid: np.ndarray) -> str:
        """Render one grid [H*W] as H lines of W characters; PAD and unknown ids show as '?'."""
        tokens = np.asarray(grid).reshape(self.grid_shape)
        chars = np.array(list(CHARS_BY_TOKEN))[np.where(tokens < len(CHARS_BY_TOKEN), tokens, PAD)]
        return "\n".join("".join(line) for line in chars)

    def render(self, ax: Any, inputs: np.ndarray, grid: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Draw one maze on matplotlib axes: walls dark, path cells orange, S and G lettered.

        inputs, grid, labels: [H*W] token ids. Cell colours come from `grid` (a label or a prediction);
        S and G are lettered where `inputs` has them. When `labels` is given, every cell where `grid`
        differs from it gets a red outline.
        """
        from matplotlib.patches import Rectangle

        cells = np.asarray(grid).reshape(self.grid_shape)
        puzzle = np.asarray(inputs).reshape(self.grid_shape)
        colours = np.ones((*self.grid_shape, 3))
        colours[cells == WALL] = (0.15, 0.15, 0.2)
        colours[cells == PATH] = (1.0, 0.6, 0.1)
        colours[(cells == START) | (cells == GOAL)] = (0.55, 0.8, 1.0)
        colours[(cells < WALL) | (cells > PATH)] = (0.6, 0.6, 0.6)
        ax.imshow(colours, interpolation="nearest")

        # Letters shrink with the grid so that they stay inside their cells on a figure a few inches wide.
        font_size = max(4.0, 120.0 / max(self.grid_shape))
        for token, letter in ((START, "S"), (GOAL, "G")):
            for row, column in np.argwhere(puzzle == token):
                ax.text(column, row, letter, ha="center", va="center", fontsize=font_size, fontweight="bold")

        if labels is not None:
            wrong = cells != np.asarray(labels).reshape(self.grid_shape)
            for row, column in np.argwhere(wrong):
                ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
        ax.set_xticks([])
        ax.set_yticks([])

    def _as_grids(self, tokens: np.ndarray) -> np.ndarray:
        """View token ids [N, H*W] as uint8 grids [N, H, W]."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
            raise ValueError(
                f"expected token ids of shape [N, {self.seq_len}] for {self.grid_shape} mazes, got {tokens.shape}"
            )
        if tokens.dtype != np.uint8:
            # Clipping keeps out-of-range ids (such as an ignore label of -100) invalid instead of wrapping them.
            tokens = np.clip(tokens, 0, 255).astype(np.uint8)
        return tokens.reshape(len(tokens), *self.grid_shape)


def _marks_shortest_path(inputs: np.ndarray, predictions: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Score predictions [N, H, W] against inputs [N, H, W] with S-to-G distances [N]; returns bool [N].

    Take S, G and the 'o' cells as nodes, with 4-neighbour edges. The 'o' cells are exactly one shortest
    S-G path iff S and G have degree 1, every 'o' cell has degree 2, and there are distance - 1 'o'
    cells. A graph of maximum degree 2 is a union of paths and cycles, so S's component is a path
    ending at G, the only other degree-1 node. That path needs at least distance - 1 'o' cells, so with
    exactly that many it contains them all and nothing else remains.
    """
    is_open = inputs == OPEN
    keeps_maze = np.where(is_open, (predictions == OPEN) | (predictions == PATH), predictions == inputs)
    keeps_maze = keeps_maze.all(axis=(1, 2))

    path = (predictions == PATH) & is_open
    starts = inputs == START
    goals = inputs == GOAL
    nodes = path | starts | goals
    degree = np.zeros(nodes.shape, dtype=np.uint8)
    degree[:, 1:, :] += nodes[:, :-1, :]
    degree[:, :-1, :] += nodes[:, 1:, :]
    degree[:, :, 1:] += nodes[:, :, :-1]
    degree[:, :, :-1] += nodes[:, :, 1:]

    # `distances` is -1 unless the input has exactly one S and one G, so these sums see one cell each.
    start_degree = np.where(starts, degree, 0).sum(axis=(1, 2))
    goal_degree = np.where(goals, degree, 0).sum(axis=(1, 2))
    path_degrees_ok = ~(path & (degree != 2)).any(axis=(1, 2))
    path_count_ok = path.sum(axis=(1, 2)) == distances.astype(np.int64) - 1
    return keeps_maze & (distances > 0) & (start_degree == 1) & (goal_degree == 1) & path_degrees_ok & path_count_ok
