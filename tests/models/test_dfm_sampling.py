"""Tests of the DFM samplers: givens kept, legal tokens only, determinism, oracle decoding and voting."""

import pytest
import torch

from dataset.sudoku import SudokuTask
from models.losses import DFMEvalOptions
from models.dfm_sampling import cells_to_fill, content_keyed_source, euler_decode, greedy_decode, majority_vote

SOURCES = ("mask", "uniform")


@pytest.fixture
def dfm_problem(dfm_metadata, dfm_sudoku4, dfm_maze):
    """Factory of (metadata, batch) for "sudoku" (4x4, 8 puzzles) or "maze" (6x6, 5 mazes)."""

    def make(task: str):
        if task == "sudoku":
            return dfm_metadata("sudoku"), dfm_sudoku4(num_puzzles=8, num_blanks=9)
        return dfm_metadata("maze", grid_shape=(6, 6)), dfm_maze(num_mazes=5)

    return make


def decode(head, batch, sampler: str, budget: int, **options):
    """Run the head's sampler on `batch` and return the grids [B, L] and model calls [B]."""
    prediction = head.predict(batch, budgets=[budget], options=DFMEvalOptions(sampler=sampler, **options))
    return prediction.by_budget[budget], prediction.extras[f"nfe_used/{budget}"]


def record_states(model) -> list[torch.Tensor]:
    """Collect the state x_t of every forward call of `model`."""
    states = []

    def hook(module, args, kwargs, output):
        states.append(kwargs["x_t"].clone())

    model.register_forward_hook(hook, with_kwargs=True)
    return states


def assert_valid_grids(head, batch, grids):
    """Assert that givens and PAD are unchanged and that every cell to fill contains an answer token."""
    task = head.model.task
    to_fill = batch["inputs"] == task.fill_token
    assert torch.equal(grids[~to_fill], batch["inputs"][~to_fill]), "a given or PAD cell changed"
    assert torch.isin(grids[to_fill], torch.tensor(task.answer_tokens)).all(), "a cell to fill holds an illegal token"


@pytest.mark.parametrize("sampler", ["greedy", "euler"])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("task", ["sudoku", "maze"])
def test_sampler_keeps_givens_untrained(dfm_head, dfm_problem, sampler, source, task):
    metadata, batch = dfm_problem(task)
    batch["inputs"][0, -2:] = 0  # PAD cells must stay PAD
    head = dfm_head(metadata=metadata, source=source)
    for budget in (1, 3, 40):
        grids, _ = decode(head, batch, sampler, budget)
        assert_valid_grids(head, batch, grids)


@pytest.mark.parametrize("sampler", ["greedy", "euler"])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("task", ["sudoku", "maze"])
def test_sampler_keeps_givens_dummy(dfm_head, dfm_stub, dfm_problem, sampler, source, task):
    metadata, batch = dfm_problem(task)
    head = dfm_head(model=dfm_stub(metadata, "dummy", source), metadata=metadata)
    for budget in (1, 4, 40):
        grids, _ = decode(head, batch, sampler, budget)
        assert_valid_grids(head, batch, grids)


@pytest.mark.parametrize("sampler", ["greedy", "euler"])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("task", ["sudoku", "maze"])
def test_oracle_solves_every_budget(dfm_head, dfm_stub, dfm_problem, sampler, source, task):
    metadata, batch = dfm_problem(task)
    head = dfm_head(model=dfm_stub(metadata, "oracle", source, batch), metadata=metadata)
    for budget in (1, 2, 5, 16, 100):
        grids, _ = decode(head, batch, sampler, budget)
        assert torch.equal(grids, batch["labels"]), f"{sampler} with budget {budget} did not solve every puzzle"


def test_greedy_model_calls_per_example(dfm_head, dfm_stub, dfm_metadata, dfm_sudoku4):
    metadata = dfm_metadata("sudoku")
    batch = dfm_sudoku4(num_puzzles=3, num_blanks=6)
    batch["inputs"][1] = batch["labels"][1]  # nothing to fill
    batch["inputs"][2, :2] = 1  # two more cells to fill
    head = dfm_head(model=dfm_stub(metadata, "oracle", "mask", batch), metadata=metadata)
    num_to_fill = (batch["inputs"] == head.model.task.fill_token).sum(1).tolist()
    for budget in (1, 4, 7, 50):
        _, nfe = decode(head, batch, "greedy", budget)
        assert nfe.tolist() == [min(budget, n) for n in num_to_fill], f"budget {budget}"


def test_greedy_commits_most_confident_first(dfm_head, dfm_stub, dfm_metadata, dfm_sudoku4):
    """With one commit per call, each call fixes the pending cell of highest confidence."""
    metadata = dfm_metadata("sudoku")
    batch = dfm_sudoku4(num_puzzles=1, num_blanks=4)
    head = dfm_head(model=dfm_stub(metadata, "dummy", "mask"), metadata=metadata)
    model = head.model
    states = record_states(model)
    grids, _ = greedy_decode(model, batch["inputs"], batch["puzzle_identifiers"], 4, head.path, 0.999)

    legal = torch.zeros(model.state_vocab_size, dtype=torch.bool)
    legal[list(model.task.answer_tokens)] = True
    for before, after in zip(states, states[1:] + [grids]):
        logits = model(x_t=before, t=torch.zeros(1), inputs=batch["inputs"])
        confidence = torch.softmax(logits.masked_fill(~legal, -torch.inf), -1).amax(-1)[0]
        pending = before[0] == model.mask_token
        changed = torch.nonzero(before[0] != after[0]).flatten().tolist()
        assert len(changed) == 1
        assert confidence[changed[0]] == confidence[pending].max()


def test_greedy_breaks_ties_by_position(dfm_head, dfm_stub, dfm_metadata, dfm_sudoku4):
    """The oracle gives every pending cell the same confidence, so cells are committed in index order."""
    metadata = dfm_metadata("sudoku")
    batch = dfm_sudoku4(num_puzzles=1, num_blanks=5)
    head = dfm_head(model=dfm_stub(metadata, "oracle", "mask", batch), metadata=metadata)
    states = record_states(head.model)
    greedy_decode(head.model, batch["inputs"], batch["puzzle_identifiers"], 5, head.path, 0.999)

    blanks = torch.nonzero(batch["inputs"][0] == 1).flatten().tolist()
    committed_order = []
    for before, after in zip(states, states[1:]):
        committed_order += torch.nonzero(before[0] != after[0]).flatten().tolist()
    assert committed_order == blanks[:-1]  # the last commit happens after the last model call


@pytest.mark.parametrize("source", SOURCES)
def test_greedy_identical_across_batch_sizes(dfm_head, dfm_metadata, dfm_maze, source):
    head = dfm_head(metadata=dfm_metadata("maze", grid_shape=(6, 6)), source=source)
    batch = dfm_maze(num_mazes=6, seed=4)
    whole, _ = decode(head, batch, "greedy", 5, seed=3)
    again, _ = decode(head, batch, "greedy", 5, seed=3)
    parts = []
    for rows in (slice(0, 1), slice(1, 6)):
        parts.append(decode(head, {key: value[rows] for key, value in batch.items()}, "greedy", 5, seed=3)[0])
    assert torch.equal(whole, again)
    assert torch.equal(whole, torch.cat(parts))


def test_greedy_ignores_seed_with_mask_source(dfm_head, dfm_sudoku4):
    head = dfm_head()
    batch = dfm_sudoku4()
    assert torch.equal(decode(head, batch, "greedy", 9, seed=0)[0], decode(head, batch, "greedy", 9, seed=5)[0])


class CornerSudoku(SudokuTask):
    """A task with its own rule for cells to fill: only the first cell of each row."""

    def cells_to_fill(self, inputs):
        marks = inputs == -1
        marks[:, 0] = True
        return marks


def test_cells_to_fill_follows_task(dfm_sudoku4):
    inputs = dfm_sudoku4()["inputs"]
    assert torch.equal(cells_to_fill(SudokuTask((2, 2)), inputs), inputs == 1)
    custom = cells_to_fill(CornerSudoku((2, 2)), inputs)
    assert custom[:, 0].all()
    assert not custom[:, 1:].any()


def test_content_keyed_source_per_puzzle(dfm_sudoku4):
    inputs = dfm_sudoku4(num_puzzles=6)["inputs"]
    answer_tokens = (2, 3, 4, 5)
    whole = content_keyed_source(inputs, answer_tokens, seed=1)
    assert torch.equal(whole[2:], content_keyed_source(inputs[2:], answer_tokens, seed=1))
    assert torch.isin(whole, torch.tensor(answer_tokens)).all()
    assert not torch.equal(whole, content_keyed_source(inputs, answer_tokens, seed=2))


@pytest.mark.parametrize("source", SOURCES)
def test_euler_reproducible_per_seed(dfm_head, dfm_sudoku4, source):
    head = dfm_head(source=source)
    batch = dfm_sudoku4(num_blanks=10)
    first, _ = decode(head, batch, "euler", 6, seed=11)
    second, _ = decode(head, batch, "euler", 6, seed=11)
    other, _ = decode(head, batch, "euler", 6, seed=12)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_euler_leaves_global_rng_alone(dfm_head, dfm_sudoku4):
    head = dfm_head()
    batch = dfm_sudoku4()
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    decode(head, batch, "euler", 4, seed=0)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("task", ["sudoku", "maze"])
def test_euler_keeps_committed_cells(dfm_head, dfm_stub, dfm_problem, task):
    """Once the solver unmasks a cell, later steps and the final full resample keep its token."""
    metadata, batch = dfm_problem(task)
    head = dfm_head(model=dfm_stub(metadata, "dummy", "mask"), metadata=metadata)
    states = record_states(head.model)
    grids, _ = decode(head, batch, "euler", 6, seed=2)

    mask_token = head.model.mask_token
    assert (states[-1] != mask_token).any(), "no cell was unmasked before the last step"
    assert (states[-1] == mask_token).any(), "every cell was unmasked before the last step"
    for before, after in zip(states, states[1:] + [grids]):
        committed = before != mask_token
        assert torch.equal(after[committed], before[committed])


def test_euler_uses_exact_budget(dfm_head, dfm_sudoku4):
    head = dfm_head()
    batch = dfm_sudoku4()
    calls = []
    head.model.register_forward_hook(lambda *args: calls.append(1))
    for budget in (1, 3, 7, 10):  # t_max / budget is inexact in floating point for most budgets
        calls.clear()
        inputs, identifiers = batch["inputs"], batch["puzzle_identifiers"]
        grids, nfe = euler_decode(head.model, inputs, identifiers, budget, head.path, 0.999, seed=0)
        assert len(calls) == budget
        assert (nfe == budget).all()


def test_majority_vote_picks_most_common():
    a, b, c = torch.tensor([2, 3]), torch.tensor([3, 2]), torch.tensor([4, 4])
    # Per example over the 4 samples: (a, b, b, c) -> b; (a, b, a, b) -> tie, the earliest (a); all c -> c.
    samples = torch.stack(
        [torch.stack([a, a, c]), torch.stack([b, b, c]), torch.stack([b, a, c]), torch.stack([c, b, c])]
    )  # [K=4, B=3, L=2]
    grids, share = majority_vote(samples)
    assert torch.equal(grids, torch.stack([b, a, c]))
    assert share.tolist() == [0.5, 0.5, 1.0]


def test_predict_reports_budgets_and_votes(dfm_head, dfm_sudoku4):
    head = dfm_head()
    batch = dfm_sudoku4()
    prediction = head.predict(batch, budgets=[2, 9], options=DFMEvalOptions(sampler="greedy", num_samples=3))
    assert sorted(prediction.by_budget) == [2, 9]
    assert sorted(prediction.extras) == ["nfe_used/2", "nfe_used/9", "vote_nfe_used", "vote_share"]
    assert prediction.selected is not None
    assert_valid_grids(head, batch, prediction.selected)
    assert ((prediction.extras["vote_share"] >= 1 / 3) & (prediction.extras["vote_share"] <= 1)).all()
    assert (prediction.extras["vote_nfe_used"] == 27).all()


def test_predict_defaults_to_config(dfm_head, dfm_sudoku4):
    head = dfm_head(loss={"eval_sampler": "euler", "eval_steps": 3})
    batch = dfm_sudoku4()
    prediction = head.predict(batch, budgets=None, options=DFMEvalOptions())
    assert list(prediction.by_budget) == [3]
    assert prediction.selected is None
    assert (prediction.extras["nfe_used/3"] == 3).all()  # Euler always runs every step
