"""Check a dataset before training on it: ``python check_dataset.py --config_path ... [--split train|val]
[--skip_images] [--dataset ... --data_path ... --KEY VALUE ...]``.

Reads the split exactly as the MindRecord conversion does (any dataset format) and reports images
(listed, skipped by the reader, found, decodable and of the annotated size), boxes, boxes per class,
images without boxes, boxes clipped or dropped and images skipped with the reason, COCO size buckets
(small < 32^2, medium < 96^2 pixels, large), byte-identical duplicate images, and the anchor coverage:
the share of boxes whose best default box of the config's network reaches match_threshold, per size
bucket, with a warning and concrete advice (img_shape, scales, aspect ratios) below 90 %.

--split        train (default) or val: which split of the config to check.
--skip_images  do not read the image files (no decode, no duplicate search): only the annotations are read.

Writes <output_path>/dataset_check/report.json and box_sizes.png (the ground-truth box sizes against
the default box sizes; report_val.json and box_sizes_val.png for --split val). Exit status 1 on a fatal
problem (no usable image, no box at all, no image that decodes); warnings do not fail the check.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.model_utils.device_adapter import start_run
from src.model_utils.errors import SSDError, run_entry


def _own_flags() -> argparse.ArgumentParser:
    """This script's options; everything else is a config key for parse_args."""
    parser = argparse.ArgumentParser(prog="check_dataset.py", add_help=False, allow_abbrev=False,
                                     usage="check_dataset.py [--config_path PATH] [--split train|val] [--skip_images] "
                                           "[--KEY VALUE ...] (--help for all options)")
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--skip_images", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    own, config_args = _own_flags().parse_known_args(sys.argv[1:] if argv is None else argv)
    config, _, logger = start_run(config_args, __doc__, "check_dataset")
    from src.data.dataset_check import CHECK_FOLDER, check_dataset, log_check, summary_line, write_check_outputs

    check = check_dataset(config, for_training=own.split == "train", check_images=not own.skip_images)
    log_check(check)
    report_path, picture = write_check_outputs(check, Path(config.output_path) / CHECK_FOLDER)
    logger.info(f"report: {report_path}; box sizes: {picture}")
    logger.info(summary_line(check))
    if check.fatal:
        raise SSDError(f"{check.fatal[0]} (the full report: {report_path})")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "check_dataset.py"))
