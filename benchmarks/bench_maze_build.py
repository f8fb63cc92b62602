"""Print figures of the maze data layer: Maze-Hard statistics, generator statistics and rate, build time.

Usage:
    python benchmarks/bench_maze_build.py --data-dir /path/to/shared/data [--mazes 300]

Sections:
- statistics of the real Maze-Hard CSVs under DATA_DIR/maze-30x30-hard-1k (skipped without --data-dir);
- the same statistics for generated mazes at 30x30 (Maze-Hard settings), 15x15 and 10x10, with the
  generation rate;
- the 99th percentile of the double-sweep path length of random grids by side, which sets
  `PATH_CELLS_EXPONENT` in dataset/maze_generator.py;
- wall time and peak RSS (Linux only) of the builder with --aug on the real CSVs, in a child process;
- time to check 100,000 predictions.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from dataset.common import read_puzzle_csv, strings_to_array  # noqa: E402
from dataset.maze import CHARSET, GOAL, PATH, START, WALL, MazeTask, bfs_distances  # noqa: E402
from dataset.maze_generator import (  # noqa: E402
    MazeGeneratorConfig,
    default_min_path_cells,
    double_sweep_distances,
    generate_mazes,
)


def maze_statistics(inputs: np.ndarray, labels: np.ndarray, side: int) -> dict[str, str]:
    """Summarise square mazes [N, side*side]: walls, path cells, where S and G sit, unreachable cells."""
    grids = inputs.reshape(-1, side, side)
    walls = (grids == WALL).mean(axis=(1, 2))
    border = np.zeros((side, side), dtype=bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    path_cells = (labels == PATH).sum(axis=1)
    starts = np.argwhere(grids == START)[:, 1:]
    goals = np.argwhere(grids == GOAL)[:, 1:]
    from_start = bfs_distances(grids != WALL, grids == START)
    unreachable = ((grids != WALL) & (from_start < 0)).sum(axis=(1, 2))
    p10, p50, p90 = np.percentile(path_cells, [10, 50, 90])
    start_on_border = border[starts[:, 0], starts[:, 1]].mean()
    goal_on_border = border[goals[:, 0], goals[:, 1]].mean()
    return {
        "mazes": f"{len(inputs)}",
        "wall fraction": f"mean {walls.mean():.4f}, std {walls.std():.4f}, range {walls.min():.3f}-{walls.max():.3f}",
        "wall fraction on the border": f"{(grids[:, border] == WALL).mean():.4f}",
        "path cells": f"min {path_cells.min()}, p10/p50/p90 {p10:.0f}/{p50:.0f}/{p90:.0f}, "
        f"mean {path_cells.mean():.1f}, max {path_cells.max()}",
        "share at the minimum": f"{(path_cells == path_cells.min()).mean():.3f}",
        "S / G on the border": f"{start_on_border:.3f} / {goal_on_border:.3f}",
        "S-G Manhattan distance": f"mean {np.abs(starts - goals).sum(axis=1).mean():.1f}",
        "open cells unreachable from S": f"mean {unreachable.mean():.1f}",
    }


def print_statistics(title: str, statistics: dict[str, str]) -> None:
    print(f"\n{title}")
    for name, value in statistics.items():
        print(f"  {name:32s} {value}")


def real_statistics(data_dir: Path) -> None:
    folder = data_dir / "maze-30x30-hard-1k"
    inputs, labels = [], []
    for split in ("train", "test"):
        rows = read_puzzle_csv(folder / f"{split}.csv")
        inputs.append(strings_to_array(rows, "question", 900, CHARSET) + 1)
        labels.append(strings_to_array(rows, "answer", 900, CHARSET) + 1)
    statistics = maze_statistics(np.concatenate(inputs), np.concatenate(labels), 30)
    print_statistics(f"Maze-Hard, {folder} (train + test)", statistics)


def generator_statistics(side: int, count: int, seed: int) -> None:
    config = MazeGeneratorConfig(grid_shape=(side, side), min_path_cells=default_min_path_cells(side))
    begin = time.perf_counter()
    inputs, labels = generate_mazes(config, count, np.random.default_rng(seed))
    seconds = time.perf_counter() - begin
    statistics = maze_statistics(inputs, labels, side)
    statistics["rate"] = f"{count / seconds:.1f} puzzles/s ({count} in {seconds:.1f} s)"
    statistics["labels valid"] = f"{MazeTask((side, side)).check(inputs, labels).all()}"
    title = f"generated {side}x{side}, min path cells {config.min_path_cells}, wall density {config.wall_density}"
    print_statistics(title, statistics)


def sweep_percentiles(seed: int, grids: int = 16384) -> None:
    """Print the 99th percentile of the double-sweep path cells of random grids at 37 % walls."""
    rng = np.random.default_rng(seed)
    print(f"\n99th percentile of double-sweep path cells, {grids} random grids at 37 % walls")
    percentiles = {}
    for side in (10, 15, 30):
        open_cells = rng.random((grids, side, side)) >= 0.37
        percentiles[side] = np.percentile(double_sweep_distances(open_cells, rng) - 1, 99)
        line = f"  {side}x{side}: {percentiles[side]:.1f}"
        if side != 10:
            exponent = np.log(percentiles[side] / percentiles[10]) / np.log(side / 10)
            line += f", growth exponent from 10x10: {exponent:.2f}"
        print(line)


# Runs the builder and prints the peak RSS of this process in KiB. VmHWM describes the memory map that
# exec created. The child's ru_maxrss instead kept the parent's larger peak across exec, so it overstated
# the build's memory.
BUILD_AND_REPORT_PEAK = """
import sys
from dataset.build_maze_dataset import main
main(sys.argv[1:])
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(peak[0] if peak else "nan")
"""


def build_time(data_dir: Path) -> None:
    folder = data_dir / "maze-30x30-hard-1k"
    with tempfile.TemporaryDirectory() as output:
        command = [
            sys.executable, "-c", BUILD_AND_REPORT_PEAK, "--train-csv", str(folder / "train.csv"),
            "--test-csv", str(folder / "test.csv"), "--aug", "--output-dir", f"{output}/maze", "--overwrite",
        ]
        begin = time.perf_counter()
        result = subprocess.run(command, check=True, cwd=REPO_ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - begin
    peak_mib = float(result.stdout.split()[-1]) / 1024
    print(f"\nbuild Maze-Hard with --aug (1000 x 8 train, 500 test): {seconds:.2f} s wall, peak RSS {peak_mib:.0f} MiB")


def check_rate(seed: int, count: int = 100_000) -> None:
    rng = np.random.default_rng(seed)
    task = MazeTask((30, 30))
    inputs, labels = generate_mazes(MazeGeneratorConfig(), 200, rng)
    rows = rng.integers(0, len(inputs), count)
    predictions = labels[rows].copy()
    predictions[::2, rng.integers(0, 900)] = 2  # open one cell in every second prediction
    begin = time.perf_counter()
    solved = task.check(inputs[rows], predictions)
    seconds = time.perf_counter() - begin
    print(f"\ncheck {count} predictions of 200 distinct 30x30 mazes: {seconds:.2f} s ({solved.mean():.3f} solved)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="folder that contains maze-30x30-hard-1k/{train,test}.csv")
    parser.add_argument("--mazes", type=int, default=300, help="mazes generated per size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.data_dir is not None:
        real_statistics(args.data_dir)
    for side in (30, 15, 10):
        generator_statistics(side, args.mazes, args.seed)
    sweep_percentiles(args.seed)
    if args.data_dir is not None:
        build_time(args.data_dir)
    check_rate(args.seed)


if __name__ == "__main__":
    main()
