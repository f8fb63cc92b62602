"""Two gloo ranks under torchrun train exactly like one process with the same global batch and seed."""

import json

import pytest

ARCH_OVERRIDES = {
    "trm": [
        "arch=trm", "arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.H_cycles=2",
        "arch.L_cycles=2", "arch.L_layers=1", "arch.halt_max_steps=4", "arch.puzzle_emb_len=1",
    ],
    "flow_matching": [
        "arch=flow_matching", "arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.num_layers=1",
        "arch.structure_embeddings=true", "arch.puzzle_emb_ndim=32", "arch.puzzle_emb_len=1",
        # Local eval batches differ between 1 and 2 ranks; per-example decoding makes the grids identical.
        "arch.loss.eval_batch_invariant=true",
    ],
}


def final_eval(run_dir, split: str) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if f"eval/{split}/exact_accuracy" in r][-1]


@pytest.mark.parametrize("arch", ["trm", "flow_matching"])
def test_two_ranks_match_one(arch, loop_sudoku4, loop_train, loop_losses, loop_script, tmp_path):
    overrides = ARCH_OVERRIDES[arch] + [
        f"data_paths=[{loop_sudoku4}]", "global_batch_size=16", "epochs=20", "eval_interval=10",
        "log_interval=1", "lr=1e-3", "lr_warmup_steps=5", "device=cpu",
    ]
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    loop_train(overrides + [f"+checkpoint_path={one_dir}"])
    loop_script([
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "pretrain.py",
        *overrides, f"+checkpoint_path={two_dir}",
    ])

    one, two = loop_losses(one_dir), loop_losses(two_dir)
    assert sorted(two) == sorted(one) == list(range(1, 41))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), f"step {step}"

    # Evaluation shards the splits over the ranks and must still count every example once.
    for split, count in (("val", 8), ("test", 16)):
        record_one, record_two = final_eval(one_dir, split), final_eval(two_dir, split)
        assert record_two[f"eval/{split}/count"] == record_one[f"eval/{split}/count"] == count
        assert record_two[f"eval/{split}/token_accuracy"] == pytest.approx(record_one[f"eval/{split}/token_accuracy"])
