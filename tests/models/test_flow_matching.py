"""Tests of the flow matching denoiser: shapes, options, conditioning, FLOP and parameter counts."""

import math

import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models.flow_matching import FlowMatchingConfig, FlowMatchingTransformer


def random_call(model, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Keyword arguments of a model call with random states, puzzles, times and identifiers."""
    generator = torch.Generator().manual_seed(seed)
    length = model.seq_len
    return {
        "x_t": torch.randint(0, model.state_vocab_size, (batch_size, length), generator=generator),
        "t": torch.rand(batch_size, generator=generator),
        "inputs": torch.randint(0, model.vocab_size, (batch_size, length), generator=generator),
        "puzzle_identifiers": torch.randint(0, 4, (batch_size,), generator=generator),
    }


def open_gates(model, std: float = 0.1) -> None:
    """Give every zero-initialised tensor (adaLN modulation, puzzle table) random values so that blocks act."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point() and tensor.numel() and (tensor == 0).all():
                tensor.normal_(0.0, std)


@pytest.mark.parametrize("source, extra_token", [("mask", 1), ("uniform", 0)])
@pytest.mark.parametrize(
    "task, shape",
    [("sudoku", dict(box_shape=(3, 3))), ("sudoku", dict(box_shape=(2, 2))), ("maze", dict(grid_shape=(30, 30)))],
)
def test_output_shape(dfm_model, dfm_metadata, task, shape, source, extra_token):
    metadata = dfm_metadata(task, **shape)
    model = dfm_model(metadata, source=source)
    logits = model(**random_call(model, batch_size=2))
    assert model.state_vocab_size == metadata.vocab_size + extra_token
    assert logits.shape == (2, metadata.seq_len, metadata.vocab_size + extra_token)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("pos_encodings", ["rope", "learned", "none"])
@pytest.mark.parametrize("structure_embeddings", [False, True])
@pytest.mark.parametrize("puzzle_emb_ndim, puzzle_emb_len", [(0, 0), (32, 2), (40, 0)])
def test_options_build_and_run(dfm_model, pos_encodings, structure_embeddings, puzzle_emb_ndim, puzzle_emb_len):
    model = dfm_model(
        pos_encodings=pos_encodings,
        structure_embeddings=structure_embeddings,
        puzzle_emb_ndim=puzzle_emb_ndim,
        puzzle_emb_len=puzzle_emb_len,
    )
    logits = model(**random_call(model))
    assert logits.shape == (3, 16, model.state_vocab_size)
    assert model.puzzle_prefix_len == (puzzle_emb_len or math.ceil(puzzle_emb_ndim / 32))


@pytest.mark.parametrize("task, tables", [("sudoku", [4, 4, 4]), ("maze", [6, 6])])
def test_structure_tables_per_task(dfm_model, dfm_metadata, task, tables):
    model = dfm_model(dfm_metadata(task), structure_embeddings=True)
    assert [table.weight.shape[0] for table in model.structure_tables] == tables
    assert [int(row.max()) + 1 for row in model.structure_indices] == tables


def test_sudoku_box_indices(dfm_model, dfm_metadata):
    model = dfm_model(dfm_metadata("sudoku", box_shape=(2, 3)), structure_embeddings=True)
    rows, cols, boxes = model.structure_indices.view(3, 6, 6)
    # 2x3 boxes: two rows tall and three columns wide, so six boxes in a 3 x 2 arrangement.
    assert boxes[0].tolist() == [0, 0, 0, 1, 1, 1]
    assert boxes[:, 0].tolist() == [0, 0, 2, 2, 4, 4]
    assert torch.equal(rows[:, 0], torch.arange(6))
    assert torch.equal(cols[0], torch.arange(6))


def test_structure_embeddings_change_output(dfm_model):
    torch.manual_seed(1)
    plain = dfm_model()
    torch.manual_seed(1)
    structured = dfm_model(structure_embeddings=True)
    call = random_call(plain)
    assert not torch.allclose(plain(**call), structured(**call))


def test_puzzle_prefix_conditions_output(dfm_model):
    model = dfm_model(puzzle_emb_ndim=32, puzzle_emb_len=2)
    call = random_call(model)
    before = model(**call)
    other_puzzles = {**call, "puzzle_identifiers": (call["puzzle_identifiers"] + 1) % 4}
    assert torch.equal(before, model(**other_puzzles)), "the zero-initialised puzzle table changed the output"

    open_gates(model)  # a non-zero puzzle table and open gates
    assert not torch.allclose(model(**call), model(**other_puzzles))


def test_puzzle_prefix_needs_identifiers(dfm_model):
    model = dfm_model(puzzle_emb_ndim=32)
    call = random_call(model)
    del call["puzzle_identifiers"]
    with pytest.raises(ValueError, match="puzzle_identifiers"):
        model(**call)


def test_blocks_start_as_identity(dfm_model):
    """Zero-initialised gates: at init a cell's logits depend only on its own state and puzzle token."""
    model = dfm_model()
    call = random_call(model)
    changed = {**call, "x_t": call["x_t"].clone()}
    changed["x_t"][:, 5] = (changed["x_t"][:, 5] + 1) % model.state_vocab_size
    before, after = model(**call), model(**changed)
    others = torch.arange(16) != 5
    assert torch.equal(before[:, others], after[:, others])
    assert not torch.equal(before[:, 5], after[:, 5])

    open_gates(model)
    before, after = model(**call), model(**changed)
    assert not torch.allclose(before[:, others], after[:, others]), "attention did not mix cells"


def test_time_conditions_output(dfm_model):
    model = dfm_model()
    open_gates(model)
    call = random_call(model)
    early = model(**{**call, "t": torch.zeros(3)})
    late = model(**{**call, "t": torch.full((3,), 0.9)})
    assert not torch.allclose(early, late)


def test_bfloat16_forward(dfm_model):
    model = dfm_model(forward_dtype="bfloat16")
    logits = model(**random_call(model))
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())


def math_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """Attention with explicit matmuls, which FlopCounterMode counts (it skips the CPU fused kernel)."""
    weights = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1]), dim=-1)
    return weights @ value


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(puzzle_emb_ndim=32, puzzle_emb_len=3, structure_embeddings=True, source="uniform"),
        dict(hidden_size=48, num_heads=3, num_layers=3, expansion=4.0, time_frequency_size=64),
    ],
)
def test_flops_match_counter(dfm_model, monkeypatch, overrides):
    model = dfm_model(**overrides)
    monkeypatch.setattr(F, "scaled_dot_product_attention", math_attention)
    with FlopCounterMode(display=False) as counter:
        model(**random_call(model, batch_size=1))
    assert model.forward_flops_per_example() == counter.get_total_flops()


def test_flops_default_sudoku_size(dfm_metadata):
    """Hand count for the default 6 x 512 model on 9x9 Sudoku (SwiGLU width 1536, vocab 11 + MASK)."""
    model = FlowMatchingTransformer(FlowMatchingConfig(), dfm_metadata("sudoku", box_shape=(3, 3)))
    per_layer = 81 * (4 * 512 * 512 + 3 * 512 * 1536) + 2 * 81 * 81 * 512
    time_mlp = 256 * 128 + 128 * 128 + 128 * 6 * 512
    expected = 2 * (6 * per_layer + time_mlp + 81 * 512 * 12)
    assert model.forward_flops_per_example() == expected


def test_parameter_counts_partition(dfm_model):
    model = dfm_model(puzzle_emb_ndim=32, structure_embeddings=True, pos_encodings="learned")
    counts = model.parameter_counts()
    hidden = 32
    # State (vocab 6 + MASK) and puzzle tables, output head, row/column/box tables, positions (1 prefix + 16 cells).
    tables = (7 + 6) * hidden + 7 * hidden + 3 * 4 * hidden + (1 + 16) * hidden
    assert counts["embedding_parameters"] == tables
    assert counts["parameters"] + counts["embedding_parameters"] == sum(p.numel() for p in model.parameters())
    assert counts["puzzle_embedding_parameters"] == 4 * 32


def test_config_rejects_bad_values(dfm_model):
    with pytest.raises(pydantic.ValidationError):
        FlowMatchingConfig(hidden_sizes=64)
    with pytest.raises(pydantic.ValidationError):
        FlowMatchingConfig(source="gaussian")
    with pytest.raises(pydantic.ValidationError, match="even"):
        FlowMatchingConfig(time_frequency_size=63)
    with pytest.raises(ValueError, match="puzzle_emb_len"):
        dfm_model(puzzle_emb_ndim=100, puzzle_emb_len=2)
    with pytest.raises(ValueError, match="divisible"):
        dfm_model(hidden_size=30, num_heads=4)
