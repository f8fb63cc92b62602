"""Fixtures for end-to-end tests of the training loop: a small generated dataset and config builders."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from dataset.build_sudoku_dataset import main as build_sudoku
from training.config import PretrainConfig, load_pretrain_config
from training.distributed import DistributedInfo
from training.trainer import Trainer

REPO_ROOT = Path(__file__).resolve().parents[2]

# Models small enough to train in seconds on one CPU thread.
LOOP_TINY_TRM = [
    "arch=trm", "arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.H_cycles=2",
    "arch.L_cycles=2", "arch.L_layers=1", "arch.halt_max_steps=4", "arch.puzzle_emb_len=1",
]
LOOP_TINY_DFM = [
    "arch=flow_matching", "arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.num_layers=1",
    "arch.structure_embeddings=true", "arch.puzzle_emb_ndim=32", "arch.puzzle_emb_len=1",
]


@pytest.fixture(scope="session")
def loop_sudoku4(tmp_path_factory) -> Path:
    """Generated 4x4 Sudoku: 32 train puzzles with 2 augmentations each, 8 val, 16 test."""
    path = tmp_path_factory.mktemp("data") / "sudoku4"
    build_sudoku([
        "--generate", "--box-shape", "2x2", "--subsample-size", "40", "--val-size", "8",
        "--test-subsample-size", "16", "--num-aug", "2", "--output-dir", str(path),
    ])
    return path


@pytest.fixture(scope="session")
def loop_sudoku4_32(tmp_path_factory) -> Path:
    """Generated 4x4 Sudoku with exactly 32 training puzzles and no augmentation, for overfitting."""
    path = tmp_path_factory.mktemp("data") / "sudoku4_32"
    build_sudoku([
        "--generate", "--box-shape", "2x2", "--subsample-size", "32", "--test-subsample-size", "8",
        "--output-dir", str(path),
    ])
    return path


@pytest.fixture(autouse=True)
def loop_environment(monkeypatch):
    """One CPU thread (bit-stable losses across processes) and no wandb in loop tests."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_config(overrides: list[str]) -> PretrainConfig:
    """Compose config/cfg_pretrain.yaml with Hydra overrides, as the command line would."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "config"), version_base=None):
        return load_pretrain_config(compose("cfg_pretrain", overrides=overrides))


@pytest.fixture(scope="session")
def loop_train() -> Callable[[list[str]], Trainer]:
    """Train in this process with the given overrides and return the finished Trainer."""

    def train(overrides: list[str]) -> Trainer:
        trainer = Trainer(compose_config(overrides), DistributedInfo(0, 1, 0, torch.device("cpu")))
        trainer.fit()
        return trainer

    return train


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


def run_script(args: list[str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python <args>` from the repository root, as a user would."""
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed with {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def logged_losses(run_dir: Path) -> dict[int, float]:
    """Training loss per logged step from metrics.jsonl; the last record wins for repeated steps."""
    losses = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            losses[record["step"]] = record["train/loss"]
    return losses


@pytest.fixture(scope="session")
def loop_config() -> Callable[[list[str]], PretrainConfig]:
    """Config composer: overrides -> validated PretrainConfig."""
    return compose_config


@pytest.fixture
def loop_script() -> Callable[..., subprocess.CompletedProcess]:
    """Runner of repository scripts in a subprocess (one thread, wandb disabled)."""
    return run_script


@pytest.fixture
def loop_losses() -> Callable[[Path], dict[int, float]]:
    """Reader of the logged training losses of a run directory."""
    return logged_losses


@pytest.fixture
def loop_env() -> dict[str, str]:
    """Environment of subprocess runs: one thread, wandb disabled, the repository importable."""
    return subprocess_env()
