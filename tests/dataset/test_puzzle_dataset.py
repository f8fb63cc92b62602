"""PuzzleDataset: the training stream, resume, rank sharding, evaluation padding and the on-disk formats."""

import itertools
import json
from pathlib import Path

import numpy as np
import pydantic
import pytest

from dataset.common import DatasetError, single_example_split, split_metadata, write_split
from dataset.puzzle_dataset import PuzzleDataset
from dataset.tasks import TASKS
from models.head import IGNORE_LABEL

FIXED_EPOCH_SIZE = 24


def take(iterator, count: int) -> list[dict[str, np.ndarray]]:
    return list(itertools.islice(iterator, count))


def stream_of(dataset: PuzzleDataset, num_batches: int, start_batch: int = 0) -> np.ndarray:
    """Example indices of `num_batches` consecutive training batches, concatenated."""
    return np.concatenate([batch["example_index"] for batch in take(dataset.train_batches(start_batch), num_batches)])


def assert_batches_equal(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def epochs_of(stream: np.ndarray, epoch_size: int) -> list[np.ndarray]:
    return [stream[start : start + epoch_size] for start in range(0, len(stream) - epoch_size + 1, epoch_size)]


# ---------------------------------------------------------------------------------------------
# Training batches


def test_train_batch_layout(loader_fixed_epoch):
    dataset = PuzzleDataset(loader_fixed_epoch.path, "train", global_batch_size=10)
    batch = next(dataset.train_batches())
    assert set(batch) == {"inputs", "labels", "puzzle_identifiers", "mask", "example_index"}
    assert batch["inputs"].shape == (10, 81)
    assert batch["labels"].shape == (10, 81)
    assert batch["inputs"].dtype == np.int32
    assert batch["labels"].dtype == np.int32
    assert batch["puzzle_identifiers"].shape == (10,)
    assert batch["puzzle_identifiers"].dtype == np.int32
    assert batch["mask"].dtype == np.bool_
    assert batch["mask"].all()
    assert batch["example_index"].dtype == np.int64


def test_train_batch_rows_match_files(loader_fixed_epoch):
    layout = loader_fixed_epoch
    dataset = PuzzleDataset(layout.path, "train", global_batch_size=10)
    for batch in take(dataset.train_batches(), 5):
        rows = batch["example_index"]
        np.testing.assert_array_equal(batch["inputs"], layout.inputs[rows])
        expected_ids = layout.puzzle_identifiers[layout.puzzle_of_example[rows]]
        np.testing.assert_array_equal(batch["puzzle_identifiers"], expected_ids)


def test_train_labels_ignore_label(loader_fixed_epoch):
    layout = loader_fixed_epoch
    batch = next(PuzzleDataset(layout.path, "train", global_batch_size=10).train_batches())
    stored = layout.labels[batch["example_index"]].astype(np.int32)
    ignored = stored == 0
    assert ignored.any()
    assert (batch["labels"][ignored] == IGNORE_LABEL).all()
    np.testing.assert_array_equal(batch["labels"][~ignored], stored[~ignored])


def test_labels_kept_without_ignore_id(loader_write_layout):
    layout = loader_write_layout("no_ignore", [[1]] * 12, ignore_label_id=None)
    dataset = PuzzleDataset(layout.path, "train", global_batch_size=4)
    assert dataset.metadata.ignore_label_id is None
    batch = next(dataset.train_batches())
    assert (layout.labels[batch["example_index"]] == 0).any()
    np.testing.assert_array_equal(batch["labels"], layout.labels[batch["example_index"]])


def test_epoch_one_puzzle_per_group(loader_fixed_epoch):
    layout = loader_fixed_epoch
    dataset = PuzzleDataset(layout.path, "train", global_batch_size=10)
    stream = stream_of(dataset, num_batches=3 * FIXED_EPOCH_SIZE // 10 + 1)
    epochs = epochs_of(stream, FIXED_EPOCH_SIZE)
    assert len(epochs) == 3
    for epoch in epochs:
        puzzles = layout.puzzle_of_example[epoch]
        # Each puzzle's examples are consecutive, so the puzzle changes exactly once per group boundary.
        runs = puzzles[np.r_[True, puzzles[1:] != puzzles[:-1]]]
        assert len(runs) == layout.num_groups
        assert sorted(layout.group_of_puzzle[runs]) == list(range(layout.num_groups))
        # All examples of each chosen puzzle appear, each exactly once.
        chosen_examples = np.flatnonzero(np.isin(layout.puzzle_of_example, runs))
        np.testing.assert_array_equal(np.sort(epoch), chosen_examples)


def test_epoch_orders_differ(loader_fixed_epoch):
    layout = loader_fixed_epoch
    dataset = PuzzleDataset(layout.path, "train", global_batch_size=8)
    epochs = epochs_of(stream_of(dataset, num_batches=9), FIXED_EPOCH_SIZE)
    group_orders = [layout.group_of_example[epoch] for epoch in epochs]
    assert not np.array_equal(group_orders[0], group_orders[1])
    assert not np.array_equal(group_orders[1], group_orders[2])


def test_epoch_augmented_choice_varies(loader_fixed_epoch):
    layout = loader_fixed_epoch
    dataset = PuzzleDataset(layout.path, "train", global_batch_size=8)
    # 40 epochs: a puzzle of a 3-variant group goes unchosen with probability (2/3)^40, about 1e-7.
    epochs = epochs_of(stream_of(dataset, num_batches=120), FIXED_EPOCH_SIZE)
    chosen = {frozenset(layout.puzzle_of_example[epoch].tolist()) for epoch in epochs}
    assert len(chosen) > 1
    seen_puzzles = set().union(*chosen)
    assert seen_puzzles == set(range(len(layout.group_of_puzzle)))


def test_epoch_examples_shuffled(loader_fixed_epoch):
    layout = loader_fixed_epoch
    dataset = PuzzleDataset(layout.path, "train", global_batch_size=8)
    orders: dict[int, list[tuple[int, ...]]] = {}
    for epoch in epochs_of(stream_of(dataset, num_batches=120), FIXED_EPOCH_SIZE):
        for puzzle in np.unique(layout.puzzle_of_example[epoch]):
            orders.setdefault(int(puzzle), []).append(tuple(epoch[layout.puzzle_of_example[epoch] == puzzle]))
    three_example_puzzles = [p for p, seen in orders.items() if len(seen[0]) == 3 and len(seen) >= 10]
    assert three_example_puzzles
    for puzzle in three_example_puzzles:
        assert len(set(orders[puzzle])) > 1, puzzle


def test_train_same_seed_same_stream(loader_varying_epoch):
    path = loader_varying_epoch.path
    first = take(PuzzleDataset(path, "train", global_batch_size=6, seed=3).train_batches(), 12)
    second = take(PuzzleDataset(path, "train", global_batch_size=6, seed=3).train_batches(), 12)
    assert_batches_equal(first, second)


def test_train_other_seed_other_stream(loader_varying_epoch):
    path = loader_varying_epoch.path
    first = stream_of(PuzzleDataset(path, "train", global_batch_size=6, seed=3), 12)
    second = stream_of(PuzzleDataset(path, "train", global_batch_size=6, seed=4), 12)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("layout_name", ["loader_fixed_epoch", "loader_varying_epoch"])
@pytest.mark.parametrize("start_batch", [1, 2, 5, 13])
def test_train_resume_matches_uninterrupted(request, layout_name, start_batch):
    path = request.getfixturevalue(layout_name).path
    dataset = PuzzleDataset(path, "train", global_batch_size=7, seed=5)
    uninterrupted = take(dataset.train_batches(), start_batch + 6)[start_batch:]
    resumed = take(dataset.train_batches(start_batch), 6)
    assert_batches_equal(resumed, uninterrupted)


@pytest.mark.parametrize("world_size", [2, 3])
def test_train_ranks_concatenate_to_global(loader_varying_epoch, world_size):
    path = loader_varying_epoch.path
    single = take(PuzzleDataset(path, "train", global_batch_size=6, seed=1).train_batches(2), 8)
    ranks = [
        take(
            PuzzleDataset(path, "train", global_batch_size=6, rank=rank, world_size=world_size, seed=1).train_batches(2),
            8,
        )
        for rank in range(world_size)
    ]
    for step, global_batch in enumerate(single):
        for key, value in global_batch.items():
            joined = np.concatenate([rank_batches[step][key] for rank_batches in ranks])
            np.testing.assert_array_equal(joined, value, err_msg=key)
    assert ranks[0][0]["inputs"].shape == (6 // world_size, 81)


# ---------------------------------------------------------------------------------------------
# Evaluation batches


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_covers_split_once(loader_fixed_epoch, world_size):
    layout = loader_fixed_epoch
    num_examples = len(layout.inputs)
    seen = []
    batch_counts = set()
    for rank in range(world_size):
        dataset = PuzzleDataset(layout.path, "train", global_batch_size=12, rank=rank, world_size=world_size)
        batches = list(dataset.eval_batches())
        batch_counts.add(len(batches))
        assert len(batches) == dataset.num_eval_batches()
        for batch in batches:
            assert batch["inputs"].shape == (12 // world_size, 81)
            real = batch["mask"]
            seen.extend(batch["example_index"][real].tolist())
            np.testing.assert_array_equal(batch["inputs"][real], layout.inputs[batch["example_index"][real]])
            assert (batch["example_index"][~real] == -1).all()
            assert (batch["inputs"][~real] == 0).all()
            assert (batch["labels"][~real] == IGNORE_LABEL).all()
            assert (batch["puzzle_identifiers"][~real] == 0).all()
    assert batch_counts == {-(-num_examples // 12)}
    assert sorted(seen) == list(range(num_examples))


def test_eval_file_order(loader_fixed_epoch):
    layout = loader_fixed_epoch
    dataset = PuzzleDataset(layout.path, "train", global_batch_size=16)
    indices = np.concatenate([batch["example_index"] for batch in dataset.eval_batches()])
    num_examples = len(layout.inputs)
    np.testing.assert_array_equal(indices[:num_examples], np.arange(num_examples))
    assert (indices[num_examples:] == -1).all()
    assert len(indices) % 16 == 0


def test_eval_ranks_concatenate_to_global(loader_fixed_epoch):
    path = loader_fixed_epoch.path
    single = list(PuzzleDataset(path, "train", global_batch_size=10).eval_batches())
    ranks = [list(PuzzleDataset(path, "train", global_batch_size=10, rank=r, world_size=2).eval_batches()) for r in (0, 1)]
    for step, global_batch in enumerate(single):
        for key, value in global_batch.items():
            joined = np.concatenate([ranks[0][step][key], ranks[1][step][key]])
            np.testing.assert_array_equal(joined, value, err_msg=key)


def test_eval_max_examples(loader_fixed_epoch):
    dataset = PuzzleDataset(loader_fixed_epoch.path, "train", global_batch_size=4)
    batches = list(dataset.eval_batches(max_examples=9))
    assert len(batches) == dataset.num_eval_batches(max_examples=9) == 3
    indices = np.concatenate([batch["example_index"] for batch in batches])
    np.testing.assert_array_equal(indices, [0, 1, 2, 3, 4, 5, 6, 7, 8, -1, -1, -1])
    assert dataset.num_eval_batches(max_examples=10_000) == dataset.num_eval_batches()


# ---------------------------------------------------------------------------------------------
# Errors


def test_train_error_epoch_below_batch(loader_varying_epoch):
    dataset = PuzzleDataset(loader_varying_epoch.path, "train", global_batch_size=13)
    with pytest.raises(ValueError, match=r"as few as 12 examples.*global_batch_size 13") as error:
        dataset.train_batches()
    assert str(loader_varying_epoch.path) in str(error.value)
    # Evaluation needs no full epoch, so the same dataset still evaluates.
    assert dataset.num_eval_batches() == -(-len(loader_varying_epoch.inputs) // 13)


def test_batch_size_not_divisible(loader_fixed_epoch):
    with pytest.raises(ValueError, match="global_batch_size 10 must be a positive multiple of world_size 3"):
        PuzzleDataset(loader_fixed_epoch.path, "train", global_batch_size=10, world_size=3)


def test_invalid_rank(loader_fixed_epoch):
    with pytest.raises(ValueError, match="rank 2 is invalid for world_size 2"):
        PuzzleDataset(loader_fixed_epoch.path, "train", global_batch_size=4, rank=2, world_size=2)


def test_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="dataset directory not found. Build it with python -m dataset.build_") as error:
        PuzzleDataset(missing, "train", global_batch_size=4)
    assert str(missing) in str(error.value)


def test_missing_split(loader_fixed_epoch):
    with pytest.raises(DatasetError, match=r"split 'test' not found \(splits present: train\). Build it") as error:
        PuzzleDataset(loader_fixed_epoch.path, "test", global_batch_size=4)
    assert str(loader_fixed_epoch.path / "test") in str(error.value)


def test_token_out_of_vocab(loader_write_layout):
    layout = loader_write_layout("big_token", [[1]] * 8)
    labels_path = layout.path / "train" / "all__labels.npy"
    labels = np.load(labels_path)
    labels[5, 7] = 40
    np.save(labels_path, labels)
    dataset = PuzzleDataset(layout.path, "train", global_batch_size=8)
    with pytest.raises(DatasetError, match=r"example 5 has labels token ids outside \[0, 11\)"):
        list(dataset.eval_batches())


def test_empty_group_rejected(loader_fixed_epoch):
    path = loader_fixed_epoch.path / "train" / "all__group_indices.npy"
    offsets = np.load(path)
    np.save(path, np.insert(offsets, 3, offsets[3]))
    # Keep dataset.json consistent with the extra group, so that only the empty group is wrong.
    metadata_path = loader_fixed_epoch.path / "train" / "dataset.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["total_groups"] += 1
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(DatasetError, match="group_indices must be increasing offsets from 0, but entry 3 is empty"):
        PuzzleDataset(loader_fixed_epoch.path, "train", global_batch_size=4)


# ---------------------------------------------------------------------------------------------
# Several dataset directories


def test_mixed_directories_concatenate(loader_write_layout):
    first = loader_write_layout("first", [[1, 1]] * 5, seed=10)
    second = loader_write_layout("second", [[2]] * 4, seed=11)
    dataset = PuzzleDataset([first.path, second.path], "train", global_batch_size=6)
    assert dataset.metadata.total_groups == 9
    assert dataset.examples_per_epoch == 5 + 8
    assert dataset.metadata.num_puzzle_identifiers == 11
    assert dataset.data.num_examples == 18
    stacked_inputs = np.concatenate([first.inputs, second.inputs])
    np.testing.assert_array_equal(dataset.data.inputs[12], stacked_inputs[12])
    np.testing.assert_array_equal(dataset.data.inputs[-1], stacked_inputs[-1])
    np.testing.assert_array_equal(dataset.data.inputs[8:14], stacked_inputs[8:14])
    np.testing.assert_array_equal(np.asarray(dataset.data.labels), np.concatenate([first.labels, second.labels]))

    eval_rows = np.concatenate([batch["inputs"][batch["mask"]] for batch in dataset.eval_batches()])
    np.testing.assert_array_equal(eval_rows, np.concatenate([first.inputs, second.inputs]))
    eval_ids = np.concatenate([batch["puzzle_identifiers"][batch["mask"]] for batch in dataset.eval_batches()])
    # Identifiers are not offset: the second directory's puzzles keep their own identifiers 1..4.
    expected_ids = np.concatenate(
        [first.puzzle_identifiers[first.puzzle_of_example], second.puzzle_identifiers[second.puzzle_of_example]]
    )
    np.testing.assert_array_equal(eval_ids, expected_ids)

    epoch = stream_of(dataset, num_batches=13)[:13]
    from_second = epoch[epoch >= len(first.inputs)]
    assert len(from_second) == 8
    assert len(epoch) - len(from_second) == 5


def test_mixed_directories_mismatch(loader_write_layout):
    first = loader_write_layout("first", [[1]] * 4)
    second = loader_write_layout("second", [[1]] * 4, pad_id=1)
    with pytest.raises(DatasetError, match="pad_id 1 differs from 0") as error:
        PuzzleDataset([first.path, second.path], "train", global_batch_size=2)
    assert str(first.path) in str(error.value)
    assert str(second.path) in str(error.value)


def test_mixed_directories_task_mismatch(loader_write_layout):
    first = loader_write_layout("first", [[1]] * 4, task="sudoku")
    second = loader_write_layout("second", [[1]] * 4, task="maze")
    with pytest.raises(DatasetError, match="task 'maze' differs from 'sudoku'"):
        PuzzleDataset([first.path, second.path], "train", global_batch_size=2)


# ---------------------------------------------------------------------------------------------
# Compatibility with the TRM/HRM reference format


class ReferenceMetadata(pydantic.BaseModel):
    """The ten fields of the reference `PuzzleDatasetMetadata`, ignoring extra keys as the reference does."""

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    sets: list[str]


def write_reference_sudoku(path: Path, num_groups: int, variants: int, seed: int) -> np.ndarray:
    """Write a train split as the reference Sudoku builder does: int64 inputs, ten metadata fields."""
    rng = np.random.default_rng(seed)
    num_examples = num_groups * variants
    inputs = rng.integers(1, 11, (num_examples, 81)).astype(np.int64)
    labels = rng.integers(2, 11, (num_examples, 81)).astype(np.uint8)

    split_dir = path / "train"
    split_dir.mkdir(parents=True)
    arrays = {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": np.zeros(num_examples, dtype=np.int32),
        "puzzle_indices": np.arange(num_examples + 1, dtype=np.int32),
        "group_indices": np.arange(0, num_examples + 1, variants, dtype=np.int32),
    }
    for name, array in arrays.items():
        np.save(split_dir / f"all__{name}.npy", array)

    metadata = dict(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=11,
        seq_len=81,
        num_puzzle_identifiers=1,
        total_groups=num_groups,
        mean_puzzle_examples=1,
        total_puzzles=num_groups,
        sets=["all"],
    )
    (split_dir / "dataset.json").write_text(json.dumps(metadata))
    (path / "identifiers.json").write_text(json.dumps(["<blank>"]))
    return inputs


def test_reference_dataset_loads(tmp_path):
    inputs = write_reference_sudoku(tmp_path / "reference", num_groups=6, variants=4, seed=0)
    dataset = PuzzleDataset(tmp_path / "reference", "train", global_batch_size=3)
    assert dataset.task.name == "sudoku"
    assert dataset.data.inputs.dtype == np.int64
    batches = take(dataset.train_batches(), 4)
    rows = np.concatenate([batch["example_index"] for batch in batches])
    assert len(np.unique(rows // 4)) == 6
    for batch in batches:
        assert batch["inputs"].dtype == np.int32
        np.testing.assert_array_equal(batch["inputs"], inputs[batch["example_index"]])


def test_ours_validates_as_reference(tmp_path):
    task = TASKS["sudoku"](box_shape=(3, 3))
    rng = np.random.default_rng(0)
    values = rng.integers(2, 11, (8, 81))
    data = single_example_split(np.where(rng.random((8, 81)) < 0.5, 1, values), values, group_sizes=2)
    metadata = split_metadata(task, data, builder={"seed": 0}, source_sha256="0" * 64)
    write_split(tmp_path, "train", data, metadata)

    stored = json.loads((tmp_path / "train" / "dataset.json").read_text())
    reference = ReferenceMetadata.model_validate(stored)
    for field in ReferenceMetadata.model_fields:
        assert stored[field] == getattr(reference, field), field

    expected = {
        "inputs": (2, (8, 81)),
        "labels": (2, (8, 81)),
        "puzzle_identifiers": (1, (8,)),
        "puzzle_indices": (1, (9,)),
        "group_indices": (1, (5,)),
    }
    for name, (ndim, shape) in expected.items():
        array = np.load(tmp_path / "train" / f"all__{name}.npy")
        assert array.ndim == ndim, name
        assert array.shape == shape, name
        if ndim == 1:
            assert array.dtype == np.int32, name
        else:
            assert np.issubdtype(array.dtype, np.integer), name
