"""Dataset building: wall time and peak memory of the two builders, and the rates of the puzzle generators.

Builds run as child processes, exactly as on the command line, on the real CSVs under PUZZLE_DATA_DIR:
- Sudoku 1k x 1000: sudoku-extreme-1k/train.csv with 1,000 augmentations, sudoku-hard/forum_hardest_test.csv;
- Maze 1k x 8: maze-30x30-hard-1k/{train,test}.csv with the 8 grid symmetries.
Without those files the builds read stand-in CSVs with the same row counts, made of a few generated
puzzles repeated, and every row of the report names its source. Peak memory is the child's own VmHWM, printed by
the child at exit, because its ru_maxrss would include the pages of this larger parent that it started from.
"""

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import load_average
from benchmarks.measure import time_runs
from dataset.maze import MazeTask
from dataset.maze_generator import MazeGeneratorConfig, generate_mazes
from dataset.sudoku import SudokuTask
from dataset.sudoku_generator import generate_puzzles

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_VARIABLE = "PUZZLE_DATA_DIR"

SUDOKU_CSVS = {"train": "sudoku-extreme-1k/train.csv", "test": "sudoku-hard/forum_hardest_test.csv"}
MAZE_CSVS = {"train": "maze-30x30-hard-1k/train.csv", "test": "maze-30x30-hard-1k/test.csv"}
# Rows of the real files, which the stand-ins copy.
SUDOKU_ROWS = {"train": 1000, "test": 5000}
MAZE_ROWS = {"train": 1000, "test": 500}
SUDOKU_AUGMENTATIONS = 1000
STAND_IN_SUDOKU_PUZZLES = 50
STAND_IN_MAZES = 20

# Runs a builder module with the given arguments, then prints the peak RSS of this process in KiB.
RUN_AND_REPORT_PEAK = """
import runpy, sys
module = sys.argv[1]
sys.argv = [module] + sys.argv[2:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print("peak_rss_kib", peak[0] if peak else "nan")
"""


def real_data_dir() -> Path | None:
    """Return the folder named by PUZZLE_DATA_DIR if it contains every CSV the builds read, else None."""
    value = os.environ.get(DATA_DIR_VARIABLE)
    if not value:
        return None
    folder = Path(value)
    needed = [*SUDOKU_CSVS.values(), *MAZE_CSVS.values()]
    return folder if all((folder / name).is_file() for name in needed) else None


def write_stand_in_csvs(folder: Path, seed: int) -> None:
    """Write CSVs with the real files' names and row counts, made of a few generated puzzles repeated."""
    rng = np.random.default_rng(seed)
    sudoku = SudokuTask()
    puzzles, solutions = generate_puzzles((3, 3), STAND_IN_SUDOKU_PUZZLES, rng)
    # The generator writes 0 for a blank and d for digit d, which are the tokens minus one.
    sudoku_rows = [(sudoku.to_row_string(p + 1), sudoku.to_row_string(s + 1)) for p, s in zip(puzzles, solutions)]
    maze = MazeTask()
    inputs, labels = generate_mazes(MazeGeneratorConfig(), STAND_IN_MAZES, rng)
    maze_rows = [(maze.to_row_string(q), maze.to_row_string(a)) for q, a in zip(inputs, labels)]
    for names, counts, rows in ((SUDOKU_CSVS, SUDOKU_ROWS, sudoku_rows), (MAZE_CSVS, MAZE_ROWS, maze_rows)):
        for split, name in names.items():
            _write_csv(folder / name, [rows[i % len(rows)] for i in range(counts[split])])


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "question", "answer", "rating"])
        writer.writerows(["generated", question, answer, -1] for question, answer in rows)


def run_build(module: str, arguments: list[str]) -> tuple[float, float]:
    """Run `python -m module arguments` in a child process. Returns (wall seconds, peak RSS in MiB)."""
    command = [sys.executable, "-c", RUN_AND_REPORT_PEAK, module, *arguments]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{module} failed with exit code {result.returncode}: {last_line}")
    peak_kib = float(result.stdout.split()[-1])
    return seconds, peak_kib / 1024


def measure_build(name: str, module: str, arguments: list[str], warmup: int, repeats: int, source: str) -> dict:
    """Time `repeats` builds after `warmup` untimed ones; one report row."""
    peaks = []

    def build() -> None:
        peaks.append(run_build(module, arguments)[1])

    timing = time_runs(build, warmup=warmup, repeats=repeats)
    timed_peaks = peaks[warmup:]
    return {
        "name": name,
        "source": source,
        "repeats": repeats,
        "seconds": timing.summary(),
        "peak_rss_mib": {"median": statistics.median(timed_peaks), "max": max(timed_peaks)},
        "load_average": load_average(),
    }


def measure_builds(scratch: Path, warmup: int, repeats: int, seed: int) -> list[dict]:
    """Time the Sudoku 1k x 1000 and Maze 1k x 8 builds on the real CSVs, or on stand-ins without them."""
    data_dir = real_data_dir()
    source = "real CSVs"
    if data_dir is None:
        data_dir = scratch / "stand-in-csvs"
        write_stand_in_csvs(data_dir, seed)
        source = f"stand-in CSVs ({DATA_DIR_VARIABLE} not set or incomplete)"
    output = scratch / "built"
    sudoku_arguments = [
        "--train-csv", str(data_dir / SUDOKU_CSVS["train"]), "--test-csv", str(data_dir / SUDOKU_CSVS["test"]),
        "--num-aug", str(SUDOKU_AUGMENTATIONS), "--output-dir", str(output / "sudoku"), "--overwrite",
    ]
    maze_arguments = [
        "--train-csv", str(data_dir / MAZE_CSVS["train"]), "--test-csv", str(data_dir / MAZE_CSVS["test"]),
        "--aug", "--output-dir", str(output / "maze"), "--overwrite",
    ]
    return [
        measure_build("sudoku 1k x 1000", "dataset.build_sudoku_dataset", sudoku_arguments, warmup, repeats, source),
        measure_build("maze 1k x 8", "dataset.build_maze_dataset", maze_arguments, warmup, repeats, source),
    ]


def measure_generators(sudoku_count: int, maze_count: int, repeats: int, seed: int) -> list[dict]:
    """Measure the puzzles per second of the 9x9 minimal-Sudoku and the 30x30 Maze-Hard-like maze generators.

    Each timed run generates a fresh set from its own seed, after one warm-up run of a single puzzle.
    """
    runs = {
        "sudoku 9x9 minimal": (sudoku_count, lambda count, rng: generate_puzzles((3, 3), count, rng)),
        "maze 30x30 (Maze-Hard settings)": (maze_count, lambda count, rng: generate_mazes(MazeGeneratorConfig(), count, rng)),
    }
    rows = []
    for name, (count, generate) in runs.items():
        generate(1, np.random.default_rng(seed))
        seeds = iter(range(seed + 1, seed + 1 + repeats))
        timing = time_runs(lambda: generate(count, np.random.default_rng(next(seeds))), warmup=0, repeats=repeats)
        rows.append({
            "name": name,
            "puzzles_per_run": count,
            "repeats": repeats,
            "puzzles_per_second": timing.rate(count),
            "load_average": load_average(),
        })
    return rows


def measure_datasets(warmup: int, repeats: int, sudoku_count: int, maze_count: int, seed: int = 0) -> dict:
    """Measure the builds and the generator rates, in a scratch folder that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as scratch:
        builds = measure_builds(Path(scratch), warmup, repeats, seed)
    return {"builds": builds, "generators": measure_generators(sudoku_count, maze_count, repeats, seed)}
