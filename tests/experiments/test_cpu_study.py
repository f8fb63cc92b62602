"""The CPU study driver: which runs it schedules and with which commands (dry run, nothing trained)."""

import shlex

import pytest

from experiments.cpu_study import main, schedule


@pytest.mark.parametrize("steps, batch, train_size", [(2000, 64, 100), (2000, 64, 300), (200, 16, 900)])
def test_schedule_gives_the_step_budget(steps, batch, train_size):
    epochs, eval_interval = schedule(steps, batch, train_size)
    assert epochs % eval_interval == 0
    assert epochs // eval_interval == 6
    total = int(epochs * train_size / batch)
    # At least the budget. Rounding each evaluation interval up to whole epochs adds under one epoch per evaluation.
    assert steps <= total < steps + 6 * train_size / batch + 1


def dry_run_commands(tmp_path, capsys, *arguments) -> list[list[str]]:
    main(["--data-dir", str(tmp_path / "csv"), "--output", str(tmp_path / "study"), "--dry-run", *arguments])
    lines = capsys.readouterr().out.splitlines()
    return [shlex.split(line[2:]) for line in lines if line.startswith("$ ")]


def test_sudoku_cells_share_one_budget(tmp_path, capsys):
    commands = dry_run_commands(
        tmp_path, capsys, "--only", "sudoku", "--levels", "r71,real", "--sizes", "100,300",
        "--archs", "trm,dfm_mask,dfm_uniform",
    )
    builds = [c for c in commands if "dataset.build_sudoku_dataset" in c]
    assert len(builds) == 4
    reveal = [c[c.index("--reveal-to") + 1] for c in builds if "--reveal-to" in c]
    assert reveal == ["71", "71"]  # the real level keeps the original givens

    trainings = [c for c in commands if "pretrain.py" in c]
    # 2 levels x (2 sizes x (trm, dfm_mask) + uniform at the largest size only)
    assert len(trainings) == 10
    assert trainings[0][2] == "+experiment=cpu_sudoku_trm"  # TRM, the slowest, starts first
    for training in trainings:
        assert "resume=true" in training
        assert "global_batch_size=64" in training

    evaluations = [c for c in commands if "evaluate.py" in c]
    greedy = [c for c in evaluations if "sampler=greedy" in c]
    assert len(greedy) == 6
    assert all("batch_invariant=false" in c for c in greedy)
    assert "experiments.compare" in commands[-1]


def test_maze_cells(tmp_path, capsys):
    commands = dry_run_commands(tmp_path, capsys, "--only", "maze", "--maze-test-size", "50")
    trainings = [c for c in commands if "pretrain.py" in c]
    assert sorted(c[2] for c in trainings) == ["+experiment=cpu_maze_dfm"] * 2 + ["+experiment=cpu_maze_trm"] * 2
    evaluations = [c for c in commands if "evaluate.py" in c]
    assert len(evaluations) == 4
    assert all("max_examples=50" in c for c in evaluations)


def test_unknown_architecture_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tmp_path), "--archs", "trm,gpt"])
    assert "unknown --archs gpt" in capsys.readouterr().err
