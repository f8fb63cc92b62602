"""Attention on CPU: the bf16 backward from matmuls against autograd of the reference formula."""

import pytest
import torch
import torch.nn.functional as F

import models.cpu_attention as cpu_attention
from models.cpu_attention import scaled_dot_product_attention
from models.layers import Attention


def attention_inputs(batch: int, heads: int, length: int, head_dim: int, dtype: torch.dtype, seed: int = 0):
    """q, k, v [B, H, L, Dh] that require grad, scaled so that softmax rows are far from uniform."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (2.0 * torch.randn(batch, heads, length, head_dim, generator=generator)).to(dtype).requires_grad_()
        for _ in range(3)
    ]


def reference_gradients(q, k, v, grad_out):
    """Gradients of softmax(q k^T / sqrt(Dh)) v by autograd in float64."""
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    scores = q64 @ k64.transpose(-2, -1) / q.shape[-1] ** 0.5
    (torch.softmax(scores, dim=-1) @ v64).backward(grad_out.double())
    return q64.grad, k64.grad, v64.grad


def relative_errors(grads, reference):
    return [((g.double() - r).abs().max() / r.abs().max()).item() for g, r in zip(grads, reference)]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bf16_with_grad_uses_matmul_backward():
    q, k, v = attention_inputs(2, 2, 16, 8, torch.bfloat16)
    out = scaled_dot_product_attention(q, k, v)
    assert type(out.grad_fn).__name__ == "_CPUFlashAttentionBackward"


@pytest.mark.parametrize(
    "dtype, causal, length, grad",
    [
        (torch.float32, False, 16, True),
        (torch.bfloat16, True, 16, True),
        (torch.bfloat16, False, cpu_attention.MATMUL_BACKWARD_MAX_LENGTH + 1, True),
        (torch.bfloat16, False, 16, False),
    ],
)
def test_other_cases_use_torch_kernel(dtype, causal, length, grad):
    q, k, v = attention_inputs(1, 2, length, 8, dtype)
    with torch.set_grad_enabled(grad):
        out = scaled_dot_product_attention(q, k, v, causal=causal)
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert torch.equal(out, expected)
    if grad:
        assert "_CPUFlashAttention" not in type(out.grad_fn).__name__


def test_bf16_forward_equals_torch_kernel():
    q, k, v = attention_inputs(3, 4, 97, 32, torch.bfloat16)
    assert torch.equal(scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_bf16_gradients_match_float64():
    q, k, v = attention_inputs(4, 4, 97, 32, torch.bfloat16, seed=1)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    reference = reference_gradients(q, k, v, grad_out)

    scaled_dot_product_attention(q, k, v).backward(grad_out)
    ours = relative_errors([q.grad, k.grad, v.grad], reference)
    for x in (q, k, v):
        x.grad = None
    F.scaled_dot_product_attention(q, k, v).backward(grad_out)
    kernel = relative_errors([q.grad, k.grad, v.grad], reference)

    for name, error, kernel_error in zip("qkv", ours, kernel):
        # bf16 keeps 8 significant bits, so errors of a few 1e-3 are rounding. Ours may exceed the kernel's by 1.5x.
        assert error < 2e-2, name
        assert error <= 1.5 * kernel_error + 1e-3, name


def test_chunked_backward_equals_one_chunk(monkeypatch):
    q, k, v = attention_inputs(5, 2, 24, 8, torch.bfloat16, seed=3)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    scaled_dot_product_attention(q, k, v).backward(grad_out)
    whole = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None

    monkeypatch.setattr(cpu_attention, "BACKWARD_CHUNK_ELEMENTS", 2 * 24 * 24 * 2)  # two batch rows per chunk
    scaled_dot_product_attention(q, k, v).backward(grad_out)
    for name, expected, x in zip("qkv", whole, (q, k, v)):
        torch.testing.assert_close(x.grad, expected, rtol=0, atol=1e-2, msg=f"grad of {name}")


def test_attention_layer_bf16_trains():
    layer = Attention(hidden_size=32, num_heads=4)
    x = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    out = layer(x)
    out.float().square().sum().backward()
    assert out.dtype == torch.bfloat16
    assert layer.qkv_proj.weight.grad is not None
    assert torch.isfinite(layer.qkv_proj.weight.grad).all()
