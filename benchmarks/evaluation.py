"""Evaluation throughput: full-grid predictions per second through each head's `predict`, as evaluation runs it.

- TRM: 16 supervision steps from fresh latents, with the argmax grid of every step recorded (budgets
  1..16), attention variant, in fp32 and bf16.
- DFM: greedy decoding with batched model calls (as periodic evaluation runs it) and Euler sampling at a few
  NFE budgets. At the largest budget also greedy decoding with one example per call (`batch_invariant`,
  the default of evaluate.py). All DFM rows use fp32, the CPU default of `forward_dtype: auto`.

Inference GFLOP per example is the head's analytic `inference_flops_per_example(budget)`.
"""

import pydantic

from benchmarks.machine import load_average
from benchmarks.measure import PeakMemory, Timing, time_runs, track_peak_memory
from benchmarks.workloads import Workload, build_workload_head, sudoku_batch
from models.losses import ACTEvalOptions, DFMEvalOptions

TRM_SUPERVISION_STEPS = 16
DFM_NFE_BUDGETS = (8, 32)
DFM_SAMPLERS = ("greedy", "euler")
SEED = 0


def evaluation_batch_size(quick: bool) -> int:
    """Puzzles per `predict` call: small, because a paper-size TRM spends about 460 GFLOP on one 16-step prediction."""
    return 2 if quick else 4


def measure_trm_evaluation(
    dtype: str, batch_size: int, warmup: int, repeats: int, peak_gflops: float, size: str = "paper"
) -> dict:
    """Time TRM predictions with 16 supervision steps; the warm-up runs use one step only."""
    budgets = list(range(1, TRM_SUPERVISION_STEPS + 1))
    return _measure(Workload("trm", size, dtype), budgets, ACTEvalOptions(), batch_size, warmup, repeats, peak_gflops)


def measure_dfm_evaluation(
    sampler: str,
    budget: int,
    batch_size: int,
    warmup: int,
    repeats: int,
    peak_gflops: float,
    size: str = "paper",
    batch_invariant: bool = False,
) -> dict:
    """Time DFM predictions with `sampler` at an NFE budget, in fp32; the warm-up runs use one model call."""
    options = DFMEvalOptions(sampler=sampler, seed=SEED, batch_invariant=batch_invariant)
    row = _measure(Workload("dfm", size, "float32"), [budget], options, batch_size, warmup, repeats, peak_gflops)
    row["sampler"] = f"{sampler}, one example per call" if batch_invariant else sampler
    return row


def _measure(
    workload: Workload,
    budgets: list[int],
    options: pydantic.BaseModel,
    batch_size: int,
    warmup: int,
    repeats: int,
    peak_gflops: float,
) -> dict:
    """Time `head.predict(batch, budgets)` after warm-up predictions at budget 1; one report row."""
    with track_peak_memory() as memory:
        head = build_workload_head(workload, seed=SEED)
        batch = sudoku_batch(batch_size, seed=SEED)
        for _ in range(warmup):
            head.predict(batch, [1], options)
        timing = time_runs(lambda: head.predict(batch, budgets, options), warmup=0, repeats=repeats)
    flops = head.inference_flops_per_example(max(budgets))
    return _row(workload, head.budget_name, max(budgets), batch_size, timing, flops, peak_gflops, memory)


def _row(
    workload: Workload,
    budget_name: str,
    budget: int,
    batch_size: int,
    timing: Timing,
    flops: float,
    peak_gflops: float,
    memory: PeakMemory,
) -> dict:
    gflops = timing.rate(batch_size * flops / 1e9)
    return {
        "model": workload.model,
        "size": workload.size,
        "dtype": workload.dtype,
        "budget_name": budget_name,
        "budget": budget,
        "batch_size": batch_size,
        "repeats": len(timing.seconds),
        "seconds": timing.summary(),
        "examples_per_second": timing.rate(batch_size),
        "gflop_per_example": flops / 1e9,
        "gflops": gflops,
        "fraction_of_peak": gflops["median"] / peak_gflops,
        "peak_memory_mib": memory.peak_mib,
        "load_average": load_average(),
    }
