"""COCO mAP of the offline runner's outputs: ``python postprocess.py --config_path ... --result_path result_Files
[--img_path <images the runner read>] [--missing_as_empty] [--drop True] [--save_detections PATH]``.

Reads ``<stem>_0.bin`` (boxes N x 4) and ``<stem>_1.bin`` (scores N x num_classes) for every image
of the evaluation ground truth eval.py uses (the same config keys locate it), post-processes them
with eval.py's code and prints the same COCO table, so the runner and eval.py agree on the mAP.
N comes from the config's anchors. One image is in memory at a time. Writes postprocess_detections.json
and postprocess_per_class_ap.csv to the output_path folder (as eval.py).

--missing_as_empty  score images whose result files are missing or truncated as having no
                    detections (the count is printed) instead of stopping with the list of files.
--img_path          the folder the runner read; only used to explain missing results.
--drop True         the seed's protocol: evaluate only images without crowd boxes that have at least
                    one box of a listed class (comparable with the seed's published numbers, not
                    with eval.py, which scores every image and treats crowd boxes as ignore regions).
--save_detections PATH  write the detections json to PATH instead of <output_path>/postprocess_detections.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

from src.eval.reports import detections_json_path, evaluation_flags, format_report, publish_report
from src.model_utils.errors import UsageError, run_entry

#: Flags of this script that are not config keys (parse_args accepts config keys only).
_OWN_FLAGS = evaluation_flags()
_OWN_FLAGS.add_argument("--missing_as_empty", action="store_true")


def main(argv: list[str] | None = None) -> int:
    from src.model_utils.config import parse_args
    from src.model_utils.device_adapter import setup_logger

    own, config_args = _OWN_FLAGS.parse_known_args(sys.argv[1:] if argv is None else argv)
    config = parse_args(config_args, description=__doc__)
    if not config.result_path:
        raise UsageError("--result_path is not set; pass the folder of the C++ runner's .bin files, "
                         "e.g. --result_path ascend310_infer/result_Files")
    results_json = detections_json_path(own.save_detections, config.output_path, "postprocess")  # before any work
    logger = setup_logger(config.output_path, 0, "postprocess")
    from src.data.coco_reader import load_coco_quietly
    from src.data.mindrecord import ground_truth_json
    from src.eval.offline import evaluate_offline_results

    gt_json = ground_truth_json(config, convert=False)  # the runner read the images, not a MindRecord
    outcome = evaluate_offline_results(config, load_coco_quietly(gt_json), gt_json, Path(config.result_path),
                                       results_json, Path(config.img_path) if config.img_path else None,
                                       drop=config.drop, missing_as_empty=own.missing_as_empty)
    print(format_report(outcome.result), flush=True)
    csv_path = publish_report(outcome.result, config.output_path, "postprocess")
    if outcome.num_without_results:
        print(f"{outcome.num_without_results} images had missing or truncated result files and were scored with "
              f"no detections (--missing_as_empty)")
    if outcome.non_finite.num_images:
        print(outcome.non_finite.summary(Path(config.result_path)))
    if outcome.num_dropped:
        print(f"--drop: {outcome.num_dropped} images with crowd boxes or without a box of a listed class were left "
              f"out (the seed's protocol; eval.py scores every image)")
    logger.info(f"{outcome.num_scored} images read from {config.result_path}; detections written to {results_json}, "
                f"per-class AP to {csv_path}; mAP {outcome.result.map:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "postprocess.py"))
