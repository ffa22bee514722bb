"""Run an exported SSD ONNX file with onnxruntime as a numpy predict function.

The predict function has the same contract as src/eval/validation.py ``predictor`` (normalised NCHW
images in, decoded boxes (B, N, 4) and scores (B, N, C) out), so eval_onnx.py scores the ONNX
file through exactly the code eval.py uses. An exported file has a fixed batch size; any number
of images is accepted by feeding full batches and padding the last one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from src.model_utils.errors import SSDError, wrap_foreign_error

#: onnxruntime execution provider for each supported device_target.
PROVIDERS = {"CPU": "CPUExecutionProvider", "GPU": "CUDAExecutionProvider"}


class OnnxModelError(SSDError, ValueError):
    """The ONNX file, or the onnxruntime installation, cannot serve the requested evaluation."""


def create_session(model_path: str | Path, device_target: str) -> Any:
    """An onnxruntime session on the provider for ``device_target`` (CPU, or GPU via CUDA)."""
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"ONNX model {model_path} not found; export one with "
                                f"python export.py --file_format ONNX ... and pass it with --file_name")
    if device_target not in PROVIDERS:
        raise OnnxModelError(f"device_target {device_target!r} has no onnxruntime provider here; use CPU or GPU")
    provider = PROVIDERS[device_target]
    available = ort.get_available_providers()
    if provider not in available:
        raise OnnxModelError(f"device_target {device_target} needs onnxruntime's {provider}, but this onnxruntime "
                             f"offers {available}; install onnxruntime-gpu with a matching CUDA, or use "
                             f"--device_target CPU")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the session otherwise warns about unused initializers
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=[provider])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own unexported exception types
        raise wrap_foreign_error(model_path, "an ONNX model", error, "export it again with python export.py "
                                 "--file_format ONNX (a truncated copy or another file type cannot be run)") from error


def model_batch_size(session: Any) -> int | None:
    """The fixed batch dimension of the session's input, or None when the file leaves it free."""
    batch = session.get_inputs()[0].shape[0]
    return batch if isinstance(batch, int) and batch > 0 else None


def check_model_fits_config(session: Any, config: Any, model_path: str | Path) -> None:
    """One clear error when the file was exported from another config (image size, anchors, classes)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 2:
        raise OnnxModelError(f"{model_path} has {len(inputs)} inputs and {len(outputs)} outputs; an SSD export "
                             f"has 1 input (image) and 2 outputs (boxes, scores)")
    expected = {"input (B, 3, H, W)": (inputs[0].shape[1:], [3, *config.img_shape]),
                "boxes (B, N, 4)": (outputs[0].shape[1:], [config.num_ssd_boxes, 4]),
                "scores (B, N, C)": (outputs[1].shape[1:], [config.num_ssd_boxes, config.num_classes])}
    for what, (shape, wanted) in expected.items():
        fixed = [(dim, want) for dim, want in zip(shape, wanted) if isinstance(dim, int)]
        if len(shape) != len(wanted) or any(dim != want for dim, want in fixed):
            raise OnnxModelError(f"{model_path}: {what} has shape {['B', *shape]} but the config "
                                 f"({config.model_name}, img_shape {config.img_shape}, {config.num_classes} classes) "
                                 f"needs {['B', *wanted]}; pass the --config_path the model was exported with")


def onnx_predictor(session: Any) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A numpy predict function over any number of images for a session with a fixed or free batch."""
    input_name = session.get_inputs()[0].name
    batch = model_batch_size(session)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = session.run(None, {input_name: images})
        return boxes, scores

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.float32)
        if batch is None or images.shape[0] == batch:
            return run(images)
        boxes, scores = [], []
        for start in range(0, images.shape[0], batch):
            chunk = images[start:start + batch]
            real = chunk.shape[0]
            if real < batch:  # padded with zeros; their outputs are dropped below
                chunk = np.concatenate([chunk, np.zeros((batch - real, *chunk.shape[1:]), np.float32)])
            chunk_boxes, chunk_scores = run(chunk)
            boxes.append(chunk_boxes[:real])
            scores.append(chunk_scores[:real])
        return np.concatenate(boxes), np.concatenate(scores)

    return predict
