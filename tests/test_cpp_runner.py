"""The C++ runner (ascend310_infer/, cpu backend) against onnxruntime and eval.py, built and run as users do.

The runner is configured and built with CMake into a temporary folder with OpenVINO kept out: the
OpenCV-DNN-only build a machine without OpenVINO gets, so its engine is OpenCV DNN and asking for
OpenVINO must say how to rebuild (the OpenVINO engine: tests/test_cpp_openvino.py). ssd300 and
ssd_mobilenet_v1_fpn (random He-normal weights and random BatchNorm statistics, so the outputs
differ clearly between images) are exported to ONNX with export_inference_model at batch 1 and
batch 8 (5 images: one padded batch). For every image the runner's boxes and scores must equal
onnxruntime's on the same file preprocessed by MindSpore's eval ops (src/data/dataset.py). The
runner's own preprocessed input (--input_dump_dir) is checked separately against the Python
pipeline, and onnxruntime on that input against the runner, so a decoding or resizing difference
between OpenCV builds shows up as such and not as an inference error. scripts/run_infer_cpp.sh
must print eval.py's mAP for the session's short demo training run, with OpenVINO (its default,
built from the venv's wheel by build.sh) and with CPP_BACKEND=opencv. Bad input (missing model,
empty folder, non-image files, an undecodable image, mismatching flags) gets a clear message.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import mindspore as ms
import mindspore.dataset.vision as vision
import numpy as np
import pytest

from src.data.dataset import IMAGE_MEAN, IMAGE_STD
from src.deploy.export import export_inference_model
from src.deploy.engines import create_session
from src.model_utils.config import load_config, save_resolved_config
from src.models.init_weights import init_network_weights
from src.models.registry import build_ssd
from src.train.loss import SSDWithLossCell
from tests.conftest import (DEMO_CONFIG, EPOCHS, PROJECT_ROOT, STEPS_PER_EPOCH, demo_args, randomise_batch_norm,
                            run_script)

# Exports real networks: the full suite only.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("graph_mode")]

SOURCE_DIR = PROJECT_ROOT / "ascend310_infer"
CONFIGS = {"ssd300": PROJECT_ROOT / "config" / "ssd300_config_cpu.yaml",
           "ssd_mobilenet_v1_fpn": PROJECT_ROOT / "config" / "ssd_mobilenet_v1_fpn_config_cpu.yaml"}
TOLERANCE = 1e-4
#: (height, width, extension) of the test images: odd sizes and both codecs, so resizing and decoding matter.
IMAGE_SPECS = [(240, 320, "jpg"), (480, 360, "png"), (300, 300, "jpg"), (123, 457, "png"), (500, 500, "jpg")]




def build_runner(build: Path, *cmake_flags: str) -> tuple[Path, str]:
    """Configure and compile ascend310_infer's cpu build in ``build`` (warnings fail); the binary and CMake's output.

    Skips when the build tools or OpenCV's development files are missing (setup_env.sh installs them)."""
    missing = [tool for tool in ("cmake", "make", "g++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (bash scripts/setup_env.sh installs them)")
    configure = subprocess.run(["cmake", "-S", str(SOURCE_DIR), "-B", str(build), *cmake_flags],
                               capture_output=True, text=True)
    if configure.returncode != 0 and "OpenCV >= 4.6 development files" in configure.stderr:
        pytest.skip("OpenCV development files not installed (bash scripts/setup_env.sh installs libopencv-dev)")
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stdout[-5000:] + compiled.stderr[-5000:]
    assert "warning" not in compiled.stdout + compiled.stderr
    return build / "main", configure.stdout


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    """ascend310_infer built with CMake's default (cpu) backend in a temporary folder, OpenVINO left out."""
    binary, configured = build_runner(tmp_path_factory.mktemp("runner_build"),
                                      "-DCMAKE_DISABLE_FIND_PACKAGE_OpenVINO=ON")
    assert "SSD runner backend: cpu, engines: opencv (OpenCV " in configured, configured
    assert "OpenVINO's CMake package not found: building the opencv engine only" in configured
    return binary


def run_runner(binary: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Five smooth random images of different sizes (JPEG and PNG) and one text file to be skipped."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    for index, (height, width, extension) in enumerate(IMAGE_SPECS):
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"img{index}.{extension}"), cv2.GaussianBlur(noise, (9, 9), 0))
    (folder / "notes.txt").write_text("not an image\n")
    return folder




@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """export(model_name, batch) -> ONNX path of a random-weight checkpoint; each file is made once."""
    folder = tmp_path_factory.mktemp("exports")
    made: dict[tuple[str, int], Path] = {}
    checkpoints: dict[str, Path] = {}

    def export(model_name: str, batch: int) -> Path:
        config = load_config(CONFIGS[model_name])
        if model_name not in checkpoints:
            network = build_ssd(config)
            init_network_weights(network, config.num_classes)
            randomise_batch_norm(network, np.random.default_rng(len(checkpoints)))
            checkpoints[model_name] = folder / f"{model_name}.ckpt"
            ms.save_checkpoint(SSDWithLossCell(network, config.gamma, config.alpha), str(checkpoints[model_name]))
        if (model_name, batch) not in made:
            made[model_name, batch] = export_inference_model(config, checkpoints[model_name], "ONNX", batch,
                                                             folder / f"{model_name}_b{batch}")
        return made[model_name, batch]

    return export


def python_eval_preprocess(path: Path, img_shape) -> np.ndarray:
    """One file through the eval branch of src/data/dataset.py create_ssd_dataset: (3, H, W) float32."""
    image = np.fromfile(path, dtype=np.uint8)
    for op in (vision.Decode(), vision.Resize([int(v) for v in img_shape], vision.Inter.LINEAR),
               vision.Normalize(mean=list(IMAGE_MEAN), std=list(IMAGE_STD)), vision.HWC2CHW()):
        image = op(image)
    return np.asarray(image, dtype=np.float32)


def onnxruntime_outputs(model: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime boxes and scores for (K, 3, H, W) images fed in the model's batch, last batch zero-padded."""
    session = create_session(model, "CPU")
    batch = session.get_inputs()[0].shape[0]
    boxes, scores = [], []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        padded = np.zeros((batch, *images.shape[1:]), np.float32)
        padded[:len(chunk)] = chunk
        out_boxes, out_scores = session.run(None, {session.get_inputs()[0].name: padded})
        boxes.append(out_boxes[:len(chunk)])
        scores.append(out_scores[:len(chunk)])
    return np.concatenate(boxes), np.concatenate(scores)


@dataclass
class RunnerCase:
    """One runner run over image_dir and the references it is compared with."""
    batch: int
    stems: list[str]
    completed: subprocess.CompletedProcess
    timing_file: Path
    runner_boxes: np.ndarray           # (K, N, 4) from result_Files
    runner_scores: np.ndarray          # (K, N, C)
    runner_inputs: np.ndarray          # (K, 3, H, W) the runner's own preprocessing
    python_inputs: np.ndarray          # (K, 3, H, W) MindSpore's eval preprocessing
    reference: tuple[np.ndarray, np.ndarray]       # onnxruntime on python_inputs
    own_reference: tuple[np.ndarray, np.ndarray]   # onnxruntime on runner_inputs


@pytest.fixture(scope="module", params=[("ssd300", 1), ("ssd300", 8), ("ssd_mobilenet_v1_fpn", 1),
                                        ("ssd_mobilenet_v1_fpn", 8)], ids=lambda p: f"{p[0]}-batch{p[1]}")
def case(request, runner, image_dir, exports, tmp_path_factory) -> RunnerCase:
    model_name, batch = request.param
    config = load_config(CONFIGS[model_name])
    model = exports(model_name, batch)
    work = tmp_path_factory.mktemp(f"{model_name}_b{batch}")
    completed = run_runner(runner, "--model_path", str(model), "--dataset_path", str(image_dir),
                           "--output_dir", str(work / "result_Files"), "--timing_dir", str(work / "time_Result"),
                           "--input_dump_dir", str(work / "inputs"))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    files = sorted(p for p in image_dir.iterdir() if p.suffix in (".jpg", ".png"))
    stems = [p.stem for p in files]
    num_boxes, num_classes = config.num_ssd_boxes, config.num_classes
    height, width = config.img_shape

    def read(suffix: str, shape: tuple) -> np.ndarray:
        return np.stack([np.fromfile(work / suffix.format(stem), np.float32).reshape(shape) for stem in stems])

    runner_inputs = read("inputs/{}_input.bin", (3, height, width))
    python_inputs = np.stack([python_eval_preprocess(path, config.img_shape) for path in files])
    reference = onnxruntime_outputs(model, python_inputs)
    # onnxruntime is deterministic: with bit-identical inputs its outputs are the same arrays
    own_reference = reference if np.array_equal(runner_inputs, python_inputs) else onnxruntime_outputs(
        model, runner_inputs)
    return RunnerCase(batch, stems, completed, work / "time_Result" / "test_perform_static.txt",
                      read("result_Files/{}_0.bin", (num_boxes, 4)),
                      read("result_Files/{}_1.bin", (num_boxes, num_classes)),
                      runner_inputs, python_inputs, reference, own_reference)


def max_difference(got: tuple, want: tuple) -> float:
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))


def test_runner_matches_onnxruntime_on_the_python_eval_pipeline(case):
    difference = max_difference((case.runner_boxes, case.runner_scores), case.reference)
    preprocessing = float(np.abs(case.runner_inputs - case.python_inputs).max())
    assert difference <= TOLERANCE, (f"runner vs onnxruntime on MindSpore-preprocessed images: {difference:.3g} "
                                     f"(preprocessing differs by {preprocessing:.3g})")
    # the comparison means something only if the outputs depend on the image
    assert float(np.abs(case.runner_scores[0] - case.runner_scores[1]).max()) > 100 * TOLERANCE
    assert float(np.abs(case.runner_boxes[0] - case.runner_boxes[1]).max()) > 100 * TOLERANCE


def test_runner_preprocessing_equals_the_python_eval_pipeline(case):
    """OpenCV decode + RGB + bilinear resize + mean/std in C++ == MindSpore Decode/Resize/Normalize/HWC2CHW."""
    per_image = np.abs(case.runner_inputs - case.python_inputs).reshape(len(case.stems), -1).max(axis=1)
    assert per_image.max() <= TOLERANCE, dict(zip(case.stems, per_image.tolist()))


def test_runner_inference_matches_onnxruntime_on_its_own_input(case):
    difference = max_difference((case.runner_boxes, case.runner_scores), case.own_reference)
    assert difference <= TOLERANCE


def test_runner_reports_skips_and_timing(case):
    assert "5 images in" in case.completed.stdout
    assert "skipped 1 non-image file(s): notes.txt" in case.completed.stdout
    summary = case.timing_file.read_text()
    assert summary in case.completed.stdout
    assert "images: 5 (1 non-image files skipped)" in summary
    batches = -(-len(IMAGE_SPECS) // case.batch)
    padding = batches * case.batch - len(IMAGE_SPECS)
    assert f"batch size: {case.batch} ({batches} batches, {padding} padding images)" in summary
    latency = float(re.search(r"mean latency per image: ([0-9.]+) ms", summary).group(1))
    throughput = float(re.search(r"throughput: ([0-9.]+) images/s", summary).group(1))
    assert latency > 0 and throughput == pytest.approx(1000.0 / latency, rel=0.01, abs=0.006)  # printed to 0.01


@pytest.mark.parametrize("arguments, message", [
    (["--model_path", "{tmp}/missing.onnx", "--dataset_path", "{images}"],
     "model file {tmp}/missing.onnx not found; export it first with: python export.py"),
    (["--model_path", "{model}", "--dataset_path", "{tmp}/empty"], "no images (.jpg .jpeg .png .bmp) in {tmp}/empty "
                                                                   "(the folder is empty)"),
    (["--model_path", "{model}", "--dataset_path", "{tmp}/text_only"], "(1 other files skipped)"),
    (["--model_path", "{model}", "--dataset_path", "{tmp}/nowhere"], "dataset folder {tmp}/nowhere does not exist"),
    (["--model_path", "{model}", "--dataset_path", "{tmp}/broken"], "cannot decode image {tmp}/broken/a.jpg"),
    (["--model_path", "{tmp}/text_only/readme.txt", "--dataset_path", "{images}"], "is not a readable ONNX file"),
    (["--model_path", "{model}", "--dataset_path", "{images}", "--batch_size", "4"],
     "--batch_size 4 does not match {model}, which was exported with 1"),
    (["--model_path", "{model}", "--dataset_path", "{images}", "--image_width", "320"],
     "--image_width 320 does not match"),
    (["--model_path", "{model}", "--dataset_path", "{images}", "--cpu_dvpp", "DVPP"], "needs the Ascend310 build"),
    (["--model_path", "{model}", "--dataset_path", "{images}", "--device_type", "Ascend310"],
     "rebuild it with: bash ascend310_infer/build.sh ascend310"),
], ids=["missing-model", "empty-folder", "only-non-images", "missing-folder", "undecodable-image", "not-onnx",
        "batch-mismatch", "size-mismatch", "dvpp-on-cpu", "device-mismatch"])
def test_bad_input_gets_one_clear_message(runner, image_dir, exports, tmp_path, arguments, message):
    model = exports("ssd300", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "text_only").mkdir()
    (tmp_path / "text_only" / "readme.txt").write_text("no images here\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"this is not a JPEG")
    values = {"tmp": tmp_path, "images": image_dir, "model": model}
    completed = run_runner(runner, *(argument.format(**values) for argument in arguments), cwd=tmp_path)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert message.format(**values) in completed.stderr
    assert not list(tmp_path.glob("result_Files/*.bin"))


def test_usage_errors_exit_2_with_the_flag_list(runner):
    unknown = run_runner(runner, "--model_path", "m.onnx", "--dataset_path", ".", "--batchsize", "4")
    assert unknown.returncode == 2
    assert "unknown flag --batchsize; known flags:" in unknown.stderr and "--batch_size" in unknown.stderr
    assert "usage:" in unknown.stderr
    not_a_number = run_runner(runner, "--model_path", "m.onnx", "--dataset_path", ".", "--batch_size", "eight")
    assert not_a_number.returncode == 2 and "--batch_size needs an integer, got 'eight'" in not_a_number.stderr
    no_model = run_runner(runner, "--dataset_path", ".")
    assert no_model.returncode == 2 and "--model_path (or --mindir_path) is required" in no_model.stderr


def test_openvino_in_an_opencv_only_build_says_how_to_rebuild(runner, image_dir, exports, tmp_path):
    completed = run_runner(runner, "--model_path", str(exports("ssd300", 1)), "--dataset_path", str(image_dir),
                           "--backend", "openvino", "--output_dir", str(tmp_path / "out"))
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert ("--backend openvino: this runner was built without OpenVINO" in completed.stderr
            and "rebuild with bash ascend310_infer/build.sh" in completed.stderr
            and "or use --backend opencv" in completed.stderr), completed.stderr
    assert not (tmp_path / "out").exists()


def test_mindir_path_is_an_alias_of_model_path(runner, image_dir, exports, tmp_path):
    completed = run_runner(runner, "--mindir_path", str(exports("ssd300", 1)), "--dataset_path", str(image_dir),
                           "--output_dir", str(tmp_path / "out"), "--timing_dir", str(tmp_path / "time"))
    assert completed.returncode == 0, completed.stderr
    assert len(list((tmp_path / "out").glob("*.bin"))) == 2 * len(IMAGE_SPECS)


def test_ascend310_backend_needs_mindspore_path(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed (bash scripts/setup_env.sh installs it)")
    configure = subprocess.run(["cmake", "-S", str(SOURCE_DIR), "-B", str(tmp_path), "-DBACKEND=ascend310"],
                               capture_output=True, text=True)
    assert configure.returncode != 0
    assert "BACKEND=ascend310 needs -DMINDSPORE_PATH=" in " ".join(configure.stderr.split())


def test_run_infer_cpp_sh_prints_eval_py_map(runner, demo_root, trained_run, tmp_path):
    """The script end to end (build, runner, postprocess.py) on the demo validation set vs eval.py."""
    checkpoint = trained_run / "ckpt_0" / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"
    data_keys = {"data_path": str(demo_root), "coco_root": "coco", "mindrecord_dir": "MindRecord",
                 "output_path": str(tmp_path / "postprocess")}
    config_path = save_resolved_config(load_config(DEMO_CONFIG, data_keys), tmp_path / "demo_config.yaml")
    model = export_inference_model(load_config(config_path), checkpoint, "ONNX", 3, tmp_path / "demo_b3")

    evaluated = run_script("eval.py", *demo_args(demo_root, tmp_path / "eval", "--checkpoint_file_path",
                                                 str(checkpoint)))
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    eval_map = float(re.search(r"^mAP: ([0-9.eE+-]+)$", evaluated.stdout, flags=re.MULTILINE).group(1))
    assert eval_map > 0, "the reference run must detect something for the comparison to mean anything"

    # the script's default CPU engine is OpenVINO, which build.sh finds in the venv's wheel
    for cpp_backend, engine_line in (("", "[runner] OpenVINO "), ("opencv", "[runner] OpenCV ")):
        work = tmp_path / f"work_{cpp_backend or 'default'}"
        work.mkdir()
        script = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "run_infer_cpp.sh"), str(model),
                                 str(demo_root / "coco" / "val2017"), "DVPP", str(config_path), "CPU"],
                                cwd=work, capture_output=True, text=True, timeout=900,
                                env={**os.environ, "CPP_BACKEND": cpp_backend})
        assert script.returncode == 0, script.stdout[-3000:] + script.stderr[-3000:]
        assert "[infer] runner backend: cpu, engines: openvino (OpenVINO " in script.stdout, script.stdout[:3000]
        assert "DVPP applies to Ascend310 only" in script.stdout
        assert "(300x300, CPU, preprocessing CPU)" in script.stdout
        assert engine_line in (work / "infer.log").read_text()
        script_map = float(re.search(r"^\[infer\] mAP: ([0-9.eE+-]+)$", script.stdout, flags=re.MULTILINE).group(1))
        assert f"{script_map:.3f}" == f"{eval_map:.3f}", (cpp_backend, script_map, eval_map)
        assert len(list((work / "result_Files").glob("*_0.bin"))) == 16
        assert (work / "time_Result" / "test_perform_static.txt").is_file()
        assert (work / "acc.log").is_file()


def test_run_infer_cpp_sh_usage(tmp_path):
    script = str(PROJECT_ROOT / "scripts" / "run_infer_cpp.sh")
    no_args = subprocess.run(["bash", script], capture_output=True, text=True)
    assert no_args.returncode == 2 and "usage: bash scripts/run_infer_cpp.sh MODEL_PATH DATA_PATH" in no_args.stderr
    bad_device = subprocess.run(["bash", script, "m.onnx", str(tmp_path), "CPU", "config/ssd300_config_cpu.yaml",
                                 "GPU"], capture_output=True, text=True)
    assert bad_device.returncode == 2 and "DEVICE_TYPE must be CPU or Ascend310, got 'GPU'" in bad_device.stderr
    bad_engine = subprocess.run(["bash", script, "m.onnx", str(tmp_path)], capture_output=True, text=True,
                                env={**os.environ, "CPP_BACKEND": "onnxruntime"})
    assert bad_engine.returncode == 2
    assert "CPP_BACKEND must be openvino or opencv, got 'onnxruntime'" in bad_engine.stderr
    engine_on_ascend = subprocess.run(["bash", script, "m.mindir", str(tmp_path), "CPU",
                                       "config/ssd300_config_cpu.yaml", "Ascend310"], capture_output=True, text=True,
                                      env={**os.environ, "CPP_BACKEND": "opencv"})
    assert engine_on_ascend.returncode == 2 and "CPP_BACKEND picks a CPU engine" in engine_on_ascend.stderr
    missing_model = subprocess.run(["bash", script, str(tmp_path / "m.onnx"), str(tmp_path)],
                                   capture_output=True, text=True)
    assert missing_model.returncode == 1 and f"model file {tmp_path / 'm.onnx'} not found" in missing_model.stderr
