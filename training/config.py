"""Typed configuration of `pretrain.py`, validated from the Hydra config with unknown keys rejected.

Top-level keys keep the names of the TRM reference (`data_paths`, `global_batch_size`, `epochs`, ...), so
a reference command line works here apart from the launcher. The `arch` section is validated by the
config classes of the model and loss head it names (see `models.registry`).
"""

import os
from pathlib import Path
from typing import Any, Literal

import pydantic
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from models.registry import LOSS_HEADS, MODELS


class ConfigError(ValueError):
    """Invalid configuration; the message lists every problem with its key."""


class PretrainConfig(pydantic.BaseModel):
    """Every key of `config/cfg_pretrain.yaml` plus the run identity keys set with `+key=value`."""

    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)

    arch: dict[str, Any] = pydantic.Field(description="Model keys plus a `loss` section; see config/arch/")

    # Data
    data_paths: list[str] = pydantic.Field(min_length=1, description="Dataset directories to train on")
    data_paths_test: list[str] = pydantic.Field(
        default_factory=list, description="Dataset directories to evaluate on; empty means data_paths"
    )
    evaluators: list[Any] = pydantic.Field(
        default_factory=list, description="Reference key; only [] is supported (no ARC evaluator here)"
    )

    # Schedule, in epochs of the training set (total_groups * mean_puzzle_examples examples each)
    global_batch_size: int = pydantic.Field(gt=0, description="Examples per optimizer step over all ranks")
    epochs: int = pydantic.Field(gt=0, description="Training length in epochs")
    eval_interval: int = pydantic.Field(gt=0, description="Epochs between evaluations; must divide epochs")
    min_eval_interval: int = pydantic.Field(0, ge=0, description="Skip evaluations before this epoch")
    eval_max_examples: int | None = pydantic.Field(
        None, gt=0, description="Evaluate on the first N examples of each split (None: all)"
    )
    checkpoint_every_eval: bool = pydantic.Field(True, description="Save a checkpoint after each evaluation")
    checkpoint_interval: int | None = pydantic.Field(
        None, gt=0, description="Also save every N optimizer steps (finer resume points)"
    )
    log_interval: int = pydantic.Field(10, gt=0, description="Optimizer steps between metric logs")

    # Optimisation
    optimizer: Literal["adamw", "adam_atan2"] = pydantic.Field("adamw", description="Optimizer of the weights")
    lr: float = pydantic.Field(gt=0, description="Peak learning rate of the weights")
    lr_min_ratio: float = pydantic.Field(1.0, ge=0, le=1, description="Final lr / peak lr of the cosine decay")
    lr_warmup_steps: int = pydantic.Field(0, ge=0, description="Optimizer steps of linear warmup")
    weight_decay: float = pydantic.Field(0.1, ge=0)
    beta1: float = pydantic.Field(0.9, ge=0, lt=1)
    beta2: float = pydantic.Field(0.95, ge=0, lt=1)
    grad_clip_norm: float | None = pydantic.Field(None, gt=0, description="Clip the global grad norm (None: off)")
    puzzle_emb_lr: float = pydantic.Field(1e-2, ge=0, description="Peak lr of the sign-SGD puzzle embeddings")
    puzzle_emb_weight_decay: float = pydantic.Field(0.1, ge=0)
    ema: bool = pydantic.Field(False, description="Evaluate and export an exponential moving average of weights")
    ema_rate: float = pydantic.Field(0.999, gt=0, lt=1)

    # Run identity and infrastructure
    seed: int = pydantic.Field(0, ge=0, lt=2**31, description="Seed of model init, data order and noise")
    project_name: str | None = pydantic.Field(None, description="wandb project; default from the dataset name")
    run_name: str | None = pydantic.Field(None, description="Run name; default <arch>_<timestamp>")
    checkpoint_path: str | None = pydantic.Field(
        None, description="Run directory; default checkpoints/<project>/<run> (the job directory in multirun)"
    )
    resume: bool = pydantic.Field(False, description="Continue from the newest checkpoint in checkpoint_path")
    load_checkpoint: str | None = pydantic.Field(None, description="Initialise weights from this checkpoint file")
    device: str = pydantic.Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    compile: bool | Literal["auto"] = pydantic.Field("auto", description="torch.compile; auto: on for CUDA only")

    @pydantic.field_validator("evaluators")
    @classmethod
    def _no_evaluators(cls, value: list[Any]) -> list[Any]:
        if value:
            raise ValueError("only evaluators=[] is supported; Sudoku and maze metrics are built in")
        return value

    @pydantic.model_validator(mode="after")
    def _check_schedule(self) -> "PretrainConfig":
        if self.epochs % self.eval_interval:
            raise ValueError(
                f"eval_interval {self.eval_interval} must divide epochs {self.epochs}, e.g. eval_interval="
                f"{_largest_divisor_at_most(self.epochs, self.eval_interval)}"
            )
        return self


class ArchSpec(pydantic.BaseModel):
    """The validated `arch` section: which model and loss head to build, with their configs."""

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)

    name: str
    model: pydantic.BaseModel
    loss_name: str
    loss: pydantic.BaseModel


def _largest_divisor_at_most(number: int, limit: int) -> int:
    return max(d for d in range(1, min(number, limit) + 1) if number % d == 0)


def format_validation_error(error: pydantic.ValidationError, prefix: str = "") -> str:
    """Format every problem as `key.path: message`, joined into one line."""
    lines = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"])
        key = f"{prefix}{location}" if location else prefix.rstrip(".") or "config"
        lines.append(f"{key}: {problem['msg']}")
    return "; ".join(lines)


def resolve_forward_dtype(arch: dict[str, Any], device_type: str) -> dict[str, Any]:
    """Replace `forward_dtype: auto` with bfloat16 on CUDA and float32 elsewhere."""
    if arch.get("forward_dtype", "auto") == "auto":
        arch = {**arch, "forward_dtype": "bfloat16" if device_type == "cuda" else "float32"}
    return arch


def validate_arch(arch: dict[str, Any]) -> ArchSpec:
    """Validate the `arch` section with the config classes of the model and loss head it names."""
    arch = dict(arch)
    name = arch.get("name")
    if name not in MODELS:
        raise ConfigError(f"arch.name: unknown architecture {name!r}; choose one of {', '.join(MODELS)}")
    loss = dict(arch.pop("loss", None) or {})
    loss_name = loss.get("name")
    if loss_name not in LOSS_HEADS:
        raise ConfigError(f"arch.loss.name: unknown loss head {loss_name!r}; choose one of {', '.join(LOSS_HEADS)}")

    model_class, head_class = MODELS[name], LOSS_HEADS[loss_name]
    try:
        model_config = model_class.config_class.model_validate(arch)
    except pydantic.ValidationError as error:
        raise ConfigError(f"invalid config: {format_validation_error(error, 'arch.')}") from None
    try:
        loss_config = head_class.config_class.model_validate(loss)
    except pydantic.ValidationError as error:
        raise ConfigError(f"invalid config: {format_validation_error(error, 'arch.loss.')}") from None
    return ArchSpec(name=name, model=model_config, loss_name=loss_name, loss=loss_config)


def load_pretrain_config(cfg: DictConfig | dict[str, Any]) -> PretrainConfig:
    """Convert a Hydra config to a validated PretrainConfig, raising ConfigError with every problem.

    The `arch` section is validated separately by `validate_arch` once the device is known, because
    `forward_dtype: auto` depends on it.
    """
    try:
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except MissingMandatoryValue as error:
        raise ConfigError(f"missing required key {error.full_key}; e.g. {error.full_key}=[data/sudoku-extreme-1k-aug-1000]") from None
    try:
        config = PretrainConfig.model_validate(raw)
    except pydantic.ValidationError as error:
        raise ConfigError(f"invalid config: {format_validation_error(error)}") from None
    return config


def default_project_name(config: PretrainConfig) -> str:
    """Name the project after the dataset directory, like the reference's `<Dataset>-ACT-torch` minus the suffix."""
    return Path(os.path.normpath(config.data_paths[0])).name or "puzzles"
