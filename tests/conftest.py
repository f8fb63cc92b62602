"""Shared fixtures. Test files are imported in importlib mode, so helpers live here, not in a package."""

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Seed torch for every test and keep CPU thread count fixed so results do not vary by machine."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def puzzle_data_dir() -> Path:
    """Directory of the real puzzle CSVs; skips the test when PUZZLE_DATA_DIR is not set."""
    value = os.environ.get("PUZZLE_DATA_DIR")
    if not value:
        pytest.skip("PUZZLE_DATA_DIR is not set; real puzzle data is not available on this machine")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"PUZZLE_DATA_DIR={path} is not a directory")
    return path


def pytest_collection_finish(session):
    """Fail collection if any test module was imported from outside this repository's tests/.

    The flow-matching wheel installs `tests.path`, `tests.solver` and `tests.utils`; a test file of ours at
    such a path could otherwise be silently replaced by the wheel's module of the same dotted name.
    """
    for item in session.items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        origin = Path(module.__file__).resolve()
        if REPO_ROOT / "tests" not in origin.parents:
            raise pytest.UsageError(f"test module {module.__name__} was imported from {origin}, not from {REPO_ROOT / 'tests'}")
