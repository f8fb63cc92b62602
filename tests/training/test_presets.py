"""Every experiment preset composes and validates, so a typo in a preset fails here, not on a GPU node."""

from pathlib import Path

import pytest

from training.config import resolve_forward_dtype, validate_arch

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "config" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_validates(preset, loop_config):
    # Demo presets leave data_paths to their driver, so every preset gets one here.
    config = loop_config([f"+experiment={preset}", "data_paths=[data/any]"])
    for device_type in ("cpu", "cuda"):
        spec = validate_arch(resolve_forward_dtype(config.arch, device_type))
        assert spec.name in ("trm", "flow_matching")


def test_reference_sudoku_mlp_values(loop_config):
    config = loop_config(["+experiment=trm_sudoku_mlp"])
    assert config.global_batch_size == 768
    assert (config.epochs, config.eval_interval, config.lr, config.weight_decay) == (50000, 5000, 1e-4, 1.0)
    assert config.arch["mlp_t"] is True
    assert config.arch["pos_encodings"] == "none"
    assert config.arch["puzzle_emb_ndim"] == 512
