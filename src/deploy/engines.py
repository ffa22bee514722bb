"""Run an exported SSD file (ONNX, or an OpenVINO IR) with onnxruntime or OpenVINO as one numpy session.

Both engines sit behind ``ModelSession`` (shapes, a ``run`` over numpy arrays, a one-line
description), so eval_onnx.py and predict.py score a file through exactly the code eval.py uses,
whatever runs it. The predict function built by ``session_predictor`` has the contract of
src/eval/validation.py ``predictor`` (normalised NCHW images in, decoded boxes (B, N, 4) and
scores (B, N, C) out); any number of images is accepted by feeding the file's fixed batch and
padding the last one.

Precision is never left to the engine: OpenVINO's CPU default is bf16 wherever the CPU has native
bf16 (AVX512_BF16, AMX), which moved ssd300 scores by up to 0.33; here it is f32 unless the caller
asks for bf16, and the description says which. An INT8 model (export.py --quantize int8) runs its
quantized layers in INT8 in either engine; ``precision`` then governs the layers left in float.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from src.model_utils.errors import SSDError, wrap_foreign_error

BACKENDS = ("onnxruntime", "openvino")
#: Float precision of the engine's arithmetic; bf16 only exists in OpenVINO on CPUs with native bf16.
PRECISIONS = ("f32", "bf16")
#: onnxruntime execution provider for each supported device_target.
PROVIDERS = {"CPU": "CPUExecutionProvider", "GPU": "CUDAExecutionProvider"}
#: Files each engine reads: onnxruntime only ONNX; OpenVINO also its own IR (.xml + .bin).
ENGINE_SUFFIXES = {"onnxruntime": (".onnx",), "openvino": (".onnx", ".xml")}

Dimension = int | None  # None: free (dynamic) in the file


class OnnxModelError(SSDError, ValueError):
    """The model file, or the engine installation, cannot serve the requested run."""


@dataclass(frozen=True)
class ModelSession:
    """An exported model loaded in an engine, as shapes and a numpy function."""

    path: Path
    description: str  # engine, version, device, precision: for the log
    input_shape: tuple[Dimension, ...]
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[Dimension, ...], ...]
    run: Callable[[np.ndarray], list[np.ndarray]]  # one full batch in, every output out

    @property
    def batch_size(self) -> int | None:
        """The fixed batch dimension of the input, or None when the file leaves it free."""
        return self.input_shape[0]


def open_session(model_path: str | Path, backend: str = "onnxruntime", device_target: str = "CPU",
                 precision: str = "f32") -> ModelSession:
    """The file at ``model_path`` loaded in ``backend`` on ``device_target`` with float ``precision``."""
    model_path = Path(model_path)
    if backend not in BACKENDS:
        raise OnnxModelError(f"backend {backend!r} is not known; choose one of {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise OnnxModelError(f"precision {precision!r} is not known; choose one of {list(PRECISIONS)} (an INT8 model "
                             f"comes from python export.py --quantize int8 and runs at either)")
    if model_path.suffix.lower() not in ENGINE_SUFFIXES[backend]:
        raise OnnxModelError(f"{model_path}: {backend} reads {' or '.join(ENGINE_SUFFIXES[backend])} files; "
                             + ("run an OpenVINO IR with --backend openvino" if model_path.suffix.lower() == ".xml"
                                else "export one with python export.py --file_format ONNX"))
    if not model_path.is_file():
        raise FileNotFoundError(f"model {model_path} not found; export one with python export.py "
                                f"--file_format ONNX (or OPENVINO) and pass its path")
    if backend == "openvino":
        return _openvino_session(model_path, device_target, precision)
    if precision != "f32":
        raise OnnxModelError(f"precision {precision} is an OpenVINO option; onnxruntime runs f32 (use --backend "
                             f"openvino for bf16)")
    return _onnxruntime_session(model_path, device_target)


def create_session(model_path: str | Path, device_target: str) -> Any:
    """A raw onnxruntime InferenceSession on the provider for ``device_target`` (CPU, or GPU via CUDA)."""
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


def _onnxruntime_session(model_path: Path, device_target: str) -> ModelSession:
    import onnxruntime as ort

    session = create_session(model_path, device_target)
    input_name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {input_name: images})

    return ModelSession(model_path, f"onnxruntime {ort.__version__} {session.get_providers()[0]} f32",
                        _fixed_dims(session.get_inputs()[0].shape),
                        tuple(output.name for output in session.get_outputs()),
                        tuple(_fixed_dims(output.shape) for output in session.get_outputs()), run)


def _fixed_dims(shape: Sequence[Any]) -> tuple[Dimension, ...]:
    return tuple(dim if isinstance(dim, int) and dim > 0 else None for dim in shape)


def _import_openvino() -> Any:
    """The openvino module, or one clear error saying how to get it."""
    try:
        import openvino as ov
    except ImportError as error:
        raise OnnxModelError("--backend openvino needs the openvino package, which is not installed in this "
                             "Python; install it with pip install -r requirements.txt (bash scripts/setup_env.sh) "
                             "or use --backend onnxruntime") from error
    return ov


@contextmanager
def _without_onednn_isa_cap() -> Iterator[None]:
    """OpenVINO's CPU plugin compiled with oneDNN's full instruction set.

    The entry scripts cap oneDNN at AVX2 for MindSpore's sake (its NCHW convolutions are slow
    otherwise), but OpenVINO's own oneDNN copy reads the same variable when its plugin first
    compiles: capped, bf16 cannot compile and INT8 loses its VNNI kernels (measured 9 ms -> 16-34 ms
    per ssd300 image). The plugin reads it once, so it is lifted for the compile only.
    """
    from src.model_utils.device_adapter import ONEDNN_ISA_VARIABLE

    capped = os.environ.pop(ONEDNN_ISA_VARIABLE, None)
    try:
        yield
    finally:
        if capped is not None:
            os.environ[ONEDNN_ISA_VARIABLE] = capped


def openvino_cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin offers native bf16; asked without the ISA cap, which the plugin would keep."""
    ov = _import_openvino()
    with _without_onednn_isa_cap():
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _openvino_session(model_path: Path, device_target: str, precision: str) -> ModelSession:
    if device_target != "CPU":
        raise OnnxModelError(f"--backend openvino runs on the CPU here; pass --device_target CPU (got "
                             f"{device_target}; for an NVIDIA GPU use --backend onnxruntime --device_target GPU)")
    if model_path.suffix.lower() == ".xml" and not model_path.with_suffix(".bin").is_file():
        raise OnnxModelError(f"{model_path.with_suffix('.bin')} not found: an OpenVINO IR is the .xml and its .bin "
                             f"side by side; copy both, or export again with python export.py --file_format OPENVINO")
    ov = _import_openvino()
    if precision == "bf16" and not openvino_cpu_has_bf16():
        raise OnnxModelError("precision bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX), which this one "
                             "lacks; use --precision f32")
    with _without_onednn_isa_cap():
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
            compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
        except Exception as error:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise wrap_foreign_error(model_path, "a model OpenVINO can read", error, "export it again with python "
                                     "export.py --file_format ONNX or OPENVINO") from error
    request = compiled.create_infer_request()
    outputs = compiled.outputs

    def run(images: np.ndarray) -> list[np.ndarray]:
        results = request.infer({0: images})
        return [np.array(results[output]) for output in outputs]  # copies: the request reuses its buffers

    threads = compiled.get_property("INFERENCE_NUM_THREADS")
    return ModelSession(model_path, f"OpenVINO {ov.get_version().split('-')[0]} CPU {precision} ({threads} threads)",
                        _partial_dims(compiled.inputs[0].get_partial_shape()),
                        tuple(output.get_any_name() for output in outputs),
                        tuple(_partial_dims(output.get_partial_shape()) for output in outputs), run)


def _partial_dims(shape: Any) -> tuple[Dimension, ...]:
    return tuple(dim.get_length() if dim.is_static else None for dim in shape)


def check_model_fits_config(session: ModelSession, config: Any) -> None:
    """One clear error when the file was exported from another config (image size, anchors, classes)."""
    if len(session.output_shapes) != 2:
        raise OnnxModelError(f"{session.path} has {len(session.output_shapes)} outputs; an SSD export has 2 "
                             f"(boxes, scores)")
    expected = {"input (B, 3, H, W)": (session.input_shape[1:], [3, *config.img_shape]),
                "boxes (B, N, 4)": (session.output_shapes[0][1:], [config.num_ssd_boxes, 4]),
                "scores (B, N, C)": (session.output_shapes[1][1:], [config.num_ssd_boxes, config.num_classes])}
    for what, (shape, wanted) in expected.items():
        fixed = [(dim, want) for dim, want in zip(shape, wanted) if dim is not None]
        if len(shape) != len(wanted) or any(dim != want for dim, want in fixed):
            raise OnnxModelError(f"{session.path}: {what} has shape {['B', *shape]} but the config "
                                 f"({config.model_name}, img_shape {config.img_shape}, {config.num_classes} classes) "
                                 f"needs {['B', *wanted]}; pass the --config_path the model was exported with")


def session_predictor(session: ModelSession) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """A numpy predict function over any number of images: full batches of the file's size, the last one padded."""
    batch = session.batch_size

    def predict(images: np.ndarray) -> tuple[np.ndarray, ...]:
        images = np.ascontiguousarray(images, dtype=np.float32)
        if batch is None or images.shape[0] == batch:
            return tuple(session.run(images))
        chunks = []
        for start in range(0, images.shape[0], batch):
            chunk = images[start:start + batch]
            real = chunk.shape[0]
            if real < batch:  # padded with zeros; their outputs are dropped below
                chunk = np.concatenate([chunk, np.zeros((batch - real, *chunk.shape[1:]), np.float32)])
            chunks.append([output[:real] for output in session.run(chunk)])
        return tuple(np.concatenate(parts) for parts in zip(*chunks))

    return predict


def add_engine_flags(parser: Any) -> None:
    """--backend and --precision, the same for every script that runs an exported file."""
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="engine for .onnx/.xml files (default: onnxruntime for .onnx, openvino for .xml)")
    parser.add_argument("--precision", choices=PRECISIONS, default="f32",
                        help="float precision of the engine (default f32; bf16: OpenVINO on CPUs with native bf16)")


def backend_for(model_path: str | Path, backend: str | None) -> str:
    """The engine asked for, or the one that reads the file's type: OpenVINO for its IR, else onnxruntime."""
    if backend is not None:
        return backend
    return "openvino" if Path(model_path).suffix.lower() == ".xml" else "onnxruntime"
