"""Run logging on rank 0: `metrics.jsonl` always, wandb (offline unless an API key is configured), one tqdm bar."""

import json
import logging
import math
import netrc
import os
import uuid
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id"


def wandb_mode() -> str:
    """Choose the wandb mode: WANDB_MODE if set, else online with an API key configured, else offline.

    Offline runs never ask for a login; sync them later with `wandb sync <run dir>/wandb/offline-run-*`.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "offline"


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested metric dicts to `a/b/c` keys with float values."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}/"))
        else:
            flat[name] = float(value)
    return flat


class RunLogger:
    """Writes metric records; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, config: dict[str, Any], enabled: bool, total_steps: int, start_step: int):
        self.enabled = enabled
        self.run = None
        self.bar = None
        if not enabled:
            return

        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_file = open(run_dir / METRICS_FILE, "a")
        self.run = self._start_wandb(run_dir, config)
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    @staticmethod
    def _start_wandb(run_dir: Path, config: dict[str, Any]):
        mode = wandb_mode()
        if mode == "disabled":
            return None
        import wandb

        # Reuse the run id on resume so the wandb run continues instead of starting a new one.
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        return wandb.init(
            project=config["project_name"],
            name=config["run_name"],
            id=run_id,
            resume="allow",
            config=config,
            dir=str(run_dir),
            mode=mode,
            settings=wandb.Settings(silent=True, x_disable_stats=True),
        )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one record (nested dicts are flattened) to metrics.jsonl and wandb."""
        if not self.enabled:
            return
        record = {"step": step, **flatten_metrics(metrics)}
        self.metrics_file.write(json.dumps(record, allow_nan=True) + "\n")
        self.metrics_file.flush()
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def advance(self, steps: int, loss: float, examples_per_second: float) -> None:
        """Move the progress bar and show the latest loss and throughput."""
        if self.bar is None:
            return
        self.bar.update(steps)
        loss_text = f"{loss:.4f}" if math.isfinite(loss) else str(loss)
        self.bar.set_postfix_str(f"loss {loss_text}, {examples_per_second:.1f} ex/s", refresh=False)

    def message(self, text: str) -> None:
        """Print one line without breaking the progress bar."""
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.metrics_file.close()
        if self.run is not None:
            self.run.finish()
