"""Build a Sudoku dataset in the reference on-disk layout from Sudoku-Extreme CSVs or generated puzzles.

Run as a module, for example the usual 1k training set with 1,000 augmentations per puzzle:

    python -m dataset.build_sudoku_dataset --output-dir data/sudoku-extreme-1k-aug-1000 \
        --subsample-size 1000 --num-aug 1000

Sources: the Hugging Face dataset repository (default), local `--train-csv`/`--test-csv` files in the
`source,question,answer,rating` layout, or `--generate` for puzzles made by `dataset.sudoku_generator`.
Every random choice comes from `--seed`, so the same arguments give byte-identical files.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataset.common import (
    SPLITS,
    CsvRows,
    DatasetError,
    atomic_output_dir,
    read_puzzle_csv,
    single_example_split,
    split_metadata,
    split_off_validation,
    write_identifiers,
    write_split,
)
from dataset.sudoku import BLANK_TOKEN, SudokuTask, augment, reveal_givens
from dataset.sudoku_generator import SUPPORTED_BOX_SHAPES, generate_puzzles

DEFAULT_SOURCE_REPO = "sapientinc/sudoku-extreme"
DEFAULT_GENERATED_PUZZLES = 1000

# Each random choice draws from its own stream, so changing one option (say --num-aug) leaves the
# others' draws (say the subsample) as they were.
RANDOM_STREAMS = {"train_subsample": 0, "test_subsample": 1, "val": 2, "reveal": 3, "augment": 4, "generate": 5}

# Options that do not change the built files and stay out of the recorded builder arguments.
UNRECORDED_OPTIONS = ("output_dir", "overwrite")


@dataclass
class SourcePuzzles:
    """Checked puzzles of one source: the CSV rows and their token ids."""

    rows: CsvRows
    inputs: np.ndarray  # [N, n*n] uint8 puzzles
    labels: np.ndarray  # [N, n*n] uint8 solutions

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, indices: np.ndarray) -> "SourcePuzzles":
        """Keep the puzzles at `indices` (in that order)."""
        return SourcePuzzles(self.rows.select(indices), self.inputs[indices], self.labels[indices])


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dataset.build_sudoku_dataset",
        description="Build a Sudoku dataset (train, optional val, test) in the TRM/HRM on-disk layout.",
    )
    source = parser.add_argument_group("source (default: download from the Hugging Face Hub)")
    source.add_argument("--source-repo", default=None,
                        help=f"Hugging Face dataset repository with train.csv and test.csv "
                             f"(default {DEFAULT_SOURCE_REPO})")
    source.add_argument("--train-csv", type=Path,
                        help="local training CSV in the source,question,answer,rating layout")
    source.add_argument("--test-csv", type=Path, help="local test CSV in the same layout; required with --train-csv")
    source.add_argument("--generate", action="store_true",
                        help="generate unique-solution puzzles instead of reading CSVs")
    source.add_argument("--box-shape", type=parse_box_shape, default=(3, 3),
                        help="box ROWSxCOLUMNS: 2x2 (4x4 grid), 2x3 (6x6 grid) or 3x3 (9x9 grid, default)")
    source.add_argument("--min-givens", type=parse_min_givens, default=0,
                        help="with --generate: blank cells down to this many givens; 0 or 'minimal' (default) "
                             "blanks until no given can be removed")
    source.add_argument("--max-givens", type=int, default=None,
                        help="with --generate: discard puzzles with more givens than this (default: no limit)")

    selection = parser.add_argument_group("selection and transforms")
    selection.add_argument("--output-dir", type=Path, required=True, help="directory to write the dataset to")
    selection.add_argument("--subsample-size", "--num-puzzles", type=int, default=None,
                           help="training puzzles: a seeded random subset of the train rows (default: all rows; "
                                f"with --generate, the number to generate, default {DEFAULT_GENERATED_PUZZLES})")
    selection.add_argument("--test-subsample-size", type=int, default=None,
                           help="test puzzles: a seeded random subset of the test rows (default: all rows; "
                                f"with --generate, the number to generate, default {DEFAULT_GENERATED_PUZZLES})")
    selection.add_argument("--min-difficulty", type=float, default=None,
                           help="keep only CSV rows with rating >= this value, in train and test")
    selection.add_argument("--num-aug", type=int, default=0, help="augmented variants per training puzzle (default 0)")
    selection.add_argument("--val-size", type=int, default=0,
                           help="training puzzles moved to a 'val' split before augmentation (default 0: no val split)")
    selection.add_argument("--reveal-to", type=int, default=None,
                           help="copy random solution cells into every puzzle of every split until it has at "
                                "least this many givens")
    selection.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    selection.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    return parser


def parse_box_shape(text: str) -> tuple[int, int]:
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if shape not in SUPPORTED_BOX_SHAPES:
        choices = ", ".join(f"{rows}x{cols}" for rows, cols in SUPPORTED_BOX_SHAPES)
        raise argparse.ArgumentTypeError(f"invalid box shape {text!r}; choose one of {choices}")
    return shape


def parse_min_givens(text: str) -> int:
    if text == "minimal":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid givens count {text!r}; expected an integer or 'minimal'") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the options. Conflicting options exit through argparse with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    num_cells = (args.box_shape[0] * args.box_shape[1]) ** 2

    if (args.train_csv is None) != (args.test_csv is None):
        parser.error("--train-csv and --test-csv must be given together")
    if args.generate and (args.train_csv is not None or args.source_repo is not None):
        parser.error("--generate cannot be combined with --train-csv or --source-repo")
    if args.train_csv is not None and args.source_repo is not None:
        parser.error("--source-repo cannot be combined with --train-csv")
    if args.generate and args.min_difficulty is not None:
        parser.error("--min-difficulty needs CSV ratings and cannot be combined with --generate")
    if not args.generate and (args.min_givens != 0 or args.max_givens is not None):
        parser.error("--min-givens and --max-givens only apply with --generate")
    if not args.generate and args.train_csv is None and args.box_shape != (3, 3):
        parser.error("the Hugging Face source contains 9x9 puzzles; --box-shape needs --generate or local CSVs")

    if args.generate:
        if args.subsample_size is None:
            args.subsample_size = DEFAULT_GENERATED_PUZZLES
        if args.test_subsample_size is None:
            args.test_subsample_size = DEFAULT_GENERATED_PUZZLES
    elif args.train_csv is None:
        args.source_repo = args.source_repo or DEFAULT_SOURCE_REPO

    for option in ("subsample_size", "test_subsample_size"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    for option in ("num_aug", "val_size", "seed"):
        if getattr(args, option) < 0:
            parser.error(f"--{option.replace('_', '-')} must be at least 0, got {getattr(args, option)}")
    if args.reveal_to is not None and not 0 <= args.reveal_to <= num_cells:
        parser.error(f"--reveal-to must be between 0 and {num_cells}, got {args.reveal_to}")
    if args.max_givens is not None and not args.min_givens <= args.max_givens <= num_cells:
        parser.error(
            f"--max-givens must be between --min-givens ({args.min_givens}) and {num_cells}, got {args.max_givens}"
        )
    if not 0 <= args.min_givens <= num_cells:
        parser.error(f"--min-givens must be between 0 and {num_cells}, got {args.min_givens}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        build_dataset(args)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


# ---------------------------------------------------------------------------------------------
# Building


def build_dataset(args: argparse.Namespace) -> None:
    """Write train, test and (with --val-size) val splits plus identifiers.json to args.output_dir."""
    task = SudokuTask(box_shape=args.box_shape)
    builder = recorded_arguments(args)
    counts = {}
    inputs = [path for path in (args.train_csv, args.test_csv) if path is not None]
    with atomic_output_dir(args.output_dir, overwrite=args.overwrite, inputs=inputs) as staging:
        for split, puzzles in select_splits(args, *load_sources(args, task)).items():
            inputs, labels = puzzles.inputs, puzzles.labels
            if args.reveal_to is not None:
                reveal_rng = random_stream(args.seed, "reveal", SPLITS.index(split))
                inputs = reveal_givens(inputs, labels, args.reveal_to, reveal_rng)
            group_size = 1
            if split == "train":
                inputs, labels = augment(task, inputs, labels, args.num_aug, random_stream(args.seed, "augment"))
                group_size = args.num_aug + 1
            data = single_example_split(inputs, labels, group_size)
            write_split(staging, split, data, split_metadata(task, data, builder, puzzles.rows.sha256()))
            counts[split] = data.num_examples
        write_identifiers(staging)
    print(f"wrote {args.output_dir}: " + ", ".join(f"{split} {count:,} examples" for split, count in counts.items()))


def select_splits(args: argparse.Namespace, train: SourcePuzzles, test: SourcePuzzles) -> dict[str, SourcePuzzles]:
    """Subsample the source puzzles and move --val-size training puzzles to a val split."""
    seed = args.seed
    train = subsample(train, args.subsample_size, random_stream(seed, "train_subsample"), "--subsample-size")
    test = subsample(test, args.test_subsample_size, random_stream(seed, "test_subsample"), "--test-subsample-size")
    if not args.val_size:
        return {"train": train, "test": test}
    train_indices, val_indices = split_off_validation(len(train), args.val_size, random_stream(seed, "val"))
    return {"train": train.select(train_indices), "val": train.select(val_indices), "test": test}


def random_stream(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, RANDOM_STREAMS[purpose], *extra])


def recorded_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Collect the builder arguments for dataset.json.

    CSV paths are reduced to file names, so the bytes do not depend on where the build ran. The
    `source_sha256` field identifies the file contents instead.
    """
    recorded = {"module": "dataset.build_sudoku_dataset"}
    for name, value in vars(args).items():
        if name in UNRECORDED_OPTIONS:
            continue
        if isinstance(value, Path):
            value = value.name
        elif isinstance(value, tuple):
            value = list(value)
        recorded[name] = value
    return recorded


def load_sources(args: argparse.Namespace, task: SudokuTask) -> tuple[SourcePuzzles, SourcePuzzles]:
    """Read and check the (train, test) puzzles of the chosen source, filtered by --min-difficulty.

    Every row of a CSV is checked, including rows that the filter or the subsample drop later, so whether
    a bad row fails the build does not depend on the seed.
    """
    if args.generate:
        return generated_puzzles(args, task)
    if args.train_csv is not None:
        train_path, test_path = args.train_csv, args.test_csv
    else:
        train_path, test_path = (download_csv(args.source_repo, name) for name in ("train.csv", "test.csv"))

    sources = []
    for path in (train_path, test_path):
        puzzles = encode_rows(task, read_puzzle_csv(path))
        if args.min_difficulty is not None:
            puzzles = puzzles.select(np.flatnonzero(puzzles.rows.ratings >= args.min_difficulty))
            if not len(puzzles):
                raise DatasetError(f"{path}: no row has a rating of at least --min-difficulty {args.min_difficulty}")
        sources.append(puzzles)
    return sources[0], sources[1]


def download_csv(repo_id: str, filename: str) -> Path:
    """Fetch one CSV of a Hugging Face dataset repository into the local Hub cache."""
    import huggingface_hub

    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename, repo_type="dataset"))
    except (OSError, huggingface_hub.errors.HFValidationError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(
            f"{repo_id}/{filename}: download failed ({first_line}); "
            "check the network or pass --train-csv and --test-csv"
        ) from None


def generated_puzzles(args: argparse.Namespace, task: SudokuTask) -> tuple[SourcePuzzles, SourcePuzzles]:
    """Generate distinct train and test puzzles. Their line numbers count the puzzles from 1."""
    num_train, num_test = args.subsample_size, args.test_subsample_size
    try:
        puzzles, solutions = generate_puzzles(
            task.box_shape, num_train + num_test, random_stream(args.seed, "generate"), args.min_givens, args.max_givens
        )
    except ValueError as error:
        raise DatasetError(f"generator: {error}") from None

    name = f"generated-{task.box_shape[0]}x{task.box_shape[1]}"
    count = num_train + num_test
    rows = CsvRows(
        path=Path(name),
        sources=[name] * count,
        questions=[task.to_row_string(grid) for grid in puzzles + BLANK_TOKEN],
        answers=[task.to_row_string(grid) for grid in solutions + BLANK_TOKEN],
        ratings=np.full(count, -1.0),
        line_numbers=np.arange(1, count + 1),
    )
    generated = encode_rows(task, rows)
    return generated.select(np.arange(num_train)), generated.select(np.arange(num_train, count))


def subsample(puzzles: SourcePuzzles, size: int | None, rng: np.random.Generator, option: str) -> SourcePuzzles:
    """Keep a random subset of `size` puzzles in file order; all of them when `size` is None."""
    if size is None or size == len(puzzles):
        return puzzles
    if size > len(puzzles):
        raise DatasetError(f"{puzzles.rows.path}: {option} {size} is larger than the {len(puzzles)} rows available")
    return puzzles.select(np.sort(rng.choice(len(puzzles), size=size, replace=False)))


def encode_rows(task: SudokuTask, rows: CsvRows) -> SourcePuzzles:
    """Encode questions and answers as token ids after checking every answer.

    Raises DatasetError naming the line of the first row whose answer is incomplete, changes a given
    or breaks a Sudoku rule.
    """
    inputs = task.encode_column(rows, "question")
    labels = task.encode_column(rows, "answer")
    invalid = np.flatnonzero(~task.check(inputs, labels))
    if len(invalid):
        row = int(invalid[0])
        raise rows.error(row, f"answer {task.find_violation(inputs[row], labels[row])}")
    return SourcePuzzles(rows, inputs, labels)


if __name__ == "__main__":
    main()
