"""Write a comparison report of training runs: `python -m experiments.compare RUN_DIR... --output DIR`.

Each RUN_DIR is a run directory or any directory above runs (`checkpoints/<project>`, a Hydra multirun
root). DIR receives `report.md` with its `figures/` and `predictions/`, plus `summary.json` with the same
numbers for scripts. DIR is replaced as a whole, and only once the report is complete.
"""

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataset.common import atomic_output_dir
from experiments.cells import Cell, TableRow, group_cells, learning_curve, table_row
from experiments.figures import CURVE_METRICS, save_learning_curves, save_scaling_plot
from experiments.inference import PERIODIC, InferenceResult, inference_results
from experiments.markdown import (
    dataset_section_header,
    format_accuracy,
    format_interval,
    inference_table,
    runs_section,
    summary_table,
)
from experiments.predictions import save_prediction_examples
from experiments.runs import ReportError, Run, find_run_dirs, load_run
from experiments.stats import Estimate

REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
SPLIT_ORDER = ("train", "val", "test")


def build_report(paths: Sequence[str | Path], output: str | Path) -> dict[str, Any]:
    """Write the report of every run below `paths` into `output` and return the summary written as JSON.

    Raises ReportError when no run is found, an input file is unreadable, or `output` is a non-empty
    directory without a previous report (so that no unrelated directory is replaced).
    """
    output = Path(output)
    _check_output(output)
    runs = [load_run(path) for path in find_run_dirs(paths)]
    cells = group_cells(runs)
    datasets: dict[str, list[Cell]] = {}
    for cell in cells:
        datasets.setdefault(cell.dataset.key, []).append(cell)

    lines = _report_header(paths, len(runs), len(cells))
    summary: dict[str, Any] = {"runs": len(runs), "datasets": []}
    with atomic_output_dir(output, overwrite=True, marker=REPORT_FILE) as staging:
        (staging / "figures").mkdir()
        (staging / "predictions").mkdir()
        for index, dataset_cells in enumerate(datasets.values(), start=1):
            dataset_lines, dataset_summary = _dataset_section(dataset_cells, index, staging)
            lines += dataset_lines
            summary["datasets"].append(dataset_summary)
        lines += runs_section(cells)
        (staging / REPORT_FILE).write_text("\n".join(lines))
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def headline_lines(summary: dict[str, Any]) -> list[str]:
    """Format one line per cell: final test exact accuracy of periodic evaluation and of each evaluate.py setting."""
    lines = []
    for dataset in summary["datasets"]:
        for cell in dataset["cells"]:
            final = cell["final_exact"].get("test")
            text = f"{dataset['name']} | {cell['label']}: test exact {_format_summary_estimate(final)} (periodic)"
            for result in cell["inference"]:
                if result["split"] == "test" and result["setting"] != PERIODIC:
                    setting = result["setting"] or "defaults"
                    text += f"; evaluate.py {setting}: {_format_summary_estimate(result['exact'])}"
            lines.append(text)
    return lines


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise ReportError(f"{output}: exists and is not a directory; choose another --output")
    if output.is_dir() and any(output.iterdir()) and not (output / REPORT_FILE).is_file():
        raise ReportError(
            f"{output}: directory is not empty and contains no {REPORT_FILE}; choose a new or empty --output"
        )


def _report_header(paths: Sequence[str | Path], num_runs: int, num_cells: int) -> list[str]:
    listed = ", ".join(f"`{path}`" for path in paths)
    return [
        "# Comparison report",
        "",
        f"{num_runs} runs in {num_cells} cells (dataset x architecture variant), found under {listed}.",
        "",
        "Exact accuracy counts the puzzles with every cell right, and token accuracy counts only the cells to "
        "fill. Numbers are means over the seeds of a cell, and intervals are 95% Student-t intervals over the "
        "n seeds. A single seed (n=1) gives no interval. \"best\" is the maximum over a run's periodic "
        "evaluations, so it selects on the evaluated split itself. \"final\" is the last periodic evaluation.",
        "",
    ]


def _dataset_section(cells: list[Cell], index: int, staging: Path) -> tuple[list[str], dict[str, Any]]:
    """Markdown of one dataset (table, curves, inference scaling, predictions) and its summary entry."""
    dataset = cells[0].dataset
    title = f"{dataset.name} ({dataset.key})"
    rows = [table_row(cell) for cell in cells]
    lines = dataset_section_header(dataset, index)
    lines += ["### Summary", "", *summary_table(cells, rows), ""]

    lines += ["### Learning curves", ""]
    curve_splits = _ordered({split for cell in cells for run in cell.runs for split in _eval_splits(run)})
    for split in curve_splits:
        curves = {
            (position, metric): learning_curve(cell, split, metric)
            for position, cell in enumerate(cells)
            for metric, _ in CURVE_METRICS
        }
        name = f"figures/dataset{index}-learning-{split}.png"
        save_learning_curves(cells, curves, split, title, staging / name)
        lines += [f"![learning curves on {split}]({name})", ""]
    if not curve_splits:
        lines += ["No periodic evaluations were logged.", ""]

    lines += _inference_section(cells, index, title, staging)
    lines += _predictions_section(cells, index, staging)
    summary = {
        "name": dataset.name,
        "key": dataset.key,
        "cells": [_cell_summary(cell, row) for cell, row in zip(cells, rows)],
    }
    return lines, summary


def _inference_section(cells: list[Cell], index: int, title: str, staging: Path) -> list[str]:
    splits = _ordered(
        {report.split for cell in cells for run in cell.runs for report in run.eval_reports}
        | {split for cell in cells for run in cell.runs for split in _eval_splits(run)}
    )
    lines = [
        "### Inference scaling",
        "",
        "Exact accuracy against analytic inference FLOPs per example: TRM by supervision steps, DFM by NFE and "
        "sampler. Taken from the evaluate.py reports of each run (latest checkpoint per setting), which count "
        "the model calls actually made (greedy decoding stops once the grid is full), or, for cells without "
        "any, from the last periodic evaluation, which counts every call of the budget.",
        "",
    ]
    entries: list[tuple[Cell, str, InferenceResult]] = []
    for split in splits:
        results = {position: inference_results(cell, split) for position, cell in enumerate(cells)}
        entries += [(cells[position], split, result) for position, found in results.items() for result in found]
        if any(results.values()):
            name = f"figures/dataset{index}-scaling-{split}.png"
            save_scaling_plot(cells, results, split, title, staging / name)
            lines += [f"![inference scaling on {split}]({name})", ""]
    if not entries:
        return lines + ["No evaluation reports accuracy per budget.", ""]
    return lines + inference_table(entries) + [""]


def _predictions_section(cells: list[Cell], index: int, staging: Path) -> list[str]:
    """Add a figure of solved and unsolved test predictions per cell and evaluate.py setting, from the first seed."""
    lines = ["### Predictions", ""]
    for position, cell in enumerate(cells):
        results = [result for result in inference_results(cell, "test") if result.reports]
        if not results:
            lines += [f"- {cell.label}: no evaluate.py report on test, so no predictions to show", ""]
            continue
        for number, result in enumerate(results):
            report = result.reports[0]
            name = f"predictions/dataset{index}-cell{position + 1}-{number + 1}.png"
            problem = save_prediction_examples(report, staging / name)
            setting = result.setting or "defaults"
            caption = f"{cell.label}, {setting}, checkpoint step {report.step} ({report.path.name})"
            if problem is None:
                lines += [f"{caption}:", "", f"![predictions of {cell.label}]({name})", ""]
            else:
                lines += [f"- {caption}: no figure, because {problem}", ""]
    return lines


def _cell_summary(cell: Cell, row: TableRow) -> dict[str, Any]:
    splits = _ordered({split for run in cell.runs for split in _eval_splits(run)} |
                      {report.split for run in cell.runs for report in run.eval_reports})
    inference = []
    for split in splits:
        for result in inference_results(cell, split):
            inference.append({
                "split": split,
                "setting": result.setting,
                "budget_name": result.budget_name,
                "budgets": result.budgets,
                "flops": result.flops,
                "exact_by_budget": [dataclasses.asdict(estimate) for estimate in result.exact_by_budget],
                "exact": dataclasses.asdict(result.exact),
                "checkpoint_steps": result.checkpoint_steps,
            })
    return {
        "label": cell.label,
        "arch": cell.arch,
        "variant": cell.variant,
        "seeds": cell.seeds,
        "runs": [str(run.path) for run in cell.runs],
        "parameter_counts": row.parameters,
        "best_exact": {split: _as_dict(estimate) for split, estimate in row.best.items()},
        "final_exact": {split: _as_dict(estimate) for split, estimate in row.final.items()},
        "inference": inference,
    }


def _as_dict(estimate: Estimate | None) -> dict[str, Any] | None:
    return None if estimate is None else dataclasses.asdict(estimate)


def _format_summary_estimate(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "–"
    estimate = Estimate(**entry)
    return f"{format_accuracy(estimate)} ({format_interval(estimate)})"


def _eval_splits(run: Run) -> set[str]:
    return {key.split("/")[1] for record in run.records.values() for key in record if key.startswith("eval/")}


def _ordered(splits: set[str]) -> list[str]:
    def position(split: str) -> tuple[int, str]:
        return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)

    return sorted(splits, key=position)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.compare",
        description="Compare training runs: tables, learning curves, inference scaling and predictions in one report.",
    )
    parser.add_argument("paths", nargs="+", metavar="RUN_DIR",
                        help="run directory, or a directory above runs (checkpoints/<project>, a multirun root)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="report directory, replaced as a whole if it contains an earlier report")
    args = parser.parse_args(argv)
    try:
        summary = build_report(args.paths, args.output)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cells = sum(len(dataset["cells"]) for dataset in summary["datasets"])
    print(f"wrote {Path(args.output) / REPORT_FILE}: {summary['runs']} runs in {cells} cells")
    for line in headline_lines(summary):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
