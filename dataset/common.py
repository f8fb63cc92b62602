"""On-disk puzzle dataset format shared with the TRM/HRM reference code, and helpers used by every builder.

Layout of a dataset directory::

    <out>/identifiers.json                      list: puzzle identifier -> name, index 0 is "<blank>"
    <out>/<split>/dataset.json                  PuzzleDatasetMetadata
    <out>/<split>/all__inputs.npy               [num_examples, seq_len] uint8 token ids
    <out>/<split>/all__labels.npy               [num_examples, seq_len] uint8 token ids
    <out>/<split>/all__puzzle_identifiers.npy   [num_puzzles] int32
    <out>/<split>/all__puzzle_indices.npy       [num_puzzles + 1] int32, CSR offsets into examples
    <out>/<split>/all__group_indices.npy        [num_groups + 1] int32, CSR offsets into puzzles

A group is an original puzzle, its puzzles are the augmented variants, and each puzzle holds its
examples (input/label pairs). Splits are `train`, `test` and optionally `val`.
"""

import csv
import hashlib
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pydantic

SET_NAME = "all"
ARRAY_NAMES = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
SPLITS = ("train", "val", "test")
BLANK_IDENTIFIER = "<blank>"


class DatasetError(Exception):
    """Invalid input data or dataset directory; the message names the file and the problem."""


class PuzzleDatasetMetadata(pydantic.BaseModel):
    """Contents of `<split>/dataset.json`.

    The first ten fields are the reference format. The rest are optional extras that the reference
    loader ignores; our evaluators use them to know how to check a prediction. Datasets built by the
    reference builders lack the extras, and `dataset.tasks.task_from_metadata` infers the task instead.
    """

    model_config = pydantic.ConfigDict(extra="ignore", allow_inf_nan=False)

    pad_id: int = pydantic.Field(ge=0)
    ignore_label_id: int | None
    blank_identifier_id: int = pydantic.Field(ge=0)
    vocab_size: int = pydantic.Field(gt=0)
    seq_len: int = pydantic.Field(gt=0)
    num_puzzle_identifiers: int = pydantic.Field(gt=0)
    total_groups: int = pydantic.Field(ge=0)
    mean_puzzle_examples: float = pydantic.Field(gt=0)
    total_puzzles: int = pydantic.Field(ge=0)
    sets: list[str]

    task: str | None = None
    grid_shape: tuple[int, int] | None = None
    box_shape: tuple[int, int] | None = None
    builder: dict[str, Any] | None = None
    source_sha256: str | None = None

    @pydantic.model_validator(mode="after")
    def _check_ids(self) -> "PuzzleDatasetMetadata":
        if self.pad_id >= self.vocab_size:
            raise ValueError(f"pad_id {self.pad_id} is outside the vocab of size {self.vocab_size}")
        if self.blank_identifier_id >= self.num_puzzle_identifiers:
            raise ValueError(
                f"blank_identifier_id {self.blank_identifier_id} is not below num_puzzle_identifiers "
                f"{self.num_puzzle_identifiers}"
            )
        return self


@dataclass
class PuzzleSplit:
    """Arrays of one split; `inputs` and `labels` may be memory-mapped."""

    inputs: np.ndarray  # [num_examples, seq_len]
    labels: np.ndarray  # [num_examples, seq_len]
    puzzle_identifiers: np.ndarray  # [num_puzzles]
    puzzle_indices: np.ndarray  # [num_puzzles + 1]
    group_indices: np.ndarray  # [num_groups + 1]

    def __post_init__(self) -> None:
        if self.inputs.shape != self.labels.shape or self.inputs.ndim != 2:
            raise DatasetError(
                f"inputs {self.inputs.shape} and labels {self.labels.shape} must be equal 2-D shapes"
            )
        for name in ARRAY_NAMES:
            array = getattr(self, name)
            if not np.issubdtype(array.dtype, np.integer):
                raise DatasetError(f"{name} has dtype {array.dtype}, expected integer token ids or offsets")
            if name not in ("inputs", "labels") and array.ndim != 1:
                raise DatasetError(f"{name} has shape {array.shape}, expected a 1-D array")
        if len(self.group_indices) == 0 or len(self.puzzle_indices) == 0:
            raise DatasetError("group_indices and puzzle_indices must hold at least the offset 0")
        num_puzzles = len(self.puzzle_identifiers)
        if len(self.puzzle_indices) != num_puzzles + 1 or self.puzzle_indices[-1] != len(self.inputs):
            raise DatasetError(
                f"puzzle_indices must have {num_puzzles + 1} offsets ending at {len(self.inputs)} examples"
            )
        if self.group_indices[-1] != num_puzzles:
            raise DatasetError(f"group_indices must end at the number of puzzles, {num_puzzles}")

    @property
    def num_examples(self) -> int:
        return len(self.inputs)

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1


class PuzzleTask(ABC):
    """A puzzle family: token encoding, which cells are to fill, and the rule checker.

    Checkers are vectorised numpy functions over a batch of grids and know nothing about models.
    Token ids are those of the on-disk format; PAD is always 0.
    """

    name: ClassVar[str]
    pad_id: ClassVar[int] = 0

    grid_shape: tuple[int, int]
    vocab_size: int
    fill_token: int
    """Input token of a cell the solver has to fill (Sudoku: blank; maze: open cell)."""
    answer_tokens: tuple[int, ...]
    """Label tokens a cell to fill may take (Sudoku: the digits; maze: open or path)."""

    @property
    def seq_len(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    def cells_to_fill(self, inputs: np.ndarray) -> np.ndarray:
        """Mark the cells to fill: inputs [N, seq_len] -> bool [N, seq_len]."""
        return np.asarray(inputs) == self.fill_token

    @abstractmethod
    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Decide which predictions are rule-valid solutions of their puzzles.

        inputs, predictions: [N, seq_len] token ids. Returns bool [N].
        """

    @abstractmethod
    def to_row_string(self, grid: np.ndarray) -> str:
        """Encode one grid [seq_len] of token ids as its CSV string (the inverse of the builder's parsing)."""

    @abstractmethod
    def to_text(self, grid: np.ndarray) -> str:
        """Render one grid [seq_len] of token ids as text rows for terminals."""

    @abstractmethod
    def render(self, ax: Any, inputs: np.ndarray, grid: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Draw one grid on matplotlib axes.

        inputs, grid, labels: [seq_len] token ids of the puzzle, the grid to show (a label or a
        prediction) and optionally the label, so that wrong cells can be highlighted.
        """

    def metadata_extras(self) -> dict[str, Any]:
        """Extra metadata fields that identify this task for evaluators."""
        return {"task": self.name, "grid_shape": list(self.grid_shape)}


# ---------------------------------------------------------------------------------------------
# Reading CSV sources


@dataclass
class CsvRows:
    """Rows of a `source,question,answer,rating` CSV; `line_numbers` are 1-based file lines."""

    path: Path
    sources: list[str]
    questions: list[str]
    answers: list[str]
    ratings: np.ndarray  # [N] float
    line_numbers: np.ndarray  # [N] int

    def __len__(self) -> int:
        return len(self.questions)

    def select(self, indices: np.ndarray) -> "CsvRows":
        """Keep the rows at `indices` (in that order)."""
        return CsvRows(
            path=self.path,
            sources=[self.sources[i] for i in indices],
            questions=[self.questions[i] for i in indices],
            answers=[self.answers[i] for i in indices],
            ratings=self.ratings[indices],
            line_numbers=self.line_numbers[indices],
        )

    def sha256(self) -> str:
        """Hash of the question and answer strings, in order, identifying the source rows."""
        digest = hashlib.sha256()
        for question, answer in zip(self.questions, self.answers):
            digest.update(question.encode())
            digest.update(b",")
            digest.update(answer.encode())
            digest.update(b"\n")
        return digest.hexdigest()

    def error(self, row: int, message: str) -> DatasetError:
        """Build an error that names the file and the line of row `row`."""
        return DatasetError(f"{self.path}:{self.line_numbers[row]}: {message}")


REQUIRED_COLUMNS = ("question", "answer")


def read_puzzle_csv(path: str | os.PathLike) -> CsvRows:
    """Read a CSV in the `source,question,answer,rating` layout of the Sudoku-Extreme/Maze-Hard releases.

    `source` and `rating` are optional (rating -1 when absent). Raises DatasetError naming the file
    and line for a missing file, an empty file, a missing column, a short row or a bad rating.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory, expected a CSV file")
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")

    sources, questions, answers, ratings, line_numbers = [], [], [], [], []
    line = 1
    try:
        # utf-8-sig drops a byte-order mark, which would otherwise become part of the first column's name.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: file is empty, expected a header source,question,answer,rating")
            columns = _header_columns(path, header)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    raise DatasetError(f"{path}:{line}: expected {len(header)} fields, found {len(row)}")
                questions.append(row[columns["question"]])
                answers.append(row[columns["answer"]])
                sources.append(row[columns["source"]] if "source" in columns else "")
                ratings.append(_parse_rating(path, line, row[columns["rating"]] if "rating" in columns else "-1"))
                line_numbers.append(line)
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text (byte {error.start} of a line near line {line})") from None
    except csv.Error as error:
        raise DatasetError(f"{path}:{line + 1}: malformed CSV ({error})") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read file ({error.strerror})") from None

    if not questions:
        raise DatasetError(f"{path}: file has a header but no puzzle rows")
    return CsvRows(
        path=path,
        sources=sources,
        questions=questions,
        answers=answers,
        ratings=np.asarray(ratings, dtype=np.float64),
        line_numbers=np.asarray(line_numbers, dtype=np.int64),
    )


def _header_columns(path: Path, header: list[str]) -> dict[str, int]:
    header = [name.strip() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DatasetError(f"{path}:1: missing column {', '.join(missing)} in header {','.join(header)}")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DatasetError(f"{path}:1: column {', '.join(duplicated)} appears more than once in the header")
    return {name: header.index(name) for name in header}


def _parse_rating(path: Path, line: int, text: str) -> float:
    try:
        rating = float(text)
    except ValueError:
        raise DatasetError(f"{path}:{line}: rating {text!r} is not a number") from None
    if not np.isfinite(rating):
        raise DatasetError(f"{path}:{line}: rating {text!r} is not a finite number")
    return rating


def strings_to_array(rows: CsvRows, column: str, length: int, alphabet: str) -> np.ndarray:
    """Convert one column of fixed-length strings to character indices into `alphabet`.

    Returns uint8 [N, length]. Raises DatasetError naming the line of the first row with a wrong
    length or a character outside `alphabet`.
    """
    strings = rows.questions if column == "question" else rows.answers
    for row, text in enumerate(strings):
        if len(text) != length:
            raise rows.error(row, f"{column} has {len(text)} characters, expected {length}")

    joined = np.frombuffer("".join(strings).encode("latin-1", errors="replace"), dtype=np.uint8)
    lookup = np.full(256, 255, dtype=np.uint8)
    for index, char in enumerate(alphabet):
        lookup[ord(char)] = index
    codes = lookup[joined].reshape(len(strings), length)

    bad_rows = np.flatnonzero((codes == 255).any(axis=1))
    if len(bad_rows):
        row = int(bad_rows[0])
        bad_char = strings[row][int(np.flatnonzero(codes[row] == 255)[0])]
        raise rows.error(row, f"{column} contains {bad_char!r}, allowed characters are {alphabet!r}")
    return codes


# ---------------------------------------------------------------------------------------------
# Writing and reading dataset directories


def write_split(
    output_dir: Path,
    split: str,
    data: PuzzleSplit,
    metadata: PuzzleDatasetMetadata,
) -> None:
    """Write one split's arrays and `dataset.json` under `output_dir/split`."""
    split_dir = output_dir / split
    split_dir.mkdir(parents=True, exist_ok=True)
    for name in ARRAY_NAMES:
        np.save(split_dir / f"{SET_NAME}__{name}.npy", getattr(data, name))
    fields = metadata.model_dump(exclude_none=True)
    # The reference format requires the ignore_label_id key even when its value is null.
    fields["ignore_label_id"] = metadata.ignore_label_id
    with open(split_dir / "dataset.json", "w") as f:
        json.dump(fields, f, indent=2)


def write_identifiers(output_dir: Path, names: list[str] | None = None) -> None:
    """Write `identifiers.json`; index 0 is always the blank identifier."""
    with open(output_dir / "identifiers.json", "w") as f:
        json.dump([BLANK_IDENTIFIER] + list(names or []), f)


def read_metadata(dataset_dir: str | os.PathLike, split: str) -> PuzzleDatasetMetadata:
    """Load and validate `<dataset_dir>/<split>/dataset.json`."""
    path = Path(dataset_dir) / split / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; build the dataset with python -m dataset.build_*_dataset")
    try:
        with open(path, encoding="utf-8") as f:
            return PuzzleDatasetMetadata.model_validate(json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'metadata'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise DatasetError(f"{path}: invalid metadata: {problems}") from None


def read_split(dataset_dir: str | os.PathLike, split: str, mmap: bool = True) -> tuple[PuzzleDatasetMetadata, PuzzleSplit]:
    """Load one split: metadata plus arrays (inputs and labels memory-mapped when `mmap`).

    Raises DatasetError for missing or unreadable files and for arrays that disagree with each other or
    with dataset.json.
    """
    metadata = read_metadata(dataset_dir, split)
    split_dir = Path(dataset_dir) / split
    arrays = {}
    for name in ARRAY_NAMES:
        path = split_dir / f"{SET_NAME}__{name}.npy"
        if not path.is_file():
            raise DatasetError(f"{path}: file not found")
        mode = "r" if mmap and name in ("inputs", "labels") else None
        try:
            arrays[name] = np.load(path, mmap_mode=mode, allow_pickle=False)
        except (ValueError, EOFError, OSError) as error:
            raise DatasetError(f"{path}: not a valid .npy file ({error})") from None
    try:
        data = PuzzleSplit(**arrays)
    except DatasetError as error:
        raise DatasetError(f"{split_dir}: {error}") from None
    _check_split_against_metadata(split_dir, data, metadata)
    return metadata, data


def _check_split_against_metadata(split_dir: Path, data: PuzzleSplit, metadata: PuzzleDatasetMetadata) -> None:
    if data.inputs.shape[1] != metadata.seq_len:
        raise DatasetError(
            f"{split_dir}: inputs have {data.inputs.shape[1]} columns but dataset.json says seq_len {metadata.seq_len}"
        )
    if data.num_examples == 0:
        raise DatasetError(f"{split_dir}: split has no examples")
    if data.num_groups != metadata.total_groups:
        raise DatasetError(
            f"{split_dir}: group_indices has {data.num_groups} groups but dataset.json has total_groups "
            f"{metadata.total_groups}"
        )
    identifiers = data.puzzle_identifiers
    if len(identifiers) and (identifiers.min() < 0 or identifiers.max() >= metadata.num_puzzle_identifiers):
        raise DatasetError(
            f"{split_dir}: puzzle identifiers span [{identifiers.min()}, {identifiers.max()}] but dataset.json "
            f"has num_puzzle_identifiers {metadata.num_puzzle_identifiers}"
        )


def available_splits(dataset_dir: str | os.PathLike) -> list[str]:
    """List the splits present in a dataset directory, in the order train, val, test."""
    return [split for split in SPLITS if (Path(dataset_dir) / split / "dataset.json").is_file()]


@contextmanager
def atomic_output_dir(
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    inputs: list[str | os.PathLike] | None = None,
    marker: str = "identifiers.json",
) -> Iterator[Path]:
    """Yield a temporary directory that replaces `output_dir` only if the block finishes.

    On any error the temporary directory is removed and `output_dir` is left as it was. An existing
    non-empty `output_dir` is rejected unless `overwrite` is set, and even then only when it contains the
    `marker` file of an earlier output (a dataset's identifiers.json by default) and none of the `inputs`
    files, so a mistyped path cannot delete unrelated files.
    """
    output_dir = Path(output_dir)
    _check_replaceable(output_dir, overwrite, [Path(path) for path in inputs or []], marker)
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(output_dir)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-{os.getpid()}-", dir=output_dir.parent))
    except OSError as error:
        raise DatasetError(f"{output_dir}: cannot create the output directory ({error.strerror})") from None
    # mkdtemp creates the directory owner-only; give the dataset the usual permissions instead.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
        if output_dir.exists():
            # Move the old directory aside first so a crash between the two renames loses nothing.
            backup = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
            os.replace(output_dir, backup / output_dir.name)
            os.replace(staging, output_dir)
            shutil.rmtree(backup)
        else:
            os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_replaceable(output_dir: Path, overwrite: bool, inputs: list[Path], marker: str) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise DatasetError(f"{output_dir}: output path exists and is not a directory")
    resolved = output_dir.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise DatasetError(f"{output_dir}: output directory is the current directory or one of its parents")
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise DatasetError(f"{output_dir}: output directory exists and is not empty; pass --overwrite to replace it")
    if not (output_dir / marker).is_file():
        raise DatasetError(f"{output_dir}: --overwrite only replaces an earlier output, and this directory has no {marker}")
    for path in inputs:
        if resolved in path.resolve().parents:
            raise DatasetError(f"{output_dir}: --overwrite would delete the input file {path}")


def _remove_stale_staging(output_dir: Path) -> None:
    """Delete staging directories of earlier builds of `output_dir` whose process no longer runs."""
    for stale in output_dir.parent.glob(f".{output_dir.name}.tmp-*-*"):
        pid_text = stale.name.removeprefix(f".{output_dir.name}.tmp-").split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:
            pass  # a live process of another user


def split_metadata(
    task: PuzzleTask,
    data: PuzzleSplit,
    builder: dict[str, Any],
    source_sha256: str | None,
) -> PuzzleDatasetMetadata:
    """Build the metadata of one split with the reference field values for Sudoku and Maze."""
    return PuzzleDatasetMetadata(
        pad_id=task.pad_id,
        ignore_label_id=task.pad_id,
        blank_identifier_id=0,
        vocab_size=task.vocab_size,
        seq_len=task.seq_len,
        num_puzzle_identifiers=1,
        total_groups=data.num_groups,
        mean_puzzle_examples=1.0,
        # The reference Sudoku/Maze builders store the number of groups here; the field only
        # weighs datasets when several are mixed.
        total_puzzles=data.num_groups,
        sets=[SET_NAME],
        builder=builder,
        source_sha256=source_sha256,
        **task.metadata_extras(),
    )


def single_example_split(inputs: np.ndarray, labels: np.ndarray, group_sizes: np.ndarray | int) -> PuzzleSplit:
    """Pack examples where every puzzle has one example and groups are consecutive runs of puzzles.

    inputs, labels: [num_examples, seq_len]; group_sizes: puzzles per group ([num_groups] or a
    constant that divides num_examples).
    """
    num_examples = len(inputs)
    if np.isscalar(group_sizes):
        group_sizes = np.full(num_examples // int(group_sizes), int(group_sizes))
    group_sizes = np.asarray(group_sizes, dtype=np.int64)
    if group_sizes.sum() != num_examples:
        raise ValueError(f"group sizes sum to {group_sizes.sum()}, expected {num_examples} examples")
    return PuzzleSplit(
        inputs=np.ascontiguousarray(inputs, dtype=np.uint8),
        labels=np.ascontiguousarray(labels, dtype=np.uint8),
        puzzle_identifiers=np.zeros(num_examples, dtype=np.int32),
        puzzle_indices=np.arange(num_examples + 1, dtype=np.int32),
        group_indices=np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int32),
    )


def split_off_validation(num_groups: int, val_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Choose `val_size` of `num_groups` source puzzles for `val`; returns sorted (train, val) indices."""
    if not 0 <= val_size < num_groups:
        raise DatasetError(f"--val-size {val_size} must be at least 0 and below the {num_groups} training puzzles")
    order = rng.permutation(num_groups)
    return np.sort(order[val_size:]), np.sort(order[:val_size])
