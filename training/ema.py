"""Exponential moving average of the trainable weights, swapped in for evaluation and export."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class EMA:
    """Shadow copy of a module's trainable parameters: shadow <- rate * shadow + (1 - rate) * weight.

    Buffers (the per-puzzle embedding table, fixed initial latents) are not averaged, as in the reference.
    """

    def __init__(self, module: nn.Module, rate: float):
        self.module = module
        self.rate = rate
        self.shadow: dict[str, Tensor] = {
            name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self) -> None:
        names = list(self.shadow)
        params = dict(self.module.named_parameters())
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach() for n in names], 1.0 - self.rate)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the module (for evaluation or export)."""
        params = dict(self.module.named_parameters())
        saved = {name: params[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.shadow):
            missing, unexpected = set(self.shadow) - set(state), set(state) - set(self.shadow)
            raise ValueError(f"EMA state does not match the model: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        with torch.no_grad():
            for name, value in state.items():
                self.shadow[name].copy_(value)
