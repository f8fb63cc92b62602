"""Atomic checkpoint writes, newest-checkpoint lookup and safe loading."""

import os

import pytest
import torch

from training.checkpoint import (
    CheckpointError,
    check_same_architecture,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def minimal_state(step: int) -> dict:
    return {
        "format_version": 1,
        "step": step,
        "arch": {"name": "trm", "loss": "act"},
        "config": {"global_batch_size": 4, "arch": {"name": "trm"}, "data_paths": ["data/sudoku"]},
        "metadata": {"seq_len": 4},
        "model": {"weight": torch.full((2,), float(step))},
    }


def test_save_then_load_roundtrip(tmp_path):
    path = save_checkpoint(tmp_path, 3, minimal_state(3))
    state = load_checkpoint(path)
    assert state["step"] == 3
    assert torch.equal(state["model"]["weight"], torch.full((2,), 3.0))


def test_latest_checkpoint_orders_numerically(tmp_path):
    for step in (2, 10, 9):
        save_checkpoint(tmp_path, step, minimal_state(step))
    assert latest_checkpoint(tmp_path).name == "step_10.pt"
    assert load_checkpoint(tmp_path)["step"] == 10


def test_interrupted_write_keeps_previous(tmp_path):
    save_checkpoint(tmp_path, 1, minimal_state(1))
    # A writer killed mid-save leaves a partial temporary file behind.
    (tmp_path / f".step_2.pt.tmp-{os.getpid() + 1}").write_bytes(b"PK\x03\x04 truncated")
    assert latest_checkpoint(tmp_path).name == "step_1.pt"
    assert load_checkpoint(tmp_path)["step"] == 1


def test_keep_last_prunes_old(tmp_path):
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, minimal_state(step), keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == ["step_3.pt", "step_4.pt"]


def test_corrupt_file_raises_one_line(tmp_path):
    path = tmp_path / "step_5.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_truncated_checkpoint_raises(tmp_path):
    path = save_checkpoint(tmp_path, 1, minimal_state(1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


class Payload:
    """An arbitrary class instance, which weights_only loading must refuse to unpickle."""


def test_pickled_object_rejected(tmp_path):
    path = tmp_path / "step_1.pt"
    torch.save({**minimal_state(1), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_missing_file_and_empty_dir(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "step_9.pt")
    with pytest.raises(CheckpointError, match="no step_<N>.pt"):
        load_checkpoint(tmp_path)


def test_other_architecture_rejected(tmp_path):
    state = load_checkpoint(save_checkpoint(tmp_path, 1, minimal_state(1)))
    check_same_architecture(state, "trm", "act")
    with pytest.raises(CheckpointError, match="arch=trm"):
        check_same_architecture(state, "flow_matching", "discrete_flow_matching")


@pytest.mark.parametrize("change, message", [
    ({"arch": "trm"}, "arch must map name and loss"),
    ({"config": {}}, "config must be a dict with an arch section"),
    ({"config": {"arch": {}, "data_paths": []}}, "no data_paths"),
    ({"metadata": []}, "metadata must be a dict"),
    ({"model": {"weight": [1.0]}}, "model must map names to tensors"),
    ({"step": -1}, "not a non-negative integer"),
])
def test_malformed_contents_rejected(change, message, tmp_path):
    path = tmp_path / "step_1.pt"
    torch.save({**minimal_state(1), **change}, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
