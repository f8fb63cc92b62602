"""Fixtures for the dataset tests. Test files are imported in importlib mode, so shared helpers live here."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dataset.common import (
    PuzzleDatasetMetadata,
    PuzzleSplit,
    single_example_split,
    split_metadata,
    write_identifiers,
    write_split,
)
from dataset.maze import CHARSET as MAZE_CHARSET
from dataset.maze import MazeTask
from dataset.sudoku import SudokuTask

# The reference Sudoku encoding (PAD 0, blank 1, digits 2..10), which `task_from_metadata` infers as Sudoku.
LOADER_VOCAB_SIZE = 11
LOADER_SEQ_LEN = 81


@dataclass
class LoaderLayout:
    """Where each example of a hand-made split belongs; arrays are indexed by example row."""

    path: Path
    inputs: np.ndarray  # [num_examples, seq_len] uint8
    labels: np.ndarray  # [num_examples, seq_len] uint8
    puzzle_of_example: np.ndarray  # [num_examples]
    group_of_puzzle: np.ndarray  # [num_puzzles]
    puzzle_identifiers: np.ndarray  # [num_puzzles]

    @property
    def group_of_example(self) -> np.ndarray:
        return self.group_of_puzzle[self.puzzle_of_example]

    @property
    def num_groups(self) -> int:
        return int(self.group_of_puzzle.max()) + 1


def _loader_metadata(num_groups: int, num_puzzles: int, num_examples: int, **overrides) -> PuzzleDatasetMetadata:
    """Metadata of a hand-made split in the reference Sudoku encoding, without task extras."""
    fields = dict(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=LOADER_VOCAB_SIZE,
        seq_len=LOADER_SEQ_LEN,
        num_puzzle_identifiers=num_puzzles + 1,
        total_groups=num_groups,
        mean_puzzle_examples=num_examples / num_puzzles,
        total_puzzles=num_puzzles,
        sets=["all"],
    )
    fields.update(overrides)
    return PuzzleDatasetMetadata(**fields)


def _loader_write_layout(
    path: Path, examples_per_puzzle: list[list[int]], seed: int, split: str = "train", **metadata_overrides
) -> LoaderLayout:
    """Write a split whose group g has puzzles with examples_per_puzzle[g] examples each.

    Inputs and labels are random tokens in [0, vocab), so labels contain ignored (0) cells, and every
    puzzle gets its own identifier 1, 2, ...
    """
    rng = np.random.default_rng(seed)
    sizes = [size for group in examples_per_puzzle for size in group]
    num_examples, num_puzzles = sum(sizes), len(sizes)
    group_of_puzzle = np.repeat(np.arange(len(examples_per_puzzle)), [len(group) for group in examples_per_puzzle])
    puzzle_of_example = np.repeat(np.arange(num_puzzles), sizes)
    inputs = rng.integers(0, LOADER_VOCAB_SIZE, (num_examples, LOADER_SEQ_LEN)).astype(np.uint8)
    labels = rng.integers(0, LOADER_VOCAB_SIZE, (num_examples, LOADER_SEQ_LEN)).astype(np.uint8)
    identifiers = np.arange(1, num_puzzles + 1, dtype=np.int32)
    data = PuzzleSplit(
        inputs=inputs,
        labels=labels,
        puzzle_identifiers=identifiers,
        puzzle_indices=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32),
        group_indices=np.concatenate([[0], np.cumsum([len(group) for group in examples_per_puzzle])]).astype(np.int32),
    )
    metadata = _loader_metadata(len(examples_per_puzzle), num_puzzles, num_examples, **metadata_overrides)
    path.mkdir(parents=True, exist_ok=True)
    write_split(path, split, data, metadata)
    write_identifiers(path, [f"puzzle{i}" for i in identifiers])
    return LoaderLayout(path, inputs, labels, puzzle_of_example, group_of_puzzle, identifiers)


@pytest.fixture
def loader_write_layout(tmp_path: Path) -> Callable[..., LoaderLayout]:
    """Factory: write a hand-made split under tmp_path/<name> (see `_loader_write_layout`)."""

    def write(name: str, examples_per_puzzle: list[list[int]], seed: int = 0, **kwargs) -> LoaderLayout:
        return _loader_write_layout(tmp_path / name, examples_per_puzzle, seed, **kwargs)

    return write


@pytest.fixture
def loader_fixed_epoch(loader_write_layout) -> LoaderLayout:
    """12 groups of 1-3 augmented puzzles. The puzzles of one group have equally many examples (1-3),
    so every epoch has the same size, 24 examples."""
    shape = [[2, 2, 2], [1, 1], [3], [1, 1, 1], [2], [3, 3], [1], [2, 2], [3, 3, 3], [1, 1], [2, 2, 2], [3]]
    return loader_write_layout("fixed", shape, seed=1)


@pytest.fixture
def loader_varying_epoch(loader_write_layout) -> LoaderLayout:
    """10 groups whose puzzles have different numbers of examples, so epoch sizes vary between 12 and 20."""
    shape = [[1, 3], [2, 1, 1], [1], [2, 3], [1, 2], [1], [3, 1, 2], [2], [1, 1], [1, 2]]
    return loader_write_layout("varying", shape, seed=2)


def _loader_latin_sudoku(box_shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A valid solved Sudoku grid as digits 1..n, [n*n]: the shifted-rows pattern with relabelled digits."""
    box_rows, box_cols = box_shape
    side = box_rows * box_cols
    rows, columns = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    pattern = (box_cols * (rows % box_rows) + rows // box_rows + columns) % side
    return (rng.permutation(side) + 1)[pattern].ravel()


@pytest.fixture
def loader_sudoku_dir(tmp_path: Path) -> Path:
    """A 4x4 Sudoku dataset written with the real task's encoding: train (6 groups of 2) and test (3)."""
    task = SudokuTask(box_shape=(2, 2))
    rng = np.random.default_rng(0)
    path = tmp_path / "sudoku4"
    for split, num_examples, group_size in (("train", 12, 2), ("test", 3, 1)):
        digits = np.stack([_loader_latin_sudoku((2, 2), rng) for _ in range(num_examples)])
        labels = digits + 1  # digit d is token d + 1, and token 1 is a blank
        inputs = np.where(rng.random(labels.shape) < 0.5, 1, labels)
        data = single_example_split(inputs, labels, group_size)
        metadata = split_metadata(task, data, builder={"seed": 0, "num_aug": 1}, source_sha256="ab" * 32)
        write_split(path, split, data, metadata)
    write_identifiers(path)
    return path


LOADER_MAZE_QUESTION = ["#####", "#S  #", "# # #", "#  G#", "#####"]
LOADER_MAZE_ANSWER = ["#####", "#Soo#", "# #o#", "#  G#", "#####"]


@pytest.fixture
def loader_maze_dir(tmp_path: Path) -> Path:
    """A 5x5 maze dataset with one hand-drawn maze and its shortest path, written with the real task."""
    task = MazeTask(grid_shape=(5, 5))
    path = tmp_path / "maze5"
    tokens = {char: index + 1 for index, char in enumerate(MAZE_CHARSET)}
    inputs = np.array([[tokens[char] for char in "".join(LOADER_MAZE_QUESTION)]], dtype=np.uint8)
    labels = np.array([[tokens[char] for char in "".join(LOADER_MAZE_ANSWER)]], dtype=np.uint8)
    data = single_example_split(inputs, labels, 1)
    write_split(path, "train", data, split_metadata(task, data, builder={"seed": 0}, source_sha256=None))
    write_identifiers(path)
    return path
