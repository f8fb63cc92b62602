"""Bad CSVs, output paths and dataset directories stop with one clear line and lose nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset.build_sudoku_dataset import main as build_sudoku
from dataset.common import DatasetError, atomic_output_dir, read_puzzle_csv, read_split

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADER = "source,question,answer,rating\n"
ROW = "s,.2341.4..4.23.2,1234341243212143,0\n"


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def build_small(tmp_path: Path) -> Path:
    output = tmp_path / "sudoku4"
    build_sudoku(["--generate", "--box-shape", "2x2", "--subsample-size", "8", "--test-subsample-size", "4",
                  "--output-dir", str(output)])
    return output


def test_byte_order_mark_ignored(tmp_path):
    rows = read_puzzle_csv(write_csv(tmp_path / "bom.csv", "\ufeff" + HEADER + ROW))
    assert rows.sources == ["s"]
    assert rows.questions == [".2341.4..4.23.2"]


@pytest.mark.parametrize("name, data, message", [
    ("latin1.csv", (HEADER + "s,caf\xe9,x,0\n").encode("latin-1"), "not UTF-8 text"),
    ("huge.csv", (HEADER + "s," + "1" * 200_000 + ",x,0\n").encode(), ":2: malformed CSV"),
    ("duplicate.csv", "source,question,answer,question\n".encode(), "appears more than once"),
    ("nan.csv", (HEADER + "s,1,2,nan\n").encode(), "is not a finite number"),
])
def test_malformed_csv_one_line(name, data, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=message) as error:
        read_puzzle_csv(path)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_directory_given_as_csv(tmp_path):
    with pytest.raises(DatasetError, match="is a directory"):
        read_puzzle_csv(tmp_path)


def test_overwrite_keeps_non_dataset_directory(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "notes.md").write_text("keep me")
    with pytest.raises(DatasetError, match="only replaces an earlier output"):
        with atomic_output_dir(folder, overwrite=True):
            pass
    assert (folder / "notes.md").read_text() == "keep me"


def test_overwrite_keeps_input_files(tmp_path):
    dataset = build_small(tmp_path)
    source = write_csv(dataset / "train.csv", HEADER + ROW)
    with pytest.raises(DatasetError, match="would delete the input file"):
        with atomic_output_dir(dataset, overwrite=True, inputs=[source]):
            pass
    assert source.is_file()


def test_output_path_is_file(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        with atomic_output_dir(target, overwrite=True):
            pass


def test_output_is_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="current directory"):
        with atomic_output_dir(Path("."), overwrite=True):
            pass


def test_stale_staging_of_killed_build_removed(tmp_path):
    # A staging directory named after a process that no longer exists is what SIGKILL leaves behind.
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".data.tmp-{int(finished.stdout)}-abc"
    stale.mkdir()
    (stale / "partial.npy").write_bytes(b"x" * 100)
    with atomic_output_dir(tmp_path / "data") as staging:
        (staging / "identifiers.json").write_text("[]")
    assert not stale.exists()
    assert (tmp_path / "data" / "identifiers.json").is_file()


def corrupt(dataset: Path, split: str, edit) -> None:
    metadata_path = dataset / split / "dataset.json"
    metadata = json.loads(metadata_path.read_text())
    edit(dataset / split, metadata)
    metadata_path.write_text(json.dumps(metadata))


@pytest.mark.parametrize("edit, message", [
    (lambda d, m: m.update(total_groups=1000), "has total_groups 1000"),
    (lambda d, m: m.update(mean_puzzle_examples=-1), "mean_puzzle_examples: Input should be greater than 0"),
    (lambda d, m: m.pop("seq_len"), "seq_len: Field required"),
    (lambda d, m: m.update(pad_id=99), "pad_id 99 is outside the vocab"),
    (lambda d, m: np.save(d / "all__inputs.npy", np.load(d / "all__inputs.npy").astype(np.float32) + 0.5),
     "inputs has dtype float32"),
    (lambda d, m: np.save(d / "all__puzzle_identifiers.npy", np.load(d / "all__puzzle_identifiers.npy") + 5),
     "puzzle identifiers span"),
    (lambda d, m: (d / "all__labels.npy").write_bytes(b""), "not a valid .npy file"),
])
def test_corrupt_split_rejected(edit, message, tmp_path):
    dataset = build_small(tmp_path)
    corrupt(dataset, "train", edit)
    with pytest.raises(DatasetError, match=message):
        read_split(dataset, "train")


def test_inspect_rejects_tokens_outside_vocab(tmp_path):
    dataset = build_small(tmp_path)
    labels = np.load(dataset / "test" / "all__labels.npy")
    labels[1, 3] = 200
    np.save(dataset / "test" / "all__labels.npy", labels)
    result = subprocess.run(
        [sys.executable, "-m", "dataset.inspect", str(dataset), "--split", "test"], cwd=REPO_ROOT,
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 2
    assert "example 1 has labels token ids outside [0, 6)" in result.stderr
