"""Fixtures for the model tests. Test files are imported in importlib mode, so shared helpers live here."""

from collections.abc import Callable

import pytest
import torch

from dataset.common import PuzzleDatasetMetadata
from models.head import GlobalBatchRandom
from models.losses import ACTLossConfig, ACTLossHead
from models.trm import TinyRecursiveReasoningModel, TRMConfig

# Encoding of the 4x4 Sudoku fixtures: PAD 0, blank 1, digits 1..4 as tokens 2..5.
TRM_SUDOKU4_VOCAB = 6
TRM_BLANK = 1

# A TRM small enough for fast CPU tests.
TRM_TINY_CONFIG = dict(
    hidden_size=32,
    num_heads=2,
    expansion=2.0,
    H_cycles=2,
    L_cycles=2,
    L_layers=1,
    halt_max_steps=4,
    puzzle_emb_ndim=32,
    puzzle_emb_len=2,
    forward_dtype="float32",
)


@pytest.fixture
def trm_metadata() -> Callable[..., PuzzleDatasetMetadata]:
    """Factory of dataset metadata; defaults describe 4x4 Sudoku with 4 puzzle identifiers."""

    def make(vocab_size: int = TRM_SUDOKU4_VOCAB, seq_len: int = 16, num_puzzle_identifiers: int = 4):
        return PuzzleDatasetMetadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=vocab_size,
            seq_len=seq_len,
            num_puzzle_identifiers=num_puzzle_identifiers,
            total_groups=1,
            mean_puzzle_examples=1.0,
            total_puzzles=1,
            sets=["all"],
        )

    return make


@pytest.fixture
def trm_head(trm_metadata) -> Callable[..., ACTLossHead]:
    """Factory of an ACT head around a tiny TRM; keyword arguments override TRM_TINY_CONFIG."""

    def make(loss_type: str = "softmax_cross_entropy", metadata: PuzzleDatasetMetadata | None = None, **overrides):
        metadata = metadata or trm_metadata()
        config = TRMConfig(**{**TRM_TINY_CONFIG, **overrides})
        model = TinyRecursiveReasoningModel(config, metadata)
        return ACTLossHead(model, ACTLossConfig(loss_type=loss_type), metadata)

    return make


@pytest.fixture
def trm_batch() -> Callable[..., dict[str, torch.Tensor]]:
    """Factory of a random batch of 4x4 Sudoku-shaped rows drawn from its own seeded generator."""

    def make(batch_size: int = 3, seed: int = 0, seq_len: int = 16, num_puzzle_identifiers: int = 4):
        generator = torch.Generator().manual_seed(seed)
        return {
            "inputs": torch.randint(1, TRM_SUDOKU4_VOCAB, (batch_size, seq_len), generator=generator),
            "labels": torch.randint(2, TRM_SUDOKU4_VOCAB, (batch_size, seq_len), generator=generator),
            "puzzle_identifiers": torch.randint(0, num_puzzle_identifiers, (batch_size,), generator=generator),
        }

    return make


@pytest.fixture
def trm_rng() -> Callable[..., GlobalBatchRandom]:
    """Factory of the per-step random source of a one-process run."""

    def make(batch_size: int, step: int = 0, seed: int = 0) -> GlobalBatchRandom:
        return GlobalBatchRandom(seed, step, 0, batch_size, batch_size, torch.device("cpu"))

    return make


@pytest.fixture
def trm_sudoku4() -> Callable[..., dict[str, torch.Tensor]]:
    """Factory of valid 4x4 Sudokus with some cells blanked, as a batch (labels: the full solution)."""

    def make(num_puzzles: int = 8, num_blanks: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        base = torch.tensor([[0, 1, 2, 3], [2, 3, 0, 1], [1, 0, 3, 2], [3, 2, 1, 0]])
        inputs, labels = [], []
        for _ in range(num_puzzles):
            digits = torch.randperm(4, generator=generator)
            bands = torch.randperm(2, generator=generator)
            rows = torch.cat([2 * band + torch.randperm(2, generator=generator) for band in bands])
            stacks = torch.randperm(2, generator=generator)
            columns = torch.cat([2 * stack + torch.randperm(2, generator=generator) for stack in stacks])
            solution = digits[base][rows][:, columns].flatten() + 2
            puzzle = solution.clone()
            puzzle[torch.randperm(16, generator=generator)[:num_blanks]] = TRM_BLANK
            inputs.append(puzzle)
            labels.append(solution)
        return {
            "inputs": torch.stack(inputs),
            "labels": torch.stack(labels),
            "puzzle_identifiers": torch.zeros(num_puzzles, dtype=torch.int64),
        }

    return make


@pytest.fixture
def trm_single_thread():
    """Run the test on one CPU thread, restoring the count afterwards.

    The matmuls of a tiny model are too small to gain from more threads, and on a shared CPU the extra
    threads slowed the training test down about tenfold when measured.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
