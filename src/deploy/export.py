"""Export the inference network (detector + in-graph box decoding + sigmoid scores) to a file.

Used by export.py and by the tests and the C++ runner's set-up. The exported graph has one input
(B, 3, H, W) float32 normalised image and two outputs: boxes (B, N, 4) [ymin, xmin, ymax, xmax]
in [0, 1] and scores (B, N, num_classes). B is fixed in the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np

from src.deploy.onnx_compat import make_opencv_compatible
from src.model_utils.errors import SSDError
from src.models.registry import inference_network
from src.weights.checkpoint import load_network_weights

#: The suffix MindSpore gives each format's file.
EXPORT_SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}


class ExportError(SSDError, ValueError):
    """An export that cannot be done as asked; the message says what to change."""


def export_path(file_name: str | Path, file_format: str) -> Path:
    """The file MindSpore writes for ``file_name``: the format's suffix appended unless already there."""
    suffix = EXPORT_SUFFIXES[file_format]
    path = Path(file_name)
    return path if path.name.endswith(suffix) else path.with_name(path.name + suffix)


def _check_request(config: Any, file_format: str, batch_size: int) -> None:
    """Refuse up front what MindSpore would only refuse after building and loading the network."""
    if file_format not in EXPORT_SUFFIXES:
        raise ExportError(f"file_format {file_format!r} is not supported; choose one of {list(EXPORT_SUFFIXES)}")
    if file_format == "AIR" and config.device_target != "Ascend":
        raise ExportError(f"AIR export needs MindSpore's Ascend backend, but device_target is "
                          f"{config.device_target!r}: export MINDIR or ONNX here, or export AIR on an Ascend "
                          f"machine with --device_target Ascend")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ExportError(f"batch_size must be a positive integer, got {batch_size!r}")


def _make_writable_target(path: Path) -> None:
    """Remove an earlier export: MindSpore creates its files read-only (0400) and cannot overwrite them."""
    if path.is_dir():
        raise ExportError(f"{path} is a directory; choose another --file_name")
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)


def export_inference_model(config: Any, checkpoint_path: str | Path | None, file_format: str, batch_size: int,
                           file_name: str | Path) -> Path:
    """Export ``config``'s inference network with a fixed batch size; returns the file written.

    ``checkpoint_path`` (a train.py checkpoint, ``network.*`` tensors) is loaded after a name and
    shape check (CheckpointMismatchError for another network); None exports the initial weights.
    ONNX files are rewritten to opset 10 so OpenCV 4.6 loads them too (src/deploy/onnx_compat.py).
    The MindSpore context (device, GRAPH_MODE) must already be set.
    """
    _check_request(config, file_format, batch_size)
    infer_net = inference_network(config)
    if checkpoint_path:
        load_network_weights(checkpoint_path, infer_net, config=config)
    infer_net.set_train(False)
    height, width = config.img_shape
    example = ms.Tensor(np.zeros((int(batch_size), 3, int(height), int(width)), dtype=np.float32))
    target = export_path(file_name, file_format)
    _make_writable_target(target)
    ms.export(infer_net, example, file_name=str(target), file_format=file_format)
    if not target.is_file():
        raise ExportError(f"mindspore.export reported no error but {target} was not written")
    if file_format == "ONNX":
        make_opencv_compatible(target)
    return target
