"""Build a maze dataset in the reference on-disk format (see dataset/common.py).

Sources (one of):
    --source-repo REPO                train.csv and test.csv of a Hugging Face dataset (the default source)
    --train-csv PATH --test-csv PATH  local CSVs in the Maze-Hard layout
    --generate                        random mazes from dataset/maze_generator.py

Examples:
    python -m dataset.build_maze_dataset --aug
    python -m dataset.build_maze_dataset --generate --size 10 --subsample-size 500 --test-subsample-size 200 \\
        --aug --output-dir data/maze-10x10-generated

With --aug, each train puzzle forms a group with its symmetric variants, the identity first: 8 for square
grids and 4 shape-keeping ones otherwise. Val and test puzzles are single-puzzle groups.
The same arguments and source rows give byte-identical output.
"""

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataset.common import (
    CsvRows,
    DatasetError,
    atomic_output_dir,
    available_splits,
    read_metadata,
    read_puzzle_csv,
    single_example_split,
    split_metadata,
    split_off_validation,
    strings_to_array,
    write_identifiers,
    write_split,
)
from dataset.maze import CHARSET, MazeTask
from dataset.maze_generator import MAX_WIDTH, MazeGeneratorConfig, default_min_path_cells, generate_mazes

DEFAULT_SOURCE_REPO = "sapientinc/maze-30x30-hard-1k"
DEFAULT_GENERATED_TRAIN = 1000
DEFAULT_GENERATED_TEST = 1000
DEFAULT_SIZE = 30
DEFAULT_WALL_DENSITY = 0.37
# Independent random streams, so that changing one option does not reshuffle the others' draws.
STREAMS = ("train_subsample", "test_subsample", "val_split", "generate_train", "generate_test")


@dataclass
class MazeSource:
    """Encoded puzzles of one source split and the hash of its rows."""

    inputs: np.ndarray  # [N, H*W] uint8 token ids
    labels: np.ndarray  # [N, H*W] uint8 token ids
    path: Path  # file named in errors about this split
    source_sha256: str


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; invalid combinations exit with status 2."""
    parser = argparse.ArgumentParser(prog="python -m dataset.build_maze_dataset", description=__doc__.splitlines()[0])
    source = parser.add_argument_group("source")
    source.add_argument(
        "--source-repo", help=f"Hugging Face dataset repository to download from (default {DEFAULT_SOURCE_REPO})"
    )
    source.add_argument("--train-csv", type=Path, help="local training CSV (source,question,answer,rating)")
    source.add_argument("--test-csv", type=Path, help="local test CSV, required with --train-csv")
    source.add_argument("--generate", action="store_true", help="generate random mazes instead of reading CSVs")

    output = parser.add_argument_group("output")
    output.add_argument(
        "--output-dir", type=Path,
        help="dataset directory (default: data/<repository name>, data/<folder of the train CSV> "
        "or data/maze-<N>x<N>-generated)",
    )
    output.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty output directory")
    output.add_argument(
        "--subsample-size", "--num-puzzles", type=int, dest="subsample_size",
        help="training puzzles: a seeded subset of the train rows, or the number to generate "
        f"(default: all rows, or {DEFAULT_GENERATED_TRAIN} generated)",
    )
    output.add_argument(
        "--test-subsample-size", type=int,
        help="test puzzles: a seeded subset of the test rows, or the number to generate "
        f"(default: all rows, or {DEFAULT_GENERATED_TEST} generated)",
    )
    output.add_argument("--aug", action="store_true", help="add the grid symmetries of each training puzzle")
    output.add_argument(
        "--val-size", type=int, default=0, help="training puzzles moved to a val split before augmentation"
    )
    output.add_argument("--seed", type=non_negative_int, default=0, help="seed of every random choice (>= 0)")

    generator = parser.add_argument_group("generator (with --generate)")
    generator.add_argument("--size", type=int, help=f"side of the square grid in cells (default {DEFAULT_SIZE})")
    generator.add_argument(
        "--wall-density", type=float, help=f"probability that a cell is a wall (default {DEFAULT_WALL_DENSITY})"
    )
    generator.add_argument(
        "--min-path-length", type=int,
        help="minimum path cells 'o' between S and G (default: 108 at size 30, scaled to other sizes)",
    )
    generator.add_argument(
        "--max-path-length", type=int, help="maximum path cells 'o' between S and G (default: no limit)"
    )

    args = parser.parse_args(argv)
    if (args.train_csv is None) != (args.test_csv is None):
        parser.error("pass --train-csv and --test-csv together")
    if sum((args.generate, args.train_csv is not None, args.source_repo is not None)) > 1:
        parser.error("choose one source: --source-repo, --train-csv/--test-csv or --generate")
    if not args.generate and args.train_csv is None:
        args.source_repo = args.source_repo or DEFAULT_SOURCE_REPO
    for name in ("subsample_size", "test_subsample_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.val_size < 0:
        parser.error(f"--val-size must be at least 0, got {args.val_size}")
    generator_options = (args.size, args.wall_density, args.min_path_length, args.max_path_length)
    if not args.generate and any(value is not None for value in generator_options):
        parser.error("--size, --wall-density, --min-path-length and --max-path-length only apply with --generate")
    if args.generate:
        check_generator_args(parser, args)
    return args


def check_generator_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in the generator defaults and reject settings outside their ranges."""
    if args.size is None:
        args.size = DEFAULT_SIZE
    if args.wall_density is None:
        args.wall_density = DEFAULT_WALL_DENSITY
    if not 2 <= args.size <= MAX_WIDTH:
        parser.error(f"--size must be from 2 to {MAX_WIDTH}, got {args.size}")
    if not 0.0 <= args.wall_density < 1.0:
        parser.error(f"--wall-density must be in [0, 1), got {args.wall_density}")
    if args.min_path_length is None:
        args.min_path_length = default_min_path_cells(args.size)
    if args.min_path_length < 0:
        parser.error(f"--min-path-length must be at least 0, got {args.min_path_length}")
    if args.max_path_length is not None and args.max_path_length < args.min_path_length:
        parser.error(f"--max-path-length {args.max_path_length} is below --min-path-length {args.min_path_length}")


# ---------------------------------------------------------------------------------------------
# Sources


def read_maze_csv(path: Path, grid_shape: tuple[int, int] | None = None) -> tuple[MazeSource, MazeTask]:
    """Read and validate a Maze-Hard CSV; the grid is square unless `grid_shape` is given.

    Raises DatasetError naming the file and line of the first invalid row.
    """
    rows = read_puzzle_csv(path)
    if grid_shape is None:
        side = math.isqrt(len(rows.questions[0]))
        if side * side != len(rows.questions[0]) or side < 2:
            length = len(rows.questions[0])
            raise rows.error(0, f"question has {length} characters, expected a square grid such as 900 = 30x30")
        grid_shape = (side, side)
    task = MazeTask(grid_shape)
    inputs = strings_to_array(rows, "question", task.seq_len, CHARSET) + 1
    labels = strings_to_array(rows, "answer", task.seq_len, CHARSET) + 1
    problem = task.find_invalid_puzzle(inputs, labels)
    if problem is not None:
        raise rows.error(*problem)
    return MazeSource(inputs, labels, path, rows.sha256()), task


def download_csvs(repo_id: str) -> tuple[Path, Path]:
    """Download train.csv and test.csv of a Hugging Face dataset repository (or take them from its cache)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    paths = []
    for filename in ("train.csv", "test.csv"):
        try:
            paths.append(Path(hf_hub_download(repo_id, filename, repo_type="dataset")))
        except (OSError, HFValidationError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DatasetError(
                f"{repo_id}/{filename}: download failed ({first_line}); "
                "pass --train-csv and --test-csv to use local files"
            ) from None
    return paths[0], paths[1]


def generated_source(
    task: MazeTask,
    config: MazeGeneratorConfig,
    count: int,
    rng: np.random.Generator,
    name: str,
    exclude: set[bytes] | None = None,
) -> MazeSource:
    """Generate `count` mazes; their hash is that of the same rows written as a CSV."""
    inputs, labels = generate_mazes(config, count, rng, exclude=exclude)
    questions = [task.to_row_string(grid) for grid in inputs]
    answers = [task.to_row_string(grid) for grid in labels]
    rows = CsvRows(Path(name), [""] * count, questions, answers, np.full(count, -1.0), np.arange(count) + 2)
    return MazeSource(inputs, labels, Path(name), rows.sha256())


def load_sources(
    args: argparse.Namespace, rngs: dict[str, np.random.Generator]
) -> tuple[MazeSource, MazeSource, MazeTask]:
    """Read, download or generate the train and test sources named by the arguments."""
    if args.generate:
        task = MazeTask((args.size, args.size))
        config = MazeGeneratorConfig(
            grid_shape=task.grid_shape,
            wall_density=args.wall_density,
            min_path_cells=args.min_path_length,
            max_path_cells=args.max_path_length,
        )
        test_count = args.test_subsample_size or DEFAULT_GENERATED_TEST
        train_count = args.subsample_size or DEFAULT_GENERATED_TRAIN
        # Test first, from its own stream, so the test set does not change with the training size.
        test = generated_source(task, config, test_count, rngs["generate_test"], "generated-test")
        exclude = {grid.tobytes() for grid in test.inputs}
        train = generated_source(task, config, train_count, rngs["generate_train"], "generated-train", exclude)
        return train, test, task

    train_csv, test_csv = (args.train_csv, args.test_csv) if args.train_csv else download_csvs(args.source_repo)
    train, task = read_maze_csv(train_csv)
    test, _ = read_maze_csv(test_csv, task.grid_shape)
    return train, test, task


def subsample(source: MazeSource, size: int | None, rng: np.random.Generator, option: str) -> MazeSource:
    """Keep a seeded random subset of `size` puzzles, in source order; all of them when `size` is None."""
    if size is None:
        return source
    if size > len(source.inputs):
        raise DatasetError(f"{source.path}: {option} {size} exceeds the {len(source.inputs)} puzzles in the file")
    keep = np.sort(rng.choice(len(source.inputs), size=size, replace=False))
    return MazeSource(source.inputs[keep], source.labels[keep], source.path, source.source_sha256)


# ---------------------------------------------------------------------------------------------
# Building


def augment(task: MazeTask, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Expand each puzzle into its symmetric variants, identity first.

    inputs, labels: [N, H*W]. Returns inputs and labels [N * K, H*W], grouped by puzzle, and K.
    """
    symmetries = task.symmetries()
    augmented = []
    for grids in (inputs, labels):
        variants = np.stack([task.transform(grids, index) for index in symmetries], axis=1)  # [N, K, H*W]
        augmented.append(variants.reshape(-1, task.seq_len))
    return augmented[0], augmented[1], len(symmetries)


def builder_record(args: argparse.Namespace) -> dict[str, Any]:
    """List the arguments that determine the output, without paths to local files."""
    record: dict[str, Any] = {
        "module": "dataset.build_maze_dataset",
        "subsample_size": args.subsample_size,
        "test_subsample_size": args.test_subsample_size,
        "aug": args.aug,
        "val_size": args.val_size,
        "seed": args.seed,
    }
    if args.generate:
        record.update(source="generate", size=args.size, wall_density=args.wall_density,
                      min_path_length=args.min_path_length, max_path_length=args.max_path_length)
    elif args.train_csv is not None:
        record.update(source="csv", train_csv=args.train_csv.name, test_csv=args.test_csv.name)
    else:
        record.update(source="hub", source_repo=args.source_repo)
    return record


def default_output_name(args: argparse.Namespace, task: MazeTask) -> str:
    """Name the output directory after the source: the repository, the CSV's folder or the grid size."""
    if args.generate:
        height, width = task.grid_shape
        return f"maze-{height}x{width}-generated"
    if args.train_csv is not None:
        return args.train_csv.resolve().parent.name
    return args.source_repo.rsplit("/", 1)[-1]


def build(args: argparse.Namespace) -> Path:
    """Build the dataset the arguments describe; returns the output directory."""
    seeds = np.random.SeedSequence(args.seed).spawn(len(STREAMS))
    rngs = {name: np.random.default_rng(seed) for name, seed in zip(STREAMS, seeds)}
    train, test, task = load_sources(args, rngs)
    train = subsample(train, args.subsample_size, rngs["train_subsample"], "--subsample-size")
    test = subsample(test, args.test_subsample_size, rngs["test_subsample"], "--test-subsample-size")
    if args.val_size and args.val_size >= len(train.inputs):
        raise DatasetError(
            f"{train.path}: --val-size {args.val_size} must be below the {len(train.inputs)} training puzzles"
        )
    train_rows, val_rows = split_off_validation(len(train.inputs), args.val_size, rngs["val_split"])

    train_inputs, train_labels, group_size = train.inputs[train_rows], train.labels[train_rows], 1
    if args.aug:
        train_inputs, train_labels, group_size = augment(task, train_inputs, train_labels)
    splits = {
        "train": (single_example_split(train_inputs, train_labels, group_size), train.source_sha256),
        "test": (single_example_split(test.inputs, test.labels, 1), test.source_sha256),
    }
    if args.val_size:
        val = single_example_split(train.inputs[val_rows], train.labels[val_rows], 1)
        splits["val"] = (val, train.source_sha256)

    output_dir = args.output_dir or Path("data") / default_output_name(args, task)
    record = builder_record(args)
    inputs = [path for path in (args.train_csv, args.test_csv) if path is not None]
    with atomic_output_dir(output_dir, overwrite=args.overwrite, inputs=inputs) as staging:
        for split, (data, source_sha256) in splits.items():
            write_split(staging, split, data, split_metadata(task, data, record, source_sha256))
        write_identifiers(staging)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    """Run the builder; on invalid input data, print `error: <problem>` and exit with status 2."""
    args = parse_args(argv)
    try:
        output_dir = build(args)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    counts = {split: read_metadata(output_dir, split).total_puzzles for split in available_splits(output_dir)}
    print(f"wrote {output_dir}: " + ", ".join(f"{split} {count:,} examples" for split, count in counts.items()))


if __name__ == "__main__":
    main()
