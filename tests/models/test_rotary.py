"""Rotary position embedding: the roll-based implementation against the rotate-half formula it replaces."""

import pytest
import torch

from models.layers import RotaryEmbedding, apply_rotary


def rotate_half_formula(x, cos, sin):
    """x * cos + cat(-x2, x1) * sin, the textbook rotate-half form."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_equals_formula_bitwise(dtype):
    cos, sin = RotaryEmbedding(head_dim=16, max_positions=12)()
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(3, 12, 3, 2, 16, generator=generator).to(dtype)  # [B, L, 3, H, Dh], as the qkv projection
    grad_out = torch.randn(3, 2, 12, 16, generator=generator).to(dtype)

    results = []
    for rotate in (apply_rotary, rotate_half_formula):
        source = qkv.clone().requires_grad_()
        q = source.permute(2, 0, 3, 1, 4)[0]  # [B, H, L, Dh] view
        out = rotate(q, cos, sin)
        out.backward(grad_out)
        results.append((out.detach(), source.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_rotary_keeps_norms():
    cos, sin = RotaryEmbedding(head_dim=8, max_positions=5)()
    x = torch.randn(2, 3, 5, 8, dtype=torch.float32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
