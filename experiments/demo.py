"""End-to-end demo on CPU: build data, train TRM and DFM under one budget, evaluate both, write the report.

    python -m experiments.demo [--data DIR] [--output demo] [--steps 1518] [--seeds 0]

Without --data it generates 4x4 Sudoku puzzles offline. Both models train with config/experiment/demo_*.yaml
for the same number of optimizer steps with the same global batch. evaluate.py then sweeps TRM's supervision
steps and DFM's NFE with the greedy and the Euler sampler on the test split, and experiments.compare writes
`<output>/report/report.md`. Everything goes under --output, which a re-run replaces.
"""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from dataset.common import DatasetError, read_metadata
from experiments.compare import REPORT_FILE, build_report, headline_lines
from experiments.runs import ReportError
from training.checkpoint import latest_checkpoint

log = logging.getLogger("demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUDGET_CONFIG = REPO_ROOT / "config" / "experiment" / "demo_budget.yaml"
# Marks a directory as the demo's own output, so that a re-run deletes only what an earlier demo wrote.
OUTPUT_MARKER = ".experiments-demo"
DEFAULT_STEPS = 1518
EVALUATIONS_PER_RUN = 6
# 4x4 Sudoku (2x2 boxes): 200 generated puzzles, 20 of them held out as val, 4 augmented copies of each
# training puzzle, and 100 test puzzles. Small enough that both models learn it within the CPU budget.
GENERATOR_ARGUMENTS = (
    "--generate", "--box-shape", "2x2", "--subsample-size", "200", "--val-size", "20", "--num-aug", "4",
    "--test-subsample-size", "100", "--seed", "0",
)
EXPERIMENTS = (("trm", "demo_trm"), ("flow_matching", "demo_dfm"))
DFM_SAMPLERS = ("greedy", "euler")
MAX_DFM_NFE = 128


class DemoError(Exception):
    """A demo step that cannot run or that failed. The message names the step or the path."""


def run_demo(
    output: Path, data: Path | None, steps: int, seeds: list[int], max_eval_examples: int | None
) -> dict:
    """Run every step of the demo under `output` and return the report's summary."""
    start = time.perf_counter()
    prepare_output_dir(output, data)
    data = data or _build_dataset(output / "sudoku-4x4")
    epochs, eval_interval = epochs_for_steps(data, steps)

    runs_dir = output / "runs"
    for arch, experiment in EXPERIMENTS:
        for seed in seeds:
            run_dir = runs_dir / f"{arch}-seed{seed}"
            arguments = [
                "pretrain.py", f"+experiment={experiment}", f"data_paths=[{data}]", f"epochs={epochs}",
                f"eval_interval={eval_interval}", f"seed={seed}", f"+checkpoint_path={run_dir}",
            ]
            if max_eval_examples is not None:
                arguments.append(f"eval_max_examples={max_eval_examples}")
            _run_step(f"train {arch} seed {seed}", arguments)
            _evaluate(run_dir, arch, data, max_eval_examples)

    summary = build_report([runs_dir], output / "report")
    log.info("report: %s (%.1f min in total)", output / "report" / REPORT_FILE, (time.perf_counter() - start) / 60)
    for line in headline_lines(summary):
        log.info("  %s", line)
    return summary


def epochs_for_steps(data: Path, steps: int) -> tuple[int, int]:
    """Return epochs and eval_interval that give about `steps` optimizer steps on `data`, with up to 6 evaluations.

    An epoch of the training loop is one puzzle per group (total_groups x mean_puzzle_examples examples), and
    eval_interval must divide epochs. So the result is rounded to whole intervals of at least one epoch, with
    fewer evaluations when the budget covers fewer than 6 epochs.
    """
    batch_size = OmegaConf.load(BUDGET_CONFIG).global_batch_size
    metadata = read_metadata(data, "train")
    epochs_needed = steps * batch_size / (metadata.total_groups * metadata.mean_puzzle_examples)
    evaluations = max(1, min(EVALUATIONS_PER_RUN, round(epochs_needed)))
    interval = max(1, round(epochs_needed / evaluations))
    return interval * evaluations, interval


def prepare_output_dir(output: Path, data: Path | None) -> None:
    """Delete an earlier demo's output and recreate `output`, rejecting a directory that the demo did not create."""
    if data is not None:
        try:
            read_metadata(data, "train")
            read_metadata(data, "test")
        except DatasetError as error:
            raise DemoError(f"--data: {error}") from None
        if output.resolve() in data.resolve().parents or output.resolve() == data.resolve():
            raise DemoError(f"--data {data} lies inside --output {output}, which the demo replaces; move it out first")
    if output.exists():
        if not (output / OUTPUT_MARKER).is_file() and any(output.iterdir()):
            raise DemoError(
                f"{output}: exists but was not written by the demo (no {OUTPUT_MARKER}); choose another --output"
            )
        shutil.rmtree(output)
    output.mkdir(parents=True)
    (output / OUTPUT_MARKER).write_text("written by python -m experiments.demo; deleted by its next run\n")


def _build_dataset(path: Path) -> Path:
    arguments = ["-m", "dataset.build_sudoku_dataset", *GENERATOR_ARGUMENTS, "--output-dir", str(path)]
    _run_step("build 4x4 Sudoku", arguments)
    return path


def _evaluate(run_dir: Path, arch: str, data: Path, max_examples: int | None) -> None:
    """Sweep the inference budget of the newest checkpoint of `run_dir` on the test split."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise DemoError(f"{run_dir}: training wrote no checkpoint")
    common = [f"checkpoint={checkpoint}", "split=test"]
    if max_examples is not None:
        common.append(f"max_examples={max_examples}")
    stem = f"eval_test_{checkpoint.stem.replace('_', '')}"

    if arch == "trm":
        # Twice the trained number of supervision steps shows whether more recursion than trained still helps.
        halt_max_steps = json.loads((run_dir / "config.json").read_text())["arch"]["halt_max_steps"]
        budgets = _powers_of_two(2 * halt_max_steps)
        _run_step(f"evaluate {run_dir.name}", [
            "evaluate.py", *common, f"steps={_list(budgets)}", f"output={run_dir / f'{stem}.json'}",
        ])
        return
    # Greedy decoding commits at least one cell per model call, so it never uses more calls than there are
    # cells. The Euler sampler gets the same budgets, so that the two samplers compare point by point.
    budgets = _powers_of_two(min(read_metadata(data, "test").seq_len, MAX_DFM_NFE))
    for sampler in DFM_SAMPLERS:
        _run_step(f"evaluate {run_dir.name} ({sampler})", [
            "evaluate.py", *common, f"steps={_list(budgets)}", f"sampler={sampler}",
            f"output={run_dir / f'{stem}_{sampler}.json'}",
        ])


def _run_step(name: str, arguments: list[str]) -> None:
    """Run `python <arguments>` from the repository root, raising DemoError if it fails."""
    command = [sys.executable, *arguments]
    log.info("%s: %s", name, " ".join(arguments))
    environment = dict(os.environ)
    # No network: wandb stays off unless the caller chose a mode.
    environment.setdefault("WANDB_MODE", "disabled")
    # The demo models have about 0.1M parameters, too small for intra-op threads to pay off. Threads that wait
    # on busy cores also stall every op. On a loaded 2-core machine, TRM took 10 steps in 90 s with 2 threads
    # and 1518 steps in 174 s with 1. Callers may still set OMP_NUM_THREADS themselves.
    environment.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run(command, cwd=REPO_ROOT, env=environment)
    if result.returncode != 0:
        raise DemoError(f"step '{name}' failed with exit status {result.returncode}: {' '.join(arguments)}")


def _powers_of_two(maximum: int) -> list[int]:
    """1, 2, 4, ... up to `maximum`, with `maximum` itself last."""
    budgets = [1]
    while budgets[-1] * 2 < maximum:
        budgets.append(budgets[-1] * 2)
    return budgets + [maximum] if maximum > 1 else budgets


def _list(values: list[int]) -> str:
    return "[" + ",".join(str(value) for value in values) + "]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="existing dataset directory with train and test splits "
                        "(default: generate 4x4 Sudoku into OUTPUT/sudoku-4x4)")
    parser.add_argument("--output", type=Path, default=Path("demo"),
                        help="directory for data, runs and report; replaced if an earlier demo wrote it")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="optimizer steps per model, rounded to whole evaluation intervals (default %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds per model (default 0)")
    parser.add_argument("--max-eval-examples", type=int,
                        help="score only the first N puzzles of each split, in periodic evaluation and in "
                        "evaluate.py (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="demo: %(message)s")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    try:
        run_demo(args.output, args.data, args.steps, args.seeds, args.max_eval_examples)
    except (DemoError, ReportError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
