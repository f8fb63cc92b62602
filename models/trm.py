"""Tiny Recursive Model (TRM, arXiv 2510.04871) with adaptive computation time over supervision steps.

Notation: the paper's answer embedding y is `z_H` and its latent z is `z_L`, the names of the reference
code and of its HRM ancestor. One call of the network `net(h, injection)` adds the injection once and runs
`L_layers` post-norm blocks. One H-cycle updates z_L `L_cycles` times from (z_L, z_H + x) and then z_H once
from (z_H, z_L). A supervision step runs `H_cycles` H-cycles, only the last one with gradient.

Shapes: B batch, L seq_len, P puzzle_emb prefix length, T = P + L, D hidden_size, V vocab_size.
"""

import math
from dataclasses import dataclass
from typing import Literal

import pydantic
import torch
from pydantic import ConfigDict, Field
from torch import Tensor, nn

from dataset.common import PuzzleDatasetMetadata
from models.head import Batch, Carry, GlobalBatchRandom
from models.layers import (
    Attention,
    CastedEmbedding,
    CastedLinear,
    RotaryEmbedding,
    SwiGLU,
    check_head_size,
    rms_norm,
    trunc_normal_init_,
)
from models.sparse_embedding import CastedSparseEmbedding

# Initial bias of both Q logits: sigmoid(-5) is about 0.007, so the untrained model almost never halts early
# and every example first gets the full deep supervision.
Q_HEAD_INIT_BIAS = -5.0

DATA_KEYS = ("inputs", "labels", "puzzle_identifiers")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class TRMConfig(pydantic.BaseModel):
    """The `arch` keys of a TRM run (the reference's names, so its command lines work)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["trm"] = Field("trm", description="Registry name of this architecture.")
    hidden_size: int = Field(512, gt=0, description="Width D of every token vector.")
    num_heads: int = Field(8, gt=0, description="Attention heads, which must divide hidden_size.")
    expansion: float = Field(4.0, gt=0, description="SwiGLU width factor before the 2/3 rule and rounding to 256.")
    H_cycles: int = Field(
        3, ge=1, description="H-cycles per supervision step (the paper's T); only the last has gradient."
    )
    L_cycles: int = Field(6, ge=1, description="z_L updates per H-cycle (the paper's n).")
    L_layers: int = Field(2, ge=1, description="Blocks in the one network that every update runs.")
    halt_max_steps: int = Field(16, ge=1, description="Maximum supervision steps per example (the paper's N_sup).")
    halt_exploration_prob: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Per-example probability of a random minimum of 2..halt_max_steps steps in training.",
    )
    mlp_t: bool = Field(False, description="Mix tokens with a SwiGLU over the sequence axis instead of attention.")
    pos_encodings: Literal["rope", "learned", "none"] = Field(
        "rope", description="Rotary positions in attention, a learned position table added to the input, or none."
    )
    puzzle_emb_ndim: int = Field(512, ge=0, description="Width of the per-puzzle embedding; 0 disables the prefix.")
    puzzle_emb_len: int = Field(
        16, ge=0, description="Prefix tokens holding the puzzle embedding; 0 means ceil(puzzle_emb_ndim / hidden_size)."
    )
    forward_dtype: Literal["float32", "bfloat16"] = Field(
        "bfloat16", description="Compute dtype; parameters stay fp32."
    )
    rms_norm_eps: float = Field(1e-5, gt=0, description="Epsilon of the gain-free RMS norms.")
    rope_theta: float = Field(10000.0, gt=0, description="Base of the rotary frequencies.")
    no_ACT_continue: bool = Field(
        True, description="Halt when q_halt > 0 and train no Q-continue head; False uses q_halt > q_continue."
    )

    @pydantic.model_validator(mode="after")
    def _check_combinations(self) -> "TRMConfig":
        check_head_size(self.hidden_size, self.num_heads, self.pos_encodings)
        if self.mlp_t and self.pos_encodings == "rope":
            raise ValueError("mlp_t=True has no attention to apply rope in; set pos_encodings to 'none' or 'learned'")
        if self.puzzle_emb_ndim > self.prefix_len * self.hidden_size:
            raise ValueError(
                f"puzzle_emb_ndim {self.puzzle_emb_ndim} does not fit in puzzle_emb_len {self.puzzle_emb_len} "
                f"tokens of hidden_size {self.hidden_size}; raise puzzle_emb_len or set it to 0"
            )
        return self

    @property
    def prefix_len(self) -> int:
        """Prefix tokens P actually used: 0 without a puzzle embedding, else puzzle_emb_len or its default."""
        if self.puzzle_emb_ndim == 0:
            return 0
        if self.puzzle_emb_len == 0:
            return -(-self.puzzle_emb_ndim // self.hidden_size)
        return self.puzzle_emb_len

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.forward_dtype]


@dataclass
class ACTStepOutputs:
    """Outputs of one supervision step."""

    logits: Tensor
    """[B, L, V] in the forward dtype, prefix positions dropped."""
    q_halt_logits: Tensor
    """[B] fp32."""
    q_continue_logits: Tensor
    """[B] fp32."""
    target_q_continue: Tensor | None = None
    """[B] fp32 in [0, 1]; only in training with no_ACT_continue=False and halt_max_steps > 1."""


class TRMBlock(nn.Module):
    """Post-norm block: token mixing (attention, or a SwiGLU over positions with mlp_t) then a channel SwiGLU."""

    def __init__(self, config: TRMConfig, total_len: int):
        super().__init__()
        self.eps = config.rms_norm_eps
        self.self_attn = None if config.mlp_t else Attention(config.hidden_size, config.num_heads)
        self.mlp_t = SwiGLU(total_len, config.expansion) if config.mlp_t else None
        self.mlp = SwiGLU(config.hidden_size, config.expansion)

    def forward(self, h: Tensor, rotary: tuple[Tensor, Tensor] | None) -> Tensor:
        """h: [B, T, D] -> [B, T, D]; `rotary` is (cos, sin) [T, D/heads] or None."""
        if self.mlp_t is not None:
            # NOTE: the residual and norm run on the transposed [B, D, T] tensor, so this norm is over the
            # sequence axis. The TRM reference code does the same, and its published 87.4% on Sudoku-Extreme
            # was trained that way, so the quirk is kept.
            h_t = h.transpose(1, 2)
            h = rms_norm(h_t + self.mlp_t(h_t), self.eps).transpose(1, 2)
        else:
            h = rms_norm(h + self.self_attn(h, rotary), self.eps)
        return rms_norm(h + self.mlp(h), self.eps)


class TinyRecursiveReasoningModel(nn.Module):
    """TRM: one small network applied recursively to (x, z_H, z_L), with a halting (Q) head.

    `forward` runs one supervision step on an ACT carry (see `initial_carry`). Its pieces `embed_input`,
    `recurse` and `read_out` are public because `ACTLossHead.predict` drives them past halt_max_steps.
    """

    config_class = TRMConfig

    def __init__(self, config: TRMConfig, metadata: PuzzleDatasetMetadata):
        super().__init__()
        if metadata.vocab_size < 1 or metadata.seq_len < 1:
            raise ValueError(
                f"metadata needs vocab_size and seq_len >= 1, got {metadata.vocab_size}, {metadata.seq_len}"
            )
        if config.puzzle_emb_ndim > 0 and metadata.num_puzzle_identifiers < 1:
            raise ValueError("metadata has no puzzle identifiers but puzzle_emb_ndim > 0; set puzzle_emb_ndim=0")
        self.config = config
        self.seq_len = metadata.seq_len
        self.vocab_size = metadata.vocab_size
        self.prefix_len = config.prefix_len
        self.total_len = self.prefix_len + metadata.seq_len
        hidden, dtype = config.hidden_size, config.dtype

        # Input embeddings: tokens, the puzzle prefix and positions, all scaled by sqrt(D) to unit size.
        self.embed_scale = math.sqrt(hidden)
        self.embed_tokens = CastedEmbedding(self.vocab_size, hidden, init_std=1.0 / self.embed_scale, cast_to=dtype)
        self.puzzle_emb = None
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = CastedSparseEmbedding(
                metadata.num_puzzle_identifiers, config.puzzle_emb_ndim, init_std=0.0, cast_to=dtype
            )
        self.embed_pos = None
        if config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(self.total_len, hidden, init_std=1.0 / self.embed_scale, cast_to=dtype)
        self.rotary = None
        if config.pos_encodings == "rope":
            self.rotary = RotaryEmbedding(hidden // config.num_heads, self.total_len, base=config.rope_theta)

        self.layers = nn.ModuleList(TRMBlock(config, self.total_len) for _ in range(config.L_layers))
        self.lm_head = CastedLinear(hidden, self.vocab_size)
        self.q_head = CastedLinear(hidden, 2, bias=True)
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(Q_HEAD_INIT_BIAS)

        # Fixed starting latents, broadcast to every position on a reset and never trained.
        self.register_buffer("z_H_init", trunc_normal_init_(torch.empty(hidden), std=1.0))
        self.register_buffer("z_L_init", trunc_normal_init_(torch.empty(hidden), std=1.0))

    # ------------------------------------------------------------------------------------------
    # Pieces of one supervision step

    def embed_input(self, inputs: Tensor, puzzle_identifiers: Tensor) -> Tensor:
        """Embed inputs [B, L] int and puzzle_identifiers [B] int into x [B, T, D] in the forward dtype."""
        if inputs.ndim != 2 or inputs.shape[1] != self.seq_len:
            raise ValueError(f"inputs must have shape [batch, {self.seq_len}], got {tuple(inputs.shape)}")
        x = self.embed_tokens(inputs)
        if self.puzzle_emb is not None:
            rows = self.puzzle_emb(puzzle_identifiers)  # [B, puzzle_emb_ndim]
            padding = self.prefix_len * self.config.hidden_size - rows.shape[-1]
            prefix = nn.functional.pad(rows, (0, padding)).view(len(rows), self.prefix_len, -1)  # [B, P, D]
            x = torch.cat([prefix, x], dim=1)
        if self.embed_pos is not None:
            # Scaling by 1/sqrt(2) keeps the sum of two unit-variance embeddings at unit variance.
            x = (x + self.embed_pos.weight.to(x.dtype)) / math.sqrt(2)
        return self.embed_scale * x

    def initial_latents(self, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Return the starting (z_H, z_L), each [batch_size, T, D] in the forward dtype."""
        shape = (batch_size, self.total_len, self.config.hidden_size)
        z_H = self.z_H_init.to(device=device, dtype=self.config.dtype).expand(shape)
        z_L = self.z_L_init.to(device=device, dtype=self.config.dtype).expand(shape)
        return z_H, z_L

    def recurse(self, z_H: Tensor, z_L: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run the H_cycles of one supervision step; z_H, z_L, x: [B, T, D]. Only the last cycle keeps a graph."""
        with torch.no_grad():
            for _ in range(self.config.H_cycles - 1):
                z_H, z_L = self._h_cycle(z_H, z_L, x)
        return self._h_cycle(z_H, z_L, x)

    def read_out(self, z_H: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return logits [B, L, V] (forward dtype) and fp32 q_halt, q_continue logits [B] from z_H [B, T, D]."""
        logits = self.lm_head(z_H[:, self.prefix_len :])
        q_halt, q_continue = self.q_logits(z_H)
        return logits, q_halt, q_continue

    def q_logits(self, z_H: Tensor) -> tuple[Tensor, Tensor]:
        """Q logits (halt, continue), each [B] fp32, read from the first position of z_H [B, T, D]."""
        q = self.q_head(z_H[:, 0]).float()
        return q[:, 0], q[:, 1]

    def halt_decision(self, q_halt: Tensor, q_continue: Tensor) -> Tensor:
        """Decide where the Q head votes to halt, [B] bool: q_halt > 0, or q_halt > q_continue with Q-continue."""
        if self.config.no_ACT_continue:
            return q_halt > 0
        return q_halt > q_continue

    def _h_cycle(self, z_H: Tensor, z_L: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        for _ in range(self.config.L_cycles):
            z_L = self._net(z_L, z_H + x)
        z_H = self._net(z_H, z_L)
        return z_H, z_L

    def _net(self, h: Tensor, injection: Tensor) -> Tensor:
        rotary = self.rotary() if self.rotary is not None else None
        h = h + injection
        for layer in self.layers:
            h = layer(h, rotary)
        return h

    # ------------------------------------------------------------------------------------------
    # ACT over supervision steps

    def initial_carry(self, batch: Batch) -> Carry:
        """Create a carry in which every slot is halted, so the first step loads the whole batch.

        Keys: z_H, z_L [B, T, D] forward dtype; steps [B] int32; halted [B] bool; and the slot's current
        inputs, labels [B, L] and puzzle_identifiers [B] as in the batch.
        """
        inputs = batch["inputs"]
        latent = torch.zeros(
            len(inputs), self.total_len, self.config.hidden_size, dtype=self.config.dtype, device=inputs.device
        )
        carry = {
            "z_H": latent,
            "z_L": latent.clone(),
            "steps": torch.zeros(len(inputs), dtype=torch.int32, device=inputs.device),
            "halted": torch.ones(len(inputs), dtype=torch.bool, device=inputs.device),
        }
        carry.update({key: torch.zeros_like(batch[key]) for key in DATA_KEYS})
        return carry

    def forward(self, carry: Carry, batch: Batch, rng: GlobalBatchRandom) -> tuple[Carry, ACTStepOutputs]:
        """Run one supervision step on every slot.

        Slots that halted on the previous step restart from the initial latents with this batch's example.
        The other slots continue on their own example, and this batch's row for them is not used. Every slot
        halts after halt_max_steps steps. In training with halt_max_steps > 1, a slot also halts earlier when
        the Q head votes so, unless exploration requires more steps. Exploration is drawn from `rng` only:
        first `rng.rand()`, then `rng.randint(2, halt_max_steps + 1)`. In eval mode only the step count
        decides.
        """
        halted = carry["halted"]
        if len(halted) != len(batch["inputs"]):
            raise ValueError(f"carry has {len(halted)} slots but the batch has {len(batch['inputs'])} rows")

        init_H, init_L = self.initial_latents(len(halted), halted.device)
        reset = halted.view(-1, 1, 1)
        z_H = torch.where(reset, init_H, carry["z_H"])
        z_L = torch.where(reset, init_L, carry["z_L"])
        data = {key: _where_rows(halted, batch[key], carry[key]) for key in DATA_KEYS}
        steps = torch.where(halted, 0, carry["steps"]) + 1

        x = self.embed_input(data["inputs"], data["puzzle_identifiers"])
        z_H, z_L = self.recurse(z_H, z_L, x)
        logits, q_halt, q_continue = self.read_out(z_H)
        outputs = ACTStepOutputs(logits=logits, q_halt_logits=q_halt, q_continue_logits=q_continue)

        with torch.no_grad():
            is_last_step = steps >= self.config.halt_max_steps
            halted = is_last_step
            if self.training and self.config.halt_max_steps > 1:
                halted = halted | self.halt_decision(q_halt, q_continue)
                explore = rng.rand() < self.config.halt_exploration_prob
                min_halt_steps = torch.where(explore, rng.randint(2, self.config.halt_max_steps + 1), 0)
                halted = halted & (steps >= min_halt_steps)
                if not self.config.no_ACT_continue:
                    outputs.target_q_continue = self._q_continue_target(z_H, z_L, x, is_last_step)

        new_carry = {"z_H": z_H.detach(), "z_L": z_L.detach(), "steps": steps.to(torch.int32), "halted": halted}
        new_carry.update(data)
        return new_carry, outputs

    def _q_continue_target(self, z_H: Tensor, z_L: Tensor, x: Tensor, is_last_step: Tensor) -> Tensor:
        """Bootstrapped Q-learning target of continuing, [B] fp32, from one more step on the same example.

        As in HRM: sigmoid of the next step's q_halt on the last step, else of max(next q_halt, next q_continue).
        """
        with torch.no_grad():
            next_z_H, _ = self.recurse(z_H.detach(), z_L.detach(), x.detach())
            next_halt, next_continue = self.q_logits(next_z_H)
        return torch.sigmoid(torch.where(is_last_step, next_halt, torch.maximum(next_halt, next_continue)))

    # ------------------------------------------------------------------------------------------
    # Analytic compute: 2 FLOPs per multiply-add of every matmul, per example

    def network_call_flops(self) -> float:
        """FLOPs of one `net` call (L_layers blocks over T tokens); norms, adds and softmax are not counted."""
        tokens, hidden = self.total_len, self.config.hidden_size
        block = self.layers[0]
        channel_mlp = 2 * tokens * _swiglu_macs(block.mlp)
        if block.mlp_t is not None:
            mixing = 2 * hidden * _swiglu_macs(block.mlp_t)
        else:
            projections = tokens * (block.self_attn.qkv_proj.weight.numel() + block.self_attn.o_proj.weight.numel())
            scores_and_values = 2 * tokens * tokens * hidden
            mixing = 2 * (projections + scores_and_values)
        return float(self.config.L_layers * (mixing + channel_mlp))

    def head_flops(self) -> float:
        """FLOPs of the output head over the L sequence positions plus the Q head at one position."""
        return float(2 * self.seq_len * self.lm_head.weight.numel() + 2 * self.q_head.weight.numel())

    def forward_flops_per_example(self) -> float:
        """FLOPs of one supervision step without gradient: H_cycles * (L_cycles + 1) network calls plus heads."""
        calls = self.config.H_cycles * (self.config.L_cycles + 1)
        return calls * self.network_call_flops() + self.head_flops()

    def train_flops_per_example(self) -> float:
        """FLOPs of one training supervision step, counting a backward pass as twice its forward.

        The first H_cycles - 1 cycles run forward only; the last cycle and the heads run forward and backward.
        With Q-continue, the target's extra no-grad supervision step is added.
        """
        calls_per_cycle = self.config.L_cycles + 1
        no_grad_flops = (self.config.H_cycles - 1) * calls_per_cycle * self.network_call_flops()
        grad_flops = 3 * (calls_per_cycle * self.network_call_flops() + self.head_flops())
        target_flops = 0.0
        if not self.config.no_ACT_continue and self.config.halt_max_steps > 1:
            target_flops = self.config.H_cycles * calls_per_cycle * self.network_call_flops()
        return no_grad_flops + grad_flops + target_flops


def _where_rows(condition: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Take rows of `new` where condition [B] is True, else of `old`; new, old: [B, ...]."""
    return torch.where(condition.view(-1, *[1] * (new.ndim - 1)), new, old)


def _swiglu_macs(mlp: SwiGLU) -> int:
    """Multiply-adds of a SwiGLU per input vector (its weight count, as it has no bias)."""
    return mlp.gate_up_proj.weight.numel() + mlp.down_proj.weight.numel()
