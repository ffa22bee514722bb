"""Evaluate an SSD checkpoint with the COCO protocol: ``python eval.py --config_path ... --checkpoint_file_path ...``.

Every image of the annotation file is scored (crowd regions handled by COCOeval); prints the
12 COCO lines, ``mAP: x`` and a per-class table, and writes the detections as a COCO results json.
"""
from __future__ import annotations

import sys
from pathlib import Path

from src.model_utils.device_adapter import start_run
from src.model_utils.moxing_adapter import entry_session


def main(argv: list[str] | None = None) -> int:
    config, process, logger = start_run(argv, __doc__, "eval")
    if not config.checkpoint_file_path:
        raise SystemExit("eval.py needs --checkpoint_file_path <ckpt> (the weights to evaluate)")
    with entry_session(config, process, "eval.py"):  # ModelArts: data in before, results out after
        from src.checkpoint import load_network_weights
        from src.eval_utils import format_report
        from src.evaluation import build_inference_network, evaluate_on_validation
        from src.ssd import build_ssd

        infer_net = build_inference_network(build_ssd(config), config)
        load_network_weights(config.checkpoint_file_path, infer_net)
        logger.info(f"loaded {config.checkpoint_file_path}")
        results_json = Path(config.output_path) / "eval_detections.json"
        result = evaluate_on_validation(infer_net, config, results_json)
        print(format_report(result), flush=True)
        logger.info(f"detections written to {results_json}; mAP {result.map:.4f}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
