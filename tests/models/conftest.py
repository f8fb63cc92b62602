"""Fixtures for the model tests. Test files are imported in importlib mode, so shared helpers live here."""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from dataset.common import PuzzleDatasetMetadata, PuzzleTask
from dataset.maze import GOAL, OPEN, PATH, START, WALL
from dataset.sudoku import BLANK_TOKEN
from dataset.tasks import task_from_metadata
from models.flow_matching import FlowMatchingConfig, FlowMatchingTransformer
from models.head import GlobalBatchRandom
from models.losses import ACTLossConfig, ACTLossHead, DFMLossConfig, DiscreteFlowMatchingLossHead
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


# ---------------------------------------------------------------------------------------------
# Discrete Flow Matching fixtures

# A denoiser small enough to run a batch of 900-cell mazes in well under a second on a CPU.
DFM_TINY_CONFIG = dict(
    hidden_size=32, num_heads=2, num_layers=2, expansion=2.0, time_condition_size=16, forward_dtype="float32"
)


@pytest.fixture
def dfm_metadata() -> Callable[..., PuzzleDatasetMetadata]:
    """Factory of metadata for task "sudoku" (of `box_shape`) or "maze" (of `grid_shape`)."""

    def make(task: str = "sudoku", box_shape=(2, 2), grid_shape=(6, 6), num_puzzle_identifiers: int = 4):
        if task == "sudoku":
            side = box_shape[0] * box_shape[1]
            vocab_size, grid_shape, extras = side + 2, (side, side), dict(box_shape=box_shape)
        else:
            vocab_size, extras = 6, {}
        return PuzzleDatasetMetadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=vocab_size,
            seq_len=grid_shape[0] * grid_shape[1],
            num_puzzle_identifiers=num_puzzle_identifiers,
            total_groups=1,
            mean_puzzle_examples=1.0,
            total_puzzles=1,
            sets=["all"],
            task=task,
            grid_shape=grid_shape,
            **extras,
        )

    return make


@pytest.fixture
def dfm_single_thread():
    """Run the test on one CPU thread, restoring the previous count afterwards.

    Tiny models gain nothing from a second thread, and on a busy 2-core machine two OpenMP threads made a
    0.5 ms forward of the tiny denoiser take 11 ms.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def dfm_model(dfm_metadata, dfm_single_thread) -> Callable[..., FlowMatchingTransformer]:
    """Factory of an untrained tiny denoiser for `metadata` (default 4x4 Sudoku); keywords override DFM_TINY_CONFIG."""

    def make(metadata: PuzzleDatasetMetadata | None = None, **overrides) -> FlowMatchingTransformer:
        config = FlowMatchingConfig(**{**DFM_TINY_CONFIG, **overrides})
        return FlowMatchingTransformer(config, metadata or dfm_metadata())

    return make


@pytest.fixture
def dfm_head(dfm_metadata, dfm_model) -> Callable[..., DiscreteFlowMatchingLossHead]:
    """Factory of a DFM head: around `model` when given, else around a tiny denoiser built with `model_overrides`."""

    def make(
        model: nn.Module | None = None,
        metadata: PuzzleDatasetMetadata | None = None,
        loss: dict | None = None,
        **model_overrides,
    ) -> DiscreteFlowMatchingLossHead:
        metadata = metadata or dfm_metadata()
        model = model or dfm_model(metadata, **model_overrides)
        return DiscreteFlowMatchingLossHead(model, DFMLossConfig(**(loss or {})), metadata)

    return make


@pytest.fixture
def dfm_sudoku4() -> Callable[..., dict[str, Tensor]]:
    """Factory of a batch of valid 4x4 Sudokus with `num_blanks` blank cells each; labels are the solutions."""

    def make(num_puzzles: int = 8, num_blanks: int = 8, seed: int = 0) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(seed)
        row, col = torch.arange(4)[:, None], torch.arange(4)[None, :]
        base = (2 * row + row // 2 + col) % 4  # a valid grid of digits 0..3
        inputs, labels = [], []
        for _ in range(num_puzzles):
            bands, stacks = torch.randperm(2, generator=generator), torch.randperm(2, generator=generator)
            rows = torch.cat([2 * band + torch.randperm(2, generator=generator) for band in bands])
            cols = torch.cat([2 * stack + torch.randperm(2, generator=generator) for stack in stacks])
            digits = torch.randperm(4, generator=generator)
            solution = digits[base[rows][:, cols]].flatten() + 2  # digit d is token d + 1
            puzzle = solution.clone()
            puzzle[torch.randperm(16, generator=generator)[:num_blanks]] = BLANK_TOKEN
            inputs.append(puzzle)
            labels.append(solution)
        return {
            "inputs": torch.stack(inputs),
            "labels": torch.stack(labels),
            "puzzle_identifiers": torch.arange(num_puzzles) % 4,
        }

    return make


@pytest.fixture
def dfm_maze() -> Callable[..., dict[str, Tensor]]:
    """Factory of a batch of random mazes with S top-left and G bottom-right, labelled with an L-shaped path.

    Walls never block the L-shaped path, so it is a shortest path (length = Manhattan distance).
    """

    def make(num_mazes: int = 4, grid_shape=(6, 6), wall_fraction: float = 0.3, seed: int = 0) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(seed)
        height, width = grid_shape
        inputs, labels = [], []
        for _ in range(num_mazes):
            grid = torch.where(torch.rand(grid_shape, generator=generator) < wall_fraction, WALL, OPEN)
            label = grid.clone()
            if torch.rand(1, generator=generator).item() < 0.5:  # along the top row, then down the right column
                path = [(0, c) for c in range(width)] + [(r, width - 1) for r in range(1, height)]
            else:  # down the left column, then along the bottom row
                path = [(r, 0) for r in range(height)] + [(height - 1, c) for c in range(1, width)]
            for r, c in path:
                grid[r, c], label[r, c] = OPEN, PATH
            grid[0, 0] = label[0, 0] = START
            grid[-1, -1] = label[-1, -1] = GOAL
            inputs.append(grid.flatten())
            labels.append(label.flatten())
        return {
            "inputs": torch.stack(inputs),
            "labels": torch.stack(labels),
            "puzzle_identifiers": torch.zeros(num_mazes, dtype=torch.int64),
        }

    return make


class DfmStubDenoiser(nn.Module):
    """Stand-in for `FlowMatchingTransformer` in samplers: same attributes, logits from `logits_fn(x_t, inputs)`."""

    def __init__(self, task: PuzzleTask, mask_token: int | None, logits_fn: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.config = FlowMatchingConfig(source="mask" if mask_token is not None else "uniform")
        self.task = task
        self.mask_token = mask_token
        self.state_vocab_size = task.vocab_size + (0 if mask_token is None else 1)
        self.logits_fn = logits_fn

    def forward(self, x_t: Tensor, t: Tensor, inputs: Tensor, puzzle_identifiers: Tensor | None = None) -> Tensor:
        return self.logits_fn(x_t, inputs)


@pytest.fixture
def dfm_stub(dfm_single_thread) -> Callable[..., DfmStubDenoiser]:
    """Factory of stub denoisers for `metadata`'s task.

    kind "dummy": fixed logits from cell position, puzzle token and state token, highest on illegal
    tokens (PAD, blank, MASK) so that only the samplers' restriction keeps them out.
    kind "oracle": all mass on the label of `batch`'s puzzle with the same inputs.
    """

    def make(metadata: PuzzleDatasetMetadata, kind: str, source: str = "mask", batch: dict[str, Tensor] | None = None):
        task = task_from_metadata(metadata)
        mask_token = metadata.vocab_size if source == "mask" else None
        vocab = metadata.vocab_size + (1 if source == "mask" else 0)
        illegal = torch.ones(vocab, dtype=torch.bool)
        illegal[list(task.answer_tokens)] = False

        if kind == "dummy":
            def logits_fn(x_t: Tensor, inputs: Tensor) -> Tensor:
                position = torch.arange(x_t.shape[1], dtype=torch.float32)[None, :, None]
                token = torch.arange(vocab, dtype=torch.float32)
                phase = 1.3 * position + 0.7 * token + 0.9 * inputs[..., None] + 0.5 * x_t[..., None]
                return torch.cos(phase) + 3.0 * illegal

        else:
            solutions = {tuple(row.tolist()): label for row, label in zip(batch["inputs"], batch["labels"])}

            def logits_fn(x_t: Tensor, inputs: Tensor) -> Tensor:
                labels = torch.stack([solutions[tuple(row.tolist())] for row in inputs])
                return 10.0 * torch.nn.functional.one_hot(labels, vocab).float()

        return DfmStubDenoiser(task, mask_token, logits_fn)

    return make


class DfmFixedTimeRandom(GlobalBatchRandom):
    """GlobalBatchRandom whose per-example draw (the head's t / t_max) is the constant `time_draw`."""

    def __init__(self, batch_size: int, time_draw: float, seed: int = 0):
        super().__init__(seed, 0, 0, batch_size, batch_size, torch.device("cpu"))
        self.time_draw = time_draw

    def rand(self, *shape: int) -> Tensor:
        if not shape:
            return torch.full((self.rows.stop - self.rows.start,), self.time_draw)
        return super().rand(*shape)


@pytest.fixture
def dfm_rng() -> Callable[..., GlobalBatchRandom]:
    """Factory of a one-process step random source; `time_draw` fixes the draw that sets t to time_draw * t_max."""

    def make(batch_size: int, step: int = 0, seed: int = 0, time_draw: float | None = None) -> GlobalBatchRandom:
        if time_draw is not None:
            return DfmFixedTimeRandom(batch_size, time_draw, seed)
        return GlobalBatchRandom(seed, step, 0, batch_size, batch_size, torch.device("cpu"))

    return make
