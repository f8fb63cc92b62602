"""Tests of the per-puzzle embedding table and its sign-SGD optimizer."""

import pytest
import torch
import torch.distributed as dist

from models.sparse_embedding import CastedSparseEmbedding, CastedSparseEmbeddingSignSGD


def make_embedding(rows: int = 6, width: int = 3) -> CastedSparseEmbedding:
    embedding = CastedSparseEmbedding(rows, width, init_std=0.0, cast_to=torch.bfloat16)
    embedding.weights.copy_(torch.arange(rows * width, dtype=torch.float32).view(rows, width) / 10)
    return embedding


def test_forward_train_copies_rows():
    embedding = make_embedding()
    ids = torch.tensor([4, 1, 4])

    out = embedding(ids)

    assert out.dtype == torch.bfloat16
    assert torch.equal(embedding.local_ids, ids)
    assert torch.equal(embedding.local_weights, embedding.weights[ids])
    assert embedding.local_weights.requires_grad
    assert embedding.local_weights.is_leaf


def test_forward_eval_reads_table():
    embedding = make_embedding().eval()

    out = embedding(torch.tensor([2, 5]))

    assert torch.equal(out, embedding.weights[[2, 5]].to(torch.bfloat16))
    assert embedding.local_ids.numel() == 0
    assert not out.requires_grad


def test_table_is_buffer_not_parameter():
    embedding = make_embedding()

    assert list(embedding.parameters()) == []
    assert set(embedding.state_dict()) == {"weights"}


def test_new_batch_size_drops_stale_grad():
    embedding = make_embedding()
    embedding(torch.tensor([0, 1, 2])).float().sum().backward()

    out = embedding(torch.tensor([3, 4]))

    assert embedding.local_weights.grad is None
    out.float().sum().backward()
    assert embedding.local_weights.grad.shape == (2, 3)


def test_sign_sgd_updates_touched_rows():
    embedding = make_embedding()
    before = embedding.weights.clone()
    optimizer = CastedSparseEmbeddingSignSGD(embedding.buffers(), lr=0.5, weight_decay=0.2)
    embedding(torch.tensor([1, 3, 1, 5]))
    # Row 1 appears twice: its gradients sum to (+0.5, -1, 0). Row 5 is touched with a zero gradient.
    embedding.local_weights.grad = torch.tensor(
        [[1.0, -3.0, 2.0], [-2.0, 4.0, 0.0], [-0.5, 2.0, -2.0], [0.0, 0.0, 0.0]]
    )

    optimizer.step()

    decay = 1 - 0.5 * 0.2
    expected = before.clone()
    expected[1] = before[1] * decay - 0.5 * torch.tensor([1.0, -1.0, 0.0])
    expected[3] = before[3] * decay - 0.5 * torch.tensor([-1.0, 1.0, 0.0])
    expected[5] = before[5] * decay
    torch.testing.assert_close(embedding.weights, expected, rtol=0, atol=1e-7)
    for row in (0, 2, 4):
        assert torch.equal(embedding.weights[row], before[row])


def test_sign_sgd_accepts_modules():
    embeddings = [make_embedding(), make_embedding(rows=4, width=2)]

    optimizer = CastedSparseEmbeddingSignSGD(embeddings, lr=0.1)

    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["params"][0] is embeddings[1].weights


def test_sign_sgd_lr_zero_changes_nothing():
    embedding = make_embedding()
    before = embedding.weights.clone()
    optimizer = CastedSparseEmbeddingSignSGD(embedding.buffers(), lr=0.0, weight_decay=1.0)
    embedding(torch.tensor([0, 2])).float().sum().backward()

    optimizer.step()

    assert torch.equal(embedding.weights, before)


def test_sign_sgd_without_grad_skips():
    embedding = make_embedding()
    before = embedding.weights.clone()
    optimizer = CastedSparseEmbeddingSignSGD(embedding.buffers(), lr=0.5)
    embedding(torch.tensor([0, 2]))

    optimizer.step()

    assert torch.equal(embedding.weights, before)


def test_sign_sgd_state_dict_roundtrip():
    embedding = make_embedding()
    optimizer = CastedSparseEmbeddingSignSGD(embedding.buffers(), lr=0.0, weight_decay=0.1)
    optimizer.param_groups[0]["lr"] = 0.03
    state = optimizer.state_dict()

    restored = CastedSparseEmbeddingSignSGD(embedding.buffers(), lr=0.0, weight_decay=0.5)
    restored.load_state_dict(state)

    assert restored.param_groups[0]["lr"] == 0.03
    assert restored.param_groups[0]["weight_decay"] == 0.1


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(lr=0.1, weight_decay=-0.1)])
def test_sign_sgd_rejects_negative(kwargs):
    with pytest.raises(ValueError, match="must be >= 0"):
        CastedSparseEmbeddingSignSGD(make_embedding().buffers(), **kwargs)


def test_sign_sgd_rejects_other_tensors():
    with pytest.raises(ValueError, match="expected the 3 buffers"):
        CastedSparseEmbeddingSignSGD([torch.zeros(4, 3)], lr=0.1)


def test_sign_sgd_two_ranks_match_one(monkeypatch):
    """Two simulated ranks, each with half the batch, end with the table of one process on the whole batch."""
    ids = [torch.tensor([0, 2, 2]), torch.tensor([2, 4, 0])]
    grads = [
        torch.tensor([[1.0, -1.0, 0.5], [0.5, 0.5, -1.0], [1.0, -2.0, 0.0]]),
        torch.tensor([[-2.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.5, 3.0, 0.0]]),
    ]

    single = make_embedding()
    single_optimizer = CastedSparseEmbeddingSignSGD(single.buffers(), lr=0.25, weight_decay=0.1)
    single(torch.cat(ids))
    single.local_weights.grad = torch.cat(grads)
    single_optimizer.step()

    # A process-group stand-in: all_gather returns both ranks' tensors after checking the caller's own.
    current_rank = {"rank": 0}

    def fake_all_gather(outputs, tensor):
        parts = grads if tensor.is_floating_point() else ids
        assert torch.equal(tensor, parts[current_rank["rank"]])
        for output, part in zip(outputs, parts):
            output.copy_(part)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_gather", fake_all_gather)
    for rank in (0, 1):
        current_rank["rank"] = rank
        embedding = make_embedding()
        optimizer = CastedSparseEmbeddingSignSGD(embedding.buffers(), lr=0.25, weight_decay=0.1)
        embedding(ids[rank])
        embedding.local_weights.grad = grads[rank].clone()
        optimizer.step()
        assert torch.equal(embedding.weights, single.weights)
