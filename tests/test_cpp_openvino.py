"""The C++ runner's OpenVINO engine (ascend310_infer/, cpu build with both engines), built and run as users do.

The runner is configured with the venv's OpenVINO wheel (OpenVINO_DIR=<site-packages>/openvino/cmake,
what build.sh passes) and built once into a temporary folder; every run goes without LD_LIBRARY_PATH
(the build RPATH must find the wheel's libraries) and without the oneDNN ISA cap other tests may
have set for MindSpore. ssd300 with random weights (the fixtures of tests/test_cpp_runner.py) is
exported to ONNX at batch 1 and 8 and converted to an OpenVINO IR. `--backend openvino` (ONNX and
IR, and the default engine at batch 8 with a padded batch) and `--backend opencv` run on the same
images: both engines must get bit-identical inputs, and every result file must equal onnxruntime's
outputs on the same inputs, and on the Python eval pipeline's inputs, within 1e-4. An INT8 (QDQ)
model runs and gives what OpenVINO's Python API gives; bf16 runs where the CPU has it (and moves
the outputs) and is refused clearly where not. Bad input gets one clear message: an IR without its
.bin, an IR or --precision bf16 for opencv, a batch the model cannot take; a bad --backend or
--precision is a usage error (exit 2).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
import pytest

from src.deploy.engines import open_session, openvino_cpu_has_bf16, session_predictor
from src.model_utils.config import load_config
from tests import test_cpp_runner
from tests.test_cpp_runner import (CONFIGS, IMAGE_SPECS, TOLERANCE, build_runner, max_difference,
                                   onnxruntime_outputs, python_eval_preprocess)

# Builds the runner and exports real networks: the full suite only.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("graph_mode")]

# The images and random-weight exports of tests/test_cpp_runner.py (made again for this module).
image_dir = test_cpp_runner.image_dir
exports = test_cpp_runner.exports

CONFIG = load_config(CONFIGS["ssd300"])
OPENVINO_VERSION = ov.get_version().split("-")[0]


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    """ascend310_infer's cpu build with OpenVINO found through the venv's wheel, in a temporary folder."""
    openvino_dir = Path(ov.__file__).parent / "cmake"
    binary, configured = build_runner(tmp_path_factory.mktemp("openvino_runner_build"),
                                      f"-DOpenVINO_DIR={openvino_dir}")
    assert (f"SSD runner backend: cpu, engines: openvino (OpenVINO {OPENVINO_VERSION}, the default), opencv (OpenCV "
            in configured), configured
    return binary


def user_environment(**extra: str) -> dict[str, str]:
    """This process's environment as a user's shell has it: no LD_LIBRARY_PATH, no ISA cap from MindSpore tests."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("LD_LIBRARY_PATH", "ONEDNN_MAX_CPU_ISA")}
    return {**environment, **extra}


def run_runner(binary: Path, *args: str, **extra_environment: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=600,
                          env=user_environment(**extra_environment))


def save_ir(model: ov.Model, xml_path: Path) -> Path:
    """The IR of `model` with f32 weights (save_model would halve them to f16, which moves outputs past 1e-4)."""
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


@pytest.fixture(scope="module")
def models(exports, tmp_path_factory) -> dict[str, Path]:
    """ssd300 ONNX at batch 1 and 8, and the batch-1 ONNX as an OpenVINO IR."""
    onnx_b1 = exports("ssd300", 1)
    folder = tmp_path_factory.mktemp("openvino_ir")
    return {"onnx-b1": onnx_b1, "onnx-b8": exports("ssd300", 8),
            "ir-b1": save_ir(ov.convert_model(str(onnx_b1)), folder / "ssd300_b1.xml")}


@dataclass
class EngineRun:
    """One runner run over image_dir: what it printed, wrote and fed the network."""
    completed: subprocess.CompletedProcess
    work: Path
    boxes: np.ndarray    # (K, N, 4) from result_Files
    scores: np.ndarray   # (K, N, C)
    inputs: np.ndarray   # (K, 3, H, W) from --input_dump_dir


def image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix in (".jpg", ".png"))


def run_engine(runner: Path, model: Path, images: Path, work: Path, *flags: str, **environment: str) -> EngineRun:
    completed = run_runner(runner, "--model_path", str(model), "--dataset_path", str(images),
                           "--output_dir", str(work / "result_Files"), "--timing_dir", str(work / "time_Result"),
                           "--input_dump_dir", str(work / "inputs"), *flags, **environment)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    stems = [path.stem for path in image_files(images)]
    height, width = CONFIG.img_shape

    def read(pattern: str, shape: tuple) -> np.ndarray:
        return np.stack([np.fromfile(work / pattern.format(stem), np.float32).reshape(shape) for stem in stems])

    return EngineRun(completed, work, read("result_Files/{}_0.bin", (CONFIG.num_ssd_boxes, 4)),
                     read("result_Files/{}_1.bin", (CONFIG.num_ssd_boxes, CONFIG.num_classes)),
                     read("inputs/{}_input.bin", (3, height, width)))


#: case -> (model, runner flags, engine line the runner must print)
CASES = {"openvino-onnx": ("onnx-b1", ["--backend", "openvino"], f"OpenVINO {OPENVINO_VERSION} CPU (f32 precision, "),
         "opencv-onnx": ("onnx-b1", ["--backend", "opencv"], "OpenCV "),
         "default-batch8": ("onnx-b8", [], f"OpenVINO {OPENVINO_VERSION} CPU (f32 precision, "),
         "openvino-ir": ("ir-b1", ["--backend", "openvino"], f"OpenVINO {OPENVINO_VERSION} CPU (f32 precision, ")}


@pytest.fixture(scope="module")
def engine_runs(runner, models, image_dir, tmp_path_factory) -> dict[str, EngineRun]:
    return {case: run_engine(runner, models[model], image_dir, tmp_path_factory.mktemp(case), *flags)
            for case, (model, flags, _) in CASES.items()}


@pytest.fixture(scope="module")
def python_inputs(image_dir) -> np.ndarray:
    """The images through MindSpore's eval preprocessing (src/data/dataset.py)."""
    return np.stack([python_eval_preprocess(path, CONFIG.img_shape) for path in image_files(image_dir)])


@pytest.mark.parametrize("case", CASES)
def test_engine_matches_onnxruntime(case, engine_runs, models, python_inputs):
    model, _, engine_line = CASES[case]
    run = engine_runs[case]
    assert f"[runner] {engine_line}" in run.completed.stdout, run.completed.stdout
    onnx_model = models[model.replace("ir-", "onnx-")]  # an IR is compared with the ONNX it was made from
    own = max_difference((run.boxes, run.scores), onnxruntime_outputs(onnx_model, run.inputs))
    assert own <= TOLERANCE, f"{case} vs onnxruntime on the runner's own inputs: {own:.3g}"
    pipeline = max_difference((run.boxes, run.scores), onnxruntime_outputs(onnx_model, python_inputs))
    assert pipeline <= TOLERANCE, f"{case} vs onnxruntime on the Python eval pipeline's inputs: {pipeline:.3g}"
    # the comparison means something only if the outputs depend on the image
    assert float(np.abs(run.scores[0] - run.scores[1]).max()) > 100 * TOLERANCE


def test_both_engines_get_bit_identical_inputs(engine_runs):
    reference = engine_runs["opencv-onnx"].inputs
    for case in ("openvino-onnx", "default-batch8", "openvino-ir"):
        assert np.array_equal(engine_runs[case].inputs, reference), case


def test_openvino_describes_itself_and_pads_the_last_batch(engine_runs, models):
    stdout = engine_runs["openvino-onnx"].completed.stdout
    assert (f"running {models['onnx-b1']}, input (1, 3, 300, 300), OpenCV preprocessing (RGB, bilinear resize, "
            f"mean/std)") in stdout, stdout
    batch8 = engine_runs["default-batch8"].completed.stdout
    assert f"threads) running {models['onnx-b8']}, input (8, 3, 300, 300)" in batch8, batch8
    assert f"batch size: 8 (1 batches, {8 - len(IMAGE_SPECS)} padding images)" in batch8


def test_threads_flag_sets_openvino_threads(runner, models, image_dir, tmp_path):
    completed = run_runner(runner, "--model_path", str(models["onnx-b1"]), "--dataset_path", str(image_dir),
                           "--threads", "1", "--output_dir", str(tmp_path / "out"),
                           "--timing_dir", str(tmp_path / "time"))
    assert completed.returncode == 0, completed.stderr
    assert "CPU (f32 precision, 1 threads) running" in completed.stdout, completed.stdout


def test_dynamic_batch_takes_the_batch_size_flag(runner, models, image_dir, engine_runs, tmp_path):
    """A free batch dimension is fixed to --batch_size (default 1); this export's graph still fixes 1 inside."""
    dynamic = ov.convert_model(str(models["onnx-b1"]))
    dynamic.reshape([-1, 3, *CONFIG.img_shape])
    xml = save_ir(dynamic, tmp_path / "dynamic.xml")
    run = run_engine(runner, xml, image_dir, tmp_path / "default", "--backend", "openvino")
    assert "input (1, 3, 300, 300)" in run.completed.stdout
    assert max_difference((run.boxes, run.scores), (engine_runs["openvino-ir"].boxes,
                                                    engine_runs["openvino-ir"].scores)) <= TOLERANCE
    two = run_runner(runner, "--model_path", str(xml), "--dataset_path", str(image_dir), "--batch_size", "2",
                     "--output_dir", str(tmp_path / "out"))
    assert two.returncode == 1
    assert f"{xml} gives outputs of shapes (1, 1917, 4) and (1, 1917, " in two.stderr, two.stderr
    assert "expected (2, N, 4) boxes and (2, N, classes) scores" in two.stderr


def test_int8_model_runs_as_in_openvino_python(runner, models, image_dir, tmp_path):
    """A QDQ ONNX quantized with NNCF: the runner's outputs equal OpenVINO's Python API at f32 on the same inputs."""
    import nncf
    from onnx import version_converter

    float_model = version_converter.convert_version(onnx.load(str(models["onnx-b1"])), 13)  # QDQ per channel
    rng = np.random.default_rng(3)
    calibration = [rng.standard_normal((1, 3, *CONFIG.img_shape)).astype(np.float32) for _ in range(4)]
    input_name = float_model.graph.input[0].name
    quantized = nncf.quantize(float_model, nncf.Dataset(calibration, lambda image: {input_name: image}),
                              subset_size=len(calibration))
    assert any(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    int8_path = tmp_path / "ssd300_int8.onnx"
    onnx.save(quantized, str(int8_path))

    # INT8 kernels differ with the oneDNN ISA (by up to 0.9 in a score on this random-weight network): the
    # runner runs without the cap conftest sets for MindSpore, and so does the Python engine (it lifts the cap).
    run = run_engine(runner, int8_path, image_dir, tmp_path / "int8", "--backend", "openvino")
    expected_boxes, expected_scores = session_predictor(open_session(int8_path, "openvino", "CPU", "f32"))(run.inputs)
    difference = max_difference((run.boxes, run.scores), (expected_boxes, expected_scores))
    assert difference <= TOLERANCE


def test_bf16_is_explicit(runner, models, image_dir, engine_runs, tmp_path):
    """bf16 runs (and moves the outputs) where the CPU has it natively, and is refused clearly where not."""
    arguments = ("--model_path", str(models["onnx-b1"]), "--dataset_path", str(image_dir), "--precision", "bf16",
                 "--output_dir", str(tmp_path / "out"), "--timing_dir", str(tmp_path / "time"))
    if not openvino_cpu_has_bf16():  # asked without the cap: a capped query would pin it for this process
        refused = run_runner(runner, *arguments)
        assert refused.returncode == 1
        assert "--precision bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX)" in refused.stderr
        return
    run = run_engine(runner, models["onnx-b1"], image_dir, tmp_path / "bf16", "--precision", "bf16")
    assert "CPU (bf16 precision, " in run.completed.stdout
    f32 = engine_runs["openvino-onnx"]
    assert max_difference((run.boxes, run.scores), (f32.boxes, f32.scores)) > TOLERANCE
    # rounding only: single scores of this random-weight network move by up to ~0.6, the mean hardly at all
    assert all(float(np.abs(got - want).mean()) < 0.02
               for got, want in ((run.boxes, f32.boxes), (run.scores, f32.scores)))
    capped = run_runner(runner, *arguments, ONEDNN_MAX_CPU_ISA="AVX2")
    assert capped.returncode == 1
    assert "ONEDNN_MAX_CPU_ISA=AVX2 is set in the environment and limits OpenVINO's CPU kernels" in capped.stderr


@pytest.mark.parametrize("model, flags, message", [
    ("lonely", [], "{lonely_bin} not found: an OpenVINO IR is the .xml and its .bin side by side"),
    ("ir-b1", ["--backend", "opencv"], "{model} is an OpenVINO IR, which OpenCV DNN cannot read"),
    ("onnx-b1", ["--backend", "opencv", "--precision", "bf16"], "--precision bf16 is an OpenVINO setting"),
    ("onnx-b1", ["--batch_size", "4"], "--batch_size 4 does not match {model}, which was exported with 1"),
    ("text", [], "{model} is not a readable ONNX file"),
], ids=["ir-without-bin", "ir-on-opencv", "bf16-on-opencv", "batch-too-large", "not-a-model"])
def test_bad_input_gets_one_clear_message(runner, models, image_dir, tmp_path, model, flags, message):
    lonely = tmp_path / "lonely.xml"
    shutil.copy(models["ir-b1"], lonely)
    (tmp_path / "notes.txt").write_text("not a model\n")
    paths = {**models, "lonely": lonely, "text": tmp_path / "notes.txt"}
    completed = run_runner(runner, "--model_path", str(paths[model]), "--dataset_path", str(image_dir),
                           "--output_dir", str(tmp_path / "out"), *flags)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert message.format(model=paths[model], lonely_bin=lonely.with_suffix(".bin")) in completed.stderr
    assert not list(tmp_path.glob("out/*.bin"))


@pytest.mark.parametrize("flag, value, message", [
    ("--precision", "fp16", "--precision must be f32 or bf16, got 'fp16'"),
    ("--backend", "onnxruntime", "--backend must be openvino or opencv, got 'onnxruntime'"),
])
def test_bad_engine_flags_are_usage_errors(runner, flag, value, message):
    completed = run_runner(runner, "--model_path", "m.onnx", "--dataset_path", ".", flag, value)
    assert completed.returncode == 2
    assert message in completed.stderr and "usage:" in completed.stderr
    assert "--backend ENGINE" in completed.stderr and "--precision P" in completed.stderr
