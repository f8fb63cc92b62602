"""Run the benchmark suite (`make bench`): machine peaks, dataset building, checkers, training and evaluation.

    python -m benchmarks.run [--quick] [--output bench.json] [--sections training evaluation] [--threads N]

Prints one table per section as it finishes and writes every figure to a JSON file. Each figure is the
median of several timed runs after a warm-up, with the min and max. The training and evaluation sections
run on the CPU. Figures from a machine that runs other jobs are low and noisy, so every row records the
load average at the time it was measured. docs/performance.md explains the figures and their reference values.
"""

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks import report
from benchmarks.checkers import measure_checkers
from benchmarks.datasets import measure_datasets
from benchmarks.evaluation import (
    DFM_NFE_BUDGETS,
    DFM_SAMPLERS,
    evaluation_batch_size,
    measure_dfm_evaluation,
    measure_trm_evaluation,
)
from benchmarks.machine import describe_machine, load_average
from benchmarks.training import TRAINING_WORKLOADS, measure_training, training_batch_size

SECTIONS = ("datasets", "checkers", "training", "evaluation")
# A 1-minute load average this high before the benchmark starts means other jobs occupy about one CPU.
BUSY_LOAD_AVERAGE = 1.0


@dataclass(frozen=True)
class Plan:
    """How much work each section does: the default run, or the shorter --quick one."""

    quick: bool
    warmup: int
    repeats: int
    build_warmup: int
    build_repeats: int
    sudoku_generator_puzzles: int
    maze_generator_puzzles: int
    sudoku_checks: int
    maze_checks: int


DEFAULT_PLAN = Plan(False, warmup=1, repeats=3, build_warmup=1, build_repeats=3, sudoku_generator_puzzles=100,
                    maze_generator_puzzles=20, sudoku_checks=100_000, maze_checks=20_000)
QUICK_PLAN = Plan(True, warmup=1, repeats=2, build_warmup=0, build_repeats=1, sudoku_generator_puzzles=20,
                  maze_generator_puzzles=5, sudoku_checks=20_000, maze_checks=4_000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Measure machine peaks, dataset building, checkers, and training and evaluation throughput.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="2 timed runs per figure, one build of each dataset, batch 8 for paper-size training, "
                             "batch 2 in evaluation and fewer generated puzzles and checked predictions")
    parser.add_argument("--output", type=Path, default=Path("bench.json"),
                        help="JSON file to write every figure to (default: bench.json)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="sections to run after the machine peaks (default: all)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, usually one per core); 1 is much "
                             "faster when other jobs share the cores")
    return parser.parse_args(argv)


def run_training(plan: Plan, peaks: dict) -> list[dict]:
    rows = []
    for workload in TRAINING_WORKLOADS:
        batch_size = training_batch_size(workload, plan.quick)
        peak = peaks[workload.dtype]["peak_gflops"]
        rows.append(measure_training(workload, batch_size, plan.warmup, plan.repeats, peak))
        print_progress(workload.name, rows[-1])
    return rows


def run_evaluation(plan: Plan, peaks: dict) -> list[dict]:
    batch_size = evaluation_batch_size(plan.quick)
    rows = []
    for dtype in ("bfloat16", "float32"):
        rows.append(measure_trm_evaluation(dtype, batch_size, plan.warmup, plan.repeats, peaks[dtype]["peak_gflops"]))
        print_progress(f"trm {dtype}", rows[-1])
    fp32_peak = peaks["float32"]["peak_gflops"]
    for sampler in DFM_SAMPLERS:
        for budget in DFM_NFE_BUDGETS:
            rows.append(measure_dfm_evaluation(sampler, budget, batch_size, plan.warmup, plan.repeats, fp32_peak))
            print_progress(f"dfm {sampler} {budget} nfe", rows[-1])
    budget = max(DFM_NFE_BUDGETS)
    rows.append(measure_dfm_evaluation(
        "greedy", budget, batch_size, plan.warmup, plan.repeats, fp32_peak, batch_invariant=True
    ))
    print_progress(f"dfm greedy {budget} nfe, one example per call", rows[-1])
    return rows


def print_progress(name: str, row: dict) -> None:
    """Print one line per measured model, because a full section takes minutes."""
    print(f"  {name}: {row['examples_per_second']['median']:.3g} examples/s", flush=True)


def warn_if_busy(load: list[float] | None, threads: int) -> None:
    """Print a warning when other jobs were using at least one CPU as the run started."""
    if load is None or load[0] < BUSY_LOAD_AVERAGE:
        return
    advice = " On shared cores --threads 1 can be several times faster (docs/performance.md)." if threads > 1 else ""
    print(f"warning: load average {load[0]:.1f} at start: other jobs are using the CPUs, so figures will be "
          f"low and noisy.{advice}", flush=True)


def git_commit() -> str | None:
    """Return the HEAD commit of the checkout the benchmark runs from, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    start = time.perf_counter()
    results = {
        "run": {
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
            "git_commit": git_commit(),
            "plan": asdict(plan),
            "load_average_at_start": load_average(),
        },
    }

    print("== machine", flush=True)
    results["machine"] = describe_machine(plan.quick)
    print(report.machine_table(results["machine"]), flush=True)
    warn_if_busy(results["run"]["load_average_at_start"], torch.get_num_threads())
    peaks = results["machine"]["cpu_matmul"]

    runners = {
        "datasets": (lambda: measure_datasets(plan.build_warmup, plan.build_repeats, plan.sudoku_generator_puzzles,
                                              plan.maze_generator_puzzles), report.datasets_table),
        "checkers": (lambda: measure_checkers(plan.sudoku_checks, plan.maze_checks, plan.warmup, plan.repeats),
                     report.checkers_table),
        "training": (lambda: run_training(plan, peaks), report.training_table),
        "evaluation": (lambda: run_evaluation(plan, peaks), report.evaluation_table),
    }
    for section in SECTIONS:
        if section not in args.sections:
            continue
        print(f"\n== {section}", flush=True)
        measure, table = runners[section]
        results[section] = measure()
        print(table(results[section]), flush=True)

    results["run"]["seconds"] = time.perf_counter() - start
    results["run"]["load_average_at_end"] = load_average()
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['run']['seconds']:.0f} s; figures written to {args.output}")


if __name__ == "__main__":
    main()
