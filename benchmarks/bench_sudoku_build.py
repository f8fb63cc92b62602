"""Print the speed and memory figures of the Sudoku dataset layer.

    python benchmarks/bench_sudoku_build.py --data-dir /path/to/shared/data

Figures:
- the 1k x 1000 build (Sudoku-Extreme 1k train with 1,000 augmentations, forum-hardest test) run as a
  subprocess: median wall seconds and the median of each run's peak RSS, over --runs runs;
- the generator rate for 9x9 minimal puzzles (puzzles/s and mean givens);
- the checker's time for 100,000 9x9 predictions.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from dataset.sudoku import SudokuTask, augment  # noqa: E402
from dataset.sudoku_generator import generate_puzzles  # noqa: E402


def time_build(data_dir: Path, num_aug: int, runs: int) -> tuple[list[float], list[float]]:
    """Run the builder `runs` times. Returns the wall seconds and the peak RSS in MiB of each run."""
    walls, peaks = [], []
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable, "-m", "dataset.build_sudoku_dataset",
            "--train-csv", str(data_dir / "sudoku-extreme-1k" / "train.csv"),
            "--test-csv", str(data_dir / "sudoku-hard" / "forum_hardest_test.csv"),
            "--num-aug", str(num_aug), "--output-dir", str(Path(scratch) / "out"), "--overwrite",
        ]
        for _ in range(runs):
            start = time.perf_counter()
            process = subprocess.Popen(command, cwd=REPO_ROOT)
            # wait4 returns the resource usage of this child alone, whereas RUSAGE_CHILDREN would give
            # the maximum over all earlier children too.
            _, status, usage = os.wait4(process.pid, 0)
            walls.append(time.perf_counter() - start)
            exit_code = os.waitstatus_to_exitcode(status)
            if exit_code != 0:
                raise SystemExit(f"build failed with exit code {exit_code}: {' '.join(command)}")
            peaks.append(usage.ru_maxrss / 1024)  # Linux reports kibibytes
    return walls, peaks


def time_generator(count: int, seed: int) -> tuple[float, float]:
    """Generate `count` minimal 9x9 puzzles. Returns (puzzles per second, mean givens)."""
    start = time.perf_counter()
    puzzles, _ = generate_puzzles((3, 3), count, np.random.default_rng(seed))
    seconds = time.perf_counter() - start
    return count / seconds, float((puzzles > 0).sum(axis=1).mean())


def time_checker(count: int) -> float:
    """Seconds to check `count` 9x9 predictions (augmented copies of one valid grid, every tenth broken)."""
    task = SudokuTask()
    rows, columns = np.indices((9, 9))
    solution = ((3 * (rows % 3) + rows // 3 + columns) % 9 + 2).reshape(1, 81).astype(np.uint8)
    puzzle = solution.copy()
    puzzle[:, ::2] = 1
    inputs, predictions = augment(task, puzzle, solution, count - 1, np.random.default_rng(0))
    predictions[::10, 40] = predictions[::10, 41]
    start = time.perf_counter()
    task.check(inputs, predictions)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("PUZZLE_DATA_DIR"),
                        help="folder with sudoku-extreme-1k/ and sudoku-hard/ (default: $PUZZLE_DATA_DIR)")
    parser.add_argument("--runs", type=int, default=3, help="build runs; the median is reported (default 3)")
    parser.add_argument("--num-aug", type=int, default=1000, help="augmentations per training puzzle (default 1000)")
    parser.add_argument("--generator-count", type=int, default=1000, help="9x9 puzzles to generate (default 1000)")
    parser.add_argument("--checker-count", type=int, default=100_000, help="predictions to check (default 100000)")
    args = parser.parse_args()
    if args.data_dir is None or not Path(args.data_dir).is_dir():
        parser.error("pass --data-dir or set PUZZLE_DATA_DIR to the folder of the real puzzle CSVs")

    walls, peaks = time_build(Path(args.data_dir), args.num_aug, args.runs)
    print(f"build 1k x {args.num_aug}: median {statistics.median(walls):.2f} s wall "
          f"(runs {', '.join(f'{wall:.2f}' for wall in walls)}), "
          f"median peak RSS {statistics.median(peaks):.0f} MiB (max {max(peaks):.0f} MiB)")
    rate, mean_givens = time_generator(args.generator_count, seed=0)
    print(f"generator 9x9 minimal: {args.generator_count} puzzles at {rate:.1f} puzzles/s "
          f"({args.generator_count / rate:.1f} s), mean givens {mean_givens:.2f}")
    print(f"checker: {args.checker_count} 9x9 predictions in {time_checker(args.checker_count):.3f} s")


if __name__ == "__main__":
    main()
