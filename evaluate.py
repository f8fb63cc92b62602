"""Score a checkpoint on a dataset split: `python evaluate.py checkpoint=PATH [key=value ...]`.

Keys (all optional except checkpoint):
    data_path=DIR          dataset of the same task (default: the run's test data)
    split=test             train, val or test
    max_examples=N         first N examples only
    steps=S or [S1,S2,..]  inference budget(s): TRM supervision steps, DFM NFE
    output=FILE.json       metrics file (default: <run dir>/eval_<split>_step<N>.json)
    device=auto            auto, cpu, cuda, cuda:N, mps
    forward_dtype=auto     auto: bfloat16 on CUDA, float32 elsewhere
    use_ema=true           evaluate the EMA weights when the checkpoint has them
    global_batch_size=256  examples per batch over all ranks
    figure_examples=8      predictions drawn in the PNG
Any other key is an evaluation option of the checkpoint's loss head (TRM: halt_by_q; DFM: sampler,
seed, ...) and is validated by it. Writes the JSON, an .npz of inputs, labels and predictions (token ids
in the dataset's encoding), a PNG of a few predictions and, for several budgets, a PNG of accuracy per
budget; prints one summary line. Runs under torchrun too.
"""

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dataset.common import DatasetError, PuzzleDatasetMetadata
from dataset.puzzle_dataset import PuzzleDataset
from dataset.tasks import check_same_task
from evaluation.report_files import save_budget_curve, save_prediction_figure
from evaluation.runner import evaluate_split
from models.head import IGNORE_LABEL
from models.registry import build_head
from training.checkpoint import CheckpointError, load_checkpoint
from training.config import ConfigError, format_validation_error, resolve_forward_dtype, validate_arch
from training.distributed import DistributedInfo, distributed_context

log = logging.getLogger("evaluate")


Budget = Annotated[int, pydantic.Field(strict=True, gt=0)]


class EvaluateConfig(pydantic.BaseModel):
    """Keys of evaluate.py itself; other keys go to the loss head's evaluation options."""

    model_config = pydantic.ConfigDict(extra="forbid")

    checkpoint: str
    data_path: str | None = None
    split: Literal["train", "val", "test"] = "test"
    max_examples: int | None = pydantic.Field(None, gt=0)
    steps: Budget | list[Budget] | None = None
    output: str | None = None
    device: str = "auto"
    forward_dtype: str = "auto"
    use_ema: bool = True
    global_batch_size: int = pydantic.Field(256, gt=0)
    figure_examples: int = pydantic.Field(8, ge=0)

    @pydantic.field_validator("steps")
    @classmethod
    def _sorted_budgets(cls, value: int | list[int] | None) -> list[int] | None:
        if isinstance(value, list) and not value:
            raise ValueError("must list at least one budget, e.g. steps=[1,2,4]")
        if value is None:
            return None
        budgets = [value] if isinstance(value, int) else value
        return sorted(set(budgets))

    @pydantic.field_validator("output")
    @classmethod
    def _json_output(cls, value: str | None) -> str | None:
        if value is not None and (not value.endswith(".json") or Path(value).is_dir()):
            raise ValueError(f"{value} must be a .json file path (the .npz and .png files are written beside it)")
        return value


def parse_arguments(argv: list[str]) -> tuple[EvaluateConfig, dict[str, Any]]:
    """Split `key=value` arguments into evaluate.py keys and loss-head options."""
    malformed = [arg for arg in argv if "=" not in arg]
    if malformed:
        raise ConfigError(f"arguments must be key=value, got {' '.join(malformed)}")
    try:
        values = OmegaConf.to_container(OmegaConf.from_dotlist(argv), resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        raise ConfigError(f"invalid arguments: {str(error).splitlines()[0]}") from None
    own_keys = set(EvaluateConfig.model_fields)
    options = {key: value for key, value in values.items() if key not in own_keys}
    try:
        config = EvaluateConfig.model_validate({k: v for k, v in values.items() if k in own_keys})
    except pydantic.ValidationError as error:
        raise ConfigError(f"invalid arguments: {format_validation_error(error)}") from None
    return config, options


def build_from_checkpoint(state: dict[str, Any], config: EvaluateConfig, device: torch.device):
    """Rebuild the loss head a checkpoint was trained with, with its (EMA) weights loaded."""
    arch = dict(state["config"]["arch"])
    arch["forward_dtype"] = config.forward_dtype
    spec = validate_arch(resolve_forward_dtype(arch, device.type))
    try:
        metadata = PuzzleDatasetMetadata.model_validate(state["metadata"])
    except pydantic.ValidationError as error:
        raise CheckpointError(f"{state['path']}: invalid dataset metadata: {format_validation_error(error)}") from None
    head = build_head(spec.name, spec.model, spec.loss_name, spec.loss, metadata)
    try:
        head.load_state_dict(state["model"])
        if config.use_ema and state.get("ema"):
            ema = state["ema"]
            parameters = dict(head.named_parameters())
            if set(ema) != set(parameters):
                raise RuntimeError(f"EMA names {sorted(set(ema) ^ set(parameters))[:3]} do not match the model")
            with torch.no_grad():
                for name, value in ema.items():
                    parameters[name].copy_(value)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{state['path']}: weights do not fit the model in its config: {first_line}") from None
    return head.to(device), spec, metadata


def evaluate(config: EvaluateConfig, options: dict[str, Any], dist_info: DistributedInfo) -> dict[str, Any]:
    """Evaluate the checkpoint and write the output files; returns the metrics dict."""
    state = load_checkpoint(config.checkpoint, map_location="cpu")
    head, spec, train_metadata = build_from_checkpoint(state, config, dist_info.device)
    try:
        eval_options = head.eval_options_model.model_validate(options)
    except pydantic.ValidationError as error:
        valid = ", ".join(head.eval_options_model.model_fields) or "none"
        raise ConfigError(
            f"invalid evaluation option for arch={spec.name}: {format_validation_error(error)} "
            f"(its options: {valid}; evaluate.py keys: {', '.join(EvaluateConfig.model_fields)})"
        ) from None

    data_path = config.data_path or (state["config"].get("data_paths_test") or state["config"]["data_paths"])[0]
    try:
        dataset = PuzzleDataset(
            data_path, config.split, global_batch_size=config.global_batch_size,
            rank=dist_info.rank, world_size=dist_info.world_size, seed=0,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_same_task(train_metadata, dataset.metadata, f"{data_path} ({config.split})")
    budgets = config.steps
    autocast = torch.bfloat16 if dist_info.device.type == "cuda" and spec.model.forward_dtype == "bfloat16" else None
    result = evaluate_split(
        head, dataset, dist_info.device, budgets=budgets, options=eval_options,
        max_examples=config.max_examples, autocast_dtype=autocast, collect_predictions=True,
    )
    metrics = result.metrics
    metrics["inference_flops_per_example"] = {b: head.inference_flops_per_example(b) for b in metrics["budgets"]}
    metrics["inference_flops_per_example_used"] = {b: head.inference_flops_used(metrics, b) for b in metrics["budgets"]}
    if dist_info.is_main:
        _write_outputs(config, state, metrics, result.predictions, dataset, head.budget_name, eval_options, data_path)
    return metrics


def _write_outputs(config, state, metrics, predictions, dataset, budget_name, eval_options, data_path) -> None:
    checkpoint_path = Path(state["path"])
    output = Path(config.output or checkpoint_path.parent / f"eval_{config.split}_step{state['step']}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": str(checkpoint_path),
        "step": state["step"],
        "arch": state["arch"],
        "data_path": str(data_path),
        "split": config.split,
        "budget_name": budget_name,
        "options": eval_options.model_dump(),
        **metrics,
    }
    temporary = output.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report, indent=2, default=str))
    temporary.replace(output)

    ignore_id = dataset.metadata.ignore_label_id if dataset.metadata.ignore_label_id is not None else dataset.metadata.pad_id
    labels = np.where(predictions["labels"] == IGNORE_LABEL, ignore_id, predictions["labels"])
    np.savez_compressed(
        output.with_suffix(".npz"),
        inputs=predictions["inputs"], labels=labels, predictions=predictions["predictions"],
        example_index=predictions["example_index"],
    )
    if config.figure_examples:
        save_prediction_figure(dataset.task, predictions, output.with_suffix(".png"), config.figure_examples)
    if len(metrics["budgets"]) > 1:
        save_budget_curve(metrics, budget_name, output.with_name(output.stem + "_by_budget.png"))

    print(
        f"{checkpoint_path.name} on {data_path}/{config.split}: exact {metrics['exact_accuracy']:.4f} "
        f"token {metrics['token_accuracy']:.4f} cell {metrics['cell_accuracy']:.4f} valid {metrics['valid_accuracy']:.4f} "
        f"({metrics['count']} puzzles, {budget_name} {max(metrics['budgets'])}, "
        f"{metrics['examples_per_second']:.1f} ex/s) -> {output}"
    )


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip())
        return 0
    try:
        config, options = parse_arguments(argv)
        with distributed_context(config.device) as dist_info:
            evaluate(config, options, dist_info)
    except (ConfigError, DatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
