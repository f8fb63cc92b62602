"""evaluate.py on saved checkpoints: JSON metrics, per-budget curves, predictions file and figures."""

import json

import numpy as np
import pytest

from dataset.build_maze_dataset import main as build_maze

TINY_TRM = [
    "arch=trm", "arch.hidden_size=32", "arch.num_heads=2", "arch.H_cycles=1", "arch.L_cycles=2",
    "arch.L_layers=1", "arch.halt_max_steps=3", "arch.puzzle_emb_len=1",
]
TINY_DFM = [
    "arch=flow_matching", "arch.hidden_size=32", "arch.num_heads=2", "arch.num_layers=1",
    "arch.structure_embeddings=true",
]


@pytest.fixture(scope="module")
def checkpoints(loop_sudoku4, loop_train, tmp_path_factory):
    """A short TRM run and a short DFM run (EMA on), trained once for every test of this file."""
    root = tmp_path_factory.mktemp("runs")
    for name, arch in (("trm", TINY_TRM), ("flow_matching", TINY_DFM)):
        loop_train(arch + [
            f"data_paths=[{loop_sudoku4}]", "global_batch_size=16", "epochs=4", "eval_interval=4", "ema=true",
            f"+checkpoint_path={root / name}",
        ])
    return {name: root / name / "step_8.pt" for name in ("trm", "flow_matching")}


def test_trm_report_with_step_curve(checkpoints, loop_script, loop_sudoku4, tmp_path):
    output = tmp_path / "trm.json"
    result = loop_script([
        "evaluate.py", f"checkpoint={checkpoints['trm']}", "steps=[1,2,4,8]", "max_examples=10",
        "halt_by_q=true", f"output={output}",
    ])
    report = json.loads(output.read_text())
    assert report["count"] == 10
    assert report["budget_name"] == "supervision_steps"
    assert sorted(report["exact_accuracy_by_supervision_steps"]) == ["1", "2", "4", "8"]
    for key in ("exact_accuracy", "token_accuracy", "cell_accuracy", "valid_accuracy", "examples_per_second"):
        assert key in report
    assert report["options"] == {"halt_by_q": True}
    assert str(output) in result.stdout

    predictions = np.load(output.with_suffix(".npz"))
    assert predictions["inputs"].shape == predictions["labels"].shape == predictions["predictions"].shape == (10, 16)
    assert predictions["labels"].min() >= 2  # digit tokens, not the -100 used for ignored cells in memory
    assert output.with_suffix(".png").stat().st_size > 1000
    assert (tmp_path / "trm_by_budget.png").stat().st_size > 1000


def test_dfm_sweeps_nfe_with_both_samplers(checkpoints, loop_script, tmp_path):
    for sampler in ("greedy", "euler"):
        output = tmp_path / f"{sampler}.json"
        loop_script([
            "evaluate.py", f"checkpoint={checkpoints['flow_matching']}", "steps=[1,4,16]", f"sampler={sampler}",
            "seed=3", "split=val", f"output={output}",
        ])
        report = json.loads(output.read_text())
        assert report["count"] == 8
        assert report["budget_name"] == "nfe"
        assert list(report["exact_accuracy_by_nfe"]) == ["1", "4", "16"]  # in budget order, not string order
        assert report["options"]["sampler"] == sampler
        # FLOPs of the calls made: Euler runs every step, greedy stops once the 4x4 grid is full.
        budget_flops, used_flops = report["inference_flops_per_example"], report["inference_flops_per_example_used"]
        per_call = budget_flops["1"]
        for budget in ("1", "4", "16"):
            assert used_flops[budget] == pytest.approx(report["nfe_used"][budget] * per_call)
        if sampler == "euler":
            assert used_flops == budget_flops
        else:
            assert used_flops["16"] < budget_flops["16"]
        grids = np.load(output.with_suffix(".npz"))["predictions"]
        assert set(np.unique(grids)) <= {2, 3, 4, 5}


def test_unknown_option_lists_valid_ones(checkpoints, loop_script):
    result = loop_script(["evaluate.py", f"checkpoint={checkpoints['trm']}", "sampler=greedy"], check=False)
    assert result.returncode == 2
    assert "halt_by_q" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_corrupt_checkpoint_one_line(loop_script, tmp_path):
    broken = tmp_path / "step_1.pt"
    broken.write_bytes(b"\x00" * 64)
    result = loop_script(["evaluate.py", f"checkpoint={broken}"], check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert str(broken) in result.stderr


def test_dataset_of_other_task_rejected(checkpoints, loop_script, tmp_path):
    maze_dir = tmp_path / "maze"
    build_maze(["--generate", "--size", "6", "--subsample-size", "4", "--test-subsample-size", "4",
                "--output-dir", str(maze_dir)])
    result = loop_script(["evaluate.py", f"checkpoint={checkpoints['trm']}", f"data_path={maze_dir}"], check=False)
    assert result.returncode == 2
    assert "same task" in result.stderr


@pytest.mark.parametrize("argument, message", [
    ("steps=0", "steps"),
    ("steps=[]", "at least one budget"),
    ("steps=true", "steps"),
    ("output=metrics.npz", "must be a .json file"),
    ("device=tpu", "device=tpu"),
    ("steps=[1,", "invalid arguments"),
])
def test_bad_arguments_one_line(argument, message, checkpoints, loop_script):
    result = loop_script(["evaluate.py", f"checkpoint={checkpoints['trm']}", argument], check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_same_size_other_task_rejected(checkpoints, loop_script, tmp_path):
    # A 4x4 maze has the 16 cells and 6 tokens of 4x4 Sudoku, so only the task name distinguishes them.
    maze_dir = tmp_path / "maze4"
    build_maze(["--generate", "--size", "4", "--min-path-length", "2", "--subsample-size", "6",
                "--test-subsample-size", "4", "--output-dir", str(maze_dir)])
    result = loop_script(["evaluate.py", f"checkpoint={checkpoints['trm']}", f"data_path={maze_dir}"], check=False)
    assert result.returncode == 2
    assert "differs from the training data's sudoku 4x4" in result.stderr


def test_help_lists_keys_without_running(loop_script):
    result = loop_script(["evaluate.py", "--help"])
    assert "checkpoint=PATH" in result.stdout
    assert "figure_examples" in result.stdout
