"""Learning-rate schedule, optimiser construction and EMA."""

import math

import pytest
import torch
from torch import nn

from training.ema import EMA
from training.optim import cosine_schedule_lr


def test_warmup_starts_above_zero_and_reaches_peak():
    lrs = [cosine_schedule_lr(step, 1.0, warmup_steps=4, total_steps=10, min_ratio=0.1) for step in range(4)]
    assert lrs[0] == pytest.approx(0.25)
    assert lrs[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs, lrs[1:]))


def test_cosine_decays_to_min_ratio():
    assert cosine_schedule_lr(4, 2.0, warmup_steps=4, total_steps=10, min_ratio=0.1) == pytest.approx(2.0)
    midpoint = cosine_schedule_lr(7, 2.0, warmup_steps=4, total_steps=10, min_ratio=0.1)
    assert midpoint == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert cosine_schedule_lr(10, 2.0, warmup_steps=4, total_steps=10, min_ratio=0.1) == pytest.approx(0.2)
    assert cosine_schedule_lr(50, 2.0, warmup_steps=4, total_steps=10, min_ratio=0.1) == pytest.approx(0.2)


def test_min_ratio_one_is_constant_after_warmup():
    values = [cosine_schedule_lr(step, 3e-4, 2, 100, 1.0) for step in range(2, 100)]
    assert values == pytest.approx([3e-4] * len(values))


def test_ema_tracks_average_and_swaps_back():
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = EMA(layer, rate=0.5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update()
    assert torch.allclose(ema.shadow["weight"], torch.full((2, 2), 0.5))

    with ema.swapped_in():
        assert torch.allclose(layer.weight, torch.full((2, 2), 0.5))
    assert torch.allclose(layer.weight, torch.ones(2, 2))


def test_ema_state_mismatch_raises():
    ema = EMA(nn.Linear(2, 2), rate=0.9)
    with pytest.raises(ValueError, match="missing"):
        ema.load_state_dict({"weight": torch.zeros(2, 2)})
