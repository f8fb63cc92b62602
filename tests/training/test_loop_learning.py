"""The shared loop really trains: TRM and DFM each fit 32 training puzzles exactly."""

import torch

from dataset.puzzle_dataset import PuzzleDataset
from evaluation.runner import evaluate_split


def train_split_metrics(trainer, dataset_dir):
    data = PuzzleDataset(dataset_dir, "train", global_batch_size=32)
    return evaluate_split(trainer.head, data, torch.device("cpu")).metrics


def test_trm_overfits_32_puzzles(loop_sudoku4_32, loop_train, tmp_path):
    # halt_max_steps 2: once the Q head learns to halt after step 1, deeper supervision steps are rarely
    # trained, so on a task this small the grids of steps 3-4 drift (see the per-step curve).
    trainer = loop_train([
        "arch=trm", "arch.hidden_size=64", "arch.num_heads=2", "arch.H_cycles=2", "arch.L_cycles=2",
        "arch.L_layers=2", "arch.halt_max_steps=2", "arch.puzzle_emb_len=1",
        f"data_paths=[{loop_sudoku4_32}]", "global_batch_size=32", "epochs=400", "eval_interval=400",
        "lr=1e-3", "lr_min_ratio=0.05", "lr_warmup_steps=20", f"+checkpoint_path={tmp_path / 'run'}",
    ])
    metrics = train_split_metrics(trainer, loop_sudoku4_32)
    assert metrics["count"] == 32
    assert metrics["exact_accuracy"] == 1.0
    assert metrics["valid_accuracy"] == 1.0


def test_dfm_sampler_solves_32_puzzles(loop_sudoku4_32, loop_train, tmp_path):
    trainer = loop_train([
        "arch=flow_matching", "arch.hidden_size=64", "arch.num_heads=2", "arch.num_layers=2",
        "arch.structure_embeddings=true", f"data_paths=[{loop_sudoku4_32}]", "global_batch_size=32",
        "epochs=800", "eval_interval=800", "lr=2e-3", "lr_min_ratio=0.05", "lr_warmup_steps=20",
        f"+checkpoint_path={tmp_path / 'run'}",
    ])
    metrics = train_split_metrics(trainer, loop_sudoku4_32)
    assert metrics["count"] == 32
    # Scored from greedy-sampled grids, one committed cell per model call at most.
    assert metrics["budgets"] == [16]
    assert metrics["exact_accuracy"] == 1.0
    assert metrics["valid_accuracy"] == 1.0
