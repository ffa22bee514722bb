"""Train an SSD detector: ``python train.py --config_path config/ssd300_config_cpu.yaml [--key value ...]``.

Creates the MindRecord dataset when it is missing, trains with the config's schedule, saves
``ssd-<epoch>_<step>.ckpt`` under ``<output_path>/ckpt_<rank>/`` and can evaluate between
epochs (``--run_eval True``) or resume a stopped run (``--resume <ckpt>``).
"""
from __future__ import annotations

import sys

from src.model_utils.config import parse_args
from src.model_utils.device_adapter import prepare_process, setup_logger


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv, description=__doc__)
    process = prepare_process(config)
    logger = setup_logger(config.output_path, process.rank, "train")
    if process.isa_note:
        logger.info(process.isa_note)
    if config.only_create_dataset:
        from src.mindrecord_io import ensure_mindrecord

        ensure_mindrecord(config, for_training=True)
        return 0
    from src.trainer import Trainer

    Trainer(config, process, logger).fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
