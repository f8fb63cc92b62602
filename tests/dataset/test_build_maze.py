"""Tests of the maze dataset builder, `python -m dataset.build_maze_dataset`."""

import json
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest

from dataset.build_maze_dataset import main
from dataset.common import read_puzzle_csv, read_split
from dataset.maze import DIHEDRAL_INVERSE, PATH, MazeTask
from dataset.maze_generator import MazeGeneratorConfig, generate_mazes

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADER = "source,question,answer,rating"
SIDE = 10
TASK = MazeTask(grid_shape=(SIDE, SIDE))


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = HEADER) -> Path:
    lines = [header] + [f"generated,{question},{answer},-1" for question, answer in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def file_bytes(directory: Path) -> dict[str, bytes]:
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    return {str(path.relative_to(directory)): path.read_bytes() for path in files}


def edit(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1 :]


@pytest.fixture(scope="module")
def maze_rows() -> list[tuple[str, str]]:
    """40 valid 10x10 (question, answer) string pairs."""
    config = MazeGeneratorConfig(grid_shape=(SIDE, SIDE), min_path_cells=16)
    inputs, labels = generate_mazes(config, 40, np.random.default_rng(11))
    return [(TASK.to_row_string(q), TASK.to_row_string(a)) for q, a in zip(inputs, labels)]


@pytest.fixture
def csv_pair(tmp_path, maze_rows) -> tuple[Path, Path]:
    """Train CSV with the first 30 mazes and test CSV with the last 10."""
    return write_csv(tmp_path / "train.csv", maze_rows[:30]), write_csv(tmp_path / "test.csv", maze_rows[30:])


def build(csv_pair: tuple[Path, Path], output: Path, *extra: str) -> Path:
    main(["--train-csv", str(csv_pair[0]), "--test-csv", str(csv_pair[1]), "--output-dir", str(output), *extra])
    return output


def test_build_round_trip(csv_pair, maze_rows, tmp_path, capsys):
    output = build(csv_pair, tmp_path / "out")
    assert capsys.readouterr().out.strip() == f"wrote {output}: train 30 examples, test 10 examples"
    for split, rows in (("train", maze_rows[:30]), ("test", maze_rows[30:])):
        metadata, data = read_split(output, split, mmap=False)
        assert [TASK.to_row_string(grid) for grid in data.inputs] == [question for question, _ in rows]
        assert [TASK.to_row_string(grid) for grid in data.labels] == [answer for _, answer in rows]
        assert data.inputs.dtype == data.labels.dtype == np.uint8
        assert (data.puzzle_identifiers == 0).all()
        assert data.group_indices.tolist() == list(range(len(rows) + 1))
        assert (metadata.task, metadata.grid_shape, metadata.vocab_size, metadata.seq_len) == ("maze", (10, 10), 6, 100)
    assert json.loads((output / "identifiers.json").read_text()) == ["<blank>"]
    assert sorted(path.name for path in output.iterdir()) == ["identifiers.json", "test", "train"]


def test_build_metadata_record(csv_pair, tmp_path):
    output = build(csv_pair, tmp_path / "out", "--val-size", "5")
    train_hash = read_puzzle_csv(csv_pair[0]).sha256()
    test_hash = read_puzzle_csv(csv_pair[1]).sha256()
    for split, expected_hash in (("train", train_hash), ("val", train_hash), ("test", test_hash)):
        metadata, _ = read_split(output, split)
        assert metadata.source_sha256 == expected_hash
        assert metadata.builder["train_csv"] == "train.csv"
        assert metadata.builder["val_size"] == 5
        assert metadata.builder["module"] == "dataset.build_maze_dataset"
        assert str(tmp_path) not in json.dumps(metadata.builder)


def test_build_augmented_groups(csv_pair, maze_rows, tmp_path):
    output = build(csv_pair, tmp_path / "out", "--aug")
    _, train = read_split(output, "train", mmap=False)
    _, test = read_split(output, "test", mmap=False)
    assert train.num_examples == 30 * 8
    assert train.group_indices.tolist() == list(range(0, 30 * 8 + 1, 8))
    assert TASK.check(train.inputs, train.labels).all()
    assert test.num_examples == 10

    for group in range(30):
        rows = slice(8 * group, 8 * group + 8)
        inputs, labels = train.inputs[rows], train.labels[rows]
        assert TASK.to_row_string(inputs[0]) == maze_rows[group][0]
        assert len({grid.tobytes() for grid in inputs}) == 8
        for index in range(8):
            back = DIHEDRAL_INVERSE[index]
            assert np.array_equal(TASK.transform(inputs[index : index + 1], back)[0], inputs[0])
            assert np.array_equal(TASK.transform(labels[index : index + 1], back)[0], labels[0])


def test_build_same_args_same_bytes(csv_pair, tmp_path):
    options = ("--aug", "--val-size", "4", "--subsample-size", "20", "--test-subsample-size", "6", "--seed", "3")
    first = build(csv_pair, tmp_path / "first", *options)
    second = build(csv_pair, tmp_path / "second", *options)
    other_seed = build(csv_pair, tmp_path / "other", *options[:-1], "4")
    assert file_bytes(first) == file_bytes(second)
    assert file_bytes(first)["train/all__inputs.npy"] != file_bytes(other_seed)["train/all__inputs.npy"]


def test_build_subsample_is_seeded_subset(csv_pair, maze_rows, tmp_path):
    output = build(csv_pair, tmp_path / "out", "--num-puzzles", "12", "--test-subsample-size", "4")
    _, train = read_split(output, "train")
    _, test = read_split(output, "test")
    questions = [TASK.to_row_string(grid) for grid in train.inputs]
    source = [question for question, _ in maze_rows[:30]]
    assert len(questions) == 12
    positions = [source.index(question) for question in questions]
    assert positions == sorted(positions)
    assert test.num_examples == 4


def test_build_val_disjoint_from_train(csv_pair, maze_rows, tmp_path):
    output = build(csv_pair, tmp_path / "out", "--val-size", "7", "--aug")
    _, train = read_split(output, "train")
    _, val = read_split(output, "val")
    train_originals = {TASK.to_row_string(grid) for grid in train.inputs[::8]}
    val_questions = {TASK.to_row_string(grid) for grid in val.inputs}
    assert len(val_questions) == val.num_examples == 7
    assert val.group_indices.tolist() == list(range(8))
    assert not train_originals & val_questions
    assert train_originals | val_questions == {question for question, _ in maze_rows[:30]}
    assert TASK.check(val.inputs, val.labels).all()


def test_build_generated(tmp_path):
    output = tmp_path / "generated"
    main(["--generate", "--size", "8", "--subsample-size", "12", "--test-subsample-size", "5", "--aug",
          "--val-size", "2", "--min-path-length", "12", "--max-path-length", "16", "--output-dir", str(output)])
    task = MazeTask(grid_shape=(8, 8))
    splits = {split: read_split(output, split, mmap=False) for split in ("train", "val", "test")}
    assert [splits[split][1].num_examples for split in ("train", "val", "test")] == [10 * 8, 2, 5]
    for metadata, data in splits.values():
        assert task.check(data.inputs, data.labels).all()
        path_cells = (data.labels == PATH).sum(axis=1)
        assert path_cells.min() >= 12
        assert path_cells.max() <= 16
        assert metadata.builder["source"] == "generate"
        assert metadata.builder["size"] == 8
    train_inputs = {grid.tobytes() for grid in splits["train"][1].inputs}
    assert not train_inputs & {grid.tobytes() for grid in splits["test"][1].inputs}
    assert not train_inputs & {grid.tobytes() for grid in splits["val"][1].inputs}


def test_generated_splits_disjoint_on_tiny_grids(tmp_path):
    # 3x3 grids have 16 mazes with 5 path cells (U shapes), so two independent draws of 6 would share some.
    main(["--generate", "--size", "3", "--subsample-size", "6", "--test-subsample-size", "6", "--min-path-length", "5",
          "--output-dir", str(tmp_path / "out")])
    train = {grid.tobytes() for grid in read_split(tmp_path / "out", "train")[1].inputs}
    test = {grid.tobytes() for grid in read_split(tmp_path / "out", "test")[1].inputs}
    assert len(train) == len(test) == 6
    assert not train & test


def test_generated_test_independent_of_train_size(tmp_path):
    common = ["--generate", "--size", "8", "--test-subsample-size", "4", "--min-path-length", "12"]
    main([*common, "--subsample-size", "3", "--output-dir", str(tmp_path / "small")])
    main([*common, "--subsample-size", "9", "--output-dir", str(tmp_path / "large")])
    small, large = file_bytes(tmp_path / "small"), file_bytes(tmp_path / "large")
    assert small["test/all__inputs.npy"] == large["test/all__inputs.npy"]
    assert small["train/all__inputs.npy"] != large["train/all__inputs.npy"]


def test_build_downloads_from_hub(monkeypatch, csv_pair, tmp_path):
    calls = []

    def fake_download(repo_id, filename, repo_type=None):
        calls.append((repo_id, filename, repo_type))
        return str({"train.csv": csv_pair[0], "test.csv": csv_pair[1]}[filename])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    main(["--output-dir", str(tmp_path / "out"), "--subsample-size", "10"])
    assert calls == [
        ("sapientinc/maze-30x30-hard-1k", "train.csv", "dataset"),
        ("sapientinc/maze-30x30-hard-1k", "test.csv", "dataset"),
    ]
    metadata, data = read_split(tmp_path / "out", "train")
    assert data.num_examples == 10
    assert metadata.builder["source"] == "hub"
    assert metadata.builder["source_repo"] == "sapientinc/maze-30x30-hard-1k"


def test_build_failed_download(monkeypatch, tmp_path, capsys):
    def failing_download(repo_id, filename, repo_type=None):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    with pytest.raises(SystemExit) as exit_info:
        main(["--output-dir", str(tmp_path / "out"), "--source-repo", "someone/mazes"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("error: someone/mazes/train.csv: download failed (cannot reach the Hub)")
    assert message.count("\n") == 1
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Bad input


def corrupt(kind: str, question: str, answer: str) -> tuple[str, str, str]:
    """Break one valid (question, answer) pair in the way `kind` names; returns them and the expected message."""
    first_path = answer.index("o")
    first_wall = question.index("#")
    open_cells = [i for i, char in enumerate(answer) if char == " "]
    path_cells = [i for i, char in enumerate(answer) if char == "o"]
    def touches_path(cell: int) -> bool:
        return any(abs(cell // SIDE - p // SIDE) + abs(cell % SIDE - p % SIDE) <= 1 for p in path_cells)

    far_from_path = next(cell for cell in open_cells if not touches_path(cell))
    walled_in = "S" + "#" * (SIDE * SIDE - 2) + "G"
    cases = {
        "short question": (question[:-1], answer, "question has 99 characters, expected 100"),
        "bad character": (edit(question, first_wall, "x"), answer, "question contains 'x'"),
        "no S": (question.replace("S", " "), answer.replace("S", " "), "question has 0 'S' cells, expected exactly 1"),
        "two G": (edit(question, open_cells[0], "G"), edit(answer, open_cells[0], "G"), "question has 2 'G' cells"),
        "path in question": (edit(question, open_cells[0], "o"), answer, "question has 'o' at row"),
        "answer changes a wall": (question, edit(answer, first_wall, " "), "answer changes '#' to ' '"),
        "path crosses a wall": (question, edit(answer, first_wall, "o"), "answer changes '#' to 'o'"),
        "path too short": (question, edit(answer, first_path, " "), "answer marks"),
        "path not connected": (
            question,
            edit(edit(answer, first_path, " "), far_from_path, "o"),
            "answer's 'o' cells do not form one connected path from S to G",
        ),
        "goal unreachable": (walled_in, walled_in, "G is not reachable from S"),
        "short answer": (question, answer[:-1], "answer has 99 characters, expected 100"),
    }
    return cases[kind]


BAD_ROW_KINDS = [
    "short question", "bad character", "no S", "two G", "path in question", "answer changes a wall",
    "path crosses a wall", "path too short", "path not connected", "goal unreachable", "short answer",
]


@pytest.mark.parametrize("kind", BAD_ROW_KINDS)
@pytest.mark.parametrize("bad_split", ["train", "test"])
def test_bad_row_reports_file_and_line(kind, bad_split, maze_rows, tmp_path, capsys):
    rows = {"train": list(maze_rows[:30]), "test": list(maze_rows[30:])}
    question, answer, expected = corrupt(kind, *rows[bad_split][3])
    rows[bad_split][3] = (question, answer)
    paths = {split: write_csv(tmp_path / f"{split}.csv", split_rows) for split, split_rows in rows.items()}
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--train-csv", str(paths["train"]), "--test-csv", str(paths["test"]), "--output-dir", str(output)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1
    assert message.startswith(f"error: {paths[bad_split]}:5: ")  # row 3 follows the header on line 1
    assert expected in message
    assert not output.exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".out")] == []


@pytest.mark.parametrize(
    "content, expected",
    [
        ("source,question,rating\nx,S G,1\n", ":1: missing column answer"),
        ("", ": file is empty"),
        (HEADER + "\n", ": file has a header but no puzzle rows"),
        (None, ": file not found"),
    ],
)
def test_bad_file_reports_file(content, expected, csv_pair, tmp_path, capsys):
    bad_csv = tmp_path / "bad.csv"
    if content is not None:
        bad_csv.write_text(content)
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--train-csv", str(csv_pair[0]), "--test-csv", str(bad_csv), "--output-dir", str(output)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1
    assert message.startswith(f"error: {bad_csv}")
    assert expected in message
    assert not output.exists()


def test_non_square_question(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", [("S#G", "S#G")])
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--train-csv", str(train), "--test-csv", str(train), "--output-dir", str(output)])
    assert exit_info.value.code == 2
    assert f"error: {train}:2: question has 3 characters, expected a square grid" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--subsample-size", "31"], "--subsample-size 31 exceeds the 30 puzzles"),
        (["--val-size", "30"], "--val-size 30 must be below the 30 training puzzles"),
    ],
)
def test_sizes_beyond_source(options, expected, csv_pair, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build(csv_pair, tmp_path / "out", *options)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith(f"error: {csv_pair[0]}: ")
    assert expected in message
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(csv_pair, tmp_path, capsys):
    output = build(csv_pair, tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:
        build(csv_pair, output, "--aug")
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    build(csv_pair, output, "--aug", "--overwrite")
    _, data = read_split(output, "train")
    assert data.num_examples == 30 * 8


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--train-csv", "a.csv"], "pass --train-csv and --test-csv together"),
        (["--generate", "--train-csv", "a.csv", "--test-csv", "b.csv"], "choose one source"),
        (["--generate", "--source-repo", "someone/mazes"], "choose one source"),
        (["--subsample-size", "0"], "--subsample-size must be at least 1"),
        (["--val-size", "-1"], "--val-size must be at least 0"),
        (["--generate", "--size", "65"], "--size must be from 2 to 64"),
        (["--size", "10"], "only apply with --generate"),
        (["--generate", "--wall-density", "1.5"], "--wall-density must be in [0, 1)"),
        (["--generate", "--min-path-length", "9", "--max-path-length", "8"], "--max-path-length 8 is below"),
    ],
)
def test_invalid_options_exit_with_usage(options, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*options, "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_module_entry_point(tmp_path):
    output = tmp_path / "out"
    command = [sys.executable, "-m", "dataset.build_maze_dataset", "--generate", "--size", "6", "--subsample-size", "3",
               "--test-subsample-size", "2", "--min-path-length", "6", "--output-dir", str(output)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert read_split(output, "test")[1].num_examples == 2


# ---------------------------------------------------------------------------------------------
# Real data


@pytest.mark.real_data
def test_build_real_maze_hard(puzzle_data_dir, tmp_path):
    folder = puzzle_data_dir / "maze-30x30-hard-1k"
    output = tmp_path / "maze-30x30-hard-1k-aug"
    main(["--train-csv", str(folder / "train.csv"), "--test-csv", str(folder / "test.csv"), "--aug",
          "--output-dir", str(output)])
    task = MazeTask(grid_shape=(30, 30))
    _, train = read_split(output, "train", mmap=False)
    _, test = read_split(output, "test", mmap=False)
    assert train.num_examples == 8000
    assert train.group_indices.tolist() == list(range(0, 8001, 8))
    assert test.num_examples == 500
    assert task.check(train.inputs, train.labels).all()
    assert task.check(test.inputs, test.labels).all()

    for split, data in (("train", train), ("test", test)):
        rows = read_puzzle_csv(folder / f"{split}.csv")
        originals = data.inputs[::8] if split == "train" else data.inputs
        labels = data.labels[::8] if split == "train" else data.labels
        assert [task.to_row_string(grid) for grid in originals] == rows.questions
        assert [task.to_row_string(grid) for grid in labels] == rows.answers
