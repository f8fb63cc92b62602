"""The interface between the shared training loop and an architecture.

A loss head owns its model and everything architecture-specific: TRM's ACT carry and halting, or DFM's
probability path, source distribution and samplers. The loop in `pretrain.py` and the evaluation in
`evaluation/` only call the methods below, so adding an architecture needs no change there.

Batch layout (a dict of tensors on the model's device), B = local batch size, L = seq_len:
    inputs              [B, L] int64   puzzle token ids
    labels              [B, L] int64   target token ids, IGNORE_LABEL on unsupervised cells
    puzzle_identifiers  [B]    int64   row of the per-puzzle embedding table
    mask                [B]    bool    False on the padding rows of a final evaluation batch
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pydantic
import torch
from torch import Tensor, nn

from dataset.common import PuzzleDatasetMetadata

IGNORE_LABEL = -100

Batch = dict[str, Tensor]
Carry = dict[str, Tensor]


@dataclass
class StepOutput:
    """Result of one training step of a loss head."""

    carry: Carry | None
    """State kept for the next step (TRM's ACT carry); None for stateless heads. Saved in checkpoints."""
    loss: Tensor
    """Scalar, summed over the local batch's examples; the loop divides by the global batch size."""
    metrics: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    """Name -> (sum, count) scalars; the loop sums both over ranks and logs sum / count."""


@dataclass
class Prediction:
    """Predicted grids of one batch at one or more inference budgets."""

    by_budget: dict[int, Tensor]
    """Budget (TRM: supervision steps; DFM: NFE) -> predicted token ids [B, L] int64."""
    selected: Tensor | None = None
    """The head's own answer [B, L] when it picks one per example (TRM halting by its Q head); None means
    the prediction at the largest budget."""
    extras: dict[str, Tensor] = field(default_factory=dict)
    """Name -> per-example float values [B], averaged over real examples (e.g. ACT steps used)."""

    @property
    def final(self) -> Tensor:
        """The answer scored by the top-level metrics, [B, L]."""
        return self.selected if self.selected is not None else self.by_budget[max(self.by_budget)]


class GlobalBatchRandom:
    """Random draws for one training step that do not depend on how the global batch is split.

    Every rank draws the values of the whole global batch from a generator seeded by (seed, step)
    and keeps its own rows, so one process and N processes train on identical noise.
    """

    def __init__(self, seed: int, step: int, offset: int, local_size: int, global_size: int, device: torch.device):
        self.generator = torch.Generator().manual_seed((seed * 1_000_003 + step) % 2**63)
        self.rows = slice(offset, offset + local_size)
        self.global_size = global_size
        self.device = device

    def rand(self, *shape: int) -> Tensor:
        """Uniform [0, 1) float32 values of shape [B_local, *shape]."""
        values = torch.rand((self.global_size, *shape), generator=self.generator)
        return values[self.rows].to(self.device)

    def randint(self, low: int, high: int, *shape: int) -> Tensor:
        """Integers in [low, high) of shape [B_local, *shape], int64."""
        values = torch.randint(low, high, (self.global_size, *shape), generator=self.generator)
        return values[self.rows].to(self.device)


class LossHead(nn.Module, ABC):
    """An architecture as the loop sees it: training steps, predictions and compute counts.

    Built as `Head(model, config, metadata)`: `model` is the network (its own pydantic config is
    `model.config`), `config` the head's pydantic config (the `arch.loss` keys) and `metadata` describes
    the training split (vocab, seq_len, task, number of puzzle identifiers).
    """

    config_class: ClassVar[type[pydantic.BaseModel]]
    """Pydantic model of the `arch.loss` keys (extra keys forbidden)."""
    budget_name: ClassVar[str]
    """What an inference budget counts, used in metric names: "supervision_steps" or "nfe"."""
    eval_options_model: ClassVar[type[pydantic.BaseModel]]
    """Pydantic model (extra keys forbidden) of the evaluation options `predict` accepts."""

    def __init__(self, model: nn.Module, config: pydantic.BaseModel, metadata: PuzzleDatasetMetadata):
        super().__init__()
        self.model = model
        self.config = config
        self.metadata = metadata

    @abstractmethod
    def initial_carry(self, batch: Batch) -> Carry | None:
        """Create the training carry for a batch of this shape, or None for stateless heads."""

    @abstractmethod
    def forward(self, carry: Carry | None, batch: Batch, rng: GlobalBatchRandom) -> StepOutput:
        """Run one training step's forward pass and loss (no backward)."""

    @abstractmethod
    def predict(self, batch: Batch, budgets: list[int] | None, options: pydantic.BaseModel) -> Prediction:
        """Predict full grids for an evaluation batch, once per budget (default: the configured one).

        Runs without gradient; every prediction is a complete decoded grid, never a single denoising pass.
        """

    def periodic_eval_options(self) -> pydantic.BaseModel:
        """Evaluation options of the loop's periodic evaluation; `evaluate.py` starts from the option defaults."""
        return self.eval_options_model()

    @abstractmethod
    def default_budgets(self) -> list[int]:
        """The budgets periodic evaluation reports (TRM: 1..halt_max_steps; DFM: the configured NFE)."""

    @abstractmethod
    def forward_flops_per_example(self) -> float:
        """Analytic forward FLOPs per example of one model call (a TRM supervision step, a DFM sampling step)."""

    @abstractmethod
    def train_flops_per_example(self) -> float:
        """Analytic FLOPs per example of one training step, forward and backward."""

    def inference_flops_per_example(self, budget: int) -> float:
        """Analytic FLOPs per example of a prediction at `budget` model calls."""
        return budget * self.forward_flops_per_example()

    def inference_flops_used(self, metrics: dict[str, Any], budget: int) -> float:
        """Analytic FLOPs per example of the model calls that predictions at `budget` actually made.

        `metrics` are the averaged metrics of `evaluate_split`. By default every call of the budget is made.
        """
        return self.inference_flops_per_example(budget)

    @abstractmethod
    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts for logs and reports.

        Keys: "parameters" (trainable, embedding tables excluded), "embedding_parameters" (token
        embedding and output tables) and "puzzle_embedding_parameters" (the per-puzzle table).
        """
