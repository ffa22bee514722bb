"""Export the inference network (detector + in-graph box decoding + sigmoid scores) to a file.

Used by export.py and by the tests and the C++ runner's set-up. The exported graph has one input
(B, 3, H, W) float32 normalised image and two outputs: boxes (B, N, 4) [ymin, xmin, ymax, xmax]
in [0, 1] and scores (B, N, num_classes). B is fixed in the file.

Formats: MINDIR, AIR (Ascend) and ONNX are MindSpore's own; OPENVINO is the ONNX converted to
OpenVINO's IR (``.xml`` + ``.bin``, weights kept in f32). ``quantize="int8"`` turns the ONNX into
an INT8 model calibrated on training images (src/deploy/quantize.py) before any conversion.
``config.export_nms`` (ONNX only) appends class-aware NMS with the config's min_score, nms_threshold
and max_boxes to the graph (src/deploy/nms_graph.py): its outputs are then boxes (B, K, 4) normalised
[xmin, ymin, xmax, ymax], scores (B, K), labels (B, K) int64 and num_detections (B,), and B is free.
Every stage works on hidden temporaries beside the target, and the finished files are renamed into
place last (the IR's ``.bin`` before its ``.xml``), so an interrupted or failed export never
leaves a file that looks finished.
"""
from __future__ import annotations

import os
import stat
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np

from src.deploy.nms_graph import NmsSettings, add_nms_to_file
from src.deploy.onnx_compat import make_opencv_compatible
from src.deploy.quantize import QUANTIZE_CHOICES, CalibrationSet
from src.model_utils.errors import SSDError
from src.model_utils.files import temporary_path
from src.models.registry import inference_network
from src.weights.checkpoint import load_network_weights

#: The suffix of each format's file (OPENVINO: the IR's .xml; its .bin lies beside it).
EXPORT_SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air", "OPENVINO": ".xml"}
#: Formats built from MindSpore's ONNX export.
ONNX_BASED = ("ONNX", "OPENVINO")


class ExportError(SSDError, ValueError):
    """An export that cannot be done as asked; the message says what to change."""


def export_path(file_name: str | Path, file_format: str) -> Path:
    """The file the export writes for ``file_name``: the format's suffix appended unless already there."""
    suffix = EXPORT_SUFFIXES[file_format]
    path = Path(file_name)
    return path if path.name.endswith(suffix) else path.with_name(path.name + suffix)


def written_files(target: Path) -> list[Path]:
    """Every file an export to ``target`` consists of (an IR is its .xml and its .bin)."""
    return [target, target.with_suffix(".bin")] if target.suffix == ".xml" else [target]


def check_export_request(config: Any, file_format: str, batch_size: int, quantize: str) -> None:
    """Refuse up front what MindSpore would only refuse after building and loading the network."""
    if file_format not in EXPORT_SUFFIXES:
        raise ExportError(f"file_format {file_format!r} is not supported; choose one of {list(EXPORT_SUFFIXES)}")
    if file_format == "AIR" and config.device_target != "Ascend":
        raise ExportError(f"AIR export needs MindSpore's Ascend backend, but device_target is "
                          f"{config.device_target!r}: export MINDIR or ONNX here, or export AIR on an Ascend "
                          f"machine with --device_target Ascend")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ExportError(f"batch_size must be a positive integer, got {batch_size!r}")
    if quantize not in QUANTIZE_CHOICES:
        raise ExportError(f"quantize {quantize!r} is not supported; choose one of {list(QUANTIZE_CHOICES)}")
    if quantize != "none" and file_format not in ONNX_BASED:
        raise ExportError(f"--quantize {quantize} writes an ONNX or OpenVINO model; pass --file_format ONNX or "
                          f"OPENVINO (got {file_format})")
    if config.export_nms and (file_format != "ONNX" or quantize != "none"):
        raise ExportError(f"--export_nms True appends NMS to the float ONNX graph (an ONNX feature); pass "
                          f"--file_format ONNX --quantize none, or --export_nms False (got --file_format "
                          f"{file_format} --quantize {quantize})")


def _check_target(target: Path) -> None:
    """A target that can be replaced: not a folder, its folder created."""
    for path in written_files(target):
        if path.is_dir():
            raise ExportError(f"{path} is a directory; choose another --file_name")
    target.parent.mkdir(parents=True, exist_ok=True)


def _mindspore_export(config: Any, checkpoint_path: str | Path | None, file_format: str, batch_size: int,
                      path: Path) -> None:
    """MindSpore's own export of the inference network (``path`` must carry the format's suffix)."""
    infer_net = inference_network(config)
    if checkpoint_path:
        load_network_weights(checkpoint_path, infer_net, config=config)
    infer_net.set_train(False)
    height, width = config.img_shape
    example = ms.Tensor(np.zeros((int(batch_size), 3, int(height), int(width)), dtype=np.float32))
    folder_mode = path.parent.stat().st_mode
    try:
        ms.export(infer_net, example, file_name=str(path), file_format=file_format)
    finally:  # MindSpore makes the folder it writes into private (0700); it is the user's folder
        os.chmod(path.parent, stat.S_IMODE(folder_mode))
    if not path.is_file():
        raise ExportError(f"mindspore.export reported no error but {path} was not written")


def _convert_to_openvino(onnx_path: Path, xml_path: Path) -> None:
    """The IR of ``onnx_path``; weights stay f32 (OpenVINO's save_model would halve them to f16 by default).

    Read through the runtime's ONNX front end rather than ``convert_model``, which is the same conversion
    plus usage telemetry sent to the network (a failing HTTP request on offline machines).
    """
    import openvino as ov

    ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)


def export_inference_model(config: Any, checkpoint_path: str | Path | None, file_format: str, batch_size: int,
                           file_name: str | Path, quantize: str = "none",
                           calibration: CalibrationSet | None = None) -> Path:
    """Export ``config``'s inference network with a fixed batch size; returns the file written.

    ``checkpoint_path`` (a train.py checkpoint, ``network.*`` tensors) is loaded after a name and
    shape check (CheckpointMismatchError for another network); None exports the initial weights.
    ONNX files are rewritten to opset 10 so OpenCV 4.6 loads them too (src/deploy/onnx_compat.py);
    an INT8 file (``quantize="int8"``, which needs ``calibration``) is opset 13.
    The MindSpore context (device, GRAPH_MODE) must already be set. An earlier export at the same
    name is replaced only once the new one is complete.
    """
    check_export_request(config, file_format, batch_size, quantize)
    if quantize != "none" and calibration is None:
        raise ExportError("--quantize int8 needs calibration images (src/deploy/quantize.py load_calibration_set)")
    target = export_path(file_name, file_format)
    _check_target(target)
    with ExitStack() as cleanup:
        def also_removed(path: Path) -> Path:
            cleanup.callback(path.unlink, missing_ok=True)
            return path

        def scratch(suffix: str) -> Path:
            return also_removed(temporary_path(target.with_suffix(suffix)))

        stage = scratch(".mindir" if file_format == "MINDIR" else ".air" if file_format == "AIR" else ".onnx")
        _mindspore_export(config, checkpoint_path, "ONNX" if file_format in ONNX_BASED else file_format,
                          batch_size, stage)
        if file_format in ONNX_BASED:
            make_opencv_compatible(stage)
            if config.export_nms:  # boxes, scores, labels, num_detections; batch free (src/deploy/nms_graph.py)
                add_nms_to_file(stage, NmsSettings.from_config(config))
        if quantize == "int8":
            from src.deploy.quantize import quantize_onnx_int8

            quantized = scratch(".int8.onnx")
            quantize_onnx_int8(stage, quantized, calibration)
            stage = quantized
        if file_format == "OPENVINO":
            xml = scratch(".xml")
            weights = also_removed(xml.with_suffix(".bin"))  # save_model writes the .bin beside the .xml
            _convert_to_openvino(stage, xml)
            os.replace(weights, target.with_suffix(".bin"))
            stage = xml
        os.replace(stage, target)
    return target
