"""Print what a dataset directory contains, and optionally draw a few of its examples.

    python -m dataset.inspect DIR [--split S] [--count K] [--render FILE.png]

For each split: the metadata, statistics over all examples (givens for Sudoku, cells to fill for other
tasks, and a histogram of label tokens) and the first K examples as text grids beside their labels.
Exits with status 2 and a one-line message when DIR or the split is missing or invalid.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataset.common import DatasetError, PuzzleDatasetMetadata, PuzzleSplit, PuzzleTask, available_splits
from dataset.puzzle_dataset import BUILD_HINT, PuzzleDataset
from dataset.render import save_grid_figure

# Rows per chunk when computing statistics, so a memory-mapped split of millions of rows is never loaded at once.
STATISTICS_CHUNK = 1 << 16
COLUMN_GAP = "    "


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status: 0 on success, 2 for an invalid dataset or option,
    1 when the figure cannot be written."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.render is not None and args.count == 0:
        parser.error("--render draws the first --count examples, so --count must be at least 1")
    try:
        splits = [args.split] if args.split else _splits_present(args.dataset_dir)
        loaded_splits = []
        for split in splits:
            # The loader's checks (offsets, identifiers, task) run first, so inspect accepts what training accepts.
            dataset = PuzzleDataset(args.dataset_dir, split, global_batch_size=1)
            metadata, data, task = dataset.metadata, dataset.data, dataset.task
            _check_token_range(data, metadata, args.dataset_dir / split)
            print(describe_split(split, metadata, data, task, args.count))
            loaded_splits.append((split, data, task))
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) closed the pipe; what it wanted has been printed.
        sys.stdout = open(os.devnull, "w")
        return 0
    if args.render is not None:
        try:
            _render_examples(*loaded_splits[0], args.count, args.render)
        except OSError as error:
            print(f"error: cannot write {args.render}: {error.strerror or error}", file=sys.stderr)
            return 1
    return 0


def _check_token_range(data: PuzzleSplit, metadata: PuzzleDatasetMetadata, where: Path) -> None:
    """Raise DatasetError when any input or label token id lies outside [0, vocab_size)."""
    for start in range(0, data.num_examples, STATISTICS_CHUNK):
        for name in ("inputs", "labels"):
            values = np.asarray(getattr(data, name)[start : start + STATISTICS_CHUNK])
            bad = np.flatnonzero(((values < 0) | (values >= metadata.vocab_size)).any(axis=1))
            if len(bad):
                raise DatasetError(
                    f"{where}: example {start + bad[0]} has {name} token ids outside [0, {metadata.vocab_size})"
                )


def describe_split(split: str, metadata: PuzzleDatasetMetadata, data: PuzzleSplit, task: PuzzleTask, count: int) -> str:
    """Format the metadata, statistics and first `count` examples of one split as text."""
    lines = [f"== split {split} ==", *_metadata_lines(metadata, data, task), *_statistics_lines(metadata, data, task)]
    for example in range(min(count, data.num_examples)):
        lines.append("")
        lines.extend(_example_lines(data, task, example))
    return "\n".join(lines) + "\n"


def _metadata_lines(metadata: PuzzleDatasetMetadata, data: PuzzleSplit, task: PuzzleTask) -> list[str]:
    rows, columns = task.grid_shape
    inferred = "" if metadata.task else " (inferred from vocab_size and seq_len)"
    lines = [
        f"task: {task.name}{inferred}, grid {rows}x{columns}",
        f"vocab_size: {metadata.vocab_size}, seq_len: {metadata.seq_len}, pad_id: {metadata.pad_id}, "
        f"ignore_label_id: {metadata.ignore_label_id}",
        f"groups: {data.num_groups}, puzzles: {len(data.puzzle_identifiers)}, examples: {data.num_examples}, "
        f"puzzle identifiers: {metadata.num_puzzle_identifiers}",
        f"stored dtypes: inputs {data.inputs.dtype}, labels {data.labels.dtype}",
    ]
    if metadata.box_shape is not None:
        lines.append(f"box shape: {metadata.box_shape[0]}x{metadata.box_shape[1]}")
    if metadata.builder is not None:
        arguments = ", ".join(f"{key}={value}" for key, value in metadata.builder.items())
        lines.append(f"builder arguments: {arguments}")
    if metadata.source_sha256 is not None:
        lines.append(f"source sha256: {metadata.source_sha256}")
    return lines


def _statistics_lines(metadata: PuzzleDatasetMetadata, data: PuzzleSplit, task: PuzzleTask) -> list[str]:
    fill_counts = np.empty(data.num_examples, dtype=np.int64)
    label_counts = np.zeros(metadata.vocab_size, dtype=np.int64)
    for start in range(0, data.num_examples, STATISTICS_CHUNK):
        stop = min(start + STATISTICS_CHUNK, data.num_examples)
        fill_counts[start:stop] = task.cells_to_fill(data.inputs[start:stop]).sum(axis=1)
        counts = np.bincount(np.asarray(data.labels[start:stop]).ravel().astype(np.int64))
        if len(counts) > len(label_counts):
            label_counts = np.pad(label_counts, (0, len(counts) - len(label_counts)))
        label_counts[: len(counts)] += counts

    # For Sudoku the cells not to fill are exactly the givens, the figure usually quoted for difficulty.
    if task.name == "sudoku":
        name, values = "givens per example", task.seq_len - fill_counts
    else:
        name, values = "cells to fill per example", fill_counts
    total_labels = max(int(label_counts.sum()), 1)
    histogram = ", ".join(
        f"{token}: {count} ({100 * count / total_labels:.1f}%)" for token, count in enumerate(label_counts) if count
    )
    return [
        f"{name}: min {values.min()}, mean {values.mean():.2f}, max {values.max()}",
        f"label tokens: {histogram}",
    ]


def _example_lines(data: PuzzleSplit, task: PuzzleTask, example: int) -> list[str]:
    puzzle = int(np.searchsorted(data.puzzle_indices, example, side="right")) - 1
    group = int(np.searchsorted(data.group_indices, puzzle, side="right")) - 1
    header = (
        f"example {example} (puzzle {puzzle}, group {group}, identifier {data.puzzle_identifiers[puzzle]})"
    )
    puzzle_rows = ["input", *task.to_text(np.asarray(data.inputs[example])).splitlines()]
    label_rows = ["label", *task.to_text(np.asarray(data.labels[example])).splitlines()]
    width = max(len(row) for row in puzzle_rows)
    # Lines keep their trailing spaces, because in a maze they are open cells.
    return [header] + [f"{left.ljust(width)}{COLUMN_GAP}{right}" for left, right in zip(puzzle_rows, label_rows)]


def _splits_present(dataset_dir: Path) -> list[str]:
    if not dataset_dir.is_dir():
        raise DatasetError(f"{dataset_dir}: dataset directory not found. {BUILD_HINT}")
    splits = available_splits(dataset_dir)
    if not splits:
        raise DatasetError(f"{dataset_dir}: no split with a dataset.json found. {BUILD_HINT}")
    return splits


def _render_examples(split: str, data: PuzzleSplit, task: PuzzleTask, count: int, path: Path) -> None:
    """Save the first `count` examples of `split` as rows of (puzzle, solution) panels."""
    count = min(count, data.num_examples)
    inputs = np.asarray(data.inputs[:count])
    labels = np.asarray(data.labels[:count])
    titles = [f"{split} {example} {kind}" for example in range(count) for kind in ("puzzle", "solution")]
    save_grid_figure(
        task,
        inputs=np.repeat(inputs, 2, axis=0),
        grids=np.stack([inputs, labels], axis=1).reshape(2 * count, -1),
        path=path,
        titles=titles,
        columns=2,
    )
    print(f"saved {2 * count} grids of split {split} to {path}")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dataset.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", type=Path, metavar="DIR", help="dataset directory written by a builder")
    parser.add_argument("--split", help="split to show: train, val or test (default: every split present)")
    parser.add_argument("--count", type=_non_negative_int, default=2, help="examples to print per split (default 2)")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="FILE.png",
        help="save the first --count examples of the first split shown, puzzle beside solution, as a PNG",
    )
    return parser


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
