"""Optimisers of the weights and of the per-puzzle embeddings, and the shared learning-rate schedule."""

import math

import torch
from torch import nn

from models.sparse_embedding import CastedSparseEmbedding, CastedSparseEmbeddingSignSGD
from training.config import PretrainConfig


def cosine_schedule_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay to base * min_ratio.

    Warmup reaches base_lr at step warmup_steps - 1, so the first step never uses lr = 0. With
    min_ratio = 1 (the reference default) the decay is flat.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class OptimizerSet:
    """The optimisers of one run, each with its own peak lr, stepped together under one schedule."""

    def __init__(self, head: nn.Module, config: PretrainConfig):
        self.config = config
        self.weights = [p for p in head.parameters() if p.requires_grad]
        self.optimizers: list[torch.optim.Optimizer] = []
        self.base_lrs: list[float] = []

        sparse = [m for m in head.modules() if isinstance(m, CastedSparseEmbedding)]
        if sparse:
            self.optimizers.append(
                CastedSparseEmbeddingSignSGD(
                    sparse, lr=config.puzzle_emb_lr, weight_decay=config.puzzle_emb_weight_decay
                )
            )
            self.base_lrs.append(config.puzzle_emb_lr)
        self.optimizers.append(self._build_weight_optimizer())
        self.base_lrs.append(config.lr)

    def _build_weight_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        betas = (config.beta1, config.beta2)
        if config.optimizer == "adamw":
            return torch.optim.AdamW(self.weights, lr=config.lr, betas=betas, weight_decay=config.weight_decay)
        try:
            from adam_atan2_pytorch import AdamAtan2
        except ImportError as error:
            raise ImportError("optimizer=adam_atan2 needs adam-atan2-pytorch: pip install adam-atan2-pytorch") from error
        # a = b = 1 gives the update lr * atan2(m_hat, sqrt(v_hat)) of the reference's CUDA AdamATan2. The
        # lr given here is only the initial value (this package rejects lr = 0); set_step overwrites it.
        return AdamAtan2(self.weights, lr=config.lr, betas=betas, weight_decay=config.weight_decay, a=1.0, b=1.0)

    def set_step(self, step: int, total_steps: int) -> float:
        """Set every optimiser's lr for `step`; returns the weights' lr."""
        lr = 0.0
        for optimizer, base_lr in zip(self.optimizers, self.base_lrs):
            lr = cosine_schedule_lr(step, base_lr, self.config.lr_warmup_steps, total_steps, self.config.lr_min_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != len(self.optimizers):
            raise ValueError(f"checkpoint has {len(states)} optimizer states, this run builds {len(self.optimizers)}")
        for optimizer, state in zip(self.optimizers, states):
            optimizer.load_state_dict(state)
        # load_state_dict restores the saved hyperparameters; the run's config decides them instead, so a
        # resumed run can change weight decay or betas.
        weights = self.optimizers[-1]
        for group in weights.param_groups:
            group["weight_decay"] = self.config.weight_decay
            group["betas"] = (self.config.beta1, self.config.beta2)
        for optimizer in self.optimizers[:-1]:
            for group in optimizer.param_groups:
                group["weight_decay"] = self.config.puzzle_emb_weight_decay
