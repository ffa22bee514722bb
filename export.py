"""Export a trained SSD for deployment: ``python export.py --checkpoint_file_path ... [--config_path ...]
[--file_format MINDIR|ONNX|AIR|OPENVINO] [--file_name ssd] [--batch_size 1] [--quantize none|int8]
[--calib_images 300] [--export_nms True]``.

The config is the config.yaml train.py wrote beside the checkpoint unless --config_path is given
(one that disagrees with it on model_name, num_classes or img_shape is refused; a model-zoo
checkpoint needs --config_path). The config is written beside the exported file as
``<file>.config.yaml`` (e.g. ssd.onnx.config.yaml), where predict.py and eval_onnx.py find it.

The exported graph takes a (batch, 3, H, W) float32 normalised image and returns decoded boxes
(batch, N, 4) [ymin, xmin, ymax, xmax] in [0, 1] and sigmoid scores (batch, N, num_classes).
Its batch size is fixed: --batch_size when given, else 1 (the config file's batch_size is the
training batch and is not used). AIR needs --device_target Ascend. OPENVINO writes the ONNX as an
OpenVINO IR (<file>.xml + <file>.bin, f32 weights). An existing file (and its config) is replaced
once the new export is complete.

--export_nms True (ONNX) appends class-aware NMS with the config's min_score, nms_threshold and
max_boxes to the graph (src/deploy/nms_graph.py). The file then returns the final detections:
boxes (batch, K, 4) normalised [xmin, ymin, xmax, ymax] in [0, 1] (times the image's width and
height for pixels), scores (batch, K), labels (batch, K) int64 class index 1..C-1 and
num_detections (batch,) int64 (rows past it are zeros), K = max_boxes; any batch size runs it.
onnxruntime and OpenVINO read it (OpenCV DNN does not); eval_onnx.py and predict.py take its
detections as they are.

--quantize int8 (ONNX or OPENVINO) writes an INT8 model (NNCF post-training quantization) calibrated
on --calib_images training images, spread evenly over the training split and pre-processed as
evaluation does; the images are read before the network is exported. When the config has a
validation set, the log then prints the FP32 and INT8 mAP/AP50 on it (both run by OpenVINO at f32).
On ModelArts (--enable_modelarts True) a relative --file_name lands in output_path, which is
uploaded to train_url when the export ends.
"""
from __future__ import annotations

import sys
from pathlib import Path

from src.model_utils.device_adapter import start_run
from src.model_utils.errors import UsageError, run_entry
from src.model_utils.moxing_adapter import entry_session
from src.model_utils.run_config import argv_with_model_config, check_model_config, config_beside

#: Exported batch size when --batch_size is not on the command line (what deployment usually feeds).
DEFAULT_EXPORT_BATCH = 1


def main(argv: list[str] | None = None) -> int:
    from src.model_utils.config import command_line_keys, save_resolved_config

    args = argv_with_model_config(sys.argv[1:] if argv is None else argv, "checkpoint_file_path")
    config, process, logger = start_run(args, __doc__, "export")
    if not config.checkpoint_file_path:
        raise UsageError("--checkpoint_file_path is not set; pass the checkpoint to export, "
                         "e.g. --checkpoint_file_path output/ckpt_0/ssd-60_500.ckpt")
    logger.info(check_model_config(config, config.checkpoint_file_path, args))
    batch_size = int(config.batch_size) if "batch_size" in command_line_keys(args) else DEFAULT_EXPORT_BATCH
    if not str(config.file_name).strip():
        raise UsageError("--file_name is empty; pass the exported file's name, e.g. --file_name ssd300")
    file_name = Path(config.file_name)
    if config.enable_modelarts and not file_name.is_absolute():
        file_name = Path(config.output_path) / file_name  # only output_path goes back to OBS
    from src.deploy.export import check_export_request, export_inference_model

    check_export_request(config, config.file_format, batch_size, config.quantize)  # before any image is read
    with entry_session(config, process, "export.py"):  # ModelArts: checkpoint in before, file out after
        calibration = _calibration_set(config, batch_size, logger) if config.quantize == "int8" else None
        path = export_inference_model(config, config.checkpoint_file_path, config.file_format, batch_size, file_name,
                                      config.quantize, calibration)
        saved = save_resolved_config(config, config_beside(path))  # inside the session: uploaded with the file
        if calibration is not None:
            _log_int8_accuracy(config, path, batch_size, logger)
    height, width = config.img_shape
    batch = "any" if config.export_nms else batch_size  # the NMS graph frees the batch axis
    precision = "INT8" if config.quantize == "int8" else "float32"
    logger.info(f"exported {config.model_name} from {config.checkpoint_file_path} to {path} "
                f"(input {batch}x3x{height}x{width}, {config.file_format}, {precision}); its config: {saved}")
    return 0


def _calibration_set(config, batch_size: int, logger):
    """The calibration images, read before the long work so that a bad data path stops the export at once."""
    from src.deploy.quantize import calibration_image_paths, load_calibration_set

    paths, source = calibration_image_paths(config, int(config.calib_images))
    calibration = load_calibration_set(paths, config.img_shape, batch_size, source)
    skipped = (f"; {len(calibration.unreadable)} unreadable skipped (first: {calibration.unreadable[0]})"
               if calibration.unreadable else "")
    logger.info(f"INT8 calibration on {calibration.num_images} images ({source}){skipped}")
    return calibration


def _log_int8_accuracy(config, int8_path: Path, batch_size: int, logger) -> None:
    """FP32 and INT8 accuracy on the validation set, when the config has one (a second, float export to compare)."""
    from src.deploy.export import export_inference_model
    from src.deploy.quantize import int8_accuracy, validation_set_problem
    from src.model_utils.files import temporary_path

    problem = validation_set_problem(config)
    if problem:
        logger.info(f"no validation set to compare FP32 and INT8 accuracy on ({problem})")
        return
    reference = temporary_path(int8_path.with_name(int8_path.name + ".fp32.onnx"))
    try:
        export_inference_model(config, config.checkpoint_file_path, "ONNX", batch_size, reference)
        logger.info(int8_accuracy(config, reference, int8_path, Path(config.output_path))[2])
    finally:
        reference.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(run_entry(main, "export.py"))
