"""Markdown text of the comparison report: number formats, tables and the "what was run" section."""

import math
from collections.abc import Sequence

from experiments.cells import Cell, TableRow
from experiments.commands import config_hash, evaluation_command, training_command
from experiments.inference import InferenceResult
from experiments.runs import DatasetIdentity, Run
from experiments.stats import Estimate

MISSING = "–"


def format_accuracy(estimate: Estimate | None) -> str:
    return MISSING if estimate is None else f"{estimate.mean:.3f}"


def format_interval(estimate: Estimate | None) -> str:
    """`[low, high]` of a 95% interval, or `n=1` when a single seed gives no interval."""
    if estimate is None:
        return MISSING
    if estimate.low is None:
        return "n=1"
    return f"[{estimate.low:.3f}, {estimate.high:.3f}]"


def format_count(count: float) -> str:
    return f"{int(count):,}"


def format_flops(estimate: Estimate | None) -> str:
    return MISSING if estimate is None or not math.isfinite(estimate.mean) else f"{estimate.mean:.2e}"


def format_seconds(estimate: Estimate | None) -> str:
    if estimate is None:
        return MISSING
    seconds = estimate.mean
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Format a GitHub-flavoured markdown table, escaping `|` inside cells."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *(line(row) for row in rows)]


def dataset_section_header(dataset: DatasetIdentity, index: int) -> list[str]:
    """Heading and provenance of one dataset: paths, source hashes and builder arguments."""
    lines = [f"## {index}. Dataset `{dataset.name}` (id `{dataset.key}`)", ""]
    for path, source in zip(dataset.paths, dataset.sources):
        if source is None:
            lines.append(f"- `{path}`: train/dataset.json not readable from here, so only the path identifies it")
            continue
        builder = source.get("builder") or {}
        arguments = ", ".join(f"{key}={value}" for key, value in builder.items() if value not in (None, False))
        lines.append(f"- `{path}`: source sha256 `{source.get('source_sha256')}`; builder: {arguments or 'unknown'}")
    if dataset.test_paths:
        lines.append(f"- evaluated on `{', '.join(dataset.test_paths)}` (data_paths_test)")
    return lines + [""]


def summary_table(cells: Sequence[Cell], rows: Sequence[TableRow]) -> list[str]:
    """Format one row per cell: size, training cost, best and final exact accuracy, seeds and the test interval."""
    header = [
        "variant", "seeds", "parameters", "embedding parameters", "steps", "training FLOPs", "wall time",
        "val best", "val final", "test best", "test final", "test final 95% CI", "test valid final",
    ]
    body = []
    for cell, row in zip(cells, rows):
        counts = row.parameters
        steps = sorted(set(row.steps))
        body.append([
            cell.label,
            f"{len(cell.runs)} ({', '.join(str(seed) for seed in cell.seeds)})",
            format_count(counts["parameters"]) if counts else MISSING,
            format_count(counts["embedding_parameters"] + counts["puzzle_embedding_parameters"]) if counts else MISSING,
            str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}",
            format_flops(row.train_flops),
            format_seconds(row.wall_seconds),
            format_accuracy(row.best.get("val")),
            format_accuracy(row.final.get("val")),
            format_accuracy(row.best.get("test")),
            format_accuracy(row.final.get("test")),
            format_interval(row.final.get("test")),
            format_accuracy(row.final_valid.get("test")),
        ])
    return markdown_table(header, body)


def inference_table(entries: Sequence[tuple[Cell, str, InferenceResult]]) -> list[str]:
    """Format one row per cell, split and evaluation setting.

    A row gives exact accuracy at the largest budget and of the final prediction, with its interval over seeds.
    """
    header = [
        "variant", "split", "setting", "checkpoint steps", "budgets", "exact at largest budget",
        "exact (final prediction)",
        "95% CI", "valid", "puzzles", "seeds",
    ]
    body = []
    for cell, split, result in entries:
        budgets = ", ".join(str(budget) for budget in result.budgets)
        body.append([
            cell.label,
            split,
            result.setting or "defaults",
            ", ".join(str(step) for step in result.checkpoint_steps),
            f"{result.budget_name.replace('_', ' ')} {budgets}",
            format_accuracy(result.exact_by_budget[-1]) if result.budgets else MISSING,
            format_accuracy(result.exact),
            format_interval(result.exact),
            format_accuracy(result.valid),
            format_count(result.count),
            str(result.exact.n),
        ])
    return markdown_table(header, body)


def runs_section(cells: Sequence[Cell]) -> list[str]:
    """Format the "what was run" section: identity of every run, then its training and evaluation commands."""
    runs: list[tuple[Cell, Run]] = [(cell, run) for cell in cells for run in cell.runs]
    lines = [
        "## What was run",
        "",
        "Config hashes cover config.json without seed and run identity, so the seeds of one variant share one. "
        "Commands are reconstructed from config.json and the evaluate.py JSONs: they list the overrides that "
        "differ from config/cfg_pretrain.yaml and config/arch/<name>.yaml.",
        "",
    ]
    header = ["run directory", "variant", "seed", "last step", "git commit", "config hash", "dataset id"]
    body = [
        [
            f"`{run.path}`", cell.label, str(run.seed), str(run.last_step),
            f"`{(run.config.get('git_commit') or 'unknown')[:12]}`", f"`{config_hash(run.config)}`",
            f"`{run.dataset.key}`",
        ]
        for cell, run in runs
    ]
    lines += markdown_table(header, body) + ["", "```sh"]
    for _, run in runs:
        lines.append(training_command(run))
        lines += [evaluation_command(run, report) for report in run.eval_reports]
    return lines + ["```", ""]
