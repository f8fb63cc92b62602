"""Run the CPU-scale TRM vs DFM study on real puzzles: datasets, training, evaluation, then the report.

    python -m experiments.cpu_study --data-dir $PUZZLE_DATA_DIR --output study [--only sudoku|maze] [--dry-run]

Sudoku cells: Sudoku-Extreme training puzzles revealed to G givens (`--levels`, "real" keeps the original
17-35 givens) x training-set sizes (`--sizes`, each with 100 more puzzles carved off as `val`) x architectures
(`--archs`: TRM, DFM with the mask source, DFM with the uniform source) x seeds. Every cell trains for the same
number of optimizer steps at the same global batch, and is tested on 1,000 held-apart "forum hardest" puzzles
revealed to the same level. Maze cells: Maze-Hard 30x30 and generated 10x10 mazes, one run per architecture,
scored on the first `--maze-test-size` test mazes.

Each stage is skipped when its output exists (finished runs are detected by their last checkpoint), so an
interrupted study continues where it stopped. `--dry-run` prints the commands instead of running them.
Each run's output goes to `study.log` in its run directory.
"""

import argparse
import math
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VAL_SIZE = 100
TEST_SIZE = 1000
SUDOKU_AUGMENTATIONS = 100
EVALUATIONS_PER_RUN = 6

# Architecture variants: the preset they start from and the overrides that make the variant.
ARCHITECTURES = {
    "trm": ("cpu_sudoku_trm", []),
    "dfm_mask": ("cpu_sudoku_dfm", ["arch.source=mask"]),
    "dfm_uniform": ("cpu_sudoku_dfm", ["arch.source=uniform"]),
    # Ablation: DFM without the row/column/box embeddings, seeing only 1-D positions like TRM.
    "dfm_mask_no_structure": ("cpu_sudoku_dfm", ["arch.source=mask", "arch.structure_embeddings=false"]),
}
# Variants that run only at the largest training-set size, to fit the CPU budget.
LARGEST_SIZE_ONLY = ("dfm_uniform", "dfm_mask_no_structure")
MAZE_ARCHITECTURES = {"trm": "cpu_maze_trm", "dfm_mask": "cpu_maze_dfm"}

# Budgets of the final evaluation: TRM supervision steps; DFM NFE, 81 being one cell per call on 9x9.
TRM_STEPS = [1, 2, 4, 8, 16, 32]
DFM_SUDOKU_NFE = [1, 2, 4, 8, 16, 32, 64, 81]
DFM_MAZE_NFE = [8, 16, 32, 64, 128]


@dataclass(frozen=True)
class Run:
    """One training run of the study and how to evaluate it."""

    name: str
    dataset: Path
    train_size: int
    preset: str
    overrides: tuple[str, ...]
    steps: int
    batch_size: int
    seed: int
    eval_budgets: tuple[int, ...]
    samplers: tuple[str, ...]
    eval_max_examples: int | None = None


def command_text(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def execute(command: list[str], dry_run: bool, log_file: Path | None = None, threads: int | None = None) -> None:
    """Run `command` from the repository root (output appended to `log_file` when given), or only print it."""
    print(f"$ {command_text(command)}", flush=True)
    if dry_run:
        return
    env = dict(os.environ)
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("WANDB_MODE", "offline")
    if log_file is None:
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as log:
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)


def build_sudoku(data_dir: Path, output: Path, level: str, size: int, dry_run: bool) -> Path:
    """Build (once) Sudoku-Extreme with `size` training puzzles at a reveal level, plus val and test splits."""
    path = output / "data" / f"sudoku-{level}-n{size}"
    if (path / "train" / "dataset.json").is_file():
        return path
    command = [
        sys.executable, "-m", "dataset.build_sudoku_dataset",
        "--train-csv", str(data_dir / "sudoku-extreme-1k" / "train.csv"),
        "--test-csv", str(data_dir / "sudoku-hard" / "forum_hardest_test.csv"),
        "--subsample-size", str(size + VAL_SIZE), "--val-size", str(VAL_SIZE),
        "--test-subsample-size", str(TEST_SIZE), "--num-aug", str(SUDOKU_AUGMENTATIONS),
        "--output-dir", str(path), "--overwrite",
    ]
    if level != "real":
        command += ["--reveal-to", level.removeprefix("r")]
    execute(command, dry_run)
    return path


def build_mazes(data_dir: Path, output: Path, dry_run: bool) -> dict[str, tuple[Path, int]]:
    """Build (once) Maze-Hard with its 8 symmetries and a generated 10x10 set; returns name -> (path, size)."""
    hard = output / "data" / "maze-30x30-hard"
    if not (hard / "train" / "dataset.json").is_file():
        execute([
            sys.executable, "-m", "dataset.build_maze_dataset",
            "--train-csv", str(data_dir / "maze-30x30-hard-1k" / "train.csv"),
            "--test-csv", str(data_dir / "maze-30x30-hard-1k" / "test.csv"),
            "--aug", "--val-size", str(VAL_SIZE), "--output-dir", str(hard), "--overwrite",
        ], dry_run)
    small = output / "data" / "maze-10x10-generated"
    if not (small / "train" / "dataset.json").is_file():
        execute([
            sys.executable, "-m", "dataset.build_maze_dataset", "--generate", "--size", "10",
            "--subsample-size", "1100", "--val-size", str(VAL_SIZE), "--test-subsample-size", "500", "--aug",
            "--output-dir", str(small), "--overwrite",
        ], dry_run)
    return {"maze-30x30-hard": (hard, 900), "maze-10x10-generated": (small, 1000)}


def schedule(steps: int, batch_size: int, train_size: int) -> tuple[int, int]:
    """Return (epochs, eval_interval) for at least `steps` optimizer steps and EVALUATIONS_PER_RUN evaluations.

    Evaluation intervals are whole epochs, so a run has at least EVALUATIONS_PER_RUN epochs: 337 steps rather
    than 200 for Maze-Hard's 900 training puzzles at batch 16.
    """
    epochs_per_eval = max(1, math.ceil(steps * batch_size / (train_size * EVALUATIONS_PER_RUN)))
    return epochs_per_eval * EVALUATIONS_PER_RUN, epochs_per_eval


def train_command(run: Run, run_dir: Path) -> list[str]:
    epochs, eval_interval = schedule(run.steps, run.batch_size, run.train_size)
    return [
        sys.executable, "pretrain.py", f"+experiment={run.preset}", *run.overrides,
        f"data_paths=[{run.dataset}]", f"global_batch_size={run.batch_size}", f"epochs={epochs}",
        f"eval_interval={eval_interval}", f"seed={run.seed}", f"+run_name={run.name}",
        f"+checkpoint_path={run_dir}", "resume=true",
    ]


def is_finished(run: Run, run_dir: Path) -> bool:
    epochs, _ = schedule(run.steps, run.batch_size, run.train_size)
    total_steps = int(epochs * run.train_size / run.batch_size)
    return (run_dir / f"step_{total_steps}.pt").is_file()


def run_and_evaluate(run: Run, runs_dir: Path, dry_run: bool, threads: int) -> str:
    """Train `run` unless finished, then evaluate its final checkpoint on the test split per sampler."""
    run_dir = runs_dir / run.dataset.name / run.name
    log_file = run_dir / "study.log"
    if not is_finished(run, run_dir):
        execute(train_command(run, run_dir), dry_run, log_file, threads)
    budgets = "[" + ",".join(str(b) for b in run.eval_budgets) + "]"
    for sampler in run.samplers:
        output = run_dir / (f"eval_test_{sampler}.json" if sampler else "eval_test.json")
        if output.is_file():
            continue
        command = [sys.executable, "evaluate.py", f"checkpoint={run_dir}", "split=test", f"steps={budgets}",
                   f"output={output}"]
        if run.eval_max_examples is not None:
            command.append(f"max_examples={run.eval_max_examples}")
        if sampler == "greedy":
            # Batched greedy calls: several times faster than one example per call, and still reproducible
            # because evaluate.py's batch size is fixed.
            command.append("batch_invariant=false")
        execute(command + ([f"sampler={sampler}"] if sampler else []), dry_run, log_file, threads)
    return f"{run.dataset.name}/{run.name}"


def sudoku_runs(args: argparse.Namespace) -> list[Run]:
    runs = []
    for level in args.levels:
        for size in args.sizes:
            dataset = build_sudoku(args.data_dir, args.output, level, size, args.dry_run)
            for arch in args.archs:
                if arch in LARGEST_SIZE_ONLY and size != max(args.sizes):
                    continue
                preset, overrides = ARCHITECTURES[arch]
                is_trm = arch == "trm"
                for seed in args.seeds:
                    runs.append(Run(
                        name=f"{arch}-seed{seed}", dataset=dataset, train_size=size, preset=preset,
                        overrides=tuple(overrides), steps=args.steps, batch_size=args.batch_size, seed=seed,
                        eval_budgets=tuple(TRM_STEPS if is_trm else DFM_SUDOKU_NFE),
                        samplers=("",) if is_trm else ("greedy", "euler"),
                    ))
    return runs


def maze_runs(args: argparse.Namespace) -> list[Run]:
    runs = []
    for name, (dataset, size) in build_mazes(args.data_dir, args.output, args.dry_run).items():
        steps = args.maze_steps if name.startswith("maze-30x30") else args.steps
        for arch, preset in MAZE_ARCHITECTURES.items():
            is_trm = arch == "trm"
            runs.append(Run(
                name=f"{arch}-seed0", dataset=dataset, train_size=size, preset=preset, overrides=(),
                steps=steps, batch_size=args.maze_batch_size, seed=0,
                eval_budgets=tuple(TRM_STEPS[:4] if is_trm else DFM_MAZE_NFE), samplers=("",) if is_trm else ("greedy",),
                eval_max_examples=args.maze_test_size,
            ))
    return runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="directory of the real puzzle CSVs")
    parser.add_argument("--output", type=Path, default=Path("study"), help="datasets, runs and report go here")
    parser.add_argument("--levels", type=lambda s: s.split(","), default=["r71", "r56", "real"],
                        help="comma-separated reveal levels rG (G givens) and/or real (default r71,r56,real)")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[100, 300, 900],
                        help="comma-separated training-set sizes (default 100,300,900)")
    parser.add_argument("--archs", type=lambda s: s.split(","), default=list(ARCHITECTURES),
                        help=f"comma-separated variants from {', '.join(ARCHITECTURES)}")
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per Sudoku run (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch of Sudoku runs (default 64)")
    parser.add_argument("--maze-steps", type=int, default=200, help="optimizer steps per Maze-Hard run")
    parser.add_argument("--maze-batch-size", type=int, default=16, help="global batch of maze runs")
    parser.add_argument("--maze-test-size", type=int, default=300,
                        help="test mazes scored by the final evaluation (default 300, the first of the split)")
    parser.add_argument("--only", choices=("sudoku", "maze"), help="run one task family only")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time (default 2), "
                        "each with cpu_count / jobs threads")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.archs) - set(ARCHITECTURES))
    if unknown:
        parser.error(f"unknown --archs {', '.join(unknown)}; choose from {', '.join(ARCHITECTURES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs_dir = args.output / "runs"
    # Datasets are built here, one after the other, before any run starts.
    runs = []
    if args.only != "maze":
        runs += sudoku_runs(args)
    if args.only != "sudoku":
        runs += maze_runs(args)
    # TRM runs cost several times more per step than DFM runs; starting them first balances the workers.
    runs.sort(key=lambda run: not run.preset.endswith("_trm"))
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_and_evaluate, run, runs_dir, args.dry_run, threads) for run in runs]
        for future in as_completed(futures):
            print(f"finished {future.result()}", flush=True)
    execute([sys.executable, "-m", "experiments.compare", str(runs_dir), "--output", str(args.output / "report")],
            args.dry_run)


if __name__ == "__main__":
    main()
