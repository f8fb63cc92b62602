"""Accuracy against inference budget per cell: from evaluate.py reports, else from the last periodic evaluation.

Budgets are TRM supervision steps or DFM NFE (model calls). Each evaluation setting (the loss head's
evaluation options, e.g. the DFM sampler) gives one result, aggregated over the runs of the cell.
"""

import math
import re
from dataclasses import dataclass
from typing import Any

from experiments.cells import Cell, canonical_json, format_value
from experiments.runs import EvalReport, Run
from experiments.stats import Estimate, t_interval

PERIODIC = "periodic evaluation"
# Options always shown in a setting's label because they name the settings this study compares.
HEADLINE_OPTIONS = {"flow_matching": ("sampler",)}


@dataclass
class InferenceResult:
    """One evaluation setting of one cell on one split, aggregated over the runs that have it."""

    setting: str
    """Label of the evaluation options, e.g. "sampler=euler", or "periodic evaluation" without evaluate.py reports."""
    budget_name: str
    budgets: list[int]
    """Budgets evaluated in every run, ascending."""
    flops: list[float]
    """Inference FLOPs per example at each budget (mean over runs)."""
    exact_by_budget: list[Estimate]
    exact: Estimate
    """Exact accuracy of the head's final prediction, which for TRM with halt_by_q is the step its Q head picked."""
    valid: Estimate | None
    count: int
    """Puzzles evaluated per run (the smallest, if runs differ)."""
    checkpoint_steps: list[int]
    reports: list[EvalReport]
    """The evaluate.py reports used, one per run, or none for periodic evaluation."""


@dataclass
class _LastEvaluation:
    """The accuracy per budget that one run logged at its last periodic evaluation of a split."""

    step: int
    budget_name: str
    exact_by_budget: dict[int, float]
    flops_per_call: float
    exact: float
    valid: float | None
    count: int


def inference_results(cell: Cell, split: str) -> list[InferenceResult]:
    """Results of every evaluation setting of `cell` on `split`, in label order.

    Uses each run's latest evaluate.py report per setting. Without any report for the split, falls back to
    the accuracy per budget logged at each run's last periodic evaluation.
    """
    found = [
        (run, report, _resolved_options(run, report))
        for run in cell.runs
        for report in run.eval_reports
        if report.split == split
    ]
    if not found:
        periodic = _periodic_result(cell, split)
        return [periodic] if periodic is not None else []

    keys = _setting_keys(cell.arch, [options for _, _, options in found])
    latest: dict[str, dict[str, EvalReport]] = {}
    for run, report, options in found:
        setting = ", ".join(f"{key}={format_value(options.get(key))}" for key in keys)
        chosen = latest.setdefault(setting, {})
        previous = chosen.get(str(run.path))
        if previous is None or report.step >= previous.step:
            chosen[str(run.path)] = report
    return [_aggregate_reports(setting, list(chosen.values())) for setting, chosen in sorted(latest.items())]


def _resolved_options(run: Run, report: EvalReport) -> dict[str, Any]:
    options = dict(report.options)
    # The DFM head reads sampler=None as the config's eval_sampler, so the label shows the sampler that ran.
    if "sampler" in options and options["sampler"] is None:
        options["sampler"] = run.config["arch"].get("loss", {}).get("eval_sampler")
    return options


def _setting_keys(arch: str, options: list[dict[str, Any]]) -> list[str]:
    names = sorted(set().union(*options))
    varying = [name for name in names if len({canonical_json(o.get(name)) for o in options}) > 1]
    headline = [name for name in HEADLINE_OPTIONS.get(arch, ()) if name in names and name not in varying]
    return headline + varying


def _aggregate_reports(setting: str, reports: list[EvalReport]) -> InferenceResult:
    budgets = sorted(set.intersection(*(set(report.exact_by_budget) for report in reports)))
    return InferenceResult(
        setting=setting,
        budget_name=reports[0].budget_name,
        budgets=budgets,
        flops=[sum(report.flops_by_budget[b] for report in reports) / len(reports) for b in budgets],
        exact_by_budget=[t_interval([report.exact_by_budget[b] for report in reports]) for b in budgets],
        exact=t_interval([report.exact_accuracy for report in reports]),
        valid=t_interval([report.valid_accuracy for report in reports]),
        count=min(report.count for report in reports),
        checkpoint_steps=[report.step for report in reports],
        reports=reports,
    )


def _periodic_result(cell: Cell, split: str) -> InferenceResult | None:
    """Aggregate the last periodic evaluation of every run, or return None when no run logged `split` by budget."""
    evaluations = [evaluation for run in cell.runs if (evaluation := _last_evaluation(run, split)) is not None]
    if not evaluations:
        return None
    budgets = sorted(set.intersection(*(set(evaluation.exact_by_budget) for evaluation in evaluations)))
    flops_per_call = sum(evaluation.flops_per_call for evaluation in evaluations) / len(evaluations)
    valid = [evaluation.valid for evaluation in evaluations]
    return InferenceResult(
        setting=PERIODIC,
        budget_name=evaluations[0].budget_name,
        budgets=budgets,
        flops=[budget * flops_per_call for budget in budgets],
        exact_by_budget=[t_interval([e.exact_by_budget[budget] for e in evaluations]) for budget in budgets],
        exact=t_interval([evaluation.exact for evaluation in evaluations]),
        valid=None if None in valid else t_interval(valid),
        count=min(evaluation.count for evaluation in evaluations),
        checkpoint_steps=[evaluation.step for evaluation in evaluations],
        reports=[],
    )


def _last_evaluation(run: Run, split: str) -> _LastEvaluation | None:
    steps = run.eval_steps(split)
    if not steps:
        return None
    record = run.records[steps[-1]]
    pattern = re.compile(rf"^eval/{re.escape(split)}/exact_accuracy_by_(\w+)/(\d+)$")
    matches = [match for match in map(pattern.match, record) if match]
    if not matches:
        return None
    exact_by_budget = {int(match.group(2)): record[match.group(0)] for match in matches}
    # The loop logs FLOPs at the largest budget only. Every head counts inference FLOPs as budget times the
    # FLOPs of one model call (LossHead.inference_flops_per_example), so other budgets scale linearly.
    largest_flops = record.get(f"eval/{split}/inference_flops_per_example", math.nan)
    return _LastEvaluation(
        step=steps[-1],
        budget_name=matches[0].group(1),
        exact_by_budget=exact_by_budget,
        flops_per_call=largest_flops / max(exact_by_budget),
        exact=record[f"eval/{split}/exact_accuracy"],
        valid=record.get(f"eval/{split}/valid_accuracy"),
        count=int(record.get(f"eval/{split}/count", 0)),
    )
