"""Reconstruct the command lines of runs and evaluations from the files they wrote, and hash their configs.

A training command lists only the overrides whose values differ from `config/cfg_pretrain.yaml` and the
architecture's `config/arch/<name>.yaml`, so it reproduces the run but not necessarily the exact words typed
(an `+experiment=...` selection shows as the overrides it set).
"""

import hashlib
import json
import shlex
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.cells import format_value
from experiments.runs import EvalReport, Run
from models.registry import LOSS_HEADS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
# Keys that config.json records for bookkeeping, which are not options of pretrain.py.
RECORDED_KEYS = ("world_size", "git_commit", "parameter_counts", "train_flops_per_example", "forward_flops_per_example")
# Run identity keys whose defaults come from the clock or the dataset. The run directory alone identifies a run.
GENERATED_KEYS = ("project_name", "run_name")
HASH_EXCLUDED_KEYS = frozenset({"seed", "checkpoint_path", "resume", *RECORDED_KEYS, *GENERATED_KEYS})


def config_hash(config: dict[str, Any]) -> str:
    """First 12 hex digits of a SHA-256 over the config without seed, run identity and recorded sizes.

    The seeds of one experiment therefore share a hash.
    """
    hashed = {key: value for key, value in config.items() if key not in HASH_EXCLUDED_KEYS}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def training_command(run: Run) -> str:
    """`python pretrain.py arch=... key=value ...` with the overrides that differ from the defaults."""
    config = run.config
    defaults = _pretrain_defaults()
    arguments = [f"arch={config['arch']['name']}"]
    arguments += _arch_overrides(config["arch"])
    for key, value in config.items():
        if key in ("arch", *RECORDED_KEYS, *GENERATED_KEYS):
            continue
        if key in defaults:
            if value != defaults[key]:
                arguments.append(f"{key}={format_value(value)}")
        elif value is not None:
            arguments.append(f"+{key}={format_value(value)}")
    world_size = config.get("world_size", 1)
    launcher = ["python"] if world_size == 1 else ["torchrun", f"--nproc-per-node={world_size}"]
    return shlex.join([*launcher, "pretrain.py", *arguments])


def evaluation_command(run: Run, report: EvalReport) -> str:
    """`python evaluate.py checkpoint=... split=... steps=[...] <options> output=...` of one report.

    Lists the loss head's options that differ from their defaults. Keys that the JSON does not record (such
    as max_examples or use_ema) cannot be recovered, so they are left out.
    """
    arguments = [
        f"checkpoint={run.path / f'step_{report.step}.pt'}",
        f"split={report.split}",
        f"steps={format_value(sorted(report.exact_by_budget))}",
    ]
    loss_name = run.config["arch"].get("loss", {}).get("name")
    head = LOSS_HEADS.get(loss_name)
    defaults = head.eval_options_model().model_dump() if head is not None else {}
    for key, value in report.options.items():
        if key not in defaults or value != defaults[key]:
            arguments.append(f"{key}={format_value(value)}")
    arguments.append(f"output={report.path}")
    return shlex.join(["python", "evaluate.py", *arguments])


@cache
def _pretrain_defaults() -> dict[str, Any]:
    return _resolved(OmegaConf.load(CONFIG_DIR / "cfg_pretrain.yaml"), drop=("defaults", "hydra"))


@cache
def _arch_defaults(name: str) -> DictConfig | None:
    path = CONFIG_DIR / "arch" / f"{name}.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def _arch_overrides(arch: dict[str, Any]) -> list[str]:
    """`arch.key=value` for every arch key that differs from the arch YAML, with interpolations resolved."""
    defaults = _arch_defaults(arch["name"])
    if defaults is None:
        return [f"+arch.{key}={format_value(value)}" for key, value in _flat(arch).items() if key != "name"]
    default_keys = set(_flat(OmegaConf.to_container(defaults, resolve=False)))
    literal_defaults = _flat(_resolved(defaults))
    # An interpolated default such as `puzzle_emb_ndim: ${.hidden_size}` is compared with its value under this
    # run's own settings, so an overridden hidden size does not make the interpolated key look overridden too.
    interpolated = {key for key in defaults if OmegaConf.is_interpolation(defaults, key)}
    run_literals = {key: value for key, value in arch.items() if key not in interpolated}
    interpolated_defaults = _flat(_resolved(OmegaConf.merge(defaults, run_literals)))

    overrides = []
    for key, value in _flat(arch).items():
        if key == "name":
            continue
        if key not in default_keys:
            overrides.append(f"+arch.{key}={format_value(value)}")
            continue
        default = interpolated_defaults[key] if key in interpolated else literal_defaults[key]
        if value != default:
            overrides.append(f"arch.{key}={format_value(value)}")
    return overrides


def _resolved(config: DictConfig, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    container = OmegaConf.to_container(config, resolve=True)
    return {key: value for key, value in container.items() if key not in drop}


def _flat(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in section.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
