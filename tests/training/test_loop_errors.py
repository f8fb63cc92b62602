"""Bad configs, data and checkpoints fail before training with one clear line."""

import pytest
import torch

from dataset.common import DatasetError
from training.checkpoint import CheckpointError
from training.config import ConfigError
from training.distributed import DistributedInfo
from training.trainer import Trainer

TINY_TRM = [
    "arch=trm", "arch.hidden_size=32", "arch.num_heads=2", "arch.H_cycles=1", "arch.L_cycles=1",
    "arch.L_layers=1", "arch.halt_max_steps=2", "arch.puzzle_emb_len=1",
]
TINY_DFM = ["arch=flow_matching", "arch.hidden_size=32", "arch.num_heads=2", "arch.num_layers=1"]


def base(dataset_dir, run_dir) -> list[str]:
    return [
        f"data_paths=[{dataset_dir}]", "global_batch_size=16", "epochs=2", "eval_interval=1",
        f"+checkpoint_path={run_dir}",
    ]


def build_trainer(config):
    return Trainer(config, DistributedInfo(0, 1, 0, torch.device("cpu")))


def test_eval_interval_must_divide_epochs(loop_config, loop_sudoku4, tmp_path):
    with pytest.raises(ConfigError, match="eval_interval 3 must divide epochs 10"):
        loop_config(TINY_TRM + base(loop_sudoku4, tmp_path) + ["epochs=10", "eval_interval=3"])


def test_unknown_top_level_key(loop_config, loop_sudoku4, tmp_path):
    with pytest.raises(ConfigError, match="learning_rate: Extra inputs are not permitted"):
        loop_config(TINY_TRM + base(loop_sudoku4, tmp_path) + ["+learning_rate=0.1"])


def test_wrong_type(loop_config, loop_sudoku4, tmp_path):
    with pytest.raises(ConfigError, match="lr: Input should be a valid number"):
        loop_config(TINY_TRM + base(loop_sudoku4, tmp_path) + ["lr=fast"])


@pytest.mark.parametrize("overrides, message", [
    (TINY_TRM + ["+arch.hiden_size=64"], "arch.hiden_size: Extra inputs are not permitted"),
    (TINY_TRM + ["arch.H_cycles=zero"], "arch.H_cycles: Input should be a valid integer"),
    (TINY_TRM + ["arch.loss.loss_type=hinge"], "arch.loss.loss_type"),
    (TINY_DFM + ["arch.source=gaussian"], "arch.source"),
    (TINY_TRM + ["arch.name=transformer"], "unknown architecture 'transformer'"),
])
def test_bad_arch_keys(overrides, message, loop_config, loop_sudoku4, tmp_path):
    config = loop_config(overrides + base(loop_sudoku4, tmp_path))
    with pytest.raises(ConfigError, match=message):
        build_trainer(config)


def test_missing_dataset_says_how_to_build(loop_config, tmp_path):
    config = loop_config(TINY_TRM + base(tmp_path / "no-such-data", tmp_path / "run"))
    with pytest.raises(DatasetError, match="build"):
        build_trainer(config)


def test_batch_larger_than_dataset(loop_config, loop_sudoku4, tmp_path):
    config = loop_config(TINY_TRM + base(loop_sudoku4, tmp_path) + ["global_batch_size=64"])
    with pytest.raises(ConfigError, match="global_batch_size 64"):
        build_trainer(config)


def test_existing_run_needs_resume(loop_config, loop_train, loop_sudoku4, tmp_path):
    loop_train(TINY_TRM + base(loop_sudoku4, tmp_path / "run"))
    with pytest.raises(ConfigError, match="pass resume=true"):
        build_trainer(loop_config(TINY_TRM + base(loop_sudoku4, tmp_path / "run")))


def test_resume_rejects_other_architecture(loop_config, loop_train, loop_sudoku4, tmp_path):
    loop_train(TINY_TRM + base(loop_sudoku4, tmp_path / "run"))
    config = loop_config(TINY_DFM + base(loop_sudoku4, tmp_path / "run") + ["resume=true"])
    with pytest.raises(CheckpointError, match="checkpoint is arch=trm"):
        build_trainer(config)


def test_cli_prints_one_line_and_exits_2(loop_script, tmp_path):
    result = loop_script(
        ["pretrain.py", *TINY_TRM, *base(tmp_path / "no-such-data", tmp_path / "run")], check=False
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "no-such-data" in lines[0]


def test_second_trainer_on_same_run_dir_rejected(loop_config, loop_sudoku4, tmp_path):
    overrides = TINY_TRM + base(loop_sudoku4, tmp_path / "run")
    first = build_trainer(loop_config(overrides))
    with pytest.raises(ConfigError, match="in use by another training process"):
        build_trainer(loop_config(overrides))
    first._lock_file.close()
