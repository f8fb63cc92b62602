"""Checkpoint files: atomic writes, lookup of the newest one, and safe loading (`weights_only=True`).

A checkpoint is a dict of tensors and plain Python values (no pickled objects), so it loads with
`torch.load(weights_only=True)`:

    format_version  int
    step            int, optimizer steps done (also the index of the next training batch)
    arch            {"name": ..., "loss": ...}, to reject a checkpoint of another architecture
    config          the resolved run config (plain values)
    metadata        the training split's dataset.json (plain values), to rebuild the model for evaluation
    model           state dict of the loss head (model weights and buffers), keys without compile prefixes
    ema             EMA shadow weights, or None
    optimizers      list of optimiser state dicts
    carry           the training carry of the global batch (rows of all ranks in rank order), or None
    rng             {"torch": [state per rank], "cuda": [state per rank] or None}
"""

import os
import re
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
REQUIRED_KEYS = ("format_version", "step", "arch", "config", "metadata", "model")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def checkpoint_file(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"step_{step}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in `run_dir`, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for path in run_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][1] if checkpoints else None


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep_last: int | None = None) -> Path:
    """Write `state` to `run_dir/step_<step>.pt` through a temporary file and an atomic rename.

    A process killed mid-write leaves only a `.tmp` file that no reader picks up, so the previous
    checkpoint stays the newest loadable one. With `keep_last`, older checkpoints beyond that count are removed.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_file(run_dir, step)
    temporary = run_dir / f".{final.name}.tmp-{os.getpid()}"
    with open(temporary, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, final)

    for stale in run_dir.glob(".step_*.pt.tmp-*"):
        stale.unlink(missing_ok=True)
    if keep_last is not None:
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint with `weights_only=True`; raises CheckpointError on any problem."""
    path = Path(path)
    if path.is_dir():
        newest = latest_checkpoint(path)
        if newest is None:
            raise CheckpointError(f"{path}: no step_<N>.pt checkpoint in this directory")
        path = newest
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several unrelated types for truncated or foreign files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a checkpoint of this codebase (missing keys {', '.join(REQUIRED_KEYS)})")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state['format_version']!r}, this code reads {FORMAT_VERSION}")
    problem = _layout_problem(state)
    if problem:
        raise CheckpointError(f"{path}: malformed checkpoint: {problem}")
    state["path"] = str(path)
    return state


def _layout_problem(state: dict[str, Any]) -> str | None:
    """Describe the first entry whose type is not what this codebase writes, or return None."""
    arch, config = state["arch"], state["config"]
    if not isinstance(state["step"], int) or state["step"] < 0:
        return f"step {state['step']!r} is not a non-negative integer"
    if not isinstance(arch, dict) or not all(isinstance(arch.get(key), str) for key in ("name", "loss")):
        return "arch must map name and loss to strings"
    if not isinstance(config, dict) or not isinstance(config.get("arch"), dict):
        return "config must be a dict with an arch section"
    if not isinstance(config.get("data_paths"), list) or not config["data_paths"]:
        return "config has no data_paths"
    if not isinstance(state["metadata"], dict):
        return "metadata must be a dict"
    for key in ("model", "ema"):
        value = state.get(key)
        if value is not None and not (isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())):
            return f"{key} must map names to tensors"
    return None


def check_same_architecture(state: dict[str, Any], arch_name: str, loss_name: str) -> None:
    """Reject a checkpoint written by another architecture or loss head."""
    saved = state["arch"]
    if saved.get("name") != arch_name or saved.get("loss") != loss_name:
        raise CheckpointError(
            f"{state['path']}: checkpoint is arch={saved.get('name')} (loss {saved.get('loss')}) but this run "
            f"builds arch={arch_name} (loss {loss_name})"
        )
