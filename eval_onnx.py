"""Evaluate an exported model with onnxruntime or OpenVINO: ``python eval_onnx.py --file_name ssd.onnx|ssd.xml
[--backend onnxruntime|openvino] [--precision f32|bf16] [--config_path ...] [--device_target CPU|GPU]
[--data_path ... --coco_root ...] [--save_detections PATH]``.

The config is the ssd.onnx.config.yaml export.py wrote beside the file unless --config_path is given
(which must then agree with it on model_name, num_classes and img_shape).

Same validation images, pre-processing, post-processing and COCO protocol as eval.py, so an ONNX
file and the checkpoint it was exported from print the same mAP. Any exported batch size works:
the dataset is batched like the file and the last partial batch is padded (padding dropped).
A file exported with --export_nms True returns its detections itself, with the thresholds fixed at
export (read from the file and printed with the report; the config's min_score, nms_threshold and
max_boxes are then not applied).
--device_target picks onnxruntime's provider (CPU, or GPU through CUDA when installed); OpenVINO runs on
the CPU. --backend defaults to onnxruntime for .onnx and openvino for an IR (.xml + .bin); --precision
is f32 unless bf16 is asked for (OpenVINO, CPUs with native bf16) and is printed with the engine.
Writes eval_onnx_detections.json and eval_onnx_per_class_ap.csv to the output_path folder (as eval.py).

--save_detections PATH  write the detections json to PATH instead of <output_path>/eval_onnx_detections.json.
"""
from __future__ import annotations

import sys

from src.model_utils.errors import run_entry


def main(argv: list[str] | None = None) -> int:
    # Not start_run: MindSpore only reads the dataset here, so its device is not set up; the
    # device target chooses the onnxruntime provider instead.
    from src.deploy.engines import add_engine_flags
    from src.eval.reports import detections_json_path, evaluation_flags, format_report, publish_report
    from src.model_utils.config import parse_args
    from src.model_utils.device_adapter import setup_logger
    from src.model_utils.run_config import argv_with_model_config, check_model_config

    flags = evaluation_flags()
    add_engine_flags(flags)
    own, config_args = flags.parse_known_args(sys.argv[1:] if argv is None else argv)
    config_args = argv_with_model_config(config_args, "file_name")
    config = parse_args(config_args, description=__doc__)
    logger = setup_logger(config.output_path, 0, "eval_onnx")
    results_json = detections_json_path(own.save_detections, config.output_path, "eval_onnx")  # before any work
    logger.info(check_model_config(config, config.file_name, config_args))
    from src.deploy.engines import backend_for, open_session, session_predictor
    from src.deploy.nms_graph import detections_from_outputs, in_model_postprocessing, postprocessing_note
    from src.eval.validation import evaluate_predictor_on_validation

    session = open_session(config.file_name, backend_for(config.file_name, own.backend), config.device_target,
                           own.precision)
    in_model = in_model_postprocessing(session, config)  # None: a plain export, post-processed in Python
    batch_size = session.batch_size or int(config.eval_batch_size)
    logger.info(f"evaluating {config.file_name} with {session.description}, batch {batch_size}; "
                f"{postprocessing_note(in_model, config)}")
    result = evaluate_predictor_on_validation(session_predictor(session), config, results_json, batch_size,
                                              detections_from_outputs if in_model else None)
    print(format_report(result), postprocessing_note(in_model, config), sep="\n", flush=True)
    csv_path = publish_report(result, config.output_path, "eval_onnx")
    logger.info(f"detections written to {results_json}, per-class AP to {csv_path}; mAP {result.map:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "eval_onnx.py"))
