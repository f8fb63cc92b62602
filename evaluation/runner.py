"""Run a loss head's predictions over a dataset split on every rank and reduce the metrics.

Used by periodic evaluation in `pretrain.py` and by `evaluate.py`, so both report identical numbers.
"""

import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pydantic
import torch

from dataset.puzzle_dataset import PuzzleDataset
from evaluation.metrics import score_predictions, wilson_interval
from models.head import LossHead, Prediction
from training.distributed import all_gather_tensors, all_reduce_sum_


@dataclass
class EvalResult:
    """Reduced metrics of one split, and on request the gathered predictions (rank 0 only)."""

    metrics: dict
    predictions: dict[str, np.ndarray] | None = None
    """inputs, labels, predictions [N, L] and example_index [N] in split order, when collected."""


def batch_to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a loader batch to `device`: token and id arrays as int64, the mask as bool."""
    return {
        name: torch.from_numpy(np.asarray(array)).to(device, torch.bool if array.dtype == np.bool_ else torch.int64)
        for name, array in batch.items()
    }


class _Sums:
    """Per-metric sums over real (unmasked) examples, reduced over ranks in one collective."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def add(self, name: str, per_example: np.ndarray, mask: np.ndarray) -> None:
        self.values[name] = self.values.get(name, 0.0) + float(np.asarray(per_example, dtype=np.float64)[mask].sum())

    def reduced(self, device: torch.device) -> dict[str, float]:
        names = sorted(self.values)
        totals = torch.tensor([self.values[n] for n in names], dtype=torch.float64, device=device)
        all_reduce_sum_([totals])
        return dict(zip(names, totals.tolist()))


def _score_prediction(dataset: PuzzleDataset, batch: dict[str, np.ndarray], prediction: Prediction, sums: _Sums, budget_name: str) -> np.ndarray:
    mask = batch["mask"]
    inputs, labels = batch["inputs"], batch["labels"]
    final = prediction.final.cpu().numpy()
    for name, values in score_predictions(dataset.task, inputs, labels, final).items():
        sums.add(name, values, mask)
    for budget, grids in prediction.by_budget.items():
        scores = score_predictions(dataset.task, inputs, labels, grids.cpu().numpy())
        for name in ("exact_accuracy", "token_accuracy"):
            sums.add(f"{name}_by_{budget_name}/{budget}", scores[name], mask)
    for name, values in prediction.extras.items():
        sums.add(name, values.float().cpu().numpy(), mask)
    sums.add("count", np.ones(len(mask)), mask)
    return final


def _nest(flat: dict[str, float]) -> dict:
    """Turn `name/budget` keys into {name: {budget: value}}, budgets in increasing order."""
    nested: dict = {}
    for key, value in sorted(flat.items(), key=_budget_order):
        if "/" in key:
            name, budget = key.split("/", 1)
            nested.setdefault(name, {})[int(budget)] = value
        else:
            nested[key] = value
    return nested


def _budget_order(item: tuple[str, float]) -> tuple[str, int]:
    name, _, budget = item[0].partition("/")
    return name, int(budget) if budget else -1


@torch.no_grad()
def evaluate_split(
    head: LossHead,
    dataset: PuzzleDataset,
    device: torch.device,
    budgets: list[int] | None = None,
    options: pydantic.BaseModel | None = None,
    max_examples: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    collect_predictions: bool = False,
) -> EvalResult:
    """Predict every example of `dataset` (an eval-mode loader) and return metrics averaged over examples."""
    options = options if options is not None else head.eval_options_model()
    budgets = budgets or head.default_budgets()
    was_training = head.training
    head.eval()
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()

    sums = _Sums()
    collected: dict[str, list[np.ndarray]] = {"inputs": [], "labels": [], "predictions": [], "example_index": []}
    start = time.perf_counter()
    for batch in dataset.eval_batches(max_examples):
        with autocast:
            prediction = head.predict(batch_to_device(batch, device), budgets, options)
        final = _score_prediction(dataset, batch, prediction, sums, head.budget_name)
        if collect_predictions:
            for name, array in (("inputs", batch["inputs"]), ("labels", batch["labels"]), ("predictions", final)):
                collected[name].append(np.asarray(array, dtype=np.int64))
            collected["example_index"].append(batch["example_index"].astype(np.int64))
    elapsed = time.perf_counter() - start
    head.train(was_training)

    totals = sums.reduced(device)
    count = totals.pop("count", 0.0)
    metrics = _nest({name: value / max(count, 1.0) for name, value in totals.items()})
    metrics["count"] = int(count)
    metrics["exact_accuracy_ci95"] = list(wilson_interval(metrics.get("exact_accuracy", 0.0) * count, int(count)))
    metrics["examples_per_second"] = count / elapsed if elapsed > 0 else float("nan")
    metrics["budgets"] = list(budgets)
    return EvalResult(metrics=metrics, predictions=_gather_predictions(collected, device) if collect_predictions else None)


def _gather_predictions(collected: dict[str, list[np.ndarray]], device: torch.device) -> dict[str, np.ndarray] | None:
    """Concatenate this rank's rows, gather all ranks' rows and sort them by example index, dropping padding."""
    if not collected["example_index"]:
        return {name: np.zeros((0,), dtype=np.int64) for name in collected}
    local = {name: np.concatenate(arrays) for name, arrays in collected.items()}
    gathered = {
        name: torch.cat(all_gather_tensors(torch.from_numpy(array).to(device))).cpu().numpy()
        for name, array in local.items()
    }
    keep = gathered["example_index"] >= 0
    order = np.argsort(gathered["example_index"][keep], kind="stable")
    return {name: array[keep][order] for name, array in gathered.items()}
