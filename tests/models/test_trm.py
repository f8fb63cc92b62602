"""Tests of the Tiny Recursive Model: config checks, shapes, sizes, recursion, ACT halting and carry."""

import io
import math

import pydantic
import pytest
import torch

from models.losses import ACTEvalOptions
from models.trm import TinyRecursiveReasoningModel, TRMConfig

pytestmark = pytest.mark.usefixtures("trm_single_thread")

# Sudoku at the sizes of the TRM paper (arXiv 2510.04871): 81 cells plus a 16-token puzzle prefix, and a
# vocabulary of PAD, blank and 9 digits.
SUDOKU_SEQ_LEN, SUDOKU_VOCAB, PREFIX = 81, 11, 16
HIDDEN = 512


def swiglu_width(dim: int, expansion: float = 4.0) -> int:
    """SwiGLU hidden width of the reference: 2/3 of expansion x dim, rounded up to a multiple of 256."""
    return math.ceil(round(expansion * dim * 2 / 3) / 256) * 256


def swiglu_weights(dim: int) -> int:
    width = swiglu_width(dim)
    return dim * 2 * width + width * dim


def test_config_rejects_bad_heads():
    with pytest.raises(pydantic.ValidationError, match="not divisible by num_heads"):
        TRMConfig(hidden_size=100, num_heads=8)


def test_config_rejects_mlp_t_with_rope():
    with pytest.raises(pydantic.ValidationError, match="mlp_t=True has no attention"):
        TRMConfig(mlp_t=True)


def test_config_rejects_oversized_puzzle_emb():
    with pytest.raises(pydantic.ValidationError, match="does not fit"):
        TRMConfig(hidden_size=64, num_heads=2, puzzle_emb_ndim=200, puzzle_emb_len=3)


def test_config_rejects_unknown_key():
    with pytest.raises(pydantic.ValidationError, match="H_layers"):
        TRMConfig(H_layers=0)


def test_config_prefix_len_default():
    assert TRMConfig(hidden_size=32, num_heads=2, puzzle_emb_ndim=40, puzzle_emb_len=0).prefix_len == 2
    assert TRMConfig(puzzle_emb_ndim=0).prefix_len == 0


def test_model_without_puzzle_emb(trm_head, trm_batch, trm_rng):
    head = trm_head(puzzle_emb_ndim=0)
    batch = trm_batch(batch_size=2)

    output = head(head.initial_carry(batch), batch, trm_rng(2))

    assert head.model.puzzle_emb is None
    assert output.carry["z_H"].shape == (2, 16, 32)
    assert torch.isfinite(output.loss)


def test_model_rejects_wrong_seq_len(trm_head, trm_batch, trm_rng):
    head = trm_head()
    batch = trm_batch(batch_size=2, seq_len=9)

    with pytest.raises(ValueError, match=r"inputs must have shape \[batch, 16\]"):
        head(head.initial_carry(batch), batch, trm_rng(2))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(pos_encodings="rope"),
        dict(pos_encodings="learned"),
        dict(pos_encodings="none"),
        dict(mlp_t=True, pos_encodings="none"),
        dict(forward_dtype="bfloat16"),
    ],
)
def test_shapes_train_and_eval(trm_head, trm_batch, trm_rng, overrides):
    head = trm_head(**overrides)
    model = head.model
    batch = trm_batch(batch_size=3)
    dtype = model.config.dtype

    for training in (True, False):
        head.train(training)
        carry, outputs = model(model.initial_carry(batch), batch, trm_rng(3))
        assert outputs.logits.shape == (3, 16, 6)
        assert outputs.logits.dtype == dtype
        assert outputs.q_halt_logits.shape == (3,)
        assert outputs.q_halt_logits.dtype == torch.float32
        assert carry["z_H"].shape == carry["z_L"].shape == (3, 18, 32)
        assert carry["z_H"].dtype == dtype
        assert carry["steps"].dtype == torch.int32
        assert carry["halted"].dtype == torch.bool


def test_parameter_counts_attention(trm_head, trm_metadata):
    metadata = trm_metadata(vocab_size=SUDOKU_VOCAB, seq_len=SUDOKU_SEQ_LEN, num_puzzle_identifiers=1)
    head = trm_head(metadata=metadata, **TRMConfig().model_dump())
    attention = HIDDEN * 3 * HIDDEN + HIDDEN * HIDDEN
    block = attention + swiglu_weights(HIDDEN)
    q_head = HIDDEN * 2 + 2

    assert block == 3_407_872
    assert sum(p.numel() for p in head.model.parameters()) == 2 * block + q_head + 2 * SUDOKU_VOCAB * HIDDEN
    counts = head.parameter_counts()
    assert counts["parameters"] == 2 * block + q_head
    assert counts["embedding_parameters"] == 2 * SUDOKU_VOCAB * HIDDEN
    assert counts["puzzle_embedding_parameters"] == HIDDEN


def test_parameter_counts_mlp_t(trm_head, trm_metadata):
    metadata = trm_metadata(vocab_size=SUDOKU_VOCAB, seq_len=SUDOKU_SEQ_LEN, num_puzzle_identifiers=1)
    head = trm_head(metadata=metadata, **{**TRMConfig().model_dump(), "mlp_t": True, "pos_encodings": "none"})
    token_mlp = swiglu_weights(SUDOKU_SEQ_LEN + PREFIX)
    block = token_mlp + swiglu_weights(HIDDEN)
    total = 2 * block + HIDDEN * 2 + 2 + 2 * SUDOKU_VOCAB * HIDDEN

    assert token_mlp == 148_992
    assert sum(p.numel() for p in head.model.parameters()) == total
    assert abs(total - 5.03e6) < 0.01e6
    assert "puzzle_emb.weights" in dict(head.model.named_buffers())


def test_flops_match_formula(trm_head, trm_metadata):
    metadata = trm_metadata(vocab_size=SUDOKU_VOCAB, seq_len=SUDOKU_SEQ_LEN, num_puzzle_identifiers=1)
    head = trm_head(metadata=metadata, **TRMConfig().model_dump())
    tokens, width = SUDOKU_SEQ_LEN + PREFIX, swiglu_width(HIDDEN)
    # Per block: qkv and output projections, attention scores and weighted values, then the SwiGLU.
    block = 2 * tokens * 4 * HIDDEN * HIDDEN + 2 * 2 * tokens * tokens * HIDDEN + 2 * tokens * 3 * HIDDEN * width
    network_call = 2 * block
    heads = 2 * SUDOKU_SEQ_LEN * HIDDEN * SUDOKU_VOCAB + 2 * HIDDEN * 2
    forward = 3 * 7 * network_call + heads
    train = 2 * 7 * network_call + 3 * (7 * network_call + heads)

    assert head.forward_flops_per_example() == pytest.approx(forward, rel=1e-12)
    assert head.train_flops_per_example() == pytest.approx(train, rel=1e-12)
    assert head.forward_flops_per_example() == pytest.approx(28.6e9, rel=2e-3)
    assert head.train_flops_per_example() == pytest.approx(47.6e9, rel=2e-3)
    assert head.inference_flops_per_example(16) == pytest.approx(16 * forward, rel=1e-12)


def test_flops_mlp_t_formula(trm_head, trm_metadata):
    metadata = trm_metadata(vocab_size=SUDOKU_VOCAB, seq_len=SUDOKU_SEQ_LEN, num_puzzle_identifiers=1)
    head = trm_head(metadata=metadata, **{**TRMConfig().model_dump(), "mlp_t": True, "pos_encodings": "none"})
    tokens = SUDOKU_SEQ_LEN + PREFIX
    block = 2 * HIDDEN * 3 * tokens * swiglu_width(tokens) + 2 * tokens * 3 * HIDDEN * swiglu_width(HIDDEN)
    heads = 2 * SUDOKU_SEQ_LEN * HIDDEN * SUDOKU_VOCAB + 2 * HIDDEN * 2

    assert head.forward_flops_per_example() == pytest.approx(3 * 7 * 2 * block + heads, rel=1e-12)


def test_early_cycles_have_no_grad(trm_head, trm_batch, trm_rng):
    head = trm_head(H_cycles=3, L_cycles=2)
    batch = trm_batch(batch_size=2)
    grad_enabled, backward_calls = [], []

    def record(module, args, output):
        grad_enabled.append(torch.is_grad_enabled())
        if output.requires_grad:
            output.register_hook(lambda grad: backward_calls.append(1))

    head.model.layers[0].register_forward_hook(record)
    output = head(head.initial_carry(batch), batch, trm_rng(2))
    output.loss.backward()

    assert len(grad_enabled) == 3 * (2 + 1)
    assert grad_enabled == [False] * 6 + [True] * 3
    assert len(backward_calls) == 3
    assert head.model.embed_tokens.weight.grad is not None


def run_steps(head, batch, rng_factory, num_steps, seed=0):
    """Run `num_steps` ACT steps on one batch; returns the `halted` vector after each step."""
    carry = head.initial_carry(batch)
    halted = []
    for step in range(num_steps):
        carry, _ = head.model(carry, batch, rng_factory(len(batch["inputs"]), step=step, seed=seed))
        halted.append(carry["halted"].clone())
    return halted


def test_halting_train_by_q_head(trm_head, trm_batch, trm_rng):
    head = trm_head(halt_exploration_prob=0.0).train()
    batch = trm_batch(batch_size=4)
    head.model.q_head.bias.data.fill_(5.0)

    halted = run_steps(head, batch, trm_rng, 1)

    assert halted[0].all()


def test_halting_train_without_vote(trm_head, trm_batch, trm_rng):
    head = trm_head(halt_exploration_prob=0.0).train()
    batch = trm_batch(batch_size=4)

    halted = run_steps(head, batch, trm_rng, 4)

    assert [bool(h.any()) for h in halted] == [False, False, False, True]
    assert halted[3].all()


def test_halting_eval_fixed_steps(trm_head, trm_batch, trm_rng):
    head = trm_head(halt_exploration_prob=0.0).eval()
    batch = trm_batch(batch_size=4)
    head.model.q_head.bias.data.fill_(5.0)

    halted = run_steps(head, batch, trm_rng, 4)

    assert [bool(h.any()) for h in halted] == [False, False, False, True]
    assert halted[3].all()


def test_halting_q_continue_rule(trm_head, trm_batch, trm_rng):
    head = trm_head(no_ACT_continue=False, halt_exploration_prob=0.0).train()
    batch = trm_batch(batch_size=4)

    head.model.q_head.bias.data = torch.tensor([1.0, 2.0])
    assert not run_steps(head, batch, trm_rng, 1)[0].any()
    head.model.q_head.bias.data = torch.tensor([2.0, 1.0])
    assert run_steps(head, batch, trm_rng, 1)[0].all()


def test_exploration_delays_halting(trm_head, trm_batch, trm_rng):
    head = trm_head(halt_exploration_prob=1.0, halt_max_steps=8).train()
    batch = trm_batch(batch_size=32)
    head.model.q_head.bias.data.fill_(5.0)

    halted = run_steps(head, batch, trm_rng, 8)

    assert not halted[0].any()
    assert halted[1].any()
    assert not halted[1].all()


def test_exploration_uses_rng_only(trm_head, trm_batch, trm_rng):
    head = trm_head(halt_exploration_prob=0.5, halt_max_steps=8).train()
    batch = trm_batch(batch_size=32)
    head.model.q_head.bias.data.fill_(5.0)

    torch.manual_seed(1)
    first = torch.stack(run_steps(head, batch, trm_rng, 6, seed=7))
    torch.manual_seed(2)
    second = torch.stack(run_steps(head, batch, trm_rng, 6, seed=7))
    other_seed = torch.stack(run_steps(head, batch, trm_rng, 6, seed=8))

    assert torch.equal(first, second)
    assert not torch.equal(first, other_seed)


def test_carry_reset_takes_new_rows(trm_head, trm_batch, trm_rng):
    head = trm_head(halt_exploration_prob=0.0).train()
    model = head.model
    first, second = trm_batch(batch_size=3, seed=1), trm_batch(batch_size=3, seed=2)
    carry, _ = model(model.initial_carry(first), first, trm_rng(3))
    carry["halted"] = torch.tensor([True, False, True])

    carry, _ = model(carry, second, trm_rng(3, step=1))
    fresh, _ = model(model.initial_carry(second), second, trm_rng(3, step=1))

    for key in ("inputs", "labels", "puzzle_identifiers"):
        assert torch.equal(carry[key][[0, 2]], second[key][[0, 2]])
        assert torch.equal(carry[key][1], first[key][1])
    assert carry["steps"].tolist() == [1, 2, 1]
    torch.testing.assert_close(carry["z_H"][[0, 2]], fresh["z_H"][[0, 2]])
    assert not torch.allclose(carry["z_H"][1], fresh["z_H"][1])


def test_carry_loads_weights_only(trm_head, trm_batch, trm_rng):
    head = trm_head()
    batch = trm_batch(batch_size=2)
    carry = head(head.initial_carry(batch), batch, trm_rng(2)).carry
    buffer = io.BytesIO()

    torch.save(carry, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)

    assert loaded.keys() == carry.keys()
    for key in carry:
        assert torch.equal(loaded[key], carry[key])


def test_same_seed_same_losses(trm_head, trm_batch, trm_rng):
    batch = trm_batch(batch_size=4)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        head = trm_head(halt_exploration_prob=0.5, halt_max_steps=2)
        optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
        carry, losses = head.initial_carry(batch), []
        for step in range(3):
            output = head(carry, batch, trm_rng(4, step=step))
            output.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            carry = output.carry
            losses.append(output.loss.item())
        runs.append(losses)

    assert runs[0] == runs[1]


def test_tiny_model_fits_sudoku4(trm_head, trm_sudoku4, trm_rng):
    """500 AdamW steps teach a 1-layer, 32-wide TRM to solve 8 fixed 4x4 Sudokus with 6 blanks each."""
    torch.manual_seed(0)
    head = trm_head(loss_type="stablemax_cross_entropy", expansion=4.0, halt_max_steps=3).train()
    batch = trm_sudoku4(num_puzzles=8, num_blanks=6, seed=0)
    size = len(batch["inputs"])
    options = ACTEvalOptions(halt_by_q=True)
    solved_before = (head.predict(batch, None, options).final == batch["labels"]).all(-1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.0)
    carry = head.initial_carry(batch)

    for step in range(500):
        output = head(carry, batch, trm_rng(size, step=step))
        (output.loss / size).backward()
        optimizer.step()
        optimizer.zero_grad()
        carry = output.carry

    solved_after = (head.predict(batch, None, options).final == batch["labels"]).all(-1)
    assert solved_before.sum() == 0
    assert solved_after.all()
