"""INT8 post-training quantization of an exported ONNX model with NNCF, calibrated on training images.

Why NNCF on the ONNX file rather than onnxruntime's static quantizer or NNCF on an OpenVINO model:
its output is one QDQ ONNX file that onnxruntime, OpenVINO (Python and the C++ runner) and the IR
converter all read, so every deployment path runs the same INT8 model. Calibration images go
through the evaluation pre-processing (src/deploy/predict.py ``eval_preprocessor``), so the
activation ranges are those the deployed model will see.

The export rewrites its ONNX to opset 10 for OpenCV 4.6 (src/deploy/onnx_compat.py); NNCF's
quantizer emits opset-13 operators (per-channel QuantizeLinear, Round), so the model is converted
to opset 13 first. OpenCV DNN does not run the INT8 model; onnxruntime and OpenVINO do.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from src.model_utils.errors import SSDError

logger = logging.getLogger("ssd")

#: Opset of the quantized file: the first with per-axis QuantizeLinear/DequantizeLinear.
QUANTIZED_OPSET = 13
QUANTIZE_CHOICES = ("none", "int8")


class CalibrationError(SSDError, ValueError):
    """The calibration images cannot be read as asked; the message names them and the fix."""


@dataclass(frozen=True)
class CalibrationSet:
    """The training images chosen for calibration, preprocessed, in batches of the model's size."""

    batches: list[np.ndarray]  # (B, 3, H, W) float32 each
    num_images: int
    unreadable: list[Path]
    source: str  # where they came from, for the log


def calibration_image_paths(config: Any, count: int) -> tuple[list[Path], str]:
    """``count`` training images spread evenly over the training split (the same ones on every run)."""
    from src.data.mindrecord import read_split

    try:
        records, _ = read_split(config, for_training=True)
    except FileNotFoundError as error:
        raise CalibrationError(f"--quantize int8 calibrates on the training images, which cannot be read: {error}"
                               ) from error
    paths = sorted({record.image_path for record in records})
    if not paths:
        raise CalibrationError("--quantize int8: the training split has no images to calibrate on; check the "
                               "config's training data keys (data_path, coco_root, ...)")
    picks = np.unique(np.linspace(0, len(paths) - 1, num=min(count, len(paths))).round().astype(int))
    return [paths[i] for i in picks], f"{len(picks)} of the {len(paths)} training images"


def load_calibration_set(paths: Sequence[Path], img_shape: Sequence[int], batch_size: int,
                         source: str) -> CalibrationSet:
    """The images decoded and preprocessed as evaluation does; unreadable ones skipped and counted.

    A last batch shorter than the model's fixed batch is filled with repeats of its own images, so
    no image is dropped and no blank padding skews the activation ranges.
    """
    from src.deploy.predict import UnreadableImageError, eval_preprocessor, read_image

    preprocess = eval_preprocessor(img_shape)
    inputs, unreadable = [], []
    for path in paths:
        try:
            inputs.append(preprocess(read_image(path)))
        except UnreadableImageError:
            unreadable.append(path)
    if not inputs:
        raise CalibrationError(f"none of the {len(paths)} calibration images could be read (first: {paths[0]}); "
                               f"check the training images")
    batches = [np.stack(inputs[start:start + batch_size]) for start in range(0, len(inputs), batch_size)]
    short = batch_size - batches[-1].shape[0]
    if short:
        batches[-1] = np.concatenate([batches[-1], np.resize(batches[-1], (short, *batches[-1].shape[1:]))])
    return CalibrationSet(batches, len(inputs), unreadable, source)


def quantize_onnx_int8(fp32_model: Path, int8_model: Path, calibration: CalibrationSet) -> None:
    """Write ``int8_model``: ``fp32_model`` with INT8 weights and activations (QDQ), calibrated on ``calibration``."""
    import nncf
    import onnx
    from onnx import version_converter

    model = version_converter.convert_version(onnx.load(str(fp32_model)), QUANTIZED_OPSET)
    input_name = model.graph.input[0].name
    dataset = nncf.Dataset([{input_name: batch} for batch in calibration.batches])
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration.batches))
    onnx.checker.check_model(quantized)
    onnx.save(quantized, str(int8_model))



def validation_set_problem(config: Any) -> str | None:
    """Why the config has no evaluation set to score the quantized model on, or None when it has one."""
    from src.data.sources import data_source

    try:
        data_source(config, for_training=False).check(config)
    except (FileNotFoundError, SSDError) as error:
        return str(error)
    return None


def int8_accuracy(config: Any, fp32_model: Path, int8_model: Path, output_path: Path) -> tuple[float, float, str]:
    """AP50 of the float and the INT8 model on the validation set, both in OpenVINO at f32, and a line for the log.

    Same dataset, pre- and post-processing and COCO protocol as eval.py (src/eval/validation.py), so
    the drop is the quantization's alone.
    """
    from src.deploy.engines import check_model_fits_config, open_session, session_predictor
    from src.eval.validation import evaluate_predictor_on_validation

    results = {}
    for name, path in (("fp32", fp32_model), ("int8", int8_model)):
        session = open_session(path, "openvino", "CPU", "f32")
        check_model_fits_config(session, config)
        results[name] = evaluate_predictor_on_validation(session_predictor(session), config,
                                                         output_path / f"export_{name}_detections.json",
                                                         session.batch_size or int(config.eval_batch_size))
    (fp32_map, fp32_ap50), (int8_map, int8_ap50) = (results[name].stats[:2] for name in ("fp32", "int8"))
    line = (f"validation accuracy (OpenVINO f32 engine, {results['fp32'].num_images} images): FP32 mAP "
            f"{fp32_map:.4f} AP50 {fp32_ap50:.4f}; INT8 mAP {int8_map:.4f} AP50 {int8_ap50:.4f}; AP50 change "
            f"{100 * (int8_ap50 - fp32_ap50):+.2f} points")
    return float(fp32_ap50), float(int8_ap50), line
