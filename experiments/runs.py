"""Find training runs below given paths and load what each run directory holds.

A run directory is any directory with both `config.json` and `metrics.jsonl`, as the training loop writes
them. `eval_*.json` files in it are reports of `evaluate.py`, each with an `.npz` of predictions and a
`.png` of a few of them next to it.
"""

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from dataset.common import DatasetError, read_metadata
from models.registry import build_head
from training.config import ConfigError, resolve_forward_dtype, validate_arch

RUN_FILES = ("config.json", "metrics.jsonl")
REQUIRED_CONFIG_KEYS = ("arch", "data_paths", "global_batch_size", "seed")
REQUIRED_REPORT_KEYS = (
    "step", "split", "budget_name", "options", "exact_accuracy", "count", "inference_flops_per_example",
)


class ReportError(Exception):
    """Invalid input to the report generator. The message names the file (and line) and the problem."""


@dataclass(frozen=True)
class DatasetIdentity:
    """Identity of a run's training data: its paths plus, where readable, the source hash and builder arguments."""

    paths: tuple[str, ...]
    test_paths: tuple[str, ...]
    sources: tuple[dict[str, Any] | None, ...]
    """Per training path: {"source_sha256", "builder"} from its `train/dataset.json`, or None when unreadable."""

    @cached_property
    def key(self) -> str:
        """First 12 hex digits of a SHA-256 over paths and sources, equal for runs on the same dataset."""
        content = {"data_paths": self.paths, "data_paths_test": self.test_paths, "sources": self.sources}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """The first data directory's name, with the number of further directories when there are several."""
        name = Path(self.paths[0]).name or self.paths[0]
        return name if len(self.paths) == 1 else f"{name} (+{len(self.paths) - 1})"


@dataclass
class EvalReport:
    """One `evaluate.py` JSON: accuracy of one checkpoint on one split, overall and per inference budget."""

    path: Path
    step: int
    split: str
    budget_name: str
    options: dict[str, Any]
    """Evaluation options of the loss head as written in the JSON (e.g. DFM sampler, TRM halt_by_q)."""
    data_path: str | None
    exact_accuracy: float
    token_accuracy: float
    valid_accuracy: float
    count: int
    exact_by_budget: dict[int, float]
    flops_by_budget: dict[int, float]
    """Budget -> analytic inference FLOPs per example."""

    @property
    def figure_path(self) -> Path:
        return self.path.with_suffix(".png")

    @property
    def predictions_path(self) -> Path:
        return self.path.with_suffix(".npz")


@dataclass
class Run:
    """One training run: its config, its metric records merged by step, and its evaluate.py reports."""

    path: Path
    config: dict[str, Any]
    records: dict[int, dict[str, float]]
    """Optimizer step -> every metric logged at that step (later lines win for repeated keys)."""
    eval_reports: list[EvalReport]
    dataset: DatasetIdentity

    @property
    def arch(self) -> str:
        return self.config["arch"]["name"]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    def eval_steps(self, split: str) -> list[int]:
        """Steps of the periodic evaluations of `split`, ascending."""
        key = f"eval/{split}/exact_accuracy"
        return [step for step in sorted(self.records) if key in self.records[step]]

    def last_value(self, key: str) -> float | None:
        """Return the value of `key` at the largest step that logged it, or None."""
        steps = [step for step in self.records if key in self.records[step]]
        return self.records[max(steps)][key] if steps else None

    @property
    def last_step(self) -> int:
        return max(self.records, default=0)

    @cached_property
    def train_flops_per_example(self) -> float | None:
        """Analytic training FLOPs per example: from config.json, else from the logged cumulative count."""
        if self.config.get("train_flops_per_example") is not None:
            return float(self.config["train_flops_per_example"])
        for record in self.records.values():
            examples = record.get("progress/examples_seen")
            if examples and record.get("progress/train_flops") is not None:
                return record["progress/train_flops"] / examples
        return None

    @cached_property
    def parameter_counts(self) -> dict[str, int] | None:
        """`head.parameter_counts()` from config.json, else from a rebuilt model, or None if neither works."""
        if self.config.get("parameter_counts"):
            return self.config["parameter_counts"]
        return _rebuild_parameter_counts(self.config)


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Find every run directory at or below `paths` (a run, `checkpoints/<project>` or a Hydra multirun root).

    Directories below a run directory are not searched. Raises ReportError for a missing path and when no
    run is found at all.
    """
    found: dict[Path, Path] = {}
    paths = [Path(path) for path in paths]
    for root in paths:
        if not root.is_dir():
            raise ReportError(f"{root}: directory not found")
        for directory, subdirectories, files in os.walk(root):
            subdirectories.sort()
            if all(name in files for name in RUN_FILES):
                found.setdefault(Path(directory).resolve(), Path(directory))
                subdirectories.clear()
    if not found:
        listed = " ".join(str(path) for path in paths)
        raise ReportError(f"no runs found under {listed}: expected directories with {' and '.join(RUN_FILES)}")
    return sorted(found.values(), key=str)


def load_run(run_dir: Path) -> Run:
    """Read one run directory, raising ReportError that names the file (and line) of any unreadable input."""
    config = _read_config(run_dir / "config.json")
    records = read_metrics(run_dir / "metrics.jsonl")
    reports = [read_eval_report(path) for path in sorted(run_dir.glob("eval_*.json"))]
    return Run(path=run_dir, config=config, records=records, eval_reports=reports, dataset=_dataset_identity(config))


def read_metrics(path: Path) -> dict[int, dict[str, float]]:
    """Merge the records of a metrics.jsonl by step, raising ReportError that names the line of a bad record."""
    records: dict[int, dict[str, float]] = {}
    with open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ReportError(f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ReportError(f"{path}:{number}: expected a JSON object with an integer 'step'")
            step = record.pop("step")
            records.setdefault(step, {}).update(record)
    return records


def read_eval_report(path: Path) -> EvalReport:
    """Parse one evaluate.py JSON, raising ReportError that names the file and the missing or invalid key."""
    report = _read_json_object(path)
    missing = [key for key in REQUIRED_REPORT_KEYS if key not in report]
    by_budget_key = f"exact_accuracy_by_{report.get('budget_name')}"
    if by_budget_key not in report:
        missing.append(by_budget_key)
    if missing:
        raise ReportError(f"{path}: missing key {', '.join(missing)}; not a report written by evaluate.py")
    if not isinstance(report["options"], dict):
        raise ReportError(f"{path}: options must be a JSON object, found {type(report['options']).__name__}")
    try:
        exact_by_budget = {int(budget): float(value) for budget, value in report[by_budget_key].items()}
        # FLOPs of the model calls actually made where the report has them (greedy DFM stops early).
        flops_key = "inference_flops_per_example_used"
        if flops_key not in report:
            flops_key = "inference_flops_per_example"
        flops_by_budget = {int(budget): float(value) for budget, value in report[flops_key].items()}
    except (AttributeError, TypeError, ValueError):
        raise ReportError(
            f"{path}: {by_budget_key} and {flops_key} must map integer budgets to numbers"
        ) from None
    return EvalReport(
        path=path,
        step=int(report["step"]),
        split=str(report["split"]),
        budget_name=str(report["budget_name"]),
        options=dict(report["options"]),
        data_path=report.get("data_path"),
        exact_accuracy=float(report["exact_accuracy"]),
        token_accuracy=float(report.get("token_accuracy", float("nan"))),
        valid_accuracy=float(report.get("valid_accuracy", float("nan"))),
        count=int(report["count"]),
        exact_by_budget=exact_by_budget,
        flops_by_budget=flops_by_budget,
    )


def _read_config(path: Path) -> dict[str, Any]:
    config = _read_json_object(path)
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    arch = config.get("arch")
    if arch is not None and (not isinstance(arch, dict) or "name" not in arch):
        missing.append("arch.name")
    if missing:
        raise ReportError(f"{path}: missing key {', '.join(missing)}; not a config.json written by pretrain.py")
    return config


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    except OSError as error:
        raise ReportError(f"{path}: cannot read file ({error.strerror})") from None
    if not isinstance(content, dict):
        raise ReportError(f"{path}: expected a JSON object, found {type(content).__name__}")
    return content


def _dataset_identity(config: dict[str, Any]) -> DatasetIdentity:
    paths = tuple(os.path.normpath(path) for path in config["data_paths"])
    test_paths = tuple(os.path.normpath(path) for path in config.get("data_paths_test") or [])
    return DatasetIdentity(paths=paths, test_paths=test_paths, sources=tuple(_read_source(path) for path in paths))


def _read_source(data_path: str) -> dict[str, Any] | None:
    try:
        metadata = read_metadata(data_path, "train")
    except DatasetError:
        return None
    return {"source_sha256": metadata.source_sha256, "builder": metadata.builder}


def _rebuild_parameter_counts(config: dict[str, Any]) -> dict[str, int] | None:
    """Build the run's model on the meta device (no memory, no weights) and count its parameters.

    Runs trained before config.json recorded `parameter_counts` need this. It needs the training data's
    metadata, so it returns None when that dataset is no longer readable or the arch config no longer validates.
    """
    try:
        metadata = read_metadata(config["data_paths"][0], "train")
        spec = validate_arch(resolve_forward_dtype(config["arch"], "cpu"))
    except (DatasetError, ConfigError):
        return None
    with torch.device("meta"):
        head = build_head(spec.name, spec.model, spec.loss_name, spec.loss, metadata)
    return head.parameter_counts()
