"""Figures of several puzzle grids in one PNG, drawn by the task's own `render` method."""

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dataset.common import PuzzleTask

DEFAULT_COLUMNS = 4
# Panel width in inches: enough for 9x9 digits, growing with the grid side so a 30x30 maze stays legible.
MIN_PANEL_INCHES = 2.6
INCHES_PER_CELL = 0.12
DPI = 100


def save_grid_figure(
    task: PuzzleTask,
    inputs: np.ndarray,
    grids: np.ndarray,
    path: str | os.PathLike,
    labels: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    columns: int | None = None,
) -> None:
    """Draw grid i with `task.render(ax, inputs[i], grids[i], labels[i])` and save all panels as one PNG.

    inputs, grids, labels: [N, seq_len] token ids of the puzzles, the grids to show (solutions or
    predictions) and optionally the solutions, against which the task marks wrong cells. `titles` has N
    entries; `columns` panels go in one row (default: up to 4). Rendering uses the Agg backend, so no
    display is needed, and the PNG is written to a temporary file first, so `path` is never half-written.
    """
    inputs, grids = np.asarray(inputs), np.asarray(grids)
    _check_shapes(task, inputs, grids, labels, titles)
    num_panels = len(grids)
    columns = min(num_panels, columns or DEFAULT_COLUMNS)
    rows = -(-num_panels // columns)
    panel_inches = max(MIN_PANEL_INCHES, INCHES_PER_CELL * max(task.grid_shape))

    figure = Figure(figsize=(columns * panel_inches, rows * panel_inches), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for index, ax in enumerate(axes):
        if index >= num_panels:
            ax.set_axis_off()
            continue
        label_row = None if labels is None else np.asarray(labels[index])
        task.render(ax, inputs[index], grids[index], label_row)
        if titles is not None:
            ax.set_title(titles[index], fontsize=10)
    figure.tight_layout()
    _save_atomically(figure, Path(path))


def _check_shapes(
    task: PuzzleTask,
    inputs: np.ndarray,
    grids: np.ndarray,
    labels: np.ndarray | None,
    titles: Sequence[str] | None,
) -> None:
    expected = f"[N, {task.seq_len}]"
    if grids.ndim != 2 or grids.shape[1] != task.seq_len or len(grids) == 0:
        raise ValueError(f"grids must have shape {expected} with N >= 1, got {grids.shape}")
    if inputs.shape != grids.shape:
        raise ValueError(f"inputs {inputs.shape} must have the shape of grids {grids.shape}")
    if labels is not None and np.shape(labels) != grids.shape:
        raise ValueError(f"labels {np.shape(labels)} must have the shape of grids {grids.shape}")
    if titles is not None and len(titles) != len(grids):
        raise ValueError(f"got {len(titles)} titles for {len(grids)} grids")


def _save_atomically(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A pid-named file rather than mkstemp, whose 0600 mode would carry over to the figure.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        figure.savefig(temporary, format="png")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
