"""Bad configs, data and checkpoints fail before training with one clear line."""

import pytest
import torch

from dataset.build_maze_dataset import main as build_maze
from dataset.common import DatasetError
from training.checkpoint import CheckpointError
from training.config import ConfigError
from training.distributed import DistributedInfo, resolve_device
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


def test_resume_needs_a_run_name(loop_config, loop_sudoku4):
    config = loop_config(TINY_TRM + [f"data_paths=[{loop_sudoku4}]", "global_batch_size=16", "epochs=2",
                                     "eval_interval=1", "resume=true"])
    with pytest.raises(ConfigError, match="resume=true needs \\+run_name or \\+checkpoint_path"):
        build_trainer(config)


def test_warmup_longer_than_run_warns(loop_config, loop_sudoku4, tmp_path, caplog):
    build_trainer(loop_config(TINY_TRM + base(loop_sudoku4, tmp_path / "run") + ["lr_warmup_steps=2000"]))
    assert "never reaches lr" in caplog.text
    caplog.clear()
    build_trainer(loop_config(TINY_TRM + base(loop_sudoku4, tmp_path / "other") + ["lr_warmup_steps=1"]))
    assert "never reaches lr" not in caplog.text


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


def test_non_finite_value_rejected(loop_config, loop_sudoku4, tmp_path):
    with pytest.raises(ConfigError, match="lr: Input should be a finite number"):
        loop_config(TINY_TRM + base(loop_sudoku4, tmp_path) + ["lr=inf"])


def test_missing_data_paths_named(loop_config):
    with pytest.raises(ConfigError, match="missing required key data_paths"):
        loop_config(TINY_TRM)


def test_unavailable_device_rejected(loop_config, loop_sudoku4, tmp_path):
    with pytest.raises(ConfigError, match="device=tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_missing_test_dataset_rejected(loop_config, loop_sudoku4, tmp_path):
    config = loop_config(TINY_TRM + base(loop_sudoku4, tmp_path / "run") + [f"data_paths_test=[{tmp_path / 'typo'}]"])
    with pytest.raises(DatasetError, match="no val or test split found"):
        build_trainer(config)


def test_eval_data_of_other_task_rejected(loop_config, loop_sudoku4, tmp_path):
    maze_dir = tmp_path / "maze4"
    build_maze(["--generate", "--size", "4", "--min-path-length", "2", "--subsample-size", "6",
                "--test-subsample-size", "4", "--output-dir", str(maze_dir)])
    config = loop_config(TINY_TRM + base(loop_sudoku4, tmp_path / "run") + [f"data_paths_test=[{maze_dir}]"])
    with pytest.raises(DatasetError, match="task maze 4x4"):
        build_trainer(config)


def test_resume_beyond_schedule_rejected(loop_config, loop_train, loop_sudoku4, tmp_path):
    loop_train(TINY_TRM + base(loop_sudoku4, tmp_path / "run") + ["epochs=4", "eval_interval=2"])
    config = loop_config(TINY_TRM + base(loop_sudoku4, tmp_path / "run") + ["epochs=2", "resume=true"])
    with pytest.raises(CheckpointError, match="beyond this run's"):
        build_trainer(config)


def test_resume_with_other_optimizer_rejected(loop_config, loop_train, loop_sudoku4, tmp_path):
    loop_train(TINY_TRM + base(loop_sudoku4, tmp_path / "run"))
    config = loop_config(TINY_TRM + base(loop_sudoku4, tmp_path / "run") + ["epochs=4", "resume=true",
                                                                           "optimizer=adam_atan2"])
    with pytest.raises(CheckpointError, match="resume needs the same optimizer"):
        build_trainer(config)


def test_resume_applies_new_weight_decay(loop_config, loop_train, loop_sudoku4, tmp_path):
    loop_train(TINY_TRM + base(loop_sudoku4, tmp_path / "run"))
    trainer = build_trainer(loop_config(
        TINY_TRM + base(loop_sudoku4, tmp_path / "run") + ["epochs=4", "resume=true", "weight_decay=0.5", "beta1=0.8"]
    ))
    group = trainer.optimizers.optimizers[-1].param_groups[0]
    assert trainer.start_step > 0
    assert group["weight_decay"] == 0.5
    assert group["betas"] == (0.8, 0.95)
    trainer._lock_file.close()


def test_unreadable_newest_checkpoint_skipped(loop_config, loop_train, loop_sudoku4, tmp_path):
    loop_train(TINY_TRM + base(loop_sudoku4, tmp_path / "run"))
    newest = sorted((tmp_path / "run").glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))[-1]
    newest.write_bytes(b"truncated")
    trainer = build_trainer(loop_config(TINY_TRM + base(loop_sudoku4, tmp_path / "run") + ["epochs=4", "resume=true"]))
    assert 0 < trainer.start_step < int(newest.stem.split("_")[1])
    trainer._lock_file.close()


def test_checkpoint_path_is_file_rejected(loop_config, loop_sudoku4, tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    with pytest.raises(ConfigError, match="is not a directory"):
        build_trainer(loop_config(TINY_TRM + base(loop_sudoku4, tmp_path / "afile")))
