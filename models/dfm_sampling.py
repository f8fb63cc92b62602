"""Samplers that decode full solution grids with a `FlowMatchingTransformer`.

Both samplers keep the puzzle's given cells (and PAD) fixed and write only the task's answer tokens into
cells to fill, never MASK or PAD. A budget of S means at most S model calls (NFE) per example.

- `greedy_decode`: deterministic confidence-ordered decoding. Each call commits the k most confident
  pending cells of every example, k = ceil(pending / calls left), to their argmax over the answer tokens.
- `euler_decode`: the library's `MixtureDiscreteEulerSolver` (flow_matching 1.0.10) with S steps over
  [0, t_max], seeded from a given seed inside `torch.random.fork_rng`.
- `majority_vote`: picks the most frequent whole grid among K samples.
"""

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from flow_matching.path import MixtureDiscreteProbPath
from flow_matching.solver import MixtureDiscreteEulerSolver
from flow_matching.utils import ModelWrapper
from torch import Tensor

from dataset.common import PuzzleTask
from models.flow_matching import FlowMatchingTransformer


def cells_to_fill(task: PuzzleTask, inputs: Tensor) -> Tensor:
    """Mark the cells the solver has to fill: inputs [B, L] int -> bool [B, L] on the same device.

    Tasks that keep the base rule (cells equal to `fill_token`) are marked on the device, without a
    host round trip or a graph break under torch.compile. Other tasks go through their numpy method.
    """
    if type(task).cells_to_fill is PuzzleTask.cells_to_fill:
        return inputs == task.fill_token
    marks = task.cells_to_fill(inputs.cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(marks)).to(inputs.device)


def answer_token_mask(model: FlowMatchingTransformer, device: torch.device) -> Tensor:
    """Mark the state tokens a cell to fill may take (the task's answer tokens): bool [state_vocab_size]."""
    legal = torch.zeros(model.state_vocab_size, dtype=torch.bool, device=device)
    legal[list(model.task.answer_tokens)] = True
    return legal


def content_keyed_source(inputs: Tensor, answer_tokens: tuple[int, ...], seed: int) -> Tensor:
    """Draw a uniform source sample per example from a generator keyed by (seed, the example's puzzle).

    inputs: [B, L] int. Returns answer tokens [B, L] int64 on the same device. An example gets the same
    draw whatever batch it is in, which is what keeps uniform-source greedy decoding batch-independent.
    """
    tokens = torch.tensor(answer_tokens, dtype=torch.int64)
    rows = inputs.cpu().numpy().astype(np.int64)
    draws = []
    for row in rows:
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=seed.to_bytes(8, "little", signed=True))
        generator = torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little"))
        draws.append(tokens[torch.randint(len(tokens), (len(row),), generator=generator)])
    return torch.stack(draws).to(inputs.device)


def greedy_decode(
    model: FlowMatchingTransformer,
    inputs: Tensor,
    puzzle_identifiers: Tensor,
    budget: int,
    path: MixtureDiscreteProbPath,
    t_max: float,
    seed: int = 0,
    batch_invariant: bool = True,
) -> tuple[Tensor, Tensor]:
    """Decode grids by committing the most confident pending cells, k per example per model call.

    inputs: [B, L] int64 puzzles; puzzle_identifiers: [B] int64; budget: max model calls per example.
    Pending cells hold MASK (mask source) or a fixed uniform draw from `content_keyed_source` (uniform
    source, keyed by `seed`), so every example starts from a sample of the training source. The time
    fed to the model is the t whose kappa_t equals the committed fraction of the example's cells to fill.
    Confidence ties go to the lower cell index.

    With `batch_invariant`, every call runs the model on one example. Matmul kernels may pick their
    reduction order by the number of rows: on CPU (torch 2.13, MKL) an example's float32 logits differed by
    up to about 1e-6 between batched and single-example calls, enough to flip near-tied decisions.
    Returns (grids [B, L] int64, model calls used per example [B] float32).
    """
    if budget < 1:
        raise ValueError(f"greedy decoding needs a budget of at least 1 model call, got {budget}")
    pending = cells_to_fill(model.task, inputs)
    if model.mask_token is not None:
        source = torch.full_like(inputs, model.mask_token)
    else:
        source = content_keyed_source(inputs, model.task.answer_tokens, seed)
    x = torch.where(pending, source, inputs)
    legal = answer_token_mask(model, inputs.device)
    num_to_fill = pending.sum(1)
    nfe = torch.zeros(len(inputs), dtype=torch.float32, device=inputs.device)

    for call in range(budget):
        remaining = pending.sum(1)
        active = torch.nonzero(remaining > 0).flatten()
        if len(active) == 0:
            break
        committed_fraction = 1.0 - remaining[active].float() / num_to_fill[active].float()
        t = path.scheduler.kappa_inverse(committed_fraction).clamp(max=t_max)
        logits = _call_model(model, x[active], t, inputs[active], puzzle_identifiers[active], batch_invariant)
        confidence, token = torch.softmax(logits.masked_fill(~legal, -math.inf), dim=-1).max(dim=-1)

        # Rank pending cells by confidence; the stable sort keeps index order among equal scores.
        score = torch.where(pending[active], confidence, -1.0)
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
        positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(1, order, positions)  # rank[b, cell] = place in the order
        per_example = torch.ceil(remaining[active].float() / (budget - call)).long()  # [A]
        commit = pending[active] & (rank < per_example[:, None])

        x[active] = torch.where(commit, token, x[active])
        pending[active] &= ~commit
        nfe[active] += 1
    return x, nfe


def _call_model(
    model: FlowMatchingTransformer, x_t: Tensor, t: Tensor, inputs: Tensor, puzzle_identifiers: Tensor, one_by_one: bool
) -> Tensor:
    """Run the model on a batch, or on each example separately when `one_by_one`; returns logits [B, L, V]."""
    if not one_by_one:
        return model(x_t=x_t, t=t, inputs=inputs, puzzle_identifiers=puzzle_identifiers)
    logits = []
    for i in range(len(x_t)):
        one = slice(i, i + 1)
        logits.append(model(x_t=x_t[one], t=t[one], inputs=inputs[one], puzzle_identifiers=puzzle_identifiers[one]))
    return torch.cat(logits)


class PinnedPosterior(ModelWrapper):
    """The model's posterior as the Euler solver needs it: float64 probabilities [B, L, state_vocab_size].

    Free cells (cells to fill still at MASK; with the uniform source, every cell to fill) get a softmax
    over the answer tokens only. Every other cell gets the one-hot of its current token, so the solver's
    jumps and its final full resample leave givens, PAD and committed cells unchanged.
    """

    def __init__(self, model: FlowMatchingTransformer, legal: Tensor):
        super().__init__(model)
        self.legal = legal

    def forward(self, x: Tensor, t: Tensor, **extras: Tensor) -> Tensor:
        """x: [B, L] int64 state; t: [B]; extras: inputs [B, L], to_fill [B, L] bool, puzzle_identifiers [B]."""
        logits = self.model(x_t=x, t=t, inputs=extras["inputs"], puzzle_identifiers=extras["puzzle_identifiers"])
        posterior = torch.softmax(logits.double().masked_fill(~self.legal, -math.inf), dim=-1)
        free = extras["to_fill"]
        if self.model.mask_token is not None:
            free = free & (x == self.model.mask_token)
        pinned = F.one_hot(x, posterior.shape[-1]).double()
        return torch.where(free[..., None], posterior, pinned)


def euler_decode(
    model: FlowMatchingTransformer,
    inputs: Tensor,
    puzzle_identifiers: Tensor,
    budget: int,
    path: MixtureDiscreteProbPath,
    t_max: float,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Sample grids with `MixtureDiscreteEulerSolver` in `budget` uniform steps over [0, t_max].

    inputs: [B, L] int64; puzzle_identifiers: [B] int64. The source draw and the solver use the global
    torch RNG, seeded with `seed` inside `fork_rng` so the caller's RNG state is untouched. The same seed
    and the same batch give the same grids; another batch composition gives other random streams.
    Returns (grids [B, L] int64, model calls per example [B] float32, always `budget`).
    """
    if budget < 1:
        raise ValueError(f"Euler sampling needs a budget of at least 1 step, got {budget}")
    to_fill = cells_to_fill(model.task, inputs)
    legal = answer_token_mask(model, inputs.device)
    solver = MixtureDiscreteEulerSolver(PinnedPosterior(model, legal), path, vocabulary_size=model.state_vocab_size)
    # An explicit grid gives exactly `budget` steps; step_size = t_max / budget can round up to one more.
    time_grid = torch.linspace(0.0, t_max, budget + 1, device=inputs.device)

    devices = [inputs.device] if inputs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if model.mask_token is not None:
            source = torch.full_like(inputs, model.mask_token)
        else:
            answers = torch.tensor(model.task.answer_tokens, device=inputs.device)
            source = answers[torch.randint(len(answers), inputs.shape, device=inputs.device)]
        x_init = torch.where(to_fill, source, inputs)
        grids = solver.sample(
            x_init=x_init,
            step_size=None,
            time_grid=time_grid,
            dtype_categorical=torch.float64,
            inputs=inputs,
            to_fill=to_fill,
            puzzle_identifiers=puzzle_identifiers,
        )
    return grids, torch.full((len(inputs),), float(budget), device=inputs.device)


def majority_vote(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Pick, per example, the whole grid that most samples agree on; ties go to the earliest sample.

    samples: [K, B, L] int64. Returns (grids [B, L], share of the K samples equal to the pick [B] float32).
    """
    votes = torch.stack([(samples == sample).all(-1).sum(0) for sample in samples])  # [K, B]
    best = votes.argmax(0)  # first maximum, so the earliest sample wins a tie
    grids = samples[best, torch.arange(samples.shape[1], device=samples.device)]
    return grids, votes.max(0).values.float() / len(samples)
