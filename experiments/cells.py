"""Group runs into cells of (dataset, architecture variant) and aggregate their metrics over seeds.

A variant is the architecture name plus every config key whose value differs between runs of that
architecture on the same dataset. Seeds, run identity and infrastructure keys never make a variant, so the
runs of one cell differ only in those and are treated as seeds of one experiment.
"""

import json
from dataclasses import dataclass
from typing import Any

from experiments.runs import DatasetIdentity, Run
from experiments.stats import Estimate, t_interval

# Keys that do not change what is trained: run identity, hardware and logging, and the sizes written for reports.
IGNORED_KEYS = frozenset({
    "seed", "run_name", "project_name", "checkpoint_path", "git_commit", "resume", "device", "compile",
    "world_size", "log_interval", "checkpoint_every_eval", "checkpoint_interval", "data_paths", "data_paths_test",
    "parameter_counts", "train_flops_per_example", "forward_flops_per_example",
})
# Keys shown in every label of an architecture because they name the variants this study compares.
HEADLINE_KEYS = {"trm": ("arch.mlp_t",), "flow_matching": ("arch.source",)}


@dataclass
class Cell:
    """The runs of one architecture variant on one dataset, one run per seed."""

    dataset: DatasetIdentity
    arch: str
    variant: dict[str, Any]
    """Flattened config key -> value of the keys that name this variant (headline and varying keys)."""
    runs: list[Run]
    """Sorted by seed, then by path."""

    @property
    def label(self) -> str:
        """E.g. `flow_matching (source=mask)` or `trm (mlp_t=true, hidden_size=128)`."""
        if not self.variant:
            return self.arch
        settings = ", ".join(f"{_short_key(key)}={format_value(value)}" for key, value in self.variant.items())
        return f"{self.arch} ({settings})"

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]


@dataclass
class CurvePoint:
    """One periodic evaluation step of a learning curve, aggregated over the cell's runs."""

    step: int
    examples: int
    flops: float | None
    """Training FLOPs up to this step (mean over runs), None when a run logged none."""
    value: Estimate


@dataclass
class TableRow:
    """Numbers of one cell in a dataset's summary table: Estimates over seeds, or None where runs logged none."""

    parameters: dict[str, int] | None
    steps: list[int]
    train_flops: Estimate | None
    wall_seconds: Estimate | None
    best: dict[str, Estimate | None]
    """Split -> best exact accuracy over the periodic evaluations of each run."""
    final: dict[str, Estimate | None]
    """Split -> exact accuracy at each run's last periodic evaluation."""
    final_valid: dict[str, Estimate | None]
    """Split -> valid-solution rate at each run's last periodic evaluation."""


def format_value(value: Any) -> str:
    """Write a config value as it is written in YAML and Hydra overrides (true, null, [a,b])."""
    if isinstance(value, (bool, type(None))):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    return str(value)


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys, so equal values compare equal as strings."""
    return json.dumps(value, sort_keys=True, default=str)


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested sections to dotted keys (`arch.hidden_size`, `arch.loss.t_max`)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def group_cells(runs: list[Run]) -> list[Cell]:
    """Group runs by dataset and architecture variant, ordered by dataset name, architecture and label."""
    families: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        families.setdefault((run.dataset.key, run.arch), []).append(run)

    cells = []
    for (_, arch), family in families.items():
        flat = [
            # Sections such as parameter_counts are flattened, so the check is on the top-level key.
            {key: value for key, value in flatten_config(run.config).items() if key.split(".")[0] not in IGNORED_KEYS}
            for run in family
        ]
        varying = sorted(key for key in set().union(*flat) if len({canonical_json(f.get(key)) for f in flat}) > 1)
        label_keys = [key for key in HEADLINE_KEYS.get(arch, ()) if key not in varying] + varying
        members: dict[str, list[Run]] = {}
        variants: dict[str, dict[str, Any]] = {}
        for run, values in zip(family, flat):
            variant = {key: values.get(key) for key in label_keys if key in values or key in varying}
            members.setdefault(canonical_json(variant), []).append(run)
            variants[canonical_json(variant)] = variant
        for canonical, cell_runs in members.items():
            cell_runs.sort(key=lambda run: (run.seed, str(run.path)))
            cells.append(Cell(dataset=cell_runs[0].dataset, arch=arch, variant=variants[canonical], runs=cell_runs))
    cells.sort(key=lambda cell: (cell.dataset.name, cell.dataset.key, cell.arch, cell.label))
    return cells


def learning_curve(cell: Cell, split: str, metric: str) -> list[CurvePoint]:
    """`eval/<split>/<metric>` at the periodic evaluation steps that every run of the cell reached."""
    key = f"eval/{split}/{metric}"
    step_sets = [{step for step, record in run.records.items() if key in record} for run in cell.runs]
    common = sorted(set.intersection(*step_sets)) if step_sets else []
    batch_size = cell.runs[0].config["global_batch_size"]

    points = []
    for step in common:
        flops_per_example = [run.train_flops_per_example for run in cell.runs]
        flops = None
        if all(value is not None for value in flops_per_example):
            flops = step * batch_size * sum(flops_per_example) / len(flops_per_example)
        values = [run.records[step][key] for run in cell.runs]
        points.append(CurvePoint(step=step, examples=step * batch_size, flops=flops, value=t_interval(values)))
    return points


def table_row(cell: Cell, splits: tuple[str, ...] = ("val", "test")) -> TableRow:
    """Summarise a cell: size, training cost and the best and final exact accuracy per split."""
    counts = next((run.parameter_counts for run in cell.runs if run.parameter_counts), None)
    best, final, final_valid = {}, {}, {}
    for split in splits:
        runs = [run for run in cell.runs if run.eval_steps(split)]
        exact = [[run.records[step][f"eval/{split}/exact_accuracy"] for step in run.eval_steps(split)] for run in runs]
        best[split] = t_interval([max(values) for values in exact]) if runs else None
        final[split] = t_interval([values[-1] for values in exact]) if runs else None
        valid = [run.records[run.eval_steps(split)[-1]].get(f"eval/{split}/valid_accuracy") for run in runs]
        final_valid[split] = t_interval(valid) if runs and None not in valid else None
    return TableRow(
        parameters=counts,
        steps=[run.last_step for run in cell.runs],
        train_flops=_estimate_of_last(cell.runs, "progress/train_flops"),
        wall_seconds=_estimate_of_last(cell.runs, "time/wall_seconds"),
        best=best,
        final=final,
        final_valid=final_valid,
    )


def _estimate_of_last(runs: list[Run], key: str) -> Estimate | None:
    values = [run.last_value(key) for run in runs]
    return None if None in values else t_interval(values)


def _short_key(key: str) -> str:
    return key.removeprefix("arch.")
