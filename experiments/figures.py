"""Figures of the comparison report: learning curves and accuracy against inference FLOPs, one PNG per split.

Lines are means over seeds. Shaded bands and error bars are the 95% t-intervals, drawn only where n > 1.
Figures are drawn with the Agg canvas, so no display is needed.
"""

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

from experiments.cells import Cell, CurvePoint
from experiments.inference import InferenceResult

DPI = 110
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
CURVE_METRICS = (("exact_accuracy", "exact accuracy"), ("token_accuracy", "token accuracy (cells to fill)"))
CURVE_AXES = (("step", "optimizer steps", False), ("examples", "training examples", False),
              ("flops", "training FLOPs", True))
LEGEND_WIDTH = 110


def save_learning_curves(
    cells: Sequence[Cell], curves: dict[tuple[int, str], list[CurvePoint]], split: str, title: str, path: Path
) -> None:
    """Plot exact and token accuracy of `split` against steps, examples and training FLOPs.

    `curves[(i, metric)]` contains the points of `cells[i]`. A cell without points for a metric is left out.
    """
    figure = Figure(figsize=(13, 7 + 0.3 * len(cells)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(CURVE_METRICS), len(CURVE_AXES), squeeze=False)
    for row, (metric, metric_label) in enumerate(CURVE_METRICS):
        for column, (field, axis_label, log_scale) in enumerate(CURVE_AXES):
            axis = axes[row][column]
            for index, cell in enumerate(cells):
                points = [p for p in curves.get((index, metric), []) if getattr(p, field) is not None]
                if points:
                    _draw_band(axis, [getattr(p, field) for p in points], points, COLORS[index % len(COLORS)],
                               _legend_label(cell))
            axis.set_xlabel(axis_label)
            axis.set_ylabel(metric_label)
            if log_scale:
                _log_axis(axis)
            axis.set_ylim(-0.02, 1.02)
            axis.grid(alpha=0.3)
    _legend_below(figure, axes[0][0])
    figure.suptitle(f"{title}: periodic evaluation on {split}")
    figure.savefig(path, format="png")


def save_scaling_plot(
    cells: Sequence[Cell], results: dict[int, list[InferenceResult]], split: str, title: str, path: Path
) -> None:
    """Plot exact accuracy against inference FLOPs per example, one line per cell and evaluation setting.

    `results[i]` contains the results of `cells[i]`, and each point is labelled with its budget.
    """
    num_lines = sum(len(found) for found in results.values())
    figure = Figure(figsize=(9, 5.5 + 0.3 * num_lines), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    markers = ("o", "s", "^", "D", "v", "P")
    for index, cell in enumerate(cells):
        for setting_index, result in enumerate(results.get(index, [])):
            color = COLORS[index % len(COLORS)]
            means = [estimate.mean for estimate in result.exact_by_budget]
            errors = [
                [e.mean - e.low if e.low is not None else 0.0 for e in result.exact_by_budget],
                [e.high - e.mean if e.high is not None else 0.0 for e in result.exact_by_budget],
            ]
            n = min(estimate.n for estimate in result.exact_by_budget)
            label = f"{cell.label}, {result.setting} (n={n})" if result.setting else f"{cell.label} (n={n})"
            axis.errorbar(result.flops, means, yerr=errors, color=color, marker=markers[setting_index % len(markers)],
                          linestyle="-" if setting_index == 0 else "--", capsize=3, label=label)
            for flops, mean, budget in zip(result.flops, means, result.budgets):
                axis.annotate(str(budget), (flops, mean), textcoords="offset points", xytext=(4, 4), fontsize=7,
                              color=color)
    _log_axis(axis)
    axis.set_xlabel("inference FLOPs per example (point labels: supervision steps or NFE)")
    axis.set_ylabel("exact accuracy")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    _legend_below(figure, axis)
    axis.set_title(f"{title}: inference scaling on {split}")
    figure.savefig(path, format="png")


def _draw_band(axis: Axes, xs: list[float], points: list[CurvePoint], color: str, label: str) -> None:
    means = [point.value.mean for point in points]
    axis.plot(xs, means, color=color, marker=".", label=label)
    if all(point.value.low is not None for point in points):
        axis.fill_between(xs, [p.value.low for p in points], [p.value.high for p in points], color=color, alpha=0.2)


def _legend_label(cell: Cell) -> str:
    return f"{cell.label} (n={len(cell.runs)})"


def _legend_below(figure: Figure, axis: Axes) -> None:
    """Draw one legend for the whole figure under the axes, wrapping long variant labels."""
    handles, labels = axis.get_legend_handles_labels()
    if handles:
        wrapped = [textwrap.fill(label, width=LEGEND_WIDTH, subsequent_indent="    ") for label in labels]
        figure.legend(handles, wrapped, loc="outside lower center", fontsize=8)


def _log_axis(axis: Axes) -> None:
    """Log scale in engineering notation (e.g. 20 G) with ticks at 1, 2 and 5 per decade over short ranges."""
    axis.set_xscale("log")
    low, high = axis.get_xlim()
    decades = math.log10(high / low) if low > 0 else 0.0
    axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if decades > 2 else (1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(EngFormatter())
    axis.xaxis.set_minor_formatter(NullFormatter())
