"""Evaluate an SSD checkpoint with the COCO protocol: ``python eval.py --checkpoint_file_path ... [--config_path ...]
[--save_detections PATH]``.

The config is the config.yaml train.py wrote beside the checkpoint unless --config_path is given;
one that disagrees with it on model_name, num_classes or img_shape is refused. A model-zoo
checkpoint (no config.yaml beside it) needs --config_path.

Every image of the annotation file is scored (crowd regions handled by COCOeval); prints the
12 COCO lines, ``mAP: x`` and a per-class table, and writes to the output_path folder:
eval_detections.json (the detections, a COCO results json) and eval_per_class_ap.csv (the per-class
table: class, category_id, AP, AP50, num_gt; best AP first; empty AP cells for classes without ground truth).

--save_detections PATH  write the detections json to PATH instead of <output_path>/eval_detections.json
                        (e.g. to keep the results of several checkpoints side by side).
"""
from __future__ import annotations

import sys

from src.eval.reports import detections_json_path, evaluation_flags
from src.model_utils.device_adapter import start_run
from src.model_utils.errors import UsageError, run_entry
from src.model_utils.moxing_adapter import entry_session
from src.model_utils.run_config import argv_with_model_config, check_model_config


def main(argv: list[str] | None = None) -> int:
    own, config_args = evaluation_flags().parse_known_args(sys.argv[1:] if argv is None else argv)
    config_args = argv_with_model_config(config_args, "checkpoint_file_path")
    config, process, logger = start_run(config_args, __doc__, "eval")
    if not config.checkpoint_file_path:
        raise UsageError("--checkpoint_file_path is not set; pass the checkpoint to evaluate, "
                         "e.g. --checkpoint_file_path output/ckpt_0/ssd-60_500.ckpt")
    results_json = detections_json_path(own.save_detections, config.output_path, "eval")  # refused before any work
    logger.info(check_model_config(config, config.checkpoint_file_path, config_args))
    with entry_session(config, process, "eval.py"):  # ModelArts: data in before, results out after
        from src.data.sources import resolve_classes
        from src.eval.reports import format_report, publish_report
        from src.eval.validation import evaluate_on_validation
        from src.models.registry import inference_network
        from src.weights.checkpoint import load_network_weights

        resolve_classes(config)  # classes: [] = from the data, as train.py resolved them
        infer_net = inference_network(config)
        load_network_weights(config.checkpoint_file_path, infer_net, config=config)
        logger.info(f"loaded {config.checkpoint_file_path}")
        result = evaluate_on_validation(infer_net, config, results_json)
        print(format_report(result), flush=True)
        csv_path = publish_report(result, config.output_path, "eval")
        logger.info(f"detections written to {results_json}, per-class AP to {csv_path}; mAP {result.map:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "eval.py"))
