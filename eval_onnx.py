"""Evaluate an exported ONNX model with onnxruntime: ``python eval_onnx.py --config_path ...
--file_name ssd.onnx [--device_target CPU|GPU] [--data_path ... --coco_root ...]``.

Same validation images, pre-processing, post-processing and COCO protocol as eval.py, so an ONNX
file and the checkpoint it was exported from print the same mAP. Any exported batch size works:
the dataset is batched like the file and the last partial batch is padded (padding dropped).
--device_target picks onnxruntime's provider (CPU, or GPU through CUDA when installed).
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    # Not start_run: MindSpore only reads the dataset here, so its device is not set up; the
    # device target chooses the onnxruntime provider instead.
    from src.model_utils.config import parse_args
    from src.model_utils.device_adapter import setup_logger

    config = parse_args(argv, description=__doc__)
    logger = setup_logger(config.output_path, 0, "eval_onnx")
    from src.eval_utils import format_report
    from src.evaluation import evaluate_predictor_on_validation
    from src.onnx_predictor import (OnnxModelError, check_model_fits_config, create_session, model_batch_size,
                                    onnx_predictor)

    try:
        session = create_session(config.file_name, config.device_target)
        check_model_fits_config(session, config, config.file_name)
    except (FileNotFoundError, OnnxModelError) as error:
        raise SystemExit(f"eval_onnx.py: {error}") from None
    batch_size = model_batch_size(session) or int(config.eval_batch_size)
    logger.info(f"evaluating {config.file_name} with onnxruntime {session.get_providers()[0]}, batch {batch_size}")
    results_json = Path(config.output_path) / "eval_onnx_detections.json"
    result = evaluate_predictor_on_validation(onnx_predictor(session), config, results_json, batch_size)
    print(format_report(result), flush=True)
    logger.info(f"detections written to {results_json}; mAP {result.map:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
