"""The models and batches that the training and evaluation benchmarks time: 9x9 Sudoku at two model sizes.

Sizes:
- "paper": TRM with hidden 512, 8 heads, H_cycles 3, L_cycles 6, L_layers 2 and a 16-token puzzle prefix
  (81 + 16 = 97 tokens), as in the TRM paper's Sudoku runs; DFM at its default 6 layers x 512.
- "tiny": TRM with hidden 128, 4 heads, H_cycles 2, L_cycles 2; DFM with hidden 128 and 2 layers.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from dataset.common import PuzzleDatasetMetadata
from dataset.sudoku import BLANK_TOKEN, DIGIT_OFFSET, SudokuTask, augment
from models.flow_matching import FlowMatchingConfig
from models.head import LossHead
from models.losses import ACTLossConfig, DFMLossConfig
from models.registry import build_head
from models.trm import TRMConfig

# Sudoku-Extreme training puzzles have 17 to 35 givens, 25.2 on average, so about 56 of 81 cells are blank.
BLANKS_PER_PUZZLE = 56

# The Sudoku 1k x 1000 dataset as the builder writes it: every example uses the blank puzzle identifier 0.
SUDOKU_METADATA = PuzzleDatasetMetadata(
    pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81, num_puzzle_identifiers=1,
    total_groups=1000, mean_puzzle_examples=1.0, total_puzzles=1000, sets=["all"], task="sudoku",
    grid_shape=(9, 9), box_shape=(3, 3),
)

TRM_SIZES = {
    "paper": dict(hidden_size=512, num_heads=8, H_cycles=3, L_cycles=6, L_layers=2),
    "tiny": dict(hidden_size=128, num_heads=4, H_cycles=2, L_cycles=2, L_layers=2),
}
DFM_SIZES = {
    "paper": dict(hidden_size=512, num_heads=8, num_layers=6),
    "tiny": dict(hidden_size=128, num_heads=4, num_layers=2),
}

ModelName = Literal["trm", "trm_mlp_t", "dfm"]


@dataclass(frozen=True)
class Workload:
    """One model configuration to time."""

    model: ModelName
    size: Literal["paper", "tiny"]
    dtype: Literal["float32", "bfloat16"]

    @property
    def name(self) -> str:
        return f"{self.model} {self.size} {self.dtype}"


def build_workload_head(workload: Workload, seed: int = 0) -> LossHead:
    """Build the loss head and model of `workload` for 9x9 Sudoku, with weights drawn from `seed`."""
    torch.manual_seed(seed)
    if workload.model == "dfm":
        config = FlowMatchingConfig(**DFM_SIZES[workload.size], forward_dtype=workload.dtype)
        return build_head("flow_matching", config, "discrete_flow_matching", DFMLossConfig(), SUDOKU_METADATA)
    mlp_t = workload.model == "trm_mlp_t"
    hidden = TRM_SIZES[workload.size]["hidden_size"]
    config = TRMConfig(
        **TRM_SIZES[workload.size],
        mlp_t=mlp_t,
        # The TRM-MLP Sudoku setting has no attention, so no rotary positions.
        pos_encodings="none" if mlp_t else "rope",
        puzzle_emb_ndim=hidden,
        puzzle_emb_len=16,
        forward_dtype=workload.dtype,
    )
    return build_head("trm", config, "act", ACTLossConfig(), SUDOKU_METADATA)


def sudoku_batch(batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Build a batch of valid 9x9 Sudokus with BLANKS_PER_PUZZLE blank cells each, labelled with their solutions.

    Returns inputs, labels [B, 81] int64, puzzle_identifiers [B] int64 (all 0) and mask [B] bool (all True).
    """
    task = SudokuTask()
    rng = np.random.default_rng(seed)
    rows, columns = np.indices((9, 9))
    digits = (3 * (rows % 3) + rows // 3 + columns) % 9 + 1  # a valid grid
    solution = (digits + DIGIT_OFFSET).reshape(1, 81).astype(np.uint8)
    inputs, labels = augment(task, solution.copy(), solution, batch_size - 1, rng)
    blanks = rng.random(inputs.shape).argsort(axis=1)[:, :BLANKS_PER_PUZZLE]
    np.put_along_axis(inputs, blanks, BLANK_TOKEN, axis=1)
    return {
        "inputs": torch.from_numpy(inputs.astype(np.int64)),
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "puzzle_identifiers": torch.zeros(batch_size, dtype=torch.int64),
        "mask": torch.ones(batch_size, dtype=torch.bool),
    }
