"""Resume: a run killed with SIGKILL and resumed reproduces the uninterrupted run, for every architecture."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.checkpoint import latest_checkpoint, load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]

ARCH_OVERRIDES = {
    "trm": [
        "arch=trm", "arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.H_cycles=2",
        "arch.L_cycles=2", "arch.L_layers=1", "arch.halt_max_steps=4", "arch.puzzle_emb_len=1",
    ],
    "flow_matching": [
        "arch=flow_matching", "arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.num_layers=1",
        "arch.structure_embeddings=true", "arch.puzzle_emb_ndim=32", "arch.puzzle_emb_len=1",
    ],
}


def run_overrides(arch: str, dataset_dir) -> list[str]:
    # 32 training groups per epoch, batch 16: 2 steps per epoch, 240 steps in all.
    return ARCH_OVERRIDES[arch] + [
        f"data_paths=[{dataset_dir}]", "global_batch_size=16", "epochs=120", "eval_interval=60",
        "log_interval=1", "checkpoint_interval=20", "lr=1e-3", "lr_warmup_steps=5", "lr_min_ratio=0.1",
        "ema=true", "ema_rate=0.9",
    ]


def kill_after_checkpoint(command: list[str], run_dir, env, timeout: float = 240.0) -> None:
    """Start `command`, wait until it has written step_20.pt, then SIGKILL it."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not (run_dir / "step_20.pt").exists():
            if process.poll() is not None:
                raise AssertionError(f"run exited before its first checkpoint: {process.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("no checkpoint within the timeout")
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()


@pytest.mark.parametrize("arch", ["trm", "flow_matching"])
def test_resume_after_sigkill_matches(arch, loop_sudoku4, loop_train, loop_losses, loop_script, loop_env, tmp_path):
    overrides = run_overrides(arch, loop_sudoku4)
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    loop_train(overrides + [f"+checkpoint_path={reference_dir}"])

    command = [sys.executable, str(REPO_ROOT / "pretrain.py"), *overrides, f"+checkpoint_path={resumed_dir}"]
    kill_after_checkpoint(command, resumed_dir, loop_env)
    killed_at = load_checkpoint(latest_checkpoint(resumed_dir))["step"]
    assert killed_at < 240, "the run finished before it was killed; nothing was resumed"

    loop_script(["pretrain.py", *overrides, f"+checkpoint_path={resumed_dir}", "resume=true"])
    reference, resumed = loop_losses(reference_dir), loop_losses(resumed_dir)
    assert sorted(resumed) == list(range(1, 241))
    for step in range(killed_at + 1, 241):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), f"step {step}"

    final_reference = load_checkpoint(reference_dir / "step_240.pt")
    final_resumed = load_checkpoint(resumed_dir / "step_240.pt")
    for name, value in final_reference["model"].items():
        assert torch.allclose(final_resumed["model"][name], value, atol=1e-5), name
    for name, value in final_reference["ema"].items():
        assert torch.allclose(final_resumed["ema"][name], value, atol=1e-5), name
