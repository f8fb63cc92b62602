"""Fixtures for the report generator and demo tests: a small dataset, synthetic run directories, tiny trainings.

Test files are imported in importlib mode, so shared helpers are fixtures here rather than imports.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dataset.build_sudoku_dataset import main as build_sudoku
from dataset.common import read_split
from training.checkpoint import latest_checkpoint
from training.config import load_pretrain_config
from training.distributed import DistributedInfo
from training.trainer import Trainer

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_ARCH = {
    "trm": ["arch=trm", "arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.H_cycles=1",
            "arch.L_cycles=2", "arch.L_layers=1", "arch.halt_max_steps=3", "arch.puzzle_emb_len=1"],
    "flow_matching": ["arch=flow_matching", "arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2",
                      "arch.num_layers=1", "arch.structure_embeddings=true"],
}
BUDGET_NAMES = {"trm": "supervision_steps", "flow_matching": "nfe"}


@pytest.fixture(autouse=True)
def report_environment(monkeypatch):
    """One CPU thread and no wandb, as in the loop tests."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sudoku4(tmp_path_factory) -> Path:
    """Generated 4x4 Sudoku: 24 train puzzles, 8 val, 12 test."""
    path = tmp_path_factory.mktemp("data") / "sudoku4"
    build_sudoku([
        "--generate", "--box-shape", "2x2", "--subsample-size", "32", "--val-size", "8",
        "--test-subsample-size", "12", "--output-dir", str(path),
    ])
    return path


def compose_run_config(overrides: list[str]) -> dict[str, Any]:
    """The resolved config dict that pretrain.py would write for these overrides (before run identity)."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "config"), version_base=None):
        config = OmegaConf.to_container(compose("cfg_pretrain", overrides=overrides), resolve=True)
    config["arch"]["forward_dtype"] = "float32"
    return config


@pytest.fixture
def run_config() -> Callable[[list[str]], dict[str, Any]]:
    """Composer of run configs from Hydra overrides."""
    return compose_run_config


@pytest.fixture
def train_tiny(sudoku4) -> Callable[[str, Path], Path]:
    """Trainer of a tiny model in this process for 24 steps (val and test evaluated at 12 and 24).

    Returns the newest checkpoint.
    """

    def train(arch: str, run_dir: Path) -> Path:
        overrides = TINY_ARCH[arch] + [
            f"data_paths=[{sudoku4}]", "global_batch_size=8", "epochs=8", "eval_interval=4", "lr=1e-3",
            "lr_warmup_steps=2", f"+checkpoint_path={run_dir}",
        ]
        with initialize_config_dir(config_dir=str(REPO_ROOT / "config"), version_base=None):
            config = load_pretrain_config(compose("cfg_pretrain", overrides=overrides))
        Trainer(config, DistributedInfo(0, 1, 0, torch.device("cpu"))).fit()
        return latest_checkpoint(run_dir)

    return train


@pytest.fixture
def write_run(sudoku4) -> Callable[..., Path]:
    """Writer of a synthetic run directory with periodic evaluations of val and test.

    `exact[split]` lists the exact accuracy at each evaluation step, and token and valid accuracy are
    derived from it. Train records every 10 steps carry examples, FLOPs (1e6 per example) and wall time.
    """

    def write(
        run_dir: Path,
        arch: str,
        seed: int,
        exact: dict[str, list[float]],
        extra_overrides: list[str] = (),
        eval_every: int = 20,
        parameter_counts: dict[str, int] | None = None,
    ) -> Path:
        run_dir.mkdir(parents=True)
        config = compose_run_config(
            TINY_ARCH[arch] + [f"data_paths=[{sudoku4}]", "global_batch_size=8", f"seed={seed}", *extra_overrides]
        )
        config.update(run_name=run_dir.name, project_name="synthetic", checkpoint_path=str(run_dir),
                      world_size=1, git_commit="0123456789abcdef")
        if parameter_counts is not None:
            config["parameter_counts"] = parameter_counts
        (run_dir / "config.json").write_text(json.dumps(config, indent=2))

        num_evals = max(len(values) for values in exact.values())
        last_step = eval_every * num_evals
        lines = []
        for step in range(10, last_step + 1, 10):
            examples = step * config["global_batch_size"]
            lines.append({"step": step, "train/loss": 1.0 / step, "progress/examples_seen": examples,
                          "progress/train_flops": examples * 1e6, "time/wall_seconds": step * 0.5})
        budget = BUDGET_NAMES[arch]
        for split, values in exact.items():
            for index, value in enumerate(values):
                prefix = f"eval/{split}/"
                lines.append({
                    "step": eval_every * (index + 1), f"{prefix}exact_accuracy": value,
                    f"{prefix}token_accuracy": min(1.0, value + 0.25), f"{prefix}valid_accuracy": value,
                    f"{prefix}count": 12.0, f"{prefix}exact_accuracy_by_{budget}/1": value / 2,
                    f"{prefix}exact_accuracy_by_{budget}/4": value, f"{prefix}inference_flops_per_example": 4e5,
                })
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        return run_dir

    return write


@pytest.fixture
def write_eval_report(sudoku4) -> Callable[..., Path]:
    """Writer of an evaluate.py-style JSON (and, on request, its .npz of predictions) in a run directory."""

    def write(
        run_dir: Path,
        arch: str,
        step: int,
        exact_by_budget: dict[int, float],
        options: dict[str, Any],
        name: str,
        with_predictions: bool = False,
    ) -> Path:
        budget = BUDGET_NAMES[arch]
        largest = max(exact_by_budget)
        report = {
            "checkpoint": str(run_dir / f"step_{step}.pt"), "step": step,
            "arch": {"name": arch}, "data_path": str(sudoku4), "split": "test", "budget_name": budget,
            "options": options, "exact_accuracy": exact_by_budget[largest], "token_accuracy": 0.9,
            "cell_accuracy": 0.95, "valid_accuracy": exact_by_budget[largest], "count": 12,
            f"exact_accuracy_by_{budget}": {str(b): v for b, v in exact_by_budget.items()},
            "inference_flops_per_example": {str(b): b * 1e5 for b in exact_by_budget},
            "budgets": sorted(exact_by_budget),
        }
        path = run_dir / f"{name}.json"
        path.write_text(json.dumps(report, indent=2))
        if with_predictions:
            _, data = read_split(sudoku4, "test")
            labels = np.asarray(data.labels, dtype=np.int64)
            predictions = labels.copy()
            predictions[::2, 0] = np.where(labels[::2, 0] == 2, 3, 2)  # every other puzzle gets one wrong cell
            np.savez_compressed(path.with_suffix(".npz"), inputs=np.asarray(data.inputs, dtype=np.int64),
                                labels=labels, predictions=predictions, example_index=np.arange(len(labels)))
        return path

    return write
