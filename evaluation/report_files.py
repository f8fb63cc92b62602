"""Figures written next to an evaluation's JSON: a few predictions, and accuracy per inference budget."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen before pyplot is imported)
import numpy as np  # noqa: E402

from dataset.common import PuzzleTask  # noqa: E402
from dataset.render import save_grid_figure  # noqa: E402
from models.head import IGNORE_LABEL  # noqa: E402


def pick_examples(predictions: dict[str, np.ndarray], count: int) -> np.ndarray:
    """Indices of up to `count` examples, half solved and half not where both exist, in split order."""
    labels, predicted = predictions["labels"], predictions["predictions"]
    solved = ((predicted == labels) | (labels == IGNORE_LABEL)).all(axis=1)
    right, wrong = np.flatnonzero(solved), np.flatnonzero(~solved)
    take_wrong = min(len(wrong), max(count // 2, count - len(right)))
    chosen = np.concatenate([right[: count - take_wrong], wrong[:take_wrong]])
    return np.sort(chosen)


def save_prediction_figure(task: PuzzleTask, predictions: dict[str, np.ndarray], path: Path, count: int) -> None:
    """Draw `count` predictions (wrong cells highlighted against the labels) into one PNG."""
    chosen = pick_examples(predictions, count)
    if len(chosen) == 0:
        return
    raw_labels = predictions["labels"][chosen]
    solved = ((predictions["predictions"][chosen] == raw_labels) | (raw_labels == IGNORE_LABEL)).all(axis=1)
    labels = np.where(raw_labels == IGNORE_LABEL, task.pad_id, raw_labels)
    titles = [f"#{predictions['example_index'][i]} {'solved' if ok else 'wrong'}" for i, ok in zip(chosen, solved)]
    save_grid_figure(
        task, predictions["inputs"][chosen], predictions["predictions"][chosen], path, labels=labels, titles=titles
    )


def save_budget_curve(metrics: dict, budget_name: str, path: Path) -> None:
    """Plot exact and token accuracy against the inference budget."""
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name in ("exact_accuracy", "token_accuracy"):
        curve = metrics.get(f"{name}_by_{budget_name}", {})
        budgets = sorted(curve)
        axis.plot(budgets, [curve[b] for b in budgets], marker="o", label=name)
    axis.set_xscale("log", base=2)
    axis.set_xlabel(budget_name.replace("_", " "))
    axis.set_ylabel("accuracy")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
