"""Train an SSD detector: ``python train.py --config_path config/ssd300_config_cpu.yaml [--key value ...]``.

Creates the MindRecord dataset when it is missing, trains with the config's schedule, saves
``ssd-<epoch>_<step>.ckpt`` under ``<output_path>/ckpt_<rank>/`` and can evaluate between
epochs (``--run_eval True``) or resume a stopped run (``--resume <ckpt>``). With
``--run_distribute True`` under a launcher (scripts/run_distribute_train*.sh) it trains data-parallel:
rank 0 creates the MindRecord while the others wait, each rank reads its own shard.
"""
from __future__ import annotations

import sys

from src.model_utils.device_adapter import start_run
from src.model_utils.errors import run_entry
from src.model_utils.moxing_adapter import entry_session


def main(argv: list[str] | None = None) -> int:
    config, process, logger = start_run(argv, __doc__, "train")
    with entry_session(config, process, "train.py"):  # ModelArts: data in before, results out after
        from src.data.sources import resolve_classes
        from src.train.preflight import check_training_run

        resolve_classes(config)  # classes: [] = from the data; before anything reads classes or num_classes
        check_training_run(config)  # contradictions and missing files stop here, before any conversion
        if process.rank == 0:  # the cheap part of check_dataset.py: one line, a warning when the anchors fit badly
            from src.data.dataset_check import log_training_data_check

            log_training_data_check(config)
        if config.only_create_dataset:
            from src.data.mindrecord import ensure_mindrecord_for_rank

            ensure_mindrecord_for_rank(config, for_training=True, rank=process.rank)
            return 0
        from src.train.trainer import Trainer

        Trainer(config, process, logger).fit()
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "train.py"))
