"""Batches of puzzle examples for training and evaluation, read from one or more dataset directories.

Training draws a resumable, seeded stream of epochs with one augmented variant per group per epoch, as
the TRM/HRM reference loader does. Evaluation visits every example once in file order. Every rank computes
the same global batch and keeps its own contiguous slice, so N ranks together see exactly the rows that
one process would.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dataset.common import (
    DatasetError,
    PuzzleDatasetMetadata,
    PuzzleSplit,
    PuzzleTask,
    available_splits,
    read_split,
)
from dataset.tasks import task_from_metadata
from models.head import IGNORE_LABEL

# Metadata fields that must agree between mixed dataset directories, because they fix the encoding.
SHARED_METADATA_FIELDS = ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id")
# Extras that name the task. They are compared only when both directories store them, because
# reference-built datasets lack them, and then vocab_size and seq_len, which must agree, decide the task.
TASK_METADATA_FIELDS = ("task", "grid_shape", "box_shape")
BUILD_HINT = (
    "Build it with python -m dataset.build_sudoku_dataset --output-dir DIR "
    "or python -m dataset.build_maze_dataset --output-dir DIR."
)

Batch = dict[str, np.ndarray]


class PuzzleDataset:
    """Training and evaluation batches of one split of one or more dataset directories.

    Batches are dicts of numpy arrays holding this rank's rows only (local = global_batch_size // world_size,
    L = seq_len)::

        inputs              [local, L] int32   puzzle token ids
        labels              [local, L] int32   target token ids; cells equal to ignore_label_id are IGNORE_LABEL
        puzzle_identifiers  [local]    int32   row of the per-puzzle embedding table
        mask                [local]    bool    False on the padding rows of the last evaluation batch
        example_index       [local]    int64   row of the example in the split, -1 on padding rows

    Several directories are mixed by concatenating their groups in the order given; their encodings must
    agree. Puzzle identifiers are NOT offset per directory (the reference loader does not offset them
    either), so `metadata.num_puzzle_identifiers` is the largest of the directories' values.
    Inputs and labels stay memory-mapped; each batch copies only its own rows.
    """

    def __init__(
        self,
        dataset_dirs: str | Path | list[str | Path],
        split: str,
        *,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ):
        if isinstance(dataset_dirs, (str, Path)):
            dataset_dirs = [dataset_dirs]
        self.dataset_dirs = [Path(path) for path in dataset_dirs]
        if not self.dataset_dirs:
            raise DatasetError("no dataset directory given")
        self.split = split
        self.description = f"{', '.join(str(path) for path in self.dataset_dirs)} (split {split})"
        _check_batch_layout(global_batch_size, rank, world_size, seed)
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed

        loaded = [read_dataset_split(path, split) for path in self.dataset_dirs]
        for path, (metadata, _) in zip(self.dataset_dirs[1:], loaded[1:]):
            _check_same_encoding(self.dataset_dirs[0], loaded[0][0], path, metadata)
        self.metadata = _merge_metadata([metadata for metadata, _ in loaded])
        self.data = _concatenate_splits([data for _, data in loaded])
        _check_nonempty_groups_and_puzzles(self.data, self.description)
        self.task = build_task(self.metadata, self.description)
        self.examples_per_epoch = float(self.metadata.total_groups * self.metadata.mean_puzzle_examples)

        puzzle_sizes = np.diff(self.data.puzzle_indices)
        group_starts = self.data.group_indices[:-1]
        # An epoch takes one puzzle per group, so its size lies between these sums of per-group extremes.
        self._min_epoch_size = int(np.minimum.reduceat(puzzle_sizes, group_starts).sum())
        self._max_epoch_size = int(np.maximum.reduceat(puzzle_sizes, group_starts).sum())

    # -----------------------------------------------------------------------------------------
    # Training

    def train_batches(self, start_batch: int = 0) -> Iterator[Batch]:
        """Yield this rank's slice of global batches start_batch, start_batch + 1, ... without end.

        The stream is the concatenation of epochs 0, 1, 2 and so on, and epoch e is drawn by its own
        generator seeded with (seed, e). So starting at `start_batch` gives exactly the batches that an
        uninterrupted iterator yields from there, and skipping ahead draws only example orders, never
        example data. Raises ValueError when an epoch can contain fewer examples than one global batch.
        """
        if start_batch < 0:
            raise ValueError(f"start_batch must be at least 0, got {start_batch}")
        if self._min_epoch_size < self.global_batch_size:
            raise ValueError(
                f"{self.description}: an epoch can have as few as {self._min_epoch_size} examples, fewer than "
                f"global_batch_size {self.global_batch_size}. Lower global_batch_size or build more puzzles."
            )
        return self._train_stream(start_batch)

    def _train_stream(self, start_batch: int) -> Iterator[Batch]:
        epoch, offset = self._locate_in_stream(start_batch * self.global_batch_size)
        pending = self._epoch_examples(epoch)[offset:]
        own_rows = slice(self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size)
        while True:
            # Every epoch contains at least one global batch, so one more epoch always completes the batch.
            if len(pending) < self.global_batch_size:
                epoch += 1
                pending = np.concatenate([pending, self._epoch_examples(epoch)])
            yield self._gather(pending[: self.global_batch_size][own_rows])
            pending = pending[self.global_batch_size :]

    def _locate_in_stream(self, position: int) -> tuple[int, int]:
        """Return the epoch that contains stream position `position` and the offset within that epoch."""
        if self._min_epoch_size == self._max_epoch_size:
            return divmod(position, self._min_epoch_size)
        epoch = 0
        while True:
            puzzles = self._epoch_puzzles(np.random.default_rng([self.seed, epoch]))
            size = int(self._puzzle_sizes(puzzles).sum())
            if position < size:
                return epoch, position
            position -= size
            epoch += 1

    def _epoch_puzzles(self, rng: np.random.Generator) -> np.ndarray:
        """Draw the group order of one epoch and one puzzle per group: int64 [num_groups] puzzle indices."""
        groups = rng.permutation(self.data.num_groups)
        first_puzzle = self.data.group_indices[groups].astype(np.int64)
        group_sizes = self.data.group_indices[groups + 1] - first_puzzle
        return first_puzzle + rng.integers(0, group_sizes)

    def _puzzle_sizes(self, puzzles: np.ndarray) -> np.ndarray:
        return (self.data.puzzle_indices[puzzles + 1] - self.data.puzzle_indices[puzzles]).astype(np.int64)

    def _epoch_examples(self, epoch: int) -> np.ndarray:
        """Draw epoch `epoch`: int64 [epoch size] example indices, each puzzle's examples in random order."""
        rng = np.random.default_rng([self.seed, epoch])
        puzzles = self._epoch_puzzles(rng)
        sizes = self._puzzle_sizes(puzzles)
        segment = np.repeat(np.arange(len(puzzles)), sizes)
        segment_start = np.cumsum(sizes) - sizes
        examples = self.data.puzzle_indices[puzzles].astype(np.int64)[segment] + (
            np.arange(len(segment)) - segment_start[segment]
        )
        # Sorting by segment first keeps the puzzle order and shuffles the examples within each puzzle.
        order = np.lexsort((rng.random(len(segment)), segment))
        return examples[order]

    # -----------------------------------------------------------------------------------------
    # Evaluation

    def eval_batches(self, max_examples: int | None = None) -> Iterator[Batch]:
        """Yield this rank's slice of every global batch over the first `max_examples` examples in file order.

        The last global batch is padded (mask False, example_index -1), so every rank yields
        `num_eval_batches(max_examples)` batches of exactly local_batch_size rows.
        """
        num_examples = self._num_eval_examples(max_examples)
        for batch in range(self.num_eval_batches(max_examples)):
            start = batch * self.global_batch_size + self.rank * self.local_batch_size
            examples = np.arange(start, start + self.local_batch_size, dtype=np.int64)
            examples[examples >= num_examples] = -1
            yield self._gather(examples)

    def num_eval_batches(self, max_examples: int | None = None) -> int:
        """Number of batches `eval_batches(max_examples)` yields on every rank."""
        return -(-self._num_eval_examples(max_examples) // self.global_batch_size)

    def _num_eval_examples(self, max_examples: int | None) -> int:
        if max_examples is None:
            return self.data.num_examples
        if max_examples < 0:
            raise ValueError(f"max_examples must be at least 0, got {max_examples}")
        return min(max_examples, self.data.num_examples)

    # -----------------------------------------------------------------------------------------
    # Batch assembly

    def _gather(self, examples: np.ndarray) -> Batch:
        """Copy the rows of `examples` (int64 [local], -1 for a padding row) into a batch dict."""
        real = examples >= 0
        rows = examples[real]
        inputs = np.full((len(examples), self.metadata.seq_len), self.metadata.pad_id, dtype=np.int32)
        labels = np.full((len(examples), self.metadata.seq_len), IGNORE_LABEL, dtype=np.int32)
        puzzle_identifiers = np.full(len(examples), self.metadata.blank_identifier_id, dtype=np.int32)

        real_inputs = np.asarray(self.data.inputs[rows])
        real_labels = np.asarray(self.data.labels[rows])
        self._check_token_range(rows, real_inputs, real_labels)
        inputs[real] = real_inputs
        real_labels = real_labels.astype(np.int32)
        if self.metadata.ignore_label_id is not None:
            real_labels[real_labels == self.metadata.ignore_label_id] = IGNORE_LABEL
        labels[real] = real_labels
        puzzles = np.searchsorted(self.data.puzzle_indices, rows, side="right") - 1
        puzzle_identifiers[real] = self.data.puzzle_identifiers[puzzles]
        return {
            "inputs": inputs,
            "labels": labels,
            "puzzle_identifiers": puzzle_identifiers,
            "mask": real,
            "example_index": examples.copy(),
        }

    def _check_token_range(self, rows: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> None:
        # An out-of-range id would otherwise surface as an opaque index error inside the embedding lookup.
        for name, values in (("inputs", inputs), ("labels", labels)):
            bad = np.flatnonzero(((values < 0) | (values >= self.metadata.vocab_size)).any(axis=1))
            if len(bad):
                raise DatasetError(
                    f"{self.description}: example {rows[bad[0]]} has {name} token ids outside [0, "
                    f"{self.metadata.vocab_size}), the vocab_size in dataset.json"
                )


def read_dataset_split(dataset_dir: str | Path, split: str) -> tuple[PuzzleDatasetMetadata, PuzzleSplit]:
    """Read one split with inputs and labels memory-mapped.

    Raises DatasetError naming the path, and saying how to build the dataset, when the directory or
    the split is missing.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise DatasetError(f"{dataset_dir}: dataset directory not found. {BUILD_HINT}")
    if not (dataset_dir / split / "dataset.json").is_file():
        found = ", ".join(available_splits(dataset_dir)) or "none"
        raise DatasetError(
            f"{dataset_dir / split}: split {split!r} not found (splits present: {found}). {BUILD_HINT}"
        )
    return read_split(dataset_dir, split, mmap=True)


def build_task(metadata: PuzzleDatasetMetadata, where: str) -> PuzzleTask:
    """Build the task that `metadata` describes, raising DatasetError that names `where` on failure."""
    try:
        return task_from_metadata(metadata)
    except (DatasetError, ValueError) as error:
        raise DatasetError(f"{where}: {error}") from None


def _check_batch_layout(global_batch_size: int, rank: int, world_size: int, seed: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is invalid for world_size {world_size}, expected 0 <= rank < world_size")
    if global_batch_size < 1 or global_batch_size % world_size:
        raise ValueError(
            f"global_batch_size {global_batch_size} must be a positive multiple of world_size {world_size}"
        )
    if seed < 0:
        raise ValueError(f"seed must be at least 0, got {seed}")


def _check_same_encoding(
    first_dir: Path, first: PuzzleDatasetMetadata, other_dir: Path, other: PuzzleDatasetMetadata
) -> None:
    for field in SHARED_METADATA_FIELDS:
        if getattr(first, field) != getattr(other, field):
            raise DatasetError(
                f"{other_dir}: {field} {getattr(other, field)!r} differs from {getattr(first, field)!r} "
                f"in {first_dir}, but only datasets of one encoding can be mixed"
            )
    for field in TASK_METADATA_FIELDS:
        first_value, other_value = getattr(first, field), getattr(other, field)
        if first_value is not None and other_value is not None and first_value != other_value:
            raise DatasetError(
                f"{other_dir}: {field} {other_value!r} differs from {first_value!r} in {first_dir}, "
                "but only datasets of one task can be mixed"
            )


def _merge_metadata(metadatas: list[PuzzleDatasetMetadata]) -> PuzzleDatasetMetadata:
    """Combine the metadata of mixed directories, dropping builder and source_sha256, which describe one directory."""
    if len(metadatas) == 1:
        return metadatas[0]
    total_groups = sum(metadata.total_groups for metadata in metadatas)
    examples_per_epoch = sum(metadata.total_groups * metadata.mean_puzzle_examples for metadata in metadatas)
    task_fields = {
        field: next((getattr(m, field) for m in metadatas if getattr(m, field) is not None), None)
        for field in TASK_METADATA_FIELDS
    }
    return metadatas[0].model_copy(
        update={
            "num_puzzle_identifiers": max(metadata.num_puzzle_identifiers for metadata in metadatas),
            "total_groups": total_groups,
            "mean_puzzle_examples": examples_per_epoch / total_groups,
            "total_puzzles": sum(metadata.total_puzzles for metadata in metadatas),
            "builder": None,
            "source_sha256": None,
            **task_fields,
        }
    )


class _StackedRows:
    """Read-only row concatenation of several 2-D arrays that copies only the rows it is indexed with."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(part) for part in parts])
        self.dtype = np.result_type(*parts)
        self.shape = (int(self.offsets[-1]), parts[0].shape[1])
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray | slice | int) -> np.ndarray:
        """Rows at `index`: [len(index), seq_len] for an array of non-negative row numbers or a slice,
        [seq_len] for one row number."""
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"row {index} is out of range for {len(self)} rows")
            return self[np.array([index % len(self)])][0]
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index, dtype=np.int64)
        rows = np.empty((len(index), self.shape[1]), dtype=self.dtype)
        part_of_row = np.searchsorted(self.offsets, index, side="right") - 1
        for part_index, part in enumerate(self.parts):
            selected = part_of_row == part_index
            if selected.any():
                rows[selected] = part[index[selected] - self.offsets[part_index]]
        return rows

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.concatenate(self.parts).astype(dtype or self.dtype, copy=False)


def _concatenate_splits(splits: list[PuzzleSplit]) -> PuzzleSplit:
    """Concatenate groups in order, shifting the index offsets but not the puzzle identifiers."""
    if len(splits) == 1:
        return splits[0]
    puzzle_indices, group_indices = [np.zeros(1, dtype=np.int64)], [np.zeros(1, dtype=np.int64)]
    examples_before, puzzles_before = 0, 0
    for data in splits:
        puzzle_indices.append(data.puzzle_indices[1:].astype(np.int64) + examples_before)
        group_indices.append(data.group_indices[1:].astype(np.int64) + puzzles_before)
        examples_before += data.num_examples
        puzzles_before += len(data.puzzle_identifiers)
    return PuzzleSplit(
        inputs=_StackedRows([data.inputs for data in splits]),
        labels=_StackedRows([data.labels for data in splits]),
        puzzle_identifiers=np.concatenate([data.puzzle_identifiers for data in splits]),
        puzzle_indices=np.concatenate(puzzle_indices),
        group_indices=np.concatenate(group_indices),
    )


def _check_nonempty_groups_and_puzzles(data: PuzzleSplit, name: str) -> None:
    for array_name, offsets in (("group_indices", data.group_indices), ("puzzle_indices", data.puzzle_indices)):
        empty = np.flatnonzero(np.diff(offsets) <= 0)
        if offsets[0] != 0 or len(empty):
            where = f"entry {empty[0]} is empty" if len(empty) else f"it starts at {offsets[0]}, not 0"
            raise DatasetError(f"{name}: {array_name} must be increasing offsets from 0, but {where}")
