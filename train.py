"""Train an SSD detector: ``python train.py --config_path config/ssd300_config_cpu.yaml [--key value ...]``.

Creates the MindRecord dataset when it is missing, trains with the config's schedule, saves
``ssd-<epoch>_<step>.ckpt`` under ``<output_path>/ckpt_<rank>/`` and can evaluate between
epochs (``--run_eval True``) or resume a stopped run (``--resume <ckpt>``).
"""
from __future__ import annotations

import sys

from src.model_utils.device_adapter import start_run


def main(argv: list[str] | None = None) -> int:
    config, process, logger = start_run(argv, __doc__, "train")
    if config.only_create_dataset:
        from src.mindrecord_io import ensure_mindrecord

        ensure_mindrecord(config, for_training=True)
        return 0
    from src.trainer import Trainer

    Trainer(config, process, logger).fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
