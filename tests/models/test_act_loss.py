"""Tests of the token losses and of the ACT loss head: losses and metrics on hand-made outputs, and predict."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.head import IGNORE_LABEL
from models.layers import CastedLinear, rms_norm
from models.losses import (
    ACTEvalOptions,
    ACTLossConfig,
    softmax_cross_entropy,
    stablemax_cross_entropy,
    widest_float_dtype,
)
from models.trm import ACTStepOutputs

pytestmark = pytest.mark.usefixtures("trm_single_thread")

# Logit of the predicted class in the hand-made outputs; the other classes get 0.
PEAK = 5.0


def bce(logit: float, target: float) -> float:
    """Binary cross-entropy with logits, written out."""
    return target * math.log1p(math.exp(-logit)) + (1 - target) * math.log1p(math.exp(logit))


def one_hot_logits(preds: list[list[int]], vocab: int) -> torch.Tensor:
    return PEAK * F.one_hot(torch.tensor(preds), vocab).float()


def patch_step(monkeypatch, head, labels, logits, q_halt, halted, steps, q_continue=None):
    """Make the model's next step return these outputs and a carry with these labels, halted and steps."""
    q_halt = torch.as_tensor(q_halt)
    q_continue = torch.full_like(q_halt, -5.0) if q_continue is None else q_continue

    def fake_step(carry, batch, rng):
        carry = dict(carry, labels=labels, halted=torch.tensor(halted), steps=torch.tensor(steps, dtype=torch.int32))
        return carry, ACTStepOutputs(logits=logits, q_halt_logits=q_halt, q_continue_logits=q_continue)

    monkeypatch.setattr(head.model, "forward", fake_step)


def run_head(head, trm_batch, trm_rng, batch_size):
    batch = trm_batch(batch_size=batch_size)
    return head(head.initial_carry(batch), batch, trm_rng(batch_size))


def test_stablemax_matches_hand_values():
    logits = torch.tensor([[2.0, -1.0, 0.0, 0.5]] * 3)
    labels = torch.tensor([0, 1, IGNORE_LABEL])

    losses = stablemax_cross_entropy(logits, labels)

    # s(x) = [3, 0.5, 1, 1.5], summing to 6.
    assert losses.dtype == torch.float64
    assert losses.tolist() == pytest.approx([math.log(2.0), math.log(12.0), 0.0], rel=1e-12)


def test_stablemax_grad_finite_at_one():
    logits = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)

    stablemax_cross_entropy(logits, torch.tensor([2])).sum().backward()

    assert torch.isfinite(logits.grad).all()


def test_softmax_matches_hand_values():
    logits = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [0.0, 3.0], [0.0, 3.0]]], dtype=torch.bfloat16)
    labels = torch.tensor([[0, 1, 0, IGNORE_LABEL]])

    losses = softmax_cross_entropy(logits, labels)

    assert losses.dtype == torch.float32
    expected = [math.log1p(math.exp(-1.0)), math.log1p(math.exp(-3.0)), math.log1p(math.exp(3.0)), 0.0]
    assert losses[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_widest_float_dtype_on_mps():
    assert widest_float_dtype(torch.device("mps")) == torch.float32
    assert widest_float_dtype(torch.device("cpu")) == torch.float64


def test_config_rejects_unknown_loss():
    with pytest.raises(ValueError, match="loss_type"):
        ACTLossConfig(loss_type="focal")


def test_losses_and_metrics_hand_made(monkeypatch, trm_head, trm_batch, trm_rng):
    head = trm_head(loss_type="softmax_cross_entropy", halt_max_steps=16)
    ignored = IGNORE_LABEL
    labels = torch.tensor([[1, 2, 3], [1, 2, 3], [0, ignored, 2], [1, 1, 1], [ignored] * 3])
    preds = [[1, 2, 3], [1, 0, 3], [0, 3, 2], [1, 1, 1], [0, 0, 0]]
    q_halt = [2.0, 1.0, -3.0, 5.0, -1.0]
    patch_step(
        monkeypatch, head, labels, one_hot_logits(preds, 4), q_halt,
        halted=[True, True, True, False, True], steps=[3, 1, 16, 2, 4],
    )

    output = run_head(head, trm_batch, trm_rng, 5)

    right = math.log(math.exp(PEAK) + 3) - PEAK
    wrong = math.log(math.exp(PEAK) + 3)
    lm_loss = 3 * right + (2 * right + wrong) / 3
    q_halt_loss = bce(2.0, 1) + bce(1.0, 0) + bce(-3.0, 1) + bce(5.0, 1) + bce(-1.0, 1)
    metrics = {name: (float(total), float(count)) for name, (total, count) in output.metrics.items()}
    assert float(output.loss) == pytest.approx(lm_loss + 0.5 * q_halt_loss, rel=1e-5)
    assert metrics["lm_loss"] == pytest.approx((lm_loss, 5.0), rel=1e-5)
    assert metrics["q_halt_loss"] == pytest.approx((q_halt_loss, 5.0), rel=1e-5)
    assert metrics["q_continue_loss"] == (0.0, 5.0)
    assert metrics["accuracy"] == pytest.approx((1 + 2 / 3 + 1, 3.0))
    assert metrics["exact_accuracy"] == (2.0, 3.0)
    assert metrics["q_halt_accuracy"] == (1.0, 3.0)
    assert metrics["q_halt_precision"] == (1.0, 2.0)
    assert metrics["q_halt_recall"] == (1.0, 2.0)
    assert metrics["steps"] == (20.0, 3.0)


def test_metrics_all_wrong_no_halt_vote(monkeypatch, trm_head, trm_batch, trm_rng):
    head = trm_head()
    labels = torch.tensor([[1, 2], [3, 3], [0, 1]])
    patch_step(
        monkeypatch, head, labels, one_hot_logits([[2, 2], [0, 0], [1, 0]], 4), [-5.0, -5.0, -5.0],
        halted=[True, True, True], steps=[4, 4, 4],
    )

    metrics = run_head(head, trm_batch, trm_rng, 3).metrics

    assert [float(value) for value in metrics["exact_accuracy"]] == [0.0, 3.0]
    assert [float(value) for value in metrics["q_halt_accuracy"]] == [3.0, 3.0]
    assert [float(value) for value in metrics["q_halt_precision"]] == [0.0, 0.0]
    assert [float(value) for value in metrics["q_halt_recall"]] == [0.0, 0.0]


def test_stablemax_head_loss(monkeypatch, trm_head, trm_batch, trm_rng):
    head = trm_head(loss_type="stablemax_cross_entropy")
    logits = torch.tensor([[[2.0, -1.0, 0.0, 0.5], [2.0, -1.0, 0.0, 0.5]]])
    patch_step(monkeypatch, head, torch.tensor([[0, 1]]), logits, [0.0], halted=[False], steps=[1])

    output = run_head(head, trm_batch, trm_rng, 1)

    lm_loss = (math.log(2.0) + math.log(12.0)) / 2
    assert float(output.metrics["lm_loss"][0]) == pytest.approx(lm_loss, rel=1e-6)
    assert float(output.loss) == pytest.approx(lm_loss + 0.5 * math.log(2.0), rel=1e-6)


def test_halt_loss_finite_extreme_bf16(monkeypatch, trm_head, trm_batch, trm_rng):
    head = trm_head()
    q_halt = torch.tensor([-3e38, -1e4, -80.0, 1e4], dtype=torch.bfloat16, requires_grad=True)
    labels = torch.tensor([[1, 2]] * 4)
    logits = one_hot_logits([[0, 0]] * 4, 4)
    patch_step(monkeypatch, head, labels, logits, q_halt, halted=[True] * 4, steps=[1] * 4)

    output = run_head(head, trm_batch, trm_rng, 4)
    output.loss.backward()

    assert torch.isfinite(output.loss)
    assert torch.isfinite(q_halt.grad.float()).all()


def test_halt_loss_finite_long_bf16(monkeypatch, trm_head, trm_batch, trm_rng):
    """2,000 optimiser steps of a bf16 Q head whose targets are all 0 (every prediction wrong) stay finite."""
    head = trm_head()
    q_layer = CastedLinear(16, 2, bias=True)
    q_layer.bias.data.fill_(-5.0)
    optimizer = torch.optim.AdamW(q_layer.parameters(), lr=0.1)
    features = rms_norm(torch.randn(8, 16)).to(torch.bfloat16)
    labels = torch.tensor([[1, 2]] * 8)
    logits = one_hot_logits([[0, 0]] * 8, 4)
    losses = []

    for _ in range(2000):
        q = q_layer(features)
        patch_step(monkeypatch, head, labels, logits, q[:, 0], halted=[True] * 8, steps=[1] * 8, q_continue=q[:, 1])
        output = run_head(head, trm_batch, trm_rng, 8)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(output.metrics["q_halt_loss"][0]))

    assert all(math.isfinite(loss) for loss in losses)
    assert torch.isfinite(q_layer.weight).all()
    assert losses[-1] < losses[0]


def test_q_continue_loss_trains(trm_head, trm_batch, trm_rng):
    head = trm_head(no_ACT_continue=False).train()
    torch.nn.init.normal_(head.model.q_head.weight, std=0.5)
    batch = trm_batch(batch_size=4)

    output = head(head.initial_carry(batch), batch, trm_rng(4))
    output.loss.backward()
    first = float(output.metrics["q_continue_loss"][0])
    with torch.no_grad():
        head.model.q_head.weight.mul_(-2.0)
    second = float(head(head.initial_carry(batch), batch, trm_rng(4)).metrics["q_continue_loss"][0])

    assert math.isfinite(first)
    assert first > 0
    assert second != pytest.approx(first)
    assert head.model.q_head.weight.grad[1].abs().sum() > 0


def test_q_continue_off_in_eval(trm_head, trm_batch, trm_rng):
    head = trm_head(no_ACT_continue=False).eval()

    output = run_head(head, trm_batch, trm_rng, 2)

    assert float(output.metrics["q_continue_loss"][0]) == 0.0


def test_predict_budgets_past_max(trm_head, trm_batch, trm_rng):
    head = trm_head(halt_max_steps=2)
    model = head.model
    batch = trm_batch(batch_size=3)

    prediction = head.predict(batch, [5, 1, 3], ACTEvalOptions())

    assert sorted(prediction.by_budget) == [1, 3, 5]
    with torch.no_grad():
        model.eval()
        x = model.embed_input(batch["inputs"], batch["puzzle_identifiers"])
        z_H, z_L = model.initial_latents(3, torch.device("cpu"))
        for _ in range(5):
            z_H, z_L = model.recurse(z_H, z_L, x)
        expected = model.read_out(z_H)[0].argmax(-1)
        carry, outputs = model(model.initial_carry(batch), batch, trm_rng(3))
    assert torch.equal(prediction.by_budget[5], expected)
    assert torch.equal(prediction.by_budget[1], outputs.logits.argmax(-1))
    assert torch.equal(prediction.final, prediction.by_budget[5])
    assert prediction.selected is None


def test_predict_default_budgets(trm_head, trm_batch):
    head = trm_head(halt_max_steps=3)

    prediction = head.predict(trm_batch(batch_size=2), None, ACTEvalOptions())

    assert head.default_budgets() == [1, 2, 3]
    assert sorted(prediction.by_budget) == [1, 2, 3]


@pytest.mark.parametrize("budgets", [[], [0, 2]])
def test_predict_rejects_bad_budgets(trm_head, trm_batch, budgets):
    with pytest.raises(ValueError, match="positive step counts"):
        trm_head().predict(trm_batch(), budgets, ACTEvalOptions())


def test_predict_halt_by_q(trm_head, trm_batch):
    head = trm_head()
    batch = trm_batch(batch_size=3)

    head.model.q_head.bias.data.fill_(1.0)
    early = head.predict(batch, [1, 6], ACTEvalOptions(halt_by_q=True))
    head.model.q_head.bias.data.fill_(-5.0)
    never = head.predict(batch, [1, 6], ACTEvalOptions(halt_by_q=True))

    assert early.extras["steps"].tolist() == [1.0, 1.0, 1.0]
    assert torch.equal(early.final, early.by_budget[1])
    assert never.extras["steps"].tolist() == [6.0, 6.0, 6.0]
    assert torch.equal(never.final, never.by_budget[6])


def test_predict_q_halt_accuracy(trm_head, trm_batch):
    head = trm_head()
    batch = trm_batch(batch_size=3)
    # Labels one token off the model's own predictions make every prediction wrong. The Q head's bias does not
    # change predictions.
    batch["labels"] = (head.predict(batch, [2], ACTEvalOptions()).final + 1) % 6

    head.model.q_head.bias.data.fill_(-1.0)
    no_vote = head.predict(batch, [2], ACTEvalOptions())
    head.model.q_head.bias.data.fill_(1.0)
    vote = head.predict(batch, [2], ACTEvalOptions())

    assert no_vote.extras["q_halt_accuracy"].tolist() == [1.0, 1.0, 1.0]
    assert vote.extras["q_halt_accuracy"].tolist() == [0.0, 0.0, 0.0]


def test_predict_keeps_training_mode(trm_head, trm_batch):
    head = trm_head().train()

    head.predict(trm_batch(), [1], ACTEvalOptions())

    assert head.training and head.model.training
    assert head.model.puzzle_emb.local_ids.numel() == 0
