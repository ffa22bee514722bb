"""Evaluate an exported ONNX model with onnxruntime: ``python eval_onnx.py --file_name ssd.onnx
[--config_path ...] [--device_target CPU|GPU] [--data_path ... --coco_root ...] [--save_detections PATH]``.

The config is the ssd.onnx.config.yaml export.py wrote beside the file unless --config_path is given
(which must then agree with it on model_name, num_classes and img_shape).

Same validation images, pre-processing, post-processing and COCO protocol as eval.py, so an ONNX
file and the checkpoint it was exported from print the same mAP. Any exported batch size works:
the dataset is batched like the file and the last partial batch is padded (padding dropped).
--device_target picks onnxruntime's provider (CPU, or GPU through CUDA when installed).
Writes eval_onnx_detections.json and eval_onnx_per_class_ap.csv to the output_path folder (as eval.py).

--save_detections PATH  write the detections json to PATH instead of <output_path>/eval_onnx_detections.json.
"""
from __future__ import annotations

import sys

from src.model_utils.errors import run_entry


def main(argv: list[str] | None = None) -> int:
    # Not start_run: MindSpore only reads the dataset here, so its device is not set up; the
    # device target chooses the onnxruntime provider instead.
    from src.eval.reports import detections_json_path, evaluation_flags, format_report, publish_report
    from src.model_utils.config import parse_args
    from src.model_utils.device_adapter import setup_logger
    from src.model_utils.run_config import argv_with_model_config, check_model_config

    own, config_args = evaluation_flags().parse_known_args(sys.argv[1:] if argv is None else argv)
    config_args = argv_with_model_config(config_args, "file_name")
    config = parse_args(config_args, description=__doc__)
    logger = setup_logger(config.output_path, 0, "eval_onnx")
    results_json = detections_json_path(own.save_detections, config.output_path, "eval_onnx")  # before any work
    logger.info(check_model_config(config, config.file_name, config_args))
    from src.deploy.onnx_predictor import check_model_fits_config, create_session, model_batch_size, onnx_predictor
    from src.eval.validation import evaluate_predictor_on_validation

    session = create_session(config.file_name, config.device_target)
    check_model_fits_config(session, config, config.file_name)
    batch_size = model_batch_size(session) or int(config.eval_batch_size)
    logger.info(f"evaluating {config.file_name} with onnxruntime {session.get_providers()[0]}, batch {batch_size}")
    result = evaluate_predictor_on_validation(onnx_predictor(session), config, results_json, batch_size)
    print(format_report(result), flush=True)
    csv_path = publish_report(result, config.output_path, "eval_onnx")
    logger.info(f"detections written to {results_json}, per-class AP to {csv_path}; mAP {result.map:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "eval_onnx.py"))
