"""The training loop shared by every architecture: it only talks to a `LossHead` (see models/head.py).

One optimizer step consumes one global batch from the loader and runs one `head.forward` (for TRM this is
one supervision step of the rows in flight). Gradients are summed over ranks with the loss pre-divided by
the global batch size, so any number of processes computes the same update.
"""

import fcntl
import json
import logging
import math
import subprocess
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from dataset.common import DatasetError, available_splits
from dataset.puzzle_dataset import BUILD_HINT, PuzzleDataset
from dataset.tasks import check_same_task
from evaluation.runner import batch_to_device, evaluate_split
from models.head import GlobalBatchRandom
from models.registry import build_head
from training.checkpoint import (
    CheckpointError,
    check_same_architecture,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from training.config import ConfigError, PretrainConfig, default_project_name, resolve_forward_dtype, validate_arch
from training.distributed import (
    DistributedInfo,
    all_gather_tensors,
    all_reduce_gradients_,
    all_reduce_sum_,
    broadcast_module_,
    broadcast_object,
)
from training.ema import EMA
from training.optim import OptimizerSet
from training.run_logger import RunLogger

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Trainer:
    """Builds data, head, optimisers and logging from a config, then runs `fit`."""

    def __init__(self, config: PretrainConfig, dist_info: DistributedInfo, job_output_dir: str | None = None):
        self.config = config
        self.dist = dist_info
        self.device = dist_info.device
        arch = resolve_forward_dtype(config.arch, self.device.type)
        self.arch = validate_arch(arch)
        self.forward_dtype = DTYPES[getattr(self.arch.model, "forward_dtype", "float32")]

        self._build_data()
        self._build_schedule()
        self._resolve_run_identity(job_output_dir, arch)
        self._build_head()
        self.optimizers = OptimizerSet(self.head, config)
        self.ema = EMA(self.head, config.ema_rate) if config.ema else None

        self.start_step, self.carry, self.wall_time_before = 0, None, 0.0
        self._lock_run_dir()
        self._restore()
        self.logger = RunLogger(self.run_dir, self.run_config, dist_info.is_main, self.total_steps, self.start_step)

    # ------------------------------------------------------------------------------------------ build

    def _build_data(self) -> None:
        config, dist = self.config, self.dist
        try:
            self.train_data = PuzzleDataset(
                config.data_paths, "train", global_batch_size=config.global_batch_size,
                rank=dist.rank, world_size=dist.world_size, seed=config.seed,
            )
            self.train_data.train_batches()  # validates that an epoch fills at least one global batch
        except ValueError as error:
            raise ConfigError(str(error)) from None
        eval_paths = config.data_paths_test or config.data_paths
        for path in config.data_paths_test:
            if not available_splits(path):
                raise DatasetError(f"{path}: no val or test split found (data_paths_test); {BUILD_HINT}")
        self.eval_data: dict[str, PuzzleDataset] = {}
        for split in ("val", "test"):
            if not all(split in available_splits(path) for path in eval_paths):
                continue
            data = PuzzleDataset(
                eval_paths, split, global_batch_size=config.global_batch_size,
                rank=dist.rank, world_size=dist.world_size, seed=config.seed,
            )
            check_same_task(self.train_data.metadata, data.metadata, f"{', '.join(eval_paths)} ({split})")
            self.eval_data[split] = data

    def _build_schedule(self) -> None:
        config = self.config
        examples_per_epoch = self.train_data.examples_per_epoch
        self.total_steps = int(config.epochs * examples_per_epoch / config.global_batch_size)
        if self.total_steps == 0:
            raise ConfigError(
                f"epochs={config.epochs} of {examples_per_epoch:g} examples give no full global batch of "
                f"{config.global_batch_size}; raise epochs or lower global_batch_size"
            )
        if config.lr_warmup_steps >= self.total_steps:
            log.warning(
                "lr_warmup_steps=%d covers the whole run of %d steps, so the learning rate never reaches lr=%g; "
                "lower lr_warmup_steps", config.lr_warmup_steps, self.total_steps, config.lr,
            )
        evaluations = config.epochs // config.eval_interval
        self.eval_steps = {
            int(k * config.eval_interval * examples_per_epoch / config.global_batch_size): k * config.eval_interval
            for k in range(1, evaluations + 1)
            if k * config.eval_interval >= config.min_eval_interval
        }
        self.eval_steps.pop(0, None)

    def _resolve_run_identity(self, job_output_dir: str | None, arch: dict[str, Any]) -> None:
        config = self.config
        if config.resume and not (config.run_name or config.checkpoint_path or job_output_dir):
            raise ConfigError("resume=true needs +run_name or +checkpoint_path to name the run to continue")
        identity = None
        if self.dist.is_main:
            project = config.project_name or default_project_name(config)
            run_name = config.run_name or f"{self.arch.name}_{datetime.now():%Y%m%d-%H%M%S}"
            run_dir = config.checkpoint_path or job_output_dir or str(Path("checkpoints") / project / run_name)
            identity = (project, run_name, run_dir)
        project, run_name, run_dir = broadcast_object(identity)
        self.run_dir = Path(run_dir)
        self.run_config = {
            **config.model_dump(),
            "arch": arch,
            "project_name": project,
            "run_name": run_name,
            "checkpoint_path": run_dir,
            "world_size": self.dist.world_size,
            "git_commit": _git_commit(),
        }

    def _build_head(self) -> None:
        # Same seed on every rank, then rank 0's weights are broadcast anyway.
        torch.manual_seed(self.config.seed)
        head = build_head(self.arch.name, self.arch.model, self.arch.loss_name, self.arch.loss, self.train_data.metadata)
        self.head = head.to(self.device)
        broadcast_module_(self.head)
        torch.manual_seed(self.config.seed + self.dist.rank)

        compile_enabled = self.config.compile if self.config.compile != "auto" else self.device.type == "cuda"
        # Checkpoints store self.head's state dict, so keys never carry the compile wrapper's prefix.
        self.train_forward = torch.compile(self.head) if compile_enabled else self.head
        self.autocast_dtype = torch.bfloat16 if self.device.type == "cuda" and self.forward_dtype == torch.bfloat16 else None

    # ------------------------------------------------------------------------------------ checkpoints

    def _lock_run_dir(self) -> None:
        """Hold an exclusive lock on the run directory until this process exits (rank 0 only).

        Two trainers writing one run directory would interleave metrics and overwrite each other's checkpoints.
        """
        if not self.dist.is_main:
            return
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"{self.run_dir}: checkpoint_path exists and is not a directory")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.run_dir / ".lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{self.run_dir} is in use by another training process; wait for it or stop it") from None

    def _restore(self) -> None:
        """Resume from the newest checkpoint, or initialise weights from `load_checkpoint`."""
        config = self.config
        existing = list_checkpoints(self.run_dir)
        if not config.resume and existing:
            raise ConfigError(
                f"{self.run_dir} already has checkpoints (newest {existing[-1][1].name}); pass resume=true to "
                "continue that run, or set another +run_name / +checkpoint_path"
            )
        state = self._newest_loadable_checkpoint() if config.resume else None
        if config.resume and state is None:
            log.warning("resume=true but %s has no checkpoint; starting from step 0", self.run_dir)
        if state is None and config.load_checkpoint:
            state = load_checkpoint(config.load_checkpoint, map_location=self.device)
            check_same_architecture(state, self.arch.name, self.arch.loss_name)
            self._load_weights(state)
            return
        if state is None:
            return

        check_same_architecture(state, self.arch.name, self.arch.loss_name)
        self._check_resumable(state)
        self._load_weights(state)
        self.optimizers.load_state_dict(state["optimizers"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.start_step = state["step"]
        self.wall_time_before = state.get("wall_time", 0.0)
        self._restore_carry_and_rng(state)
        log.info("resumed from %s at step %d", state["path"], self.start_step)

    def _newest_loadable_checkpoint(self) -> dict[str, Any] | None:
        """Load the newest checkpoint, skipping (with a warning) newer files that cannot be read."""
        for _, path in reversed(list_checkpoints(self.run_dir)):
            try:
                return load_checkpoint(path, map_location=self.device)
            except CheckpointError as error:
                log.warning("skipping unreadable checkpoint: %s", error)
        return None

    def _check_resumable(self, state: dict[str, Any]) -> None:
        saved, config, path = state["config"], self.config, state["path"]
        for key in ("global_batch_size", "optimizer"):
            if saved.get(key) != getattr(config, key):
                raise CheckpointError(
                    f"{path}: saved with {key}={saved.get(key)}, this run uses {getattr(config, key)}; "
                    f"resume needs the same {key}"
                )
        if state["step"] > self.total_steps:
            raise CheckpointError(
                f"{path}: checkpoint is at step {state['step']}, beyond this run's {self.total_steps} steps; "
                "raise epochs or start a new run"
            )

    def _load_weights(self, state: dict[str, Any]) -> None:
        try:
            self.head.load_state_dict(state["model"])
        except RuntimeError as error:
            first_line = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
            raise CheckpointError(f"{state['path']}: weights do not fit this model: {first_line}") from None

    def _restore_carry_and_rng(self, state: dict[str, Any]) -> None:
        local = self.train_data.local_batch_size
        rows = slice(self.dist.rank * local, (self.dist.rank + 1) * local)
        if state.get("carry") is not None:
            self.carry = {name: value[rows].to(self.device) for name, value in state["carry"].items()}
        torch_states = state.get("rng", {}).get("torch") or []
        if len(torch_states) == self.dist.world_size:
            torch.set_rng_state(torch_states[self.dist.rank].cpu())

    def save(self, step: int) -> None:
        """Write a checkpoint of the full training state (all ranks take part; rank 0 writes)."""
        carry = None
        if self.carry is not None:
            carry = {name: torch.cat(all_gather_tensors(value)).cpu() for name, value in self.carry.items()}
        rng_state = torch.get_rng_state()
        torch_states = [s.cpu() for s in all_gather_tensors(rng_state.to(self.device))]
        if not self.dist.is_main:
            return
        state = {
            "format_version": 1,
            "step": step,
            "arch": {"name": self.arch.name, "loss": self.arch.loss_name},
            "config": self.run_config,
            "metadata": json.loads(self.train_data.metadata.model_dump_json()),
            "model": {name: value.detach().cpu() for name, value in self.head.state_dict().items()},
            "ema": {name: value.cpu() for name, value in self.ema.state_dict().items()} if self.ema else None,
            "optimizers": self.optimizers.state_dict(),
            "carry": carry,
            "rng": {"torch": [s.to(torch.uint8) for s in torch_states]},
            "wall_time": self.wall_time_before + (time.perf_counter() - self.fit_start),
        }
        save_checkpoint(self.run_dir, step, state)

    # ------------------------------------------------------------------------------------------- loop

    def fit(self) -> None:
        """Train to `total_steps`, evaluating and checkpointing on schedule."""
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            counts = self.head.parameter_counts()
            # Model sizes go next to the config for reports (experiments.compare), not into checkpoints.
            sizes = {"parameter_counts": counts, "train_flops_per_example": self.head.train_flops_per_example()}
            (self.run_dir / "config.json").write_text(json.dumps({**self.run_config, **sizes}, indent=2, default=str))
            self.logger.message(
                f"{self.arch.name}: {counts['parameters'] / 1e6:.2f}M parameters, {self.total_steps} steps of "
                f"{self.config.global_batch_size} on {self.dist.world_size} x {self.device}, run dir {self.run_dir}"
            )
        self.fit_start = time.perf_counter()
        batches = self.train_data.train_batches(start_batch=self.start_step)
        window = _MetricWindow(self.device)
        self.head.train()
        try:
            for step in range(self.start_step, self.total_steps):
                self._train_step(step, next(batches), window)
                done = step + 1
                if done % self.config.log_interval == 0 or done == self.total_steps:
                    self._log_train(done, window)
                if done in self.eval_steps:
                    self.evaluate(done)
                    if self.config.checkpoint_every_eval:
                        self.save(done)
                elif self.config.checkpoint_interval and done % self.config.checkpoint_interval == 0:
                    self.save(done)
            if self.total_steps not in self.eval_steps or not self.config.checkpoint_every_eval:
                self.save(self.total_steps)
        finally:
            self.logger.close()
            if self.dist.is_main:
                self._lock_file.close()

    def _train_step(self, step: int, batch_np: dict, window: "_MetricWindow") -> None:
        config, dist = self.config, self.dist
        batch = batch_to_device(batch_np, self.device)
        if self.carry is None:
            self.carry = self.head.initial_carry(batch)
        lr = self.optimizers.set_step(step, self.total_steps)
        rng = GlobalBatchRandom(
            config.seed, step, dist.rank * self.train_data.local_batch_size,
            self.train_data.local_batch_size, config.global_batch_size, self.device,
        )
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            output = self.train_forward(self.carry, batch, rng)
        self.carry = output.carry
        (output.loss / config.global_batch_size).backward()

        all_reduce_gradients_(self.optimizers.weights)
        if config.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.optimizers.weights, config.grad_clip_norm)
        self.optimizers.step()
        self.optimizers.zero_grad()
        if self.ema is not None:
            self.ema.update()
        window.add(output, lr)

    def _log_train(self, done: int, window: "_MetricWindow") -> None:
        config = self.config
        metrics = window.reduce(config.global_batch_size)
        examples = done * config.global_batch_size
        metrics.update({
            "progress/epoch": examples / self.train_data.examples_per_epoch,
            "progress/examples_seen": examples,
            "progress/train_flops": examples * self.head.train_flops_per_example(),
            "time/wall_seconds": self.wall_time_before + time.perf_counter() - self.fit_start,
        })
        steps_in_window = metrics.pop("steps_in_window")
        self.logger.log(done, metrics)
        self.logger.advance(steps_in_window, metrics["train/loss"], metrics["time/examples_per_second"])
        if not math.isfinite(metrics["train/loss"]):
            log.warning("step %d: training loss is %s", done, metrics["train/loss"])

    def evaluate(self, step: int) -> dict[str, dict]:
        """Evaluate every eval split (EMA weights when enabled), log the metrics and one summary line each."""
        results = {}
        context = self.ema.swapped_in() if self.ema is not None else nullcontext()
        with context:
            for split, data in self.eval_data.items():
                result = evaluate_split(
                    self.head, data, self.device, options=self.head.periodic_eval_options(),
                    max_examples=self.config.eval_max_examples, autocast_dtype=self.autocast_dtype,
                )
                metrics = result.metrics
                budget = max(metrics["budgets"])
                metrics["inference_flops_per_example"] = self.head.inference_flops_per_example(budget)
                results[split] = metrics
                self.logger.log(step, {f"eval/{split}/{k}": v for k, v in metrics.items() if k not in ("budgets", "exact_accuracy_ci95")})
                self.logger.message(
                    f"eval step {step} epoch {self.eval_steps.get(step, '?')} {split}: exact {metrics['exact_accuracy']:.4f} "
                    f"token {metrics['token_accuracy']:.4f} valid {metrics['valid_accuracy']:.4f} "
                    f"({metrics['count']} puzzles, {self.head.budget_name} {budget})"
                )
        return results


class _MetricWindow:
    """Training metrics summed over the steps since the last log, reduced over ranks at log time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.lr = 0.0
        self.start = time.perf_counter()

    def add(self, output, lr: float) -> None:
        values = {"loss": (output.loss.detach().float(), None), **output.metrics}
        for name, (total, count) in values.items():
            pair = torch.stack([total.detach().float(), torch.as_tensor(0.0 if count is None else count, device=self.device).float()])
            self.sums[name] = self.sums[name] + pair if name in self.sums else pair
        self.steps += 1
        self.lr = lr

    def reduce(self, global_batch_size: int) -> dict[str, float]:
        names = sorted(self.sums)
        stacked = torch.stack([self.sums[n] for n in names])
        all_reduce_sum_([stacked])
        values = stacked.cpu().tolist()
        elapsed = time.perf_counter() - self.start
        metrics = {"train/loss": values[names.index("loss")][0] / (global_batch_size * self.steps)}
        for name, (total, count) in zip(names, values):
            if name != "loss":
                metrics[f"train/{name}"] = total / count if count > 0 else float("nan")
        metrics["train/lr"] = self.lr
        metrics["time/examples_per_second"] = global_batch_size * self.steps / max(elapsed, 1e-9)
        metrics["steps_in_window"] = self.steps
        self.sums, self.steps, self.start = {}, 0, time.perf_counter()
        return metrics


def _git_commit() -> str | None:
    """Read the repository's HEAD commit, recorded with each run for reproducibility."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None
