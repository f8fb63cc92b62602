"""Print the speed figures of `dataset.puzzle_dataset.PuzzleDataset`.

    python benchmarks/bench_loader.py [--batches 200] [--global-batch-size 768]

The datasets hold random tokens, because the loader's cost depends only on the layout. The layouts are
those of the usual runs: Sudoku 1k x 1000 (1,000 groups of 1,001 one-example puzzles, seq_len 81) and
Maze 1k x 8 (1,000 groups of 8, seq_len 900). Figures per layout: training and evaluation batches per
second, and the time to the first batch when resuming at the last step of a 50,000-epoch run. A third
layout, whose puzzles have 1 to 3 examples, times a resume that has to draw every earlier epoch's size.
"""

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from dataset.common import PuzzleDatasetMetadata, PuzzleSplit, single_example_split, write_split  # noqa: E402
from dataset.puzzle_dataset import PuzzleDataset  # noqa: E402

RESUME_EPOCHS = 50_000


def write_layout(path: Path, num_groups: int, group_size: int, seq_len: int, vocab_size: int, task: str) -> None:
    """Write a train split of one-example puzzles in groups of `group_size`, with random tokens."""
    rng = np.random.default_rng(0)
    num_examples = num_groups * group_size
    tokens = rng.integers(1, vocab_size, (num_examples, seq_len), dtype=np.uint8)
    data = single_example_split(tokens, tokens, group_size)
    side = int(np.sqrt(seq_len))
    metadata = PuzzleDatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size, seq_len=seq_len,
        num_puzzle_identifiers=1, total_groups=num_groups, mean_puzzle_examples=1.0, total_puzzles=num_groups,
        sets=["all"], task=task, grid_shape=(side, side),
    )
    write_split(path, "train", data, metadata)


def write_varying_layout(path: Path, num_groups: int) -> None:
    """Write 9x9 Sudoku-encoded groups of 4 puzzles with 1 to 3 examples each, so epoch sizes vary."""
    rng = np.random.default_rng(0)
    puzzle_sizes = rng.integers(1, 4, num_groups * 4)
    num_examples = int(puzzle_sizes.sum())
    tokens = rng.integers(1, 11, (num_examples, 81), dtype=np.uint8)
    data = PuzzleSplit(
        inputs=tokens,
        labels=tokens,
        puzzle_identifiers=np.zeros(len(puzzle_sizes), dtype=np.int32),
        puzzle_indices=np.concatenate([[0], np.cumsum(puzzle_sizes)]).astype(np.int32),
        group_indices=np.arange(0, len(puzzle_sizes) + 1, 4, dtype=np.int32),
    )
    metadata = PuzzleDatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81, num_puzzle_identifiers=1,
        total_groups=num_groups, mean_puzzle_examples=num_examples / len(puzzle_sizes),
        total_puzzles=len(puzzle_sizes), sets=["all"], task="sudoku", box_shape=(3, 3),
    )
    write_split(path, "train", data, metadata)


def batches_per_second(batches, count: int) -> float:
    start = time.perf_counter()
    consumed = sum(1 for _ in itertools.islice(batches, count))
    return consumed / (time.perf_counter() - start)


def report(name: str, path: Path, global_batch_size: int, num_batches: int) -> None:
    dataset = PuzzleDataset(path, "train", global_batch_size=global_batch_size)
    train_rate = batches_per_second(dataset.train_batches(), num_batches)
    eval_rate = batches_per_second(dataset.eval_batches(), num_batches)
    last_step = int(RESUME_EPOCHS * dataset.examples_per_epoch / global_batch_size)
    start = time.perf_counter()
    next(dataset.train_batches(last_step))
    resume_seconds = time.perf_counter() - start
    print(
        f"{name:<28} examples {dataset.data.num_examples:>9,}  train {train_rate:7.1f} batches/s  "
        f"eval {eval_rate:7.1f} batches/s  resume at step {last_step:,}: {resume_seconds:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="batches timed per figure (default 200)")
    parser.add_argument("--global-batch-size", type=int, default=768, help="examples per global batch (default 768)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        sudoku, maze, varying = Path(scratch) / "sudoku", Path(scratch) / "maze", Path(scratch) / "varying"
        write_layout(sudoku, num_groups=1000, group_size=1001, seq_len=81, vocab_size=11, task="sudoku")
        write_layout(maze, num_groups=1000, group_size=8, seq_len=900, vocab_size=6, task="maze")
        write_varying_layout(varying, num_groups=1000)
        print(f"global_batch_size {args.global_batch_size}, world_size 1, {args.batches} batches per figure")
        report("sudoku 1k x 1000 (9x9)", sudoku, args.global_batch_size, args.batches)
        report("maze 1k x 8 (30x30)", maze, args.global_batch_size, args.batches)
        report("varying examples per puzzle", varying, args.global_batch_size, args.batches)


if __name__ == "__main__":
    main()
