"""Per-puzzle embedding table trained by sign-SGD on the rows a batch touches.

The table can have millions of rows (one per augmented ARC puzzle), so it is a buffer rather than a
parameter: Adam state and dense gradients for it would cost several times its size. In training the forward
copies the batch's rows into a small `local_weights` buffer that requires grad, and
`CastedSparseEmbeddingSignSGD` folds that gradient back into the rows it came from.
"""

from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from models.layers import trunc_normal_init_


class CastedSparseEmbedding(nn.Module):
    """Embedding table kept as an fp32 buffer, read in `cast_to`, trained by `CastedSparseEmbeddingSignSGD`.

    Buffers, in the order the optimizer expects them:
        weights        [num_embeddings, embedding_dim] fp32, persistent (saved in checkpoints)
        local_weights  [B, embedding_dim] fp32, the rows of the last training batch; receives their gradient
        local_ids      [B] int64, the table rows that `local_weights` were copied from
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError(
                f"sparse embedding needs at least one row and one column, got {num_embeddings} x {embedding_dim}"
            )
        self.cast_to = cast_to
        self.register_buffer("weights", trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), init_std))
        self.register_buffer("local_weights", torch.zeros(0, embedding_dim), persistent=False)
        self.register_buffer("local_ids", torch.zeros(0, dtype=torch.int64), persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        """Look up rows: ids [B] int -> [B, embedding_dim] in `cast_to`.

        In training mode the rows are copied into `local_weights`, which then requires grad, and any gradient
        left from an earlier forward is dropped, so run the optimizer step between two training forwards.
        """
        if not self.training:
            return self.weights[ids].to(self.cast_to)

        with torch.no_grad():
            self.local_weights.set_(self.weights[ids])
            self.local_ids.set_(ids.to(torch.int64))
        # set_ changes the shape when the batch size changes. Autograd would broadcast a stale gradient of the
        # old shape into the new one without an error, so the old gradient is dropped.
        self.local_weights.grad = None
        self.local_weights.requires_grad_(True)
        return self.local_weights.to(self.cast_to)


class CastedSparseEmbeddingSignSGD(torch.optim.Optimizer):
    """Sign-SGD with decoupled weight decay on the rows of a `CastedSparseEmbedding` that the last batch used.

    `params` is a list of `CastedSparseEmbedding` modules (one parameter group each) or the usual tensors or
    group dicts, where every group contains exactly the three buffers of one embedding in the order of
    `CastedSparseEmbedding.buffers()`: (weights, local_weights, local_ids). Build the optimizer after the model
    is on its device, because moving a module replaces its buffers.

    A step gathers every rank's local gradients and ids when `torch.distributed` is initialised with more than
    one process (every rank must then have the same local batch size), sums the gradients of repeated ids,
    and updates only those rows: w <- w * (1 - lr * weight_decay) - lr * sign(g). Rows that are touched but
    have a zero gradient still decay.
    """

    def __init__(
        self,
        params: Iterable[CastedSparseEmbedding] | Iterable[Tensor] | Iterable[dict],
        lr: float = 0.0,
        weight_decay: float = 0.0,
    ):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        params = list(params)
        if params and all(isinstance(item, CastedSparseEmbedding) for item in params):
            params = [{"params": list(embedding.buffers())} for embedding in params]
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        for index, group in enumerate(self.param_groups):
            _check_group(group["params"], index)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Update the rows used since the last step; groups whose local rows have no gradient are skipped."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            weights, local_weights, local_ids = group["params"]
            if local_weights.grad is None:
                continue
            grads, ids = _gather_from_ranks(local_weights.grad, local_ids)
            unique_ids, position = torch.unique(ids, return_inverse=True)
            summed = torch.zeros(len(unique_ids), grads.shape[1], dtype=grads.dtype, device=grads.device)
            summed.index_add_(0, position, grads)

            lr, decay = group["lr"], group["weight_decay"]
            rows = weights[unique_ids] * (1.0 - lr * decay) - lr * summed.sign().to(weights.dtype)
            weights[unique_ids] = rows
        return loss


def _check_group(params: list[Tensor], index: int) -> None:
    """Raise ValueError unless a group contains (weights, local_weights, local_ids) of one sparse embedding."""
    if len(params) != 3:
        raise ValueError(
            f"param group {index}: expected the 3 buffers (weights, local_weights, local_ids) of one "
            f"CastedSparseEmbedding, got {len(params)} tensors; pass `embedding.buffers()`"
        )
    weights, local_weights, local_ids = params
    if weights.ndim != 2 or local_weights.ndim != 2 or not weights.is_floating_point():
        raise ValueError(
            f"param group {index}: weights and local_weights must be 2-D float tensors, "
            f"got shapes {tuple(weights.shape)} and {tuple(local_weights.shape)}"
        )
    if local_weights.shape[1] != weights.shape[1]:
        raise ValueError(
            f"param group {index}: local_weights width {local_weights.shape[1]} differs from "
            f"weights width {weights.shape[1]}"
        )
    if local_ids.ndim != 1 or local_ids.is_floating_point():
        raise ValueError(f"param group {index}: local_ids must be a 1-D integer tensor, got {local_ids.dtype}")


def _gather_from_ranks(grads: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate grads [B, D] and ids [B] of every rank in rank order; no communication with one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return grads, ids
    world_size = dist.get_world_size()
    all_grads = [torch.empty_like(grads) for _ in range(world_size)]
    all_ids = [torch.empty_like(ids) for _ in range(world_size)]
    dist.all_gather(all_grads, grads.contiguous())
    dist.all_gather(all_ids, ids.contiguous())
    return torch.cat(all_grads), torch.cat(all_ids)
