"""The project's tests must not be shadowed by the `tests` package that the flow-matching wheel installs."""

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_this_file_is_collected_from_repo():
    module = sys.modules[__name__]
    assert Path(module.__file__).resolve() == REPO_ROOT / "tests" / "test_environment.py"


def test_site_packages_tests_not_ours():
    # flow-matching 1.0.10 ships a top-level `tests` package; if it is importable it must be the wheel's
    # copy, and our test modules must not have been loaded as its submodules.
    spec = importlib.util.find_spec("tests")
    if spec is not None and spec.origin is not None:
        assert REPO_ROOT / "tests" not in Path(spec.origin).resolve().parents
    ours = [name for name in sys.modules if name.startswith("tests.") and "test_environment" in name]
    for name in ours:
        assert Path(sys.modules[name].__file__).resolve().parent == REPO_ROOT / "tests"


def test_flow_matching_solver_imports():
    from flow_matching.solver import MixtureDiscreteEulerSolver

    assert MixtureDiscreteEulerSolver.__name__ == "MixtureDiscreteEulerSolver"
