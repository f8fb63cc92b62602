"""Tests of the Discrete Flow Matching loss head: path sampling, the two losses, metrics and a tiny training run."""

import math

import pydantic
import pytest
import torch
import torch.nn.functional as F
from flow_matching.path import MixtureDiscreteProbPath
from flow_matching.path.scheduler import PolynomialConvexScheduler

from models.losses import DFMEvalOptions, DFMLossConfig, sample_path
from models.head import IGNORE_LABEL, GlobalBatchRandom

LOSS_TYPES = ("cross_entropy", "generalized_kl")
# Largest float32 below 1, so t = draw * t_max lands just under t_max.
LAST_DRAW_BELOW_ONE = 1.0 - 2.0**-24


def capture_model_calls(model: torch.nn.Module) -> list[dict]:
    """Record the keyword arguments and output of every forward call of `model`."""
    calls = []

    def hook(module, args, kwargs, output):
        calls.append({**kwargs, "logits": output})

    model.register_forward_hook(hook, with_kwargs=True)
    return calls


def test_sample_path_matches_library():
    path = MixtureDiscreteProbPath(PolynomialConvexScheduler(n=2.0))
    generator = torch.Generator().manual_seed(1)
    x_0 = torch.randint(0, 5, (6, 30), generator=generator)
    x_1 = torch.randint(5, 10, (6, 30), generator=generator)
    t = torch.rand(6, generator=generator)

    torch.manual_seed(123)
    expected = path.sample(x_0=x_0, x_1=x_1, t=t).x_t
    torch.manual_seed(123)
    uniforms = torch.rand(x_1.shape)
    assert torch.equal(sample_path(path, x_0, x_1, t, uniforms), expected)


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("task", ["sudoku", "maze"])
def test_path_keeps_givens_and_pad(dfm_head, dfm_metadata, dfm_sudoku4, dfm_maze, dfm_rng, source, task):
    metadata = dfm_metadata(task)
    head = dfm_head(metadata=metadata, source=source)
    batch = dfm_sudoku4() if task == "sudoku" else dfm_maze()
    # Pad the last example's final cells, as the loader pads short rows.
    batch["inputs"][-1, -3:] = 0
    batch["labels"][-1, -3:] = IGNORE_LABEL
    calls = capture_model_calls(head.model)
    to_fill = batch["inputs"] == head.model.task.fill_token
    mask_token = head.model.mask_token
    allowed = set(head.model.task.answer_tokens) | ({mask_token} if source == "mask" else set())

    for step in range(5):
        head(None, batch, dfm_rng(len(batch["inputs"]), step=step))
        x_t = calls[-1]["x_t"]
        assert torch.equal(x_t[~to_fill], batch["inputs"][~to_fill]), "a given or PAD cell was noised"
        assert set(x_t[to_fill].tolist()) <= allowed, "a cell to fill is neither an answer token nor MASK"
        if source == "mask":
            assert ((x_t[to_fill] == batch["labels"][to_fill]) | (x_t[to_fill] == mask_token)).all()


def test_uniform_source_draws_answer_tokens(dfm_head, dfm_metadata, dfm_maze, dfm_rng):
    metadata = dfm_metadata("sudoku", box_shape=(2, 3))
    head = dfm_head(metadata=metadata, source="uniform")
    inputs = torch.full((64, 36), head.model.task.fill_token)
    labels = torch.full((64, 36), head.model.task.answer_tokens[0])
    batch = {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(64, dtype=torch.int64)}
    calls = capture_model_calls(head.model)

    head(None, batch, dfm_rng(64, time_draw=0.0))  # at t = 0 every cell to fill is at its source draw
    drawn = calls[-1]["x_t"]
    assert set(drawn.unique().tolist()) == set(head.model.task.answer_tokens)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("time_draw", [0.0, 1e-6, LAST_DRAW_BELOW_ONE])
def test_loss_finite_at_time_ends(dfm_head, dfm_sudoku4, dfm_rng, loss_type, source, time_draw):
    head = dfm_head(loss={"loss_type": loss_type}, source=source)
    batch = dfm_sudoku4()
    output = head(None, batch, dfm_rng(8, time_draw=time_draw))
    output.loss.backward()

    assert torch.isfinite(output.loss)
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_ignores_given_cells(dfm_head, dfm_sudoku4, dfm_rng, loss_type):
    head = dfm_head(loss={"loss_type": loss_type})
    batch = dfm_sudoku4()
    given = batch["inputs"] != head.model.task.fill_token
    reference = head(None, batch, dfm_rng(8, step=3)).loss

    def perturb_given_cells(module, args, kwargs, output):
        noise = 50.0 * torch.randn(output.shape, generator=torch.Generator().manual_seed(0))
        return torch.where(given[..., None], output + noise, output)

    handle = head.model.register_forward_hook(perturb_given_cells, with_kwargs=True)
    perturbed = head(None, batch, dfm_rng(8, step=3)).loss
    handle.remove()
    assert torch.equal(perturbed, reference)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_matches_explicit_formula(dfm_head, dfm_sudoku4, dfm_rng, loss_type):
    head = dfm_head(loss={"loss_type": loss_type}, scheduler_exponent=1.5)
    batch = dfm_sudoku4(num_blanks=5)
    batch["labels"][0, 0] = IGNORE_LABEL  # an unsupervised cell, whatever its input
    calls = capture_model_calls(head.model)
    output = head(None, batch, dfm_rng(8, step=2))

    logits, x_t, t = calls[-1]["logits"], calls[-1]["x_t"], calls[-1]["t"]
    labels = batch["labels"]
    supervised = (batch["inputs"] == head.model.task.fill_token) & (labels != IGNORE_LABEL)
    log_p = torch.log_softmax(logits.double(), dim=-1)
    log_p_label = log_p.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    if loss_type == "cross_entropy":
        per_cell = -log_p_label
    else:
        # Generalized KL (Gat et al., arXiv:2407.15595) with kappa = t^n and w = kappa' / (1 - kappa):
        # w * (1 - p(x_t)) on revealed cells, -w * (p(x_t) + log p(x_1)) on the others.
        n = 1.5
        weight = (n * t.double() ** (n - 1) / (1 - t.double() ** n))[:, None]
        p_state = log_p.gather(-1, x_t[..., None])[..., 0].exp()
        revealed = x_t == labels
        per_cell = torch.where(revealed, weight * (1 - p_state), -weight * (p_state + log_p_label))
    per_sequence = (per_cell * supervised).sum(1) / supervised.sum(1).clamp(min=1)
    assert output.loss.item() == pytest.approx(per_sequence.sum().item(), rel=1e-5)


def test_metrics_count_cells(dfm_head, dfm_sudoku4, dfm_rng):
    head = dfm_head()
    batch = dfm_sudoku4(num_blanks=6)
    batch["inputs"][3] = 0  # a padding row: nothing to fill
    batch["labels"][3] = IGNORE_LABEL
    calls = capture_model_calls(head.model)
    output = head(None, batch, dfm_rng(8, step=1))

    loss_sum, sequences = output.metrics["loss"]
    correct, noised = output.metrics["one_step_denoise_accuracy"]
    assert sequences.item() == 7
    assert loss_sum.item() == pytest.approx(output.loss.item())
    assert noised.item() == (calls[-1]["x_t"] == head.model.mask_token).sum().item()
    assert 0 <= correct.item() <= noised.item()


def test_loss_same_when_batch_split(dfm_head, dfm_sudoku4):
    """Two processes with half the batch each draw the same noise as one process with all of it."""
    head = dfm_head()
    batch = dfm_sudoku4()
    whole = head(None, batch, GlobalBatchRandom(7, 11, 0, 8, 8, torch.device("cpu"))).loss
    halves = []
    for offset in (0, 4):
        half = {key: value[offset : offset + 4] for key, value in batch.items()}
        halves.append(head(None, half, GlobalBatchRandom(7, 11, offset, 4, 8, torch.device("cpu"))).loss)
    assert (halves[0] + halves[1]).item() == pytest.approx(whole.item(), rel=1e-6)


def test_loss_deterministic_per_seed(dfm_head, dfm_sudoku4, dfm_rng):
    head = dfm_head(source="uniform")
    batch = dfm_sudoku4()
    first = head(None, batch, dfm_rng(8, step=5)).loss
    second = head(None, batch, dfm_rng(8, step=5)).loss
    other = head(None, batch, dfm_rng(8, step=6)).loss
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_default_budgets(dfm_head, dfm_metadata):
    assert dfm_head(metadata=dfm_metadata("sudoku", box_shape=(3, 3))).default_budgets() == [81]
    assert dfm_head(metadata=dfm_metadata("maze", grid_shape=(30, 30))).default_budgets() == [128]
    assert dfm_head(loss={"eval_steps": 7}).default_budgets() == [7]


def test_head_counts_delegate_to_model(dfm_head):
    head = dfm_head()
    assert head.train_flops_per_example() == 3 * head.forward_flops_per_example()
    assert head.forward_flops_per_example() == head.model.forward_flops_per_example()
    assert head.parameter_counts() == head.model.parameter_counts()
    assert head.initial_carry({}) is None


def test_configs_reject_bad_keys():
    with pytest.raises(pydantic.ValidationError):
        DFMLossConfig(loss_typ="cross_entropy")
    with pytest.raises(pydantic.ValidationError):
        DFMLossConfig(t_max=1.0)
    with pytest.raises(pydantic.ValidationError):
        DFMEvalOptions(num_samples=0)
    with pytest.raises(pydantic.ValidationError):
        DFMEvalOptions(sampler="beam")


@pytest.mark.slow
def test_training_solves_train_puzzles(dfm_head, dfm_sudoku4):
    """A tiny denoiser trained with AdamW on 8 4x4 Sudokus decodes all of them with the greedy sampler."""
    head = dfm_head(hidden_size=64, num_heads=4, num_layers=2, structure_embeddings=True)
    batch = dfm_sudoku4(num_puzzles=8, num_blanks=8, seed=3)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=0.0)
    for step in range(300):
        output = head(None, batch, GlobalBatchRandom(0, step, 0, 8, 8, torch.device("cpu")))
        optimizer.zero_grad()
        (output.loss / 8).backward()
        optimizer.step()

    head.eval()
    prediction = head.predict(batch, budgets=[8], options=DFMEvalOptions(sampler="greedy"))
    solved = (prediction.by_budget[8] == batch["labels"]).all(1)
    assert solved.all(), f"solved {solved.sum().item()} of 8 training puzzles"
