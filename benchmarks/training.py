"""Training throughput: one optimizer step as `training.trainer.Trainer` runs it, timed per model and dtype.

A step is the loop's `_train_step` with the default config (no gradient clipping, no EMA) on a batch already
in memory. It runs the head's forward (for TRM one supervision step of every slot in the ACT carry) and the
backward of loss / global batch size. Then the optimisers step the weights (AdamW) and the puzzle embedding
(sign-SGD), and zero_grad runs. Data loading is timed separately by benchmarks/bench_loader.py. Achieved GFLOP/s counts the head's analytic
`train_flops_per_example()`, so it is comparable with the matmul peak but ignores elementwise work.
"""

import torch

from benchmarks.machine import load_average
from benchmarks.measure import time_runs, track_peak_memory
from benchmarks.workloads import Workload, build_workload_head, sudoku_batch
from models.head import GlobalBatchRandom, LossHead
from training.config import PretrainConfig
from training.optim import OptimizerSet

# Learning rate of config/cfg_pretrain.yaml; the value does not change the cost of a step.
LEARNING_RATE = 1e-4
SEED = 0

TRAINING_WORKLOADS = [
    Workload(model, size, dtype)
    for size in ("paper", "tiny")
    for model in ("trm", "trm_mlp_t", "dfm")
    for dtype in ("float32", "bfloat16")
]


def training_batch_size(workload: Workload, quick: bool) -> int:
    """Local batch: 64 examples, or 8 at the paper size with --quick."""
    return 8 if quick and workload.size == "paper" else 64


class LoopStep:
    """One optimizer step of the training loop on a fixed batch; each call advances the step count by one."""

    def __init__(self, head: LossHead, batch: dict[str, torch.Tensor], total_steps: int):
        self.head = head
        self.batch = batch
        self.batch_size = len(batch["inputs"])
        self.total_steps = total_steps
        config = PretrainConfig(
            arch={}, data_paths=["unused"], global_batch_size=self.batch_size, epochs=1, eval_interval=1,
            lr=LEARNING_RATE,
        )
        self.optimizers = OptimizerSet(head, config)
        self.carry = head.initial_carry(batch)
        self.step = 0

    def __call__(self) -> None:
        self.optimizers.set_step(self.step, self.total_steps)
        rng = GlobalBatchRandom(SEED, self.step, 0, self.batch_size, self.batch_size, torch.device("cpu"))
        output = self.head(self.carry, self.batch, rng)
        self.carry = output.carry
        (output.loss / self.batch_size).backward()
        self.optimizers.step()
        self.optimizers.zero_grad()
        self.step += 1


def measure_training(workload: Workload, batch_size: int, warmup: int, repeats: int, peak_gflops: float) -> dict:
    """Time `repeats` training steps of `workload` after `warmup` steps and return one report row."""
    with track_peak_memory() as memory:
        head = build_workload_head(workload, seed=SEED)
        head.train()
        train_step = LoopStep(head, sudoku_batch(batch_size, seed=SEED), total_steps=warmup + repeats)
        timing = time_runs(train_step, warmup=warmup, repeats=repeats)

    flops = head.train_flops_per_example()
    gflops = timing.rate(batch_size * flops / 1e9)
    return {
        "model": workload.model,
        "size": workload.size,
        "dtype": workload.dtype,
        "batch_size": batch_size,
        "warmup": warmup,
        "repeats": repeats,
        "step_seconds": timing.summary(),
        "examples_per_second": timing.rate(batch_size),
        "gflop_per_example": flops / 1e9,
        "gflops": gflops,
        "fraction_of_peak": gflops["median"] / peak_gflops,
        "peak_memory_mib": memory.peak_mib,
        "load_average": load_average(),
    }
