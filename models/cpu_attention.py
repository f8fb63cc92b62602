"""Scaled dot-product attention with a faster backward for bf16 on CPU.

In torch 2.13 the CPU flash-attention kernel's bf16 backward ran about 3x slower than its fp32 backward. It
took a fifth of a bf16 TRM training step at hidden 512 and a third at hidden 128 (97 tokens, one thread).
For short bf16 sequences that need gradients, `scaled_dot_product_attention` here keeps the kernel's forward
and computes the backward with fp32 matmuls. Every other call goes to
`torch.nn.functional.scaled_dot_product_attention` unchanged.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

# Maximum sequence length for which `_CPUFlashAttention` replaces the kernel's backward. Its [L, L] matmuls beat
# the kernel's bf16 backward on 97 tokens by about 2x, broke even near 160 and lost 2-3x at 256 to 900 tokens
# (torch 2.13 on a 2-core Xeon with AMX, one thread).
MATMUL_BACKWARD_MAX_LENGTH = 128
# Elements of the fp32 [batch, H, L, L] tensors that one chunk of that backward may hold (64 MiB each), which
# bounds its memory for any batch size.
BACKWARD_CHUNK_ELEMENTS = 1 << 24


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) v for q, k, v [B, H, L, Dh]; returns [B, H, L, Dh] in the inputs' dtype."""
    if _use_matmul_backward(q, k, v, causal):
        return _CPUFlashAttention.apply(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _use_matmul_backward(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> bool:
    """Decide whether `_CPUFlashAttention` runs: bf16 on CPU, non-causal, short sequences, gradients needed."""
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    short = q.shape[-2] <= MATMUL_BACKWARD_MAX_LENGTH
    return needs_grad and short and not causal and q.device.type == "cpu" and q.dtype == torch.bfloat16


class _CPUFlashAttention(torch.autograd.Function):
    """Non-causal attention with the CPU flash kernel's forward and a backward from fp32 matmuls.

    The forward is the kernel that `scaled_dot_product_attention` runs on CPU, so outputs are identical.
    The backward recomputes the probabilities from the kernel's log-sum-exp and forms the gradients with
    fp32 matmuls. Against a float64 reference its error was no larger than that of the kernel's bf16 backward.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
        ctx.save_for_backward(q, k, v, out, logsumexp)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v, out, logsumexp = ctx.saved_tensors
        batch, heads, length, _ = q.shape
        chunk = max(1, BACKWARD_CHUNK_ELEMENTS // (heads * length * length))
        if chunk >= batch:
            grads = _attention_backward(q, k, v, out, logsumexp, grad_out)
            return tuple(grad.to(q.dtype) for grad in grads)
        chunks = [
            _attention_backward(q[rows], k[rows], v[rows], out[rows], logsumexp[rows], grad_out[rows])
            for rows in (slice(start, start + chunk) for start in range(0, batch, chunk))
        ]
        return tuple(torch.cat(parts).to(q.dtype) for parts in zip(*chunks))


def _attention_backward(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, logsumexp: Tensor, grad_out: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (q, k, v) [B, H, L, Dh] fp32 of softmax(q k^T / sqrt(Dh)) v; logsumexp [B, H, L] fp32.

    The scale is folded into the [L, Dh] operands and the [L, L] tensors are updated in place, because on
    CPU each pass over a [B, H, L, L] tensor costs about as much as one of the matmuls.
    """
    scale = q.shape[-1] ** -0.5
    q, k, v, out, grad_out = (x.to(torch.float32, memory_format=torch.contiguous_format) for x in (q, k, v, out, grad_out))
    q_scaled, k_scaled = q * scale, k * scale
    probs = torch.matmul(q_scaled, k.transpose(-2, -1)).sub_(logsumexp.unsqueeze(-1)).exp_()  # [B, H, L, L]
    grad_v = torch.matmul(probs.transpose(-2, -1), grad_out)
    # Softmax backward: rowsum(probs * grad_probs) equals rowsum(out * grad_out), the cheaper of the two.
    row_dot = (grad_out * out).sum(-1, keepdim=True)  # [B, H, L, 1]
    grad_scores = torch.matmul(grad_out, v.transpose(-2, -1)).sub_(row_dot).mul_(probs)  # [B, H, L, L]
    grad_q = torch.matmul(grad_scores, k_scaled)
    grad_k = torch.matmul(grad_scores.transpose(-2, -1), q_scaled)
    return grad_q, grad_k, grad_v
