"""Train a puzzle model: `python pretrain.py arch=trm data_paths=[DIR] ...` or under `torchrun`.

Every architecture trains through the same loop (training/trainer.py); `arch=` picks the model and loss
head from config/arch/. Errors in the config, data or checkpoints print one line and exit with status 2.
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dataset.common import DatasetError
from training.checkpoint import CheckpointError
from training.config import ConfigError, load_pretrain_config
from training.distributed import distributed_context
from training.trainer import Trainer

log = logging.getLogger("pretrain")


@hydra.main(config_path="config", config_name="cfg_pretrain", version_base=None)
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    hydra_config = HydraConfig.get()
    # In a multirun sweep every job gets its own directory, which becomes its run directory.
    job_output_dir = hydra_config.runtime.output_dir if hydra_config.mode == RunMode.MULTIRUN else None
    try:
        config = load_pretrain_config(cfg)
        with distributed_context(config.device) as dist_info:
            Trainer(config, dist_info, job_output_dir).fit()
    except (ConfigError, DatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
