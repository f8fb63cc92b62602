"""Figures of the training and evaluation benchmarks: FLOP accounting, derived rates and the timed step."""

import pytest
import torch

from benchmarks.evaluation import TRM_SUPERVISION_STEPS, measure_dfm_evaluation, measure_trm_evaluation
from benchmarks.measure import Timing, time_runs, track_peak_memory
from benchmarks.training import TRAINING_WORKLOADS, LoopStep, measure_training
from benchmarks.workloads import BLANKS_PER_PUZZLE, Workload, build_workload_head, sudoku_batch
from dataset.sudoku import BLANK_TOKEN, SudokuTask

PEAK_GFLOPS = 100.0


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from more threads, and the CPU is shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("workload", [w for w in TRAINING_WORKLOADS if w.size == "tiny"], ids=lambda w: w.name)
def test_training_row_flops(workload):
    row = measure_training(workload, batch_size=2, warmup=0, repeats=1, peak_gflops=PEAK_GFLOPS)
    head = build_workload_head(workload)
    assert row["gflop_per_example"] * 1e9 == pytest.approx(head.train_flops_per_example(), rel=1e-12)
    expected_gflops = row["examples_per_second"]["median"] * row["gflop_per_example"]
    assert row["gflops"]["median"] == pytest.approx(expected_gflops, rel=1e-9)
    assert row["fraction_of_peak"] == pytest.approx(row["gflops"]["median"] / PEAK_GFLOPS, rel=1e-9)


def test_paper_sizes_match_trm_paper():
    """Paper-size TRM on 9x9 Sudoku: 81 cells + 16 prefix tokens, about 47.6 GFLOP per training example."""
    head = build_workload_head(Workload("trm", "paper", "float32"))
    config = head.model.config
    assert (config.hidden_size, config.num_heads, config.H_cycles, config.L_cycles, config.L_layers) == (512, 8, 3, 6, 2)
    assert head.model.total_len == 97
    assert head.train_flops_per_example() / 1e9 == pytest.approx(47.6, abs=0.05)


def test_trm_evaluation_row_flops():
    row = measure_trm_evaluation("float32", batch_size=1, warmup=0, repeats=1, peak_gflops=PEAK_GFLOPS, size="tiny")
    head = build_workload_head(Workload("trm", "tiny", "float32"))
    assert row["budget"] == TRM_SUPERVISION_STEPS
    expected = TRM_SUPERVISION_STEPS * head.forward_flops_per_example()
    assert row["gflop_per_example"] * 1e9 == pytest.approx(expected, rel=1e-12)
    assert row["gflops"]["median"] == pytest.approx(row["examples_per_second"]["median"] * row["gflop_per_example"])


@pytest.mark.parametrize("sampler, batch_invariant", [("greedy", False), ("euler", False), ("greedy", True)])
def test_dfm_evaluation_row_flops(sampler, batch_invariant):
    row = measure_dfm_evaluation(
        sampler, 4, batch_size=2, warmup=1, repeats=1, peak_gflops=PEAK_GFLOPS, size="tiny",
        batch_invariant=batch_invariant,
    )
    head = build_workload_head(Workload("dfm", "tiny", "float32"))
    assert row["sampler"].startswith(sampler)
    assert row["gflop_per_example"] * 1e9 == pytest.approx(4 * head.forward_flops_per_example(), rel=1e-12)


def test_loop_step_updates_weights_and_carry():
    head = build_workload_head(Workload("trm", "tiny", "float32"))
    head.train()
    step = LoopStep(head, sudoku_batch(2), total_steps=2)
    before = {name: value.clone() for name, value in head.named_parameters()}
    step()
    assert step.step == 1
    assert not step.carry["halted"].all()  # the first step loaded both slots and none reached 16 steps
    changed = [name for name, value in head.named_parameters() if not torch.equal(value, before[name])]
    assert "model.lm_head.weight" in changed
    assert all(value.grad is None for value in head.parameters())


def test_sudoku_batch_is_valid():
    batch = sudoku_batch(5, seed=3)
    task = SudokuTask()
    assert task.check(batch["inputs"].numpy(), batch["labels"].numpy()).all()
    assert ((batch["inputs"] == BLANK_TOKEN).sum(1) == BLANKS_PER_PUZZLE).all()
    given = batch["inputs"] != BLANK_TOKEN
    assert torch.equal(batch["inputs"][given], batch["labels"][given])


def test_timing_rates_order():
    timing = Timing([2.0, 1.0, 4.0])
    rate = timing.rate(8.0)
    assert rate == {"median": 4.0, "min": 2.0, "max": 8.0}
    assert timing.summary() == {"median": 2.0, "min": 1.0, "max": 4.0}


def test_time_runs_counts_calls():
    calls = []
    timing = time_runs(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5
    assert len(timing.seconds) == 3


def test_peak_memory_sees_allocation():
    with track_peak_memory() as memory:
        block = torch.ones(16 * 2**20)  # 64 MiB, written so that every page is resident
        del block
    if memory.peak_mib is None:
        pytest.skip("this system cannot reset the peak RSS through /proc/self/clear_refs")
    assert memory.peak_mib >= 60
