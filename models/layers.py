"""Transformer building blocks shared by TRM and the flow matching model.

Parameters are stored in fp32 and cast to the input's dtype at use, so one set of weights serves fp32
on CPU and bf16 on GPU. Shapes: B batch, L sequence length, D hidden size, H heads, Dh head size.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.cpu_attention import scaled_dot_product_attention

# Truncation at two standard deviations, as in JAX's truncated LeCun-normal initialiser.
TRUNCATION = 2.0


def _truncated_normal_std(bound: float) -> float:
    """Standard deviation of a standard normal truncated to [-bound, bound]."""
    density = math.exp(-0.5 * bound * bound) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    return math.sqrt(1.0 - 2.0 * bound * density / mass)


def trunc_normal_init_(tensor: Tensor, std: float) -> Tensor:
    """Fill `tensor` from a normal truncated at +-2 sigma whose standard deviation after truncation is `std`."""
    with torch.no_grad():
        nn.init.trunc_normal_(tensor, mean=0.0, std=1.0, a=-TRUNCATION, b=TRUNCATION)
        tensor.mul_(std / _truncated_normal_std(TRUNCATION))
    return tensor


def rms_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """RMS normalisation without a learned gain, computed in fp32 and cast back. x: [..., D]."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


class CastedLinear(nn.Module):
    """Linear layer with truncated LeCun-normal weights (std 1/sqrt(in_features)) and zero bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(out_features, in_features), 1.0 / math.sqrt(in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    """Embedding table with truncated-normal init whose output is cast to `cast_to`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), init_std))

    def forward(self, ids: Tensor) -> Tensor:
        """ids: [...] int64 -> [..., embedding_dim] in `cast_to`."""
        return F.embedding(ids, self.weight.to(self.cast_to))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding tables (rotate-half convention), cached in fp32 for `max_positions`."""

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # [L, Dh]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self) -> tuple[Tensor, Tensor]:
        """Return (cos, sin), each [L, Dh] fp32."""
        return self.cos, self.sin


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, H, L, Dh] by position with cos, sin [L, Dh]: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    # rotate_half(x) * sin = cat(-x2, x1) * sin = roll(x, half) * cat(-sin1, sin2), bit for bit; the roll is
    # one copy where the concatenation of a negated half takes two passes.
    signed_sin = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
    return x * cos.to(x.dtype) + x.roll(half, dims=-1) * signed_sin.to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention: a fused, bias-free qkv projection, rotary positions and fused attention."""

    def __init__(self, hidden_size: int, num_heads: int, causal: bool = False):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.causal = causal
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size)
        self.o_proj = CastedLinear(hidden_size, hidden_size)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x: [B, L, D] -> [B, L, D]; `rotary` is (cos, sin) [L, Dh] or None for no position encoding."""
        batch, length, _ = x.shape
        qkv = self.qkv_proj(x).view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, Dh]
        if rotary is not None:
            cos, sin = rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = scaled_dot_product_attention(q, k, v, causal=self.causal)  # [B, H, L, Dh]
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


def check_head_size(hidden_size: int, num_heads: int, pos_encodings: str) -> None:
    """Raise ValueError unless `num_heads` divides `hidden_size`, into an even head size when rotary is used."""
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    if pos_encodings == "rope" and (hidden_size // num_heads) % 2:
        raise ValueError(f"rope needs an even head size, got {hidden_size} // {num_heads}")


def swiglu_intermediate_size(hidden_size: int, expansion: float, multiple: int = 256) -> int:
    """Width of the SwiGLU hidden layer: 2/3 of `expansion` x hidden (parameter parity with a plain MLP),
    rounded up to a multiple of 256 for matmul efficiency (512 -> 1536 at expansion 4), and at least 256."""
    width = round(expansion * hidden_size * 2 / 3)
    return max(1, -(-width // multiple)) * multiple


class SwiGLU(nn.Module):
    """Gated feed-forward layer silu(gate) * up with one fused gate/up projection."""

    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        intermediate = swiglu_intermediate_size(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * intermediate)
        self.down_proj = CastedLinear(intermediate, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        """x: [..., D] -> [..., D]."""
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
