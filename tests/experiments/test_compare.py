"""experiments.compare on synthetic run directories, and once end to end on two tiny real runs."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

import evaluate
from dataset.common import read_metadata
from experiments.cells import group_cells
from experiments.commands import config_hash, training_command
from experiments.compare import build_report, main
from experiments.runs import ReportError, find_run_dirs, load_run
from models.registry import build_head
from training.config import validate_arch
from training.distributed import DistributedInfo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRM_COUNTS = {"parameters": 1000, "embedding_parameters": 200, "puzzle_embedding_parameters": 32}
DFM_COUNTS = {"parameters": 3000, "embedding_parameters": 100, "puzzle_embedding_parameters": 0}


def table_rows(markdown: str, first_header: str) -> dict[str, dict[str, str]]:
    """Rows of the first markdown table whose first column is `first_header`, keyed by that column."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split(" | ")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def t_interval_text(values: list[float]) -> str:
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return f"[{low:.3f}, {high:.3f}]"


@pytest.fixture
def two_architectures(tmp_path, write_run, write_eval_report) -> Path:
    """Three TRM seeds and two DFM seeds in a checkpoints/<project>/<run> layout, DFM with evaluate.py JSONs."""
    root = tmp_path / "checkpoints" / "sudoku4"
    trm_test = {0: [0.1, 0.3, 0.2], 1: [0.2, 0.4, 0.3], 2: [0.0, 0.2, 0.4]}
    for seed, test in trm_test.items():
        write_run(root / f"trm-{seed}", "trm", seed, {"val": [0.1, 0.2, 0.3], "test": test},
                  parameter_counts=TRM_COUNTS)
    for seed, test in {0: [0.5, 0.6, 0.5], 1: [0.6, 0.8, 0.7]}.items():
        run = write_run(root / f"dfm-{seed}", "flow_matching", seed, {"val": [0.4, 0.5, 0.6], "test": test},
                        parameter_counts=DFM_COUNTS)
        for sampler, shift in (("greedy", 0.0), ("euler", -0.1)):
            write_eval_report(run, "flow_matching", 60, {1: 0.2 + shift, 4: 0.6 + shift + 0.1 * seed},
                              {"sampler": sampler, "seed": 0}, f"eval_test_step60_{sampler}",
                              with_predictions=sampler == "euler")
            if sampler == "greedy":
                Image.new("RGB", (40, 30), "white").save(run / "eval_test_step60_greedy.png")
    return root


def test_table_means_and_intervals(two_architectures, tmp_path):
    build_report([two_architectures], tmp_path / "report")
    rows = table_rows((tmp_path / "report" / "report.md").read_text(), "variant")

    trm = rows["trm (mlp_t=false)"]
    finals = [0.2, 0.3, 0.4]
    assert trm["seeds"] == "3 (0, 1, 2)"
    assert trm["test final"] == f"{np.mean(finals):.3f}"
    assert trm["test final 95% CI"] == t_interval_text(finals)
    assert trm["test best"] == f"{np.mean([0.3, 0.4, 0.4]):.3f}"
    assert trm["val final"] == "0.300"
    assert trm["parameters"] == "1,000"
    assert trm["embedding parameters"] == "232"
    assert trm["steps"] == "60"
    assert trm["training FLOPs"] == f"{60 * 8 * 1e6:.2e}"
    assert trm["wall time"] == "30 s"

    dfm = rows["flow_matching (source=mask)"]
    assert dfm["test final"] == f"{np.mean([0.5, 0.7]):.3f}"
    assert dfm["test final 95% CI"] == t_interval_text([0.5, 0.7])


def test_single_seed_says_n1(tmp_path, write_run):
    write_run(tmp_path / "runs" / "only", "trm", 0, {"test": [0.25]})
    summary = build_report([tmp_path / "runs"], tmp_path / "report")
    row = table_rows((tmp_path / "report" / "report.md").read_text(), "variant")["trm (mlp_t=false)"]
    assert row["test final 95% CI"] == "n=1"
    assert summary["datasets"][0]["cells"][0]["final_exact"]["test"]["low"] is None


def test_figures_are_valid_pngs(two_architectures, tmp_path):
    build_report([two_architectures], tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    names = set(linked)
    for split in ("val", "test"):
        assert f"figures/dataset1-learning-{split}.png" in names
    assert "figures/dataset1-scaling-test.png" in names
    assert sum(name.startswith("predictions/") for name in names) == 2
    for name in linked:
        path = tmp_path / "report" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        with Image.open(path) as image:
            image.verify()


def test_predictions_copied_or_rendered(two_architectures, tmp_path):
    build_report([two_architectures], tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    greedy = re.search(r"sampler=greedy, checkpoint step 60 .*:\n\n!\[[^\]]*\]\(([^)]+)\)", markdown)
    euler = re.search(r"sampler=euler, checkpoint step 60 .*:\n\n!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert greedy is not None and euler is not None
    copied = (tmp_path / "report" / greedy.group(1)).read_bytes()
    assert copied == (two_architectures / "dfm-0" / "eval_test_step60_greedy.png").read_bytes()
    with Image.open(tmp_path / "report" / euler.group(1)) as rendered:
        assert rendered.size[0] > 200
    assert "trm (mlp_t=false): no evaluate.py report on test" in markdown


def test_inference_from_reports_and_periodic(two_architectures, tmp_path):
    summary = build_report([two_architectures], tmp_path / "report")
    cells = {cell["label"]: cell for cell in summary["datasets"][0]["cells"]}

    dfm_test = {r["setting"]: r for r in cells["flow_matching (source=mask)"]["inference"] if r["split"] == "test"}
    assert sorted(dfm_test) == ["sampler=euler", "sampler=greedy"]
    euler = dfm_test["sampler=euler"]
    assert euler["budgets"] == [1, 4]
    assert euler["flops"] == [1e5, 4e5]
    assert euler["exact_by_budget"][1]["mean"] == pytest.approx(np.mean([0.5, 0.6]))
    assert euler["exact"]["n"] == 2

    trm_test = [r for r in cells["trm (mlp_t=false)"]["inference"] if r["split"] == "test"]
    assert [r["setting"] for r in trm_test] == ["periodic evaluation"]
    assert trm_test[0]["budgets"] == [1, 4]
    assert trm_test[0]["flops"] == [1e5, 4e5]  # 4e5 logged at budget 4, scaled linearly to budget 1
    assert trm_test[0]["exact"]["mean"] == pytest.approx(0.3)


def test_latest_report_per_setting(tmp_path, write_run, write_eval_report):
    run = write_run(tmp_path / "runs" / "dfm", "flow_matching", 0, {"test": [0.1, 0.2]})
    write_eval_report(run, "flow_matching", 20, {4: 0.1}, {"sampler": None}, "eval_test_step20")
    write_eval_report(run, "flow_matching", 40, {4: 0.7}, {"sampler": None}, "eval_test_step40")
    summary = build_report([tmp_path / "runs"], tmp_path / "report")
    results = summary["datasets"][0]["cells"][0]["inference"]
    assert [r["setting"] for r in results] == ["sampler=greedy"]  # None resolved to the config's eval_sampler
    assert results[0]["checkpoint_steps"] == [40]
    assert results[0]["exact"]["mean"] == pytest.approx(0.7)


def test_variants_split_by_source(tmp_path, write_run):
    for source, embedding_parameters in (("mask", 3968), ("uniform", 3840)):
        for seed in (0, 1):
            # The mask token's extra embedding row changes the counts; they must not join the label.
            counts = {"parameters": 146624, "embedding_parameters": embedding_parameters}
            write_run(tmp_path / "runs" / f"{source}-{seed}", "flow_matching", seed, {"test": [0.5]},
                      extra_overrides=[f"arch.source={source}"], parameter_counts=counts)
    cells = group_cells([load_run(path) for path in find_run_dirs([tmp_path / "runs"])])
    assert [cell.label for cell in cells] == ["flow_matching (source=mask)", "flow_matching (source=uniform)"]
    assert [cell.seeds for cell in cells] == [[0, 1], [0, 1]]


def test_varying_key_joins_label(tmp_path, write_run):
    write_run(tmp_path / "runs" / "a", "trm", 0, {"test": [0.5]}, extra_overrides=["lr=0.001"])
    write_run(tmp_path / "runs" / "b", "trm", 0, {"test": [0.5]}, extra_overrides=["lr=0.002"])
    cells = group_cells([load_run(path) for path in find_run_dirs([tmp_path / "runs"])])
    assert [cell.label for cell in cells] == ["trm (mlp_t=false, lr=0.001)", "trm (mlp_t=false, lr=0.002)"]


def test_multirun_layout_discovery(tmp_path, write_run):
    sweep = tmp_path / "multirun" / "2026-01-02" / "03-04-05"
    write_run(sweep / "0", "trm", 0, {"test": [0.1]})
    write_run(sweep / "1", "trm", 1, {"test": [0.2]})
    write_run(tmp_path / "checkpoints" / "sudoku4" / "dfm", "flow_matching", 0, {"test": [0.3]})
    (sweep / "0" / "wandb" / "nested").mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl"):
        (sweep / "0" / "wandb" / "nested" / name).write_text((sweep / "0" / name).read_text())
    (tmp_path / "multirun" / "partial").mkdir()
    (tmp_path / "multirun" / "partial" / "metrics.jsonl").write_text("")

    found = find_run_dirs([tmp_path / "multirun", tmp_path / "checkpoints", sweep / "1"])
    assert found == [tmp_path / "checkpoints" / "sudoku4" / "dfm", sweep / "0", sweep / "1"]


def test_no_runs_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--output", str(tmp_path / "report")]) == 2
    error = capsys.readouterr().err
    assert "no runs found under" in error
    assert str(tmp_path / "empty") in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "report").exists()


def test_missing_path_error(tmp_path):
    with pytest.raises(ReportError, match="directory not found"):
        build_report([tmp_path / "absent"], tmp_path / "report")


def test_bad_metrics_line_named(tmp_path, write_run):
    run = write_run(tmp_path / "runs" / "broken", "trm", 0, {"test": [0.1]})
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-5]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=re.escape(f"{run / 'metrics.jsonl'}:3: invalid JSON")):
        build_report([tmp_path / "runs"], tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_record_without_step_named(tmp_path, write_run):
    run = write_run(tmp_path / "runs" / "broken", "trm", 0, {"test": [0.1]})
    with open(run / "metrics.jsonl", "a") as metrics:
        metrics.write('{"train/loss": 1.0}\n')
    with pytest.raises(ReportError, match=r"metrics.jsonl:\d+: expected a JSON object with an integer 'step'"):
        build_report([tmp_path / "runs"], tmp_path / "report")


def test_bad_eval_report_named(tmp_path, write_run):
    run = write_run(tmp_path / "runs" / "dfm", "flow_matching", 0, {"test": [0.1]})
    (run / "eval_test_step20.json").write_text(json.dumps({"step": 20, "split": "test"}))
    with pytest.raises(ReportError, match="eval_test_step20.json: missing key budget_name"):
        build_report([tmp_path / "runs"], tmp_path / "report")


def test_foreign_output_untouched(tmp_path, write_run):
    write_run(tmp_path / "runs" / "a", "trm", 0, {"test": [0.1]})
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    with pytest.raises(ReportError, match="contains no report.md"):
        build_report([tmp_path / "runs"], foreign)
    assert (foreign / "todo.txt").read_text() == "keep me"


def test_rerun_replaces_report(two_architectures, tmp_path):
    build_report([two_architectures], tmp_path / "report")
    (tmp_path / "report" / "stale.png").write_bytes(b"old")
    build_report([two_architectures], tmp_path / "report")
    assert not (tmp_path / "report" / "stale.png").exists()
    assert (tmp_path / "report" / "report.md").is_file()


def test_output_is_deterministic(two_architectures, tmp_path):
    build_report([two_architectures], tmp_path / "first")
    build_report([two_architectures], tmp_path / "second")
    first = sorted(path.relative_to(tmp_path / "first") for path in (tmp_path / "first").rglob("*"))
    second = sorted(path.relative_to(tmp_path / "second") for path in (tmp_path / "second").rglob("*"))
    assert first == second
    for relative in first:
        if (tmp_path / "first" / relative).is_file():
            first_bytes = (tmp_path / "first" / relative).read_bytes()
            assert first_bytes == (tmp_path / "second" / relative).read_bytes(), relative


def test_commands_and_hashes(two_architectures, tmp_path):
    build_report([two_architectures], tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    runs = {path.name: load_run(path) for path in find_run_dirs([two_architectures])}

    command = training_command(runs["trm-1"])
    assert command.startswith("python pretrain.py arch=trm ")
    assert "arch.hidden_size=32" in command
    assert "seed=1" in command
    assert "arch.puzzle_emb_ndim" not in command  # follows hidden_size through its interpolation
    assert f"+checkpoint_path={two_architectures / 'trm-1'}" in command
    assert command in markdown

    assert config_hash(runs["trm-0"].config) == config_hash(runs["trm-1"].config)
    assert config_hash(runs["trm-0"].config) != config_hash(runs["dfm-0"].config)
    assert "sampler=euler" in markdown
    assert f"output={two_architectures / 'dfm-1' / 'eval_test_step60_euler.json'}" in markdown


def test_parameter_counts_rebuilt(tmp_path, write_run, sudoku4):
    run_dir = write_run(tmp_path / "runs" / "dfm", "flow_matching", 0, {"test": [0.1]})
    run = load_run(run_dir)
    spec = validate_arch(run.config["arch"])
    expected = build_head(spec.name, spec.model, spec.loss_name, spec.loss, read_metadata(sudoku4, "train"))
    assert run.parameter_counts == expected.parameter_counts()


@pytest.mark.slow
def test_end_to_end_tiny_runs(train_tiny, tmp_path):
    runs = tmp_path / "runs"
    checkpoints = {arch: train_tiny(arch, runs / arch) for arch in ("trm", "flow_matching")}
    for arch, options in (("trm", []), ("flow_matching", ["sampler=euler"])):
        config, head_options = evaluate.parse_arguments([
            f"checkpoint={checkpoints[arch]}", "steps=[1,2,4]", "figure_examples=4", *options,
        ])
        evaluate.evaluate(config, head_options, DistributedInfo(0, 1, 0, torch.device("cpu")))

    summary = build_report([runs], tmp_path / "report")
    cells = summary["datasets"][0]["cells"]
    assert [cell["label"] for cell in cells] == ["flow_matching (source=mask)", "trm (mlp_t=false)"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "figures/dataset1-scaling-test.png" in markdown
    assert "figures/dataset1-learning-val.png" in markdown
    assert len(list((tmp_path / "report" / "predictions").glob("*.png"))) == 2
    for cell in cells:
        test_results = [result for result in cell["inference"] if result["split"] == "test"]
        assert [result["budgets"] for result in test_results] == [[1, 2, 4]]
        assert cell["final_exact"]["test"]["n"] == 1
    for arch in ("trm", "flow_matching"):
        recorded = load_run(runs / arch).config["parameter_counts"]
        assert recorded["parameters"] > 0
        assert recorded == next(cell for cell in cells if cell["arch"] == arch)["parameter_counts"]
