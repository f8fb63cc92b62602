"""The benchmark entry point: its command line and the settings of the default and --quick runs."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import DEFAULT_PLAN, QUICK_PLAN, SECTIONS, parse_args, warn_if_busy

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_help_runs_as_module():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout
    assert "--output" in result.stdout


def test_defaults_run_every_section():
    args = parse_args([])
    assert args.sections == list(SECTIONS)
    assert args.output == Path("bench.json")
    assert not args.quick


def test_unknown_section_rejected(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--sections", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err


def test_quick_plan_does_less():
    assert QUICK_PLAN.quick
    assert not DEFAULT_PLAN.quick
    for name in ("repeats", "build_repeats", "sudoku_generator_puzzles", "maze_generator_puzzles",
                 "sudoku_checks", "maze_checks"):
        assert getattr(QUICK_PLAN, name) <= getattr(DEFAULT_PLAN, name), name
    assert DEFAULT_PLAN.repeats >= 3
    assert DEFAULT_PLAN.warmup >= 1


def test_busy_machine_warning(capsys):
    warn_if_busy([2.5, 2.0, 1.0], threads=2)
    output = capsys.readouterr().out
    assert "load average 2.5" in output
    assert "--threads 1" in output


def test_idle_machine_no_warning(capsys):
    warn_if_busy([0.2, 0.1, 0.1], threads=2)
    warn_if_busy(None, threads=2)
    assert capsys.readouterr().out == ""
