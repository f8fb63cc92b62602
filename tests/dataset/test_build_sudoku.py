"""The Sudoku builder CLI end to end: layout, round trip, seeding, val, --reveal-to, sources and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest

from dataset.build_sudoku_dataset import main
from dataset.common import read_split
from dataset.sudoku import BLANK_TOKEN, SudokuTask

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADER = "source,question,answer,rating"


def make_rows(count: int, seed: int, box_shape: tuple[int, int] = (3, 3)) -> list[tuple[str, str]]:
    """(question, answer) strings: relabelled shifted-row solutions with random blanks, some written as `0`."""
    rng = np.random.default_rng(seed)
    box_rows, box_cols = box_shape
    side = box_rows * box_cols
    rows, columns = np.indices((side, side))
    base = ((box_cols * (rows % box_rows) + rows // box_rows + columns) % side).ravel()
    pairs = []
    for index in range(count):
        solution = rng.permutation(side)[base] + 1
        blank = rng.random(side * side) < 0.6
        blank_char = "0" if index % 2 else "."
        question = "".join(blank_char if hidden else str(digit) for digit, hidden in zip(solution, blank))
        pairs.append((question, "".join(str(digit) for digit in solution)))
    return pairs


def write_csv(path: Path, pairs: list[tuple[str, str]], header: str = HEADER) -> Path:
    lines = [header] + [f"test,{question},{answer},{index}" for index, (question, answer) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def csv_pair(tmp_path: Path) -> tuple[Path, Path, list, list]:
    """A 30-row train CSV and a 12-row test CSV of valid 9x9 pairs, with their rows."""
    train_rows, test_rows = make_rows(30, seed=1), make_rows(12, seed=2)
    train_csv = write_csv(tmp_path / "train.csv", train_rows)
    test_csv = write_csv(tmp_path / "test.csv", test_rows)
    return train_csv, test_csv, train_rows, test_rows


def build(csv_pair, output: Path, *extra: str) -> Path:
    train_csv, test_csv, _, _ = csv_pair
    main(["--train-csv", str(train_csv), "--test-csv", str(test_csv), "--output-dir", str(output), *extra])
    return output


def file_bytes(directory: Path) -> dict[str, bytes]:
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    return {str(path.relative_to(directory)): path.read_bytes() for path in files}


def normalised(question: str) -> str:
    return question.replace("0", ".")


# ---------------------------------------------------------------------------------------------
# Layout and content


def test_build_round_trip(csv_pair, tmp_path):
    output = build(csv_pair, tmp_path / "out")
    _, _, train_rows, test_rows = csv_pair
    task = SudokuTask()
    for split, rows in (("train", train_rows), ("test", test_rows)):
        metadata, data = read_split(output, split)
        assert data.inputs.dtype == np.uint8
        assert data.labels.dtype == np.uint8
        assert [task.to_row_string(grid) for grid in data.inputs] == [normalised(q) for q, _ in rows]
        assert [task.to_row_string(grid) for grid in data.labels] == [a for _, a in rows]
        assert metadata.vocab_size == 11
        assert metadata.seq_len == 81
        assert metadata.total_groups == len(rows)
        assert metadata.task == "sudoku"
        assert metadata.box_shape == (3, 3)
    assert json.loads((output / "identifiers.json").read_text()) == ["<blank>"]


def test_build_augmented_train_layout(csv_pair, tmp_path):
    num_aug = 6
    output = build(csv_pair, tmp_path / "out", "--num-aug", str(num_aug))
    task = SudokuTask()
    _, _, train_rows, _ = csv_pair
    metadata, data = read_split(output, "train")

    num_groups = len(train_rows)
    assert data.num_examples == num_groups * (num_aug + 1)
    assert (data.group_indices == np.arange(num_groups + 1) * (num_aug + 1)).all()
    assert (data.puzzle_indices == np.arange(data.num_examples + 1)).all()
    assert (data.puzzle_identifiers == 0).all()
    assert metadata.total_groups == num_groups
    assert metadata.builder["num_aug"] == num_aug

    inputs, labels = np.asarray(data.inputs), np.asarray(data.labels)
    assert task.check(inputs, labels).all()
    given = inputs != BLANK_TOKEN
    assert (inputs[given] == labels[given]).all()
    originals = inputs[:: num_aug + 1]
    assert [task.to_row_string(grid) for grid in originals] == [normalised(q) for q, _ in train_rows]
    variants = inputs.reshape(num_groups, num_aug + 1, 81)[:, 1:]
    assert (variants != originals[:, None]).any(axis=2).all()

    _, test = read_split(output, "test")
    assert test.num_examples == 12
    assert (test.group_indices == np.arange(13)).all()


def test_build_same_seed_same_bytes(csv_pair, tmp_path):
    options = ("--num-aug", "3", "--val-size", "5", "--reveal-to", "40", "--subsample-size", "20")
    first = file_bytes(build(csv_pair, tmp_path / "first", *options))
    second = file_bytes(build(csv_pair, tmp_path / "second", *options))
    other = file_bytes(build(csv_pair, tmp_path / "other", *options, "--seed", "1"))
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == second[name], name
    assert first["train/all__inputs.npy"] != other["train/all__inputs.npy"]
    builder = json.loads(first["train/dataset.json"])["builder"]
    assert builder["train_csv"] == "train.csv"
    assert str(tmp_path) not in json.dumps(builder)


def test_build_subsample_is_seeded_subset(csv_pair, tmp_path):
    output = build(csv_pair, tmp_path / "out", "--subsample-size", "10", "--test-subsample-size", "4")
    _, _, train_rows, test_rows = csv_pair
    task = SudokuTask()
    train_metadata, train = read_split(output, "train")
    _, test = read_split(output, "test")
    train_questions = [task.to_row_string(grid) for grid in train.inputs]
    assert len(train_questions) == 10
    assert set(train_questions) <= {normalised(q) for q, _ in train_rows}
    assert train_questions != [normalised(q) for q, _ in train_rows[:10]]
    reseeded = build(csv_pair, tmp_path / "reseeded", "--subsample-size", "10", "--seed", "5")
    _, reseeded_train = read_split(reseeded, "train")
    assert [task.to_row_string(grid) for grid in reseeded_train.inputs] != train_questions
    assert test.num_examples == 4
    assert train_metadata.builder["subsample_size"] == 10
    assert len(train_metadata.source_sha256) == 64


def test_build_val_disjoint_from_train(csv_pair, tmp_path):
    output = build(csv_pair, tmp_path / "out", "--val-size", "7", "--num-aug", "2")
    _, _, train_rows, _ = csv_pair
    task = SudokuTask()
    _, train = read_split(output, "train")
    val_metadata, val = read_split(output, "val")

    train_originals = {task.to_row_string(grid) for grid in train.inputs[::3]}
    val_questions = {task.to_row_string(grid) for grid in val.inputs}
    assert len(val_questions) == 7
    assert val.num_examples == 7
    assert val_metadata.total_groups == 7
    assert not train_originals & val_questions
    assert train_originals | val_questions == {normalised(q) for q, _ in train_rows}
    all_train = {task.to_row_string(grid) for grid in train.inputs}
    assert not all_train & val_questions
    assert task.check(np.asarray(val.inputs), np.asarray(val.labels)).all()


def test_build_reveal_to_tops_up_givens(csv_pair, tmp_path):
    target = 50
    plain = build(csv_pair, tmp_path / "plain")
    revealed = build(csv_pair, tmp_path / "revealed", "--reveal-to", str(target))
    task = SudokuTask()
    for split in ("train", "test"):
        _, before = read_split(plain, split)
        _, after = read_split(revealed, split)
        inputs_before, inputs_after = np.asarray(before.inputs), np.asarray(after.inputs)
        givens_before = (inputs_before != BLANK_TOKEN).sum(axis=1)
        givens_after = (inputs_after != BLANK_TOKEN).sum(axis=1)
        assert (givens_after == np.maximum(givens_before, target)).all()
        assert (np.asarray(after.labels) == np.asarray(before.labels)).all()
        kept = inputs_before != BLANK_TOKEN
        assert (inputs_after[kept] == inputs_before[kept]).all()
        assert task.check(inputs_after, np.asarray(after.labels)).all()


def test_build_generated_4x4(tmp_path):
    output = tmp_path / "generated"
    main(["--generate", "--box-shape", "2x2", "--subsample-size", "30", "--test-subsample-size", "10",
          "--num-aug", "3", "--output-dir", str(output)])
    task = SudokuTask(box_shape=(2, 2))
    metadata, train = read_split(output, "train")
    _, test = read_split(output, "test")
    assert metadata.box_shape == (2, 2)
    assert metadata.vocab_size == 6
    assert metadata.seq_len == 16
    assert train.num_examples == 30 * 4
    assert test.num_examples == 10
    assert task.check(np.asarray(train.inputs), np.asarray(train.labels)).all()
    assert task.check(np.asarray(test.inputs), np.asarray(test.labels)).all()
    train_questions = {grid.tobytes() for grid in train.inputs[::4]}
    test_questions = {grid.tobytes() for grid in test.inputs}
    assert len(train_questions) == 30
    assert not train_questions & test_questions


def test_build_generated_6x6_givens_range(tmp_path):
    output = tmp_path / "generated"
    main(["--generate", "--box-shape", "2x3", "--subsample-size", "8", "--test-subsample-size", "4",
          "--min-givens", "14", "--max-givens", "16", "--output-dir", str(output)])
    for split in ("train", "test"):
        metadata, data = read_split(output, split)
        givens = (np.asarray(data.inputs) != BLANK_TOKEN).sum(axis=1)
        assert ((givens >= 14) & (givens <= 16)).all()
        assert metadata.builder["min_givens"] == 14


def test_build_local_6x6_csv(tmp_path):
    rows = make_rows(5, seed=3, box_shape=(2, 3))
    train_csv = write_csv(tmp_path / "train6.csv", rows)
    main(["--train-csv", str(train_csv), "--test-csv", str(train_csv), "--box-shape", "2x3",
          "--output-dir", str(tmp_path / "out")])
    metadata, data = read_split(tmp_path / "out", "train")
    assert metadata.grid_shape == (6, 6)
    assert [SudokuTask((2, 3)).to_row_string(grid) for grid in data.labels] == [a for _, a in rows]


def test_build_downloads_from_hub(monkeypatch, csv_pair, tmp_path):
    train_csv, test_csv, train_rows, _ = csv_pair
    calls = []

    def fake_download(repo_id, filename, repo_type=None):
        calls.append((repo_id, filename, repo_type))
        return str({"train.csv": train_csv, "test.csv": test_csv}[filename])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    main(["--output-dir", str(tmp_path / "out"), "--subsample-size", "10"])
    assert calls == [
        ("sapientinc/sudoku-extreme", "train.csv", "dataset"),
        ("sapientinc/sudoku-extreme", "test.csv", "dataset"),
    ]
    metadata, data = read_split(tmp_path / "out", "train")
    assert data.num_examples == 10
    assert metadata.builder["source_repo"] == "sapientinc/sudoku-extreme"


def test_build_failed_download_exits_cleanly(monkeypatch, tmp_path, capsys):
    def failing_download(repo_id, filename, repo_type=None):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    with pytest.raises(SystemExit) as exit_info:
        main(["--output-dir", str(tmp_path / "out"), "--source-repo", "someone/sudoku"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("error: someone/sudoku/train.csv: download failed")
    assert not (tmp_path / "out").exists()


def test_build_min_difficulty_filters_ratings(csv_pair, tmp_path, capsys):
    # make_rows' CSVs rate each row by its index: 0..29 in train and 0..11 in test.
    _, test_csv, _, _ = csv_pair
    output = build(csv_pair, tmp_path / "out", "--min-difficulty", "8")
    _, train = read_split(output, "train")
    _, test = read_split(output, "test")
    assert train.num_examples == 22
    assert test.num_examples == 4

    with pytest.raises(SystemExit):
        build(csv_pair, tmp_path / "none", "--min-difficulty", "20")
    assert capsys.readouterr().err == f"error: {test_csv}: no row has a rating of at least --min-difficulty 20.0\n"


# ---------------------------------------------------------------------------------------------
# Bad input


def bad_pairs(kind: str) -> tuple[list[tuple[str, str]], str]:
    """Valid rows with row 3 (file line 4) broken in one way, and the expected message tail."""
    pairs = make_rows(5, seed=9)
    question, answer = pairs[2]
    blank = question.index(".") if "." in question else question.index("0")
    given = next(index for index, char in enumerate(question) if char not in ".0")
    if kind == "short question":
        pairs[2] = (question[:-1], answer)
        return pairs, "question has 80 characters, expected 81"
    if kind == "bad character":
        pairs[2] = (question[:blank] + "x" + question[blank + 1 :], answer)
        return pairs, "question contains 'x'"
    if kind == "answer contradicts given":
        other = str(int(answer[given]) % 9 + 1)
        pairs[2] = (question, answer[:given] + other + answer[given + 1 :])
        return pairs, "where the question gives"
    if kind == "answer breaks rules":
        # Copy the digit of the blank cell's row neighbour into it: the givens stay, the row repeats a digit.
        neighbour = blank + 1 if blank % 9 < 8 else blank - 1
        pairs[2] = (question, answer[:blank] + answer[neighbour] + answer[blank + 1 :])
        return pairs, "twice in"
    if kind == "answer incomplete":
        pairs[2] = (question, answer[:blank] + "." + answer[blank + 1 :])
        return pairs, "has a blank at"
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind", ["short question", "bad character", "answer contradicts given", "answer breaks rules", "answer incomplete"]
)
def test_bad_row_reports_file_and_line(kind, csv_pair, tmp_path, capsys):
    pairs, expected = bad_pairs(kind)
    bad_csv = write_csv(tmp_path / "bad.csv", pairs)
    _, test_csv, _, _ = csv_pair
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--train-csv", str(bad_csv), "--test-csv", str(test_csv), "--output-dir", str(output)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1
    assert message.startswith(f"error: {bad_csv}:4: ")
    assert expected in message
    assert not output.exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".out")] == []


@pytest.mark.parametrize(
    "kind, content, expected",
    [
        ("missing column", "source,question,rating\ntest,....,1\n", ":1: missing column answer"),
        ("empty file", "", ": file is empty"),
        ("missing file", None, ": file not found"),
    ],
)
def test_bad_file_reports_file(kind, content, expected, csv_pair, tmp_path, capsys):
    bad_csv = tmp_path / "bad.csv"
    if content is not None:
        bad_csv.write_text(content)
    _, test_csv, _, _ = csv_pair
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--train-csv", str(bad_csv), "--test-csv", str(test_csv), "--output-dir", str(output)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1
    assert message.startswith(f"error: {bad_csv}")
    assert expected in message
    assert not output.exists()


def test_existing_output_needs_overwrite(csv_pair, tmp_path, capsys):
    output = build(csv_pair, tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:
        build(csv_pair, output)
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    build(csv_pair, output, "--overwrite", "--num-aug", "1")
    _, data = read_split(output, "train")
    assert data.num_examples == 60


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--box-shape", "3x2"], "invalid box shape"),
        (["--train-csv", "a.csv"], "--train-csv and --test-csv must be given together"),
        (["--generate", "--min-difficulty", "3"], "--min-difficulty needs CSV ratings"),
        (["--min-givens", "20"], "only apply with --generate"),
        (["--generate", "--reveal-to", "82"], "--reveal-to must be between 0 and 81"),
        (["--num-aug", "-1"], "--num-aug must be at least 0"),
        (["--generate", "--min-givens", "many"], "expected an integer or 'minimal'"),
    ],
)
def test_invalid_options_exit_with_usage(options, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*options, "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_module_rejects_unknown_flag(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dataset.build_sudoku_dataset", "--output-dir", str(tmp_path / "out"),
         "--num-augs", "3"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --num-augs" in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Real data


@pytest.mark.real_data
def test_build_real_sudoku_extreme_1k(puzzle_data_dir, tmp_path):
    train_csv = puzzle_data_dir / "sudoku-extreme-1k" / "train.csv"
    test_csv = puzzle_data_dir / "sudoku-hard" / "forum_hardest_test.csv"
    output = tmp_path / "sudoku-extreme-1k-aug-3"
    main(["--train-csv", str(train_csv), "--test-csv", str(test_csv), "--num-aug", "3", "--output-dir", str(output)])

    task = SudokuTask()
    train_metadata, train = read_split(output, "train")
    _, test = read_split(output, "test")
    assert train.num_examples == 1000 * 4
    assert train_metadata.total_groups == 1000
    assert test.num_examples == 5000
    assert task.check(np.asarray(train.inputs), np.asarray(train.labels)).all()
    assert task.check(np.asarray(test.inputs), np.asarray(test.labels)).all()

    source_rows = train_csv.read_text().splitlines()[1:]
    questions = [line.split(",")[1] for line in source_rows]
    answers = [line.split(",")[2] for line in source_rows]
    assert [task.to_row_string(grid) for grid in train.inputs[::4]] == [normalised(q) for q in questions]
    assert [task.to_row_string(grid) for grid in train.labels[::4]] == answers
