"""Figures of a few predictions per model for the report: evaluate.py's PNG, or one rendered from its .npz."""

import shutil
import zipfile
from pathlib import Path

import numpy as np

from dataset.common import DatasetError, read_metadata
from dataset.tasks import task_from_metadata
from evaluation.report_files import save_prediction_figure
from experiments.runs import EvalReport, ReportError
from models.head import IGNORE_LABEL

EXAMPLES_PER_FIGURE = 8
PREDICTION_ARRAYS = ("inputs", "labels", "predictions", "example_index")


def save_prediction_examples(report: EvalReport, path: Path) -> str | None:
    """Write a figure of solved and unsolved predictions of `report` to `path`.

    Copies the PNG evaluate.py wrote next to the report. Without one, it renders up to 8 examples from the
    report's .npz with the task of the evaluated dataset. Returns None on success, else the reason why no
    figure could be written. Raises ReportError for an unreadable .npz.
    """
    if report.figure_path.is_file():
        shutil.copyfile(report.figure_path, path)
        return None
    if not report.predictions_path.is_file():
        return f"neither {report.figure_path.name} nor {report.predictions_path.name} exists"
    if report.data_path is None:
        return f"{report.path.name} names no data_path, so the task to render with is unknown"
    try:
        metadata = read_metadata(report.data_path, report.split)
        task = task_from_metadata(metadata)
    except DatasetError as error:
        return f"cannot read the evaluated dataset: {error}"

    try:
        with np.load(report.predictions_path, allow_pickle=False) as stored:
            predictions = {name: np.asarray(stored[name]) for name in PREDICTION_ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ReportError(f"{report.predictions_path}: cannot read predictions ({error})") from None
    # evaluate.py stores ignored label cells as the dataset's ignore_label_id, but the figure code expects IGNORE_LABEL.
    if metadata.ignore_label_id is not None:
        labels = predictions["labels"]
        predictions["labels"] = np.where(labels == metadata.ignore_label_id, IGNORE_LABEL, labels)
    if len(predictions["predictions"]) == 0:
        return f"{report.predictions_path.name} holds no predictions"
    save_prediction_figure(task, predictions, path, EXAMPLES_PER_FIGURE)
    return None
