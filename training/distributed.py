"""Process groups, devices and collective helpers for one process or `torchrun` (NCCL on CUDA, gloo on CPU)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from training.config import ConfigError


@dataclass(frozen=True)
class DistributedInfo:
    """Rank, world size and device of this process."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """Pick the device for `requested` in {auto, cpu, cuda, cuda:N, mps}; auto prefers CUDA, then CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"device={requested} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={requested} requested but CUDA is not available; use device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={requested} requested but only {torch.cuda.device_count()} CUDA devices exist")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={requested} requested but MPS is not available; use device=cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={requested} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


@contextmanager
def distributed_context(requested_device: str) -> Iterator[DistributedInfo]:
    """Set up the process group when launched by torchrun (LOCAL_RANK set), and tear it down afterwards.

    Multi-node runs use torchrun's usual rendezvous arguments; nothing here is node-specific.
    """
    if "LOCAL_RANK" not in os.environ:
        yield DistributedInfo(rank=0, world_size=1, local_rank=0, device=resolve_device(requested_device))
        return

    local_rank = int(os.environ["LOCAL_RANK"])
    device = resolve_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    if device.type == "cpu":
        # Ranks on one host share its cores; without this each rank starts one thread per core.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    try:
        yield DistributedInfo(
            rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device
        )
    finally:
        dist.destroy_process_group()


def all_reduce_sum_(tensors: list[Tensor]) -> None:
    """Sum tensors over ranks in place, with one collective call for the whole list."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for tensor in tensors:
        count = tensor.numel()
        tensor.copy_(flat[offset : offset + count].view_as(tensor))
        offset += count


def all_reduce_gradients_(parameters: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of `parameters` over ranks; the loss is pre-divided by the global batch size."""
    all_reduce_sum_([p.grad for p in parameters if p.grad is not None])


def broadcast_module_(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def broadcast_object(value: object) -> object:
    """Send rank 0's picklable `value` to every rank and return it."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gather_tensors(tensor: Tensor) -> list[Tensor]:
    """Gather a same-shaped tensor from every rank, in rank order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [tensor]
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return gathered
