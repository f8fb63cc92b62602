"""Loss heads: token cross-entropies and TRM's ACT head (deep supervision with a learned halting Q head)."""

from typing import Any, Literal

import pydantic
import torch
import torch.nn.functional as F
from flow_matching.loss import MixturePathGeneralizedKL
from flow_matching.path import MixtureDiscreteProbPath
from flow_matching.path.scheduler import PolynomialConvexScheduler
from pydantic import ConfigDict, Field
from torch import Tensor

from dataset.common import PuzzleDatasetMetadata
from models.dfm_sampling import answer_token_mask, cells_to_fill, euler_decode, greedy_decode, majority_vote
from models.flow_matching import FlowMatchingTransformer
from models.head import IGNORE_LABEL, Batch, Carry, GlobalBatchRandom, LossHead, Prediction, StepOutput
from models.trm import TinyRecursiveReasoningModel


def widest_float_dtype(device: torch.device) -> torch.dtype:
    """Return float64, or float32 on MPS devices, which have no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def stablemax_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_LABEL) -> Tensor:
    """Per-token cross-entropy of stablemax probabilities p_i = s(x_i) / sum_j s(x_j).

    s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0 grows linearly rather than exponentially. It is the
    TRM reference's default token loss. logits: [..., V] float; labels: [...] int. Returns [...] in float64
    (float32 on MPS), 0 where labels == ignore_index.
    """
    x = logits.to(widest_float_dtype(logits.device))
    # Each branch is evaluated on its own half-line only, so the unused branch of `where` cannot produce inf or NaN
    # gradients.
    s = torch.where(x < 0, 1.0 / (1.0 - x.clamp(max=0.0)), x.clamp(min=0.0) + 1.0)
    log_probs = torch.log(s) - torch.log(s.sum(dim=-1, keepdim=True))
    return _label_nll(log_probs, labels, ignore_index)


def softmax_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_LABEL) -> Tensor:
    """Per-token softmax cross-entropy in float32.

    logits: [..., V] float; labels: [...] int. Returns [...] float32, 0 where labels == ignore_index.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return _label_nll(log_probs, labels, ignore_index)


def _label_nll(log_probs: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    valid = labels != ignore_index
    picked = torch.gather(log_probs, -1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, -picked, 0.0)


LOSS_FUNCTIONS = {
    "stablemax_cross_entropy": stablemax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}


class ACTLossConfig(pydantic.BaseModel):
    """The `arch.loss` keys of the ACT head."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["act"] = Field("act", description="Registry name of this loss head.")
    loss_type: Literal["stablemax_cross_entropy", "softmax_cross_entropy"] = Field(
        "stablemax_cross_entropy", description="Per-token loss of the predicted grid."
    )
    q_loss_weight: float = Field(
        0.5,
        ge=0.0,
        description="Weight of the Q-halt and Q-continue BCE terms against the token loss; 0.5 is the TRM and "
        "HRM reference value, kept so runs compare with theirs.",
    )


class ACTEvalOptions(pydantic.BaseModel):
    """Evaluation options of `ACTLossHead.predict`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    halt_by_q: bool = Field(
        False, description="Answer each example with its prediction at the first step where the Q head votes to halt."
    )


class ACTLossHead(LossHead):
    """TRM's training objective: one supervision step per call, with an ACT carry across calls.

    Losses cover every slot at every step and are sums over the local batch:
        lm_loss          sum over slots of the mean token loss over the slot's labelled cells
        q_halt_loss      BCE-with-logits of q_halt against "every labelled cell is correct"
        q_continue_loss  BCE of sigmoid(q_continue) against the bootstrapped target (0 when no_ACT_continue)
        loss             lm_loss + q_loss_weight * (q_halt_loss + q_continue_loss)

    Metrics are (sum, count) pairs. The loss terms use count = local batch size, so sum / count after summing
    over ranks is the mean per example. The others cover only the slots that halted on this step and have at
    least one labelled cell:
        accuracy          mean over those slots of their fraction of correct labelled cells (givens included)
        exact_accuracy    fraction with every labelled cell correct
        q_halt_accuracy   fraction where (q_halt >= 0) equals exact correctness; "do not halt" on a wrong answer
                          counts as right, so early in training this is near 1 (reference definition)
        q_halt_precision  of the slots where the Q head voted to halt, the fraction that were exactly correct;
                          count is 0 when no slot voted to halt
        q_halt_recall     of the exactly correct slots, the fraction where the Q head voted to halt
        steps             supervision steps used
    """

    config_class = ACTLossConfig
    budget_name = "supervision_steps"
    eval_options_model = ACTEvalOptions

    def __init__(self, model: TinyRecursiveReasoningModel, config: ACTLossConfig, metadata: PuzzleDatasetMetadata):
        if not isinstance(model, TinyRecursiveReasoningModel):
            raise TypeError(f"ACTLossHead needs a TinyRecursiveReasoningModel, got {type(model).__name__}")
        super().__init__(model, config, metadata)
        self.token_loss = LOSS_FUNCTIONS[config.loss_type]

    def initial_carry(self, batch: Batch) -> Carry:
        """Create the ACT carry for a batch of this shape; see `TinyRecursiveReasoningModel.initial_carry`."""
        return self.model.initial_carry(batch)

    def forward(self, carry: Carry, batch: Batch, rng: GlobalBatchRandom) -> StepOutput:
        """Run one supervision step and compute its loss and metrics."""
        carry, outputs = self.model(carry, batch, rng)
        labels = carry["labels"]
        mask = labels != IGNORE_LABEL
        label_counts = mask.sum(-1)
        divisor = label_counts.clamp_min(1)

        token_losses = self.token_loss(outputs.logits, labels)  # [B, L]
        lm_loss = (token_losses.sum(-1) / divisor).sum().float()
        q_halt_logits = outputs.q_halt_logits.float()
        with torch.no_grad():
            is_correct = mask & (outputs.logits.argmax(-1) == labels)
            seq_correct = is_correct.sum(-1) == label_counts
        q_halt_loss = F.binary_cross_entropy_with_logits(q_halt_logits, seq_correct.float(), reduction="sum")
        q_continue_loss = torch.zeros((), device=labels.device)
        if outputs.target_q_continue is not None:
            q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs.q_continue_logits.float(), outputs.target_q_continue, reduction="sum"
            )
        loss = lm_loss + self.config.q_loss_weight * (q_halt_loss + q_continue_loss)

        with torch.no_grad():
            q_votes_halt = self.model.halt_decision(outputs.q_halt_logits, outputs.q_continue_logits)
            metrics = _halted_metrics(
                counted=carry["halted"] & (label_counts > 0),
                token_accuracy=is_correct.sum(-1) / divisor,
                seq_correct=seq_correct,
                q_halt_logits=q_halt_logits,
                q_votes_halt=q_votes_halt,
                steps=carry["steps"],
            )
            batch_size = torch.tensor(float(len(labels)), device=labels.device)
            metrics["lm_loss"] = (lm_loss.detach(), batch_size)
            metrics["q_halt_loss"] = (q_halt_loss.detach(), batch_size)
            metrics["q_continue_loss"] = (q_continue_loss.detach(), batch_size)
        return StepOutput(carry=carry, loss=loss, metrics=metrics)

    @torch.no_grad()
    def predict(self, batch: Batch, budgets: list[int] | None, options: ACTEvalOptions) -> Prediction:
        """Run max(budgets) supervision steps from fresh latents in eval mode, recording argmax grids.

        Budgets may exceed halt_max_steps: the recursion simply continues on the same example. `extras` contains
        `steps`, the first step at which the Q head votes to halt (else the last step run), and
        `q_halt_accuracy` at the last step. With `options.halt_by_q`, `selected` is each example's
        prediction at that step.
        """
        budgets = self.default_budgets() if budgets is None else sorted(set(budgets))
        if not budgets or budgets[0] < 1:
            raise ValueError(f"budgets must be a non-empty list of positive step counts, got {budgets}")
        was_training = self.training
        self.eval()
        try:
            return self._predict(batch, budgets, options)
        finally:
            self.train(was_training)

    def _predict(self, batch: Batch, budgets: list[int], options: ACTEvalOptions) -> Prediction:
        model = self.model
        inputs, labels = batch["inputs"], batch["labels"]
        x = model.embed_input(inputs, batch["puzzle_identifiers"])
        z_H, z_L = model.initial_latents(len(inputs), inputs.device)

        by_budget = {}
        halt_step = torch.zeros(len(inputs), dtype=torch.int64, device=inputs.device)
        selected = torch.zeros_like(inputs)
        for step in range(1, budgets[-1] + 1):
            z_H, z_L = model.recurse(z_H, z_L, x)
            logits, q_halt, q_continue = model.read_out(z_H)
            preds = logits.argmax(-1)
            if step in budgets:
                by_budget[step] = preds
            halts_now = (halt_step == 0) & model.halt_decision(q_halt, q_continue)
            halt_step = torch.where(halts_now, step, halt_step)
            selected = torch.where(halts_now.unsqueeze(-1), preds, selected)

        never_halted = halt_step == 0
        halt_step = torch.where(never_halted, budgets[-1], halt_step)
        selected = torch.where(never_halted.unsqueeze(-1), preds, selected)
        mask = labels != IGNORE_LABEL
        seq_correct = (mask & (preds == labels)).sum(-1) == mask.sum(-1)
        extras = {
            "steps": halt_step.float(),
            "q_halt_accuracy": ((q_halt >= 0) == seq_correct).float(),
        }
        return Prediction(by_budget=by_budget, selected=selected if options.halt_by_q else None, extras=extras)

    def default_budgets(self) -> list[int]:
        """Every supervision step count from 1 to halt_max_steps."""
        return list(range(1, self.model.config.halt_max_steps + 1))

    def forward_flops_per_example(self) -> float:
        """Analytic FLOPs of one supervision step without gradient."""
        return self.model.forward_flops_per_example()

    def train_flops_per_example(self) -> float:
        """Analytic FLOPs of one training step (one supervision step, forward and backward)."""
        return self.model.train_flops_per_example()

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts; "embedding_parameters" holds the token, learned position and output tables."""
        table_names = ("embed_tokens.", "embed_pos.", "lm_head.")
        embedding = sum(p.numel() for name, p in self.model.named_parameters() if name.startswith(table_names))
        total = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        puzzle = 0 if self.model.puzzle_emb is None else self.model.puzzle_emb.weights.numel()
        return {
            "parameters": total - embedding,
            "embedding_parameters": embedding,
            "puzzle_embedding_parameters": puzzle,
        }


def _halted_metrics(
    counted: Tensor,
    token_accuracy: Tensor,
    seq_correct: Tensor,
    q_halt_logits: Tensor,
    q_votes_halt: Tensor,
    steps: Tensor,
) -> dict[str, tuple[Tensor, Tensor]]:
    """(sum, count) metrics over the `counted` slots; every argument is [B]."""
    count = counted.sum().float()
    voted = counted & q_votes_halt
    correct = counted & seq_correct
    return {
        "accuracy": (torch.where(counted, token_accuracy, 0.0).sum().float(), count),
        "exact_accuracy": (correct.sum().float(), count),
        "q_halt_accuracy": ((counted & ((q_halt_logits >= 0) == seq_correct)).sum().float(), count),
        "q_halt_precision": ((voted & seq_correct).sum().float(), voted.sum().float()),
        "q_halt_recall": ((correct & q_votes_halt).sum().float(), correct.sum().float()),
        "steps": (torch.where(counted, steps, 0).sum().float(), count),
    }


# ---------------------------------------------------------------------------------------------
# Discrete Flow Matching


def sample_path(path: MixtureDiscreteProbPath, x_0: Tensor, x_1: Tensor, t: Tensor, uniforms: Tensor) -> Tensor:
    """Sample x_t on the mixture path: x_0 where uniforms < sigma_t, else x_1.

    This is `MixtureDiscreteProbPath.sample` (flow_matching 1.0.10) with the uniforms passed in rather
    than drawn from the global RNG. x_0, x_1: [B, L] int64; t: [B] float; uniforms: [B, L] in [0, 1).
    Returns x_t [B, L] int64.
    """
    sigma_t = path.scheduler(t).sigma_t[:, None]  # [B, 1]
    return torch.where(uniforms < sigma_t, x_0, x_1)


class DFMLossConfig(pydantic.BaseModel):
    """The `arch.loss` keys of the Discrete Flow Matching head."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["discrete_flow_matching"] = Field(
        "discrete_flow_matching", description="Registry name of this loss head."
    )
    loss_type: Literal["cross_entropy", "generalized_kl"] = Field(
        "cross_entropy",
        description="Per-cell loss: cross-entropy on x_1, or the path's generalized KL (weight "
        "kappa_dot / (1 - kappa), the DFM ELBO term).",
    )
    t_max: float = Field(
        1.0 - 1e-3,
        gt=0.0,
        lt=1.0,
        description="Training times are drawn from U[0, t_max) and samplers stop at t_max; below 1 so the "
        "generalized KL weight kappa_dot / (1 - kappa) stays finite.",
    )
    eval_sampler: Literal["greedy", "euler"] = Field(
        "greedy", description="Sampler of periodic evaluation when the evaluation options name none."
    )
    eval_steps: int | None = Field(
        None,
        ge=1,
        description="NFE budget of periodic evaluation. None means min(seq_len, 128): one cell per call on "
        "grids of up to 128 cells (Sudoku), and 128 calls on larger grids (4 to 5 open cells per call on 30x30 "
        "Maze-Hard, which has 493 to 649 open cells).",
    )
    eval_batch_invariant: bool = Field(
        False,
        description="Periodic evaluation decodes one example at a time, bit-identical to evaluate.py's default; "
        "off by default because batched calls are several times faster and differ only on near-tied cells.",
    )


# Default NFE cap for large grids. 128 calls of the default 6-layer denoiser are 768 layer passes, the same
# order as the 480 of TRM's maze setting (16 supervision steps of 3 cycles x 5 calls x 2 layers).
MAX_DEFAULT_EVAL_STEPS = 128


class DFMEvalOptions(pydantic.BaseModel):
    """Evaluation options of `DiscreteFlowMatchingLossHead.predict`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sampler: Literal["greedy", "euler"] | None = Field(
        None, description="Sampler; None uses the config's eval_sampler."
    )
    seed: int = Field(
        0, ge=0, lt=2**31, description="Seed of the Euler sampler and of the uniform-source greedy start state."
    )
    num_samples: int = Field(
        1,
        ge=1,
        description="Euler samples drawn at the largest budget and majority-voted into the prediction's "
        "`selected` grid; 1 turns voting off. Per-budget grids stay single samples.",
    )
    batch_invariant: bool = Field(
        True,
        description="Greedy decoding runs the model one example at a time so that results do not depend on "
        "the batch; False batches the calls (faster, but near-tied decisions can change with the batch).",
    )


class DiscreteFlowMatchingLossHead(LossHead):
    """Discrete Flow Matching on a mixture path with kappa_t = t^n, conditioned on the puzzle.

    Training: x_1 is the solution (labels; the inputs where labels are IGNORE_LABEL, i.e. PAD). The source
    x_0 is MASK or a uniform answer token on supervised cells to fill and equals x_1 everywhere else.
    Givens and PAD are therefore never noised. The loss covers supervised cells to fill only: per sequence the
    mean over those cells, summed over the local batch.
    """

    config_class = DFMLossConfig
    budget_name = "nfe"
    eval_options_model = DFMEvalOptions

    def __init__(self, model: FlowMatchingTransformer, config: DFMLossConfig, metadata: PuzzleDatasetMetadata):
        super().__init__(model, config, metadata)
        self.path = MixtureDiscreteProbPath(PolynomialConvexScheduler(n=model.config.scheduler_exponent))
        self.generalized_kl = MixturePathGeneralizedKL(self.path, reduction="none")
        self.register_buffer(
            "answer_tokens", torch.tensor(model.task.answer_tokens, dtype=torch.int64), persistent=False
        )
        self.register_buffer("legal_tokens", answer_token_mask(model, torch.device("cpu")), persistent=False)

    def initial_carry(self, batch: Batch) -> Carry | None:
        return None

    def forward(self, carry: Carry | None, batch: Batch, rng: GlobalBatchRandom) -> StepOutput:
        """Draw t, x_0 and x_t from `rng` only, and return the summed loss with its metrics."""
        inputs, labels = batch["inputs"], batch["labels"]
        supervised = cells_to_fill(self.model.task, inputs) & (labels != IGNORE_LABEL)
        x_1 = torch.where(labels == IGNORE_LABEL, inputs, labels)

        t = rng.rand() * self.config.t_max  # [B]
        uniforms = rng.rand(inputs.shape[1])  # [B, L]
        if self.model.mask_token is not None:
            noise = torch.full_like(x_1, self.model.mask_token)
        else:
            noise = self.answer_tokens[rng.randint(0, len(self.answer_tokens), inputs.shape[1])]
        x_0 = torch.where(supervised, noise, x_1)
        x_t = sample_path(self.path, x_0, x_1, t, uniforms)

        logits = self.model(x_t=x_t, t=t, inputs=inputs, puzzle_identifiers=batch["puzzle_identifiers"])
        if self.config.loss_type == "cross_entropy":
            per_cell = F.cross_entropy(logits.transpose(1, 2), x_1, reduction="none")  # [B, L]
        else:
            per_cell = self.generalized_kl(logits, x_1, x_t, t)  # [B, L]
        per_cell = torch.where(supervised, per_cell, 0.0)
        cells = supervised.sum(1)
        loss = (per_cell.sum(1) / cells.clamp(min=1)).sum()

        with torch.no_grad():
            prediction = logits.masked_fill(~self.legal_tokens, -torch.inf).argmax(-1)
            noised = supervised & (uniforms < self.path.scheduler(t).sigma_t[:, None])
            metrics = {
                "loss": (loss.detach(), (cells > 0).sum().float()),
                "one_step_denoise_accuracy": (((prediction == x_1) & noised).sum().float(), noised.sum().float()),
            }
        return StepOutput(carry=None, loss=loss, metrics=metrics)

    @torch.no_grad()
    def predict(self, batch: Batch, budgets: list[int] | None, options: DFMEvalOptions | None = None) -> Prediction:
        """Decode grids at each NFE budget; `selected` is the majority vote when options.num_samples > 1.

        Extras: "nfe_used/<budget>" (model calls per example) and, when voting, "vote_share" (fraction of
        the samples equal to the voted grid) and "vote_nfe_used" (model calls of all voting samples).
        """
        options = options or DFMEvalOptions()
        sampler = options.sampler or self.config.eval_sampler
        budgets = budgets or self.default_budgets()
        inputs, puzzle_identifiers = batch["inputs"], batch["puzzle_identifiers"]
        by_budget, extras = {}, {}
        for budget in budgets:
            if sampler == "greedy":
                grids, nfe = greedy_decode(
                    self.model, inputs, puzzle_identifiers, budget, self.path, self.config.t_max,
                    seed=options.seed, batch_invariant=options.batch_invariant,
                )
            else:
                grids, nfe = euler_decode(
                    self.model, inputs, puzzle_identifiers, budget, self.path, self.config.t_max, seed=options.seed
                )
            by_budget[budget], extras[f"nfe_used/{budget}"] = grids, nfe

        selected = None
        if options.num_samples > 1:
            budget = max(budgets)
            samples = [
                euler_decode(self.model, inputs, puzzle_identifiers, budget, self.path, self.config.t_max, seed=seed)[0]
                for seed in range(options.seed, options.seed + options.num_samples)
            ]
            selected, extras["vote_share"] = majority_vote(torch.stack(samples))
            extras["vote_nfe_used"] = torch.full_like(extras[f"nfe_used/{budget}"], float(budget * options.num_samples))
        return Prediction(by_budget=by_budget, selected=selected, extras=extras)

    def periodic_eval_options(self) -> DFMEvalOptions:
        """Batched greedy decoding unless the config asks for per-example calls (see eval_batch_invariant)."""
        return DFMEvalOptions(batch_invariant=self.config.eval_batch_invariant)

    def default_budgets(self) -> list[int]:
        steps = self.config.eval_steps or min(self.metadata.seq_len, MAX_DEFAULT_EVAL_STEPS)
        return [steps]

    def forward_flops_per_example(self) -> float:
        return self.model.forward_flops_per_example()

    def inference_flops_used(self, metrics: dict[str, Any], budget: int) -> float:
        """Count the model calls actually made: greedy decoding stops once every cell to fill is committed."""
        calls = metrics.get("nfe_used", {}).get(budget, budget)
        return calls * self.forward_flops_per_example()

    def train_flops_per_example(self) -> float:
        """Estimate one training step as 3 forward passes, because the backward pass costs about two."""
        return 3.0 * self.model.forward_flops_per_example()

    def parameter_counts(self) -> dict[str, int]:
        return self.model.parameter_counts()
