"""Conditional Discrete Flow Matching denoiser: a bidirectional, time-conditioned transformer.

Notation follows Gat et al., "Discrete Flow Matching" (arXiv:2407.15595): x_1 is the data (the solution
grid), x_0 a source sample, x_t the state on the mixture path at time t in [0, 1], with data at t = 1. The
model reads x_t, the puzzle and t, and returns logits of the denoising posterior p(x_1 | x_t) per cell.

Design, with reasons:
- Time enters every block through adaLN (shift, scale and gate of both sublayers, as in DiT), with one
  modulation projection shared by all blocks plus a learned per-block offset, as in PixArt-alpha's
  "adaLN-single". A separate projection per block would add 6 * hidden^2 parameters per layer
  (1.6M at hidden 512) for a scalar input and spoil parameter-matched comparisons with TRM. The gates start
  at zero, so every block starts as the identity and the stack trains stably from the first step.
- Pre-norm blocks: modulation acts on the normalised input of each sublayer, and a pre-norm residual
  stream keeps gradients well scaled in a plain (non-recursive) stack of this depth. TRM uses post-norm
  because it feeds its own output back in many times; this model runs each block once per call.
- The puzzle enters as a second per-cell embedding added to the embedding of x_t, because the puzzle
  and the solution grid are aligned cell by cell. The sequence therefore stays at seq_len tokens.
"""

import math
from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dataset.common import PuzzleDatasetMetadata
from dataset.sudoku import SudokuTask
from dataset.tasks import task_from_metadata
from models.layers import Attention, CastedEmbedding, CastedLinear, RotaryEmbedding, SwiGLU, rms_norm
from models.layers import check_head_size, swiglu_intermediate_size
from models.sparse_embedding import CastedSparseEmbedding

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Sinusoidal periods range from 2*pi to 2*pi*10000 in units of the scaled time. Scaling t in [0, 1] by 1000,
# like the integer timesteps of diffusion models, spans many periods of the fast channels, and the slow
# channels still change measurably over [0, 1].
TIME_SCALE = 1000.0
MAX_PERIOD = 10000.0

# adaLN outputs per block: shift, scale and gate of the attention and of the feed-forward sublayer.
MODULATIONS_PER_BLOCK = 6


class FlowMatchingConfig(pydantic.BaseModel):
    """The `arch` keys of the flow matching model (its loss head reads `arch.loss`)."""

    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["flow_matching"] = "flow_matching"
    hidden_size: int = pydantic.Field(512, gt=0, description="Width of the residual stream.")
    num_heads: int = pydantic.Field(8, gt=0, description="Attention heads; hidden_size must be divisible by it.")
    num_layers: int = pydantic.Field(6, gt=0, description="Transformer blocks, each run once per model call.")
    expansion: float = pydantic.Field(4.0, gt=0, description="SwiGLU width as a multiple of hidden_size.")
    pos_encodings: Literal["rope", "learned", "none"] = pydantic.Field(
        "rope", description="Sequence-position encoding: rotary in attention, a learned table, or none."
    )
    rope_theta: float = pydantic.Field(10000.0, gt=0, description="Base of the rotary frequencies.")
    structure_embeddings: bool = pydantic.Field(
        False, description="Add learned row, column (and Sudoku box) tables to every cell's embedding."
    )
    puzzle_emb_ndim: int = pydantic.Field(0, ge=0, description="Width of the per-puzzle embedding; 0 disables it.")
    puzzle_emb_len: int = pydantic.Field(
        0, ge=0, description="Prefix tokens holding the puzzle embedding; 0 means ceil(puzzle_emb_ndim / hidden_size)."
    )
    source: Literal["mask", "uniform"] = pydantic.Field(
        "mask", description="Source distribution of x_0 on cells to fill: a MASK token or uniform answer tokens."
    )
    scheduler_exponent: float = pydantic.Field(2.0, gt=0, description="n of the path schedule kappa_t = t^n.")
    time_frequency_size: int = pydantic.Field(256, gt=0, description="Sinusoidal features of t (even).")
    time_condition_size: int = pydantic.Field(128, gt=0, description="Width of the time embedding fed to adaLN.")
    rms_norm_eps: float = pydantic.Field(1e-5, gt=0, description="Epsilon of the RMS normalisations.")
    forward_dtype: Literal["float32", "bfloat16"] = pydantic.Field(
        "float32", description="Compute dtype; parameters stay fp32. The loop turns 'auto' into one of these."
    )

    @pydantic.field_validator("time_frequency_size")
    @classmethod
    def _even_frequency_size(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"time_frequency_size must be even (cosine and sine halves), got {value}")
        return value

    @pydantic.model_validator(mode="after")
    def _check_combinations(self) -> "FlowMatchingConfig":
        check_head_size(self.hidden_size, self.num_heads, self.pos_encodings)
        prefix_len = self.puzzle_emb_len or -(-self.puzzle_emb_ndim // self.hidden_size)
        if self.puzzle_emb_ndim > prefix_len * self.hidden_size:
            raise ValueError(
                f"puzzle_emb_ndim {self.puzzle_emb_ndim} does not fit in puzzle_emb_len {self.puzzle_emb_len} "
                f"tokens of hidden_size {self.hidden_size}; raise puzzle_emb_len or set it to 0"
            )
        return self


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t followed by a two-layer SiLU MLP: t [B] -> [B, condition_size]."""

    def __init__(self, frequency_size: int, condition_size: int):
        super().__init__()
        half = frequency_size // 2
        frequencies = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.input_proj = CastedLinear(frequency_size, condition_size, bias=True)
        self.output_proj = CastedLinear(condition_size, condition_size, bias=True)

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        """t: [B] float in [0, 1] -> [B, condition_size] in `dtype`."""
        angles = (t.float() * TIME_SCALE)[:, None] * self.frequencies  # [B, half]
        features = torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)
        return self.output_proj(F.silu(self.input_proj(features)))


class DenoiserBlock(nn.Module):
    """Pre-norm attention and SwiGLU sublayers, each with adaLN shift/scale before it and a gate after it."""

    def __init__(self, config: FlowMatchingConfig):
        super().__init__()
        self.eps = config.rms_norm_eps
        self.attention = Attention(config.hidden_size, config.num_heads, causal=False)
        self.feed_forward = SwiGLU(config.hidden_size, config.expansion)
        # Added to the shared time modulation; zero, so the gates start closed.
        self.modulation_offset = nn.Parameter(torch.zeros(MODULATIONS_PER_BLOCK, config.hidden_size))

    def forward(self, h: Tensor, modulation: Tensor, rotary: tuple[Tensor, Tensor] | None) -> Tensor:
        """h: [B, L, D]; modulation: [B, 6, D] from the time embedding; returns [B, L, D]."""
        modulation = modulation + self.modulation_offset.to(modulation.dtype)
        shift_attn, scale_attn, gate_attn, shift_ff, scale_ff, gate_ff = modulation[:, :, None, :].unbind(1)

        normed = rms_norm(h, self.eps) * (1 + scale_attn) + shift_attn
        h = h + gate_attn * self.attention(normed, rotary)
        normed = rms_norm(h, self.eps) * (1 + scale_ff) + shift_ff
        return h + gate_ff * self.feed_forward(normed)


class FlowMatchingTransformer(nn.Module):
    """Denoiser p(x_1 | x_t, t, puzzle) for a puzzle task.

    Vocabularies: the puzzle uses the dataset's `vocab_size` tokens. The state x_t and the output add one
    MASK token (id `vocab_size`) when `source` is "mask", so `state_vocab_size` is vocab_size + 1 with
    the mask source and vocab_size with the uniform source.
    """

    config_class = FlowMatchingConfig

    def __init__(self, config: FlowMatchingConfig, metadata: PuzzleDatasetMetadata):
        super().__init__()
        self.config = config
        self.task = task_from_metadata(metadata)
        self.seq_len = metadata.seq_len
        self.vocab_size = metadata.vocab_size
        self.mask_token = metadata.vocab_size if config.source == "mask" else None
        self.state_vocab_size = metadata.vocab_size + (1 if config.source == "mask" else 0)
        self.forward_dtype = DTYPES[config.forward_dtype]

        hidden = config.hidden_size
        self.embed_scale = math.sqrt(hidden)
        embed_std = 1.0 / self.embed_scale
        self.state_embedding = CastedEmbedding(self.state_vocab_size, hidden, embed_std, self.forward_dtype)
        self.puzzle_cell_embedding = CastedEmbedding(self.vocab_size, hidden, embed_std, self.forward_dtype)
        self._build_structure_embeddings(embed_std)

        self.puzzle_prefix_len = 0
        if config.puzzle_emb_ndim > 0:
            self.puzzle_prefix_len = config.puzzle_emb_len or -(-config.puzzle_emb_ndim // hidden)
            if config.puzzle_emb_ndim > self.puzzle_prefix_len * hidden:
                raise ValueError(
                    f"puzzle_emb_ndim {config.puzzle_emb_ndim} does not fit in puzzle_emb_len "
                    f"{self.puzzle_prefix_len} x hidden_size {hidden}; raise puzzle_emb_len or set it to 0"
                )
            # Zero rows, as in TRM: an untrained puzzle identifier contributes nothing.
            self.puzzle_embedding = CastedSparseEmbedding(
                metadata.num_puzzle_identifiers, config.puzzle_emb_ndim, init_std=0.0, cast_to=self.forward_dtype
            )

        total_len = self.puzzle_prefix_len + self.seq_len
        if config.pos_encodings == "rope":
            self.rotary = RotaryEmbedding(hidden // config.num_heads, total_len, base=config.rope_theta)
        elif config.pos_encodings == "learned":
            self.position_embedding = CastedEmbedding(total_len, hidden, embed_std, self.forward_dtype)

        self.time_embedding = TimeEmbedding(config.time_frequency_size, config.time_condition_size)
        self.time_modulation = CastedLinear(config.time_condition_size, MODULATIONS_PER_BLOCK * hidden, bias=True)
        nn.init.zeros_(self.time_modulation.weight)
        self.blocks = nn.ModuleList(DenoiserBlock(config) for _ in range(config.num_layers))
        self.output_head = CastedLinear(hidden, self.state_vocab_size)

    def _build_structure_embeddings(self, init_std: float) -> None:
        """Create row and column tables (and box tables for Sudoku) and the table row of every cell.

        With structure embeddings off, the module list is empty and `structure_indices` has no rows.
        """
        self.structure_tables = nn.ModuleList()
        if not self.config.structure_embeddings:
            self.register_buffer("structure_indices", torch.zeros(0, self.seq_len, dtype=torch.int64), persistent=False)
            return
        rows, cols = self.task.grid_shape
        cell = torch.arange(rows * cols)
        indices = [cell // cols, cell % cols]
        sizes = [rows, cols]
        if isinstance(self.task, SudokuTask):
            box_rows, box_cols = self.task.box_shape
            indices.append((cell // cols // box_rows) * (cols // box_cols) + (cell % cols) // box_cols)
            sizes.append(rows * cols // (box_rows * box_cols))
        self.register_buffer("structure_indices", torch.stack(indices), persistent=False)  # [tables, L]
        for size in sizes:
            self.structure_tables.append(CastedEmbedding(size, self.config.hidden_size, init_std, self.forward_dtype))

    def forward(self, x_t: Tensor, t: Tensor, inputs: Tensor, puzzle_identifiers: Tensor | None = None) -> Tensor:
        """Predict the denoising posterior's logits.

        x_t: [B, L] int64 state ids in [0, state_vocab_size)
        t: [B] float in [0, 1]
        inputs: [B, L] int64 puzzle token ids
        puzzle_identifiers: [B] int64, required when the per-puzzle embedding is on
        Returns logits [B, L, state_vocab_size] float32.
        """
        h = self.state_embedding(x_t) + self.puzzle_cell_embedding(inputs)  # [B, L, D]
        for table, indices in zip(self.structure_tables, self.structure_indices):
            h = h + table(indices)
        if self.puzzle_prefix_len:
            if puzzle_identifiers is None:
                raise ValueError("puzzle_identifiers are required when puzzle_emb_ndim > 0")
            prefix = self.puzzle_embedding(puzzle_identifiers)  # [B, puzzle_emb_ndim]
            prefix = F.pad(prefix, (0, self.puzzle_prefix_len * self.config.hidden_size - prefix.shape[-1]))
            h = torch.cat([prefix.view(len(h), self.puzzle_prefix_len, -1), h], dim=1)  # [B, P + L, D]
        if self.config.pos_encodings == "learned":
            h = h + self.position_embedding.weight.to(h.dtype)
        h = self.embed_scale * h

        condition = F.silu(self.time_embedding(t, self.forward_dtype))
        modulation = self.time_modulation(condition).view(len(h), MODULATIONS_PER_BLOCK, -1)  # [B, 6, D]
        rotary = self.rotary() if self.config.pos_encodings == "rope" else None
        for block in self.blocks:
            h = block(h, modulation, rotary)

        h = rms_norm(h[:, self.puzzle_prefix_len :], self.config.rms_norm_eps)
        return self.output_head(h).float()

    def forward_flops_per_example(self) -> float:
        """Analytic FLOPs of one call for one example: 2 x the multiply-adds of every matmul.

        Counts the qkv, output and SwiGLU projections, the attention scores and weighted sum over the
        P + L tokens, the time MLP and modulation (once per example) and the output head on the L cells.
        Embedding lookups, normalisation and elementwise work are left out.
        """
        config = self.config
        hidden, tokens = config.hidden_size, self.puzzle_prefix_len + self.seq_len
        intermediate = swiglu_intermediate_size(hidden, config.expansion)
        projections = tokens * (4 * hidden * hidden + 3 * hidden * intermediate)
        attention = 2 * tokens * tokens * hidden
        time = (
            config.time_frequency_size * config.time_condition_size
            + config.time_condition_size**2
            + config.time_condition_size * MODULATIONS_PER_BLOCK * hidden
        )
        output = self.seq_len * hidden * self.state_vocab_size
        return 2.0 * (config.num_layers * (projections + attention) + time + output)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters outside embedding tables, embedding and output tables, and the puzzle table.

        "embedding_parameters" counts the state and puzzle-cell token tables, the structure and learned
        position tables, and the output head. The per-puzzle table is a buffer trained by sign-SGD.
        """
        tables = [self.state_embedding, self.puzzle_cell_embedding, self.output_head, *self.structure_tables]
        if self.config.pos_encodings == "learned":
            tables.append(self.position_embedding)
        embedding = sum(p.numel() for table in tables for p in table.parameters())
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        puzzle = self.puzzle_embedding.weights.numel() if self.puzzle_prefix_len else 0
        return {
            "parameters": total - embedding,
            "embedding_parameters": embedding,
            "puzzle_embedding_parameters": puzzle,
        }
