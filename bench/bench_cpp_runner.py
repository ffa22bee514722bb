"""Exported-model latency: the C++ runner's CPU engines and onnxruntime on the same ONNX export.

Usage: .venv/bin/python bench/bench_cpp_runner.py [--config config/ssd300_config_cpu.yaml]
       [--images 48] [--batch_sizes 1 8]

Builds ascend310_infer (bash ascend310_infer/build.sh, only what changed), exports the config's
network to ONNX at each batch size (initial weights: the speed does not depend on them), writes
--images random 640x480 JPEGs and runs the runner over them once per engine the build has:
opencv (OpenCV DNN), openvino at f32, and openvino at bf16 when /proc/cpuinfo reports native bf16
(avx512_bf16 or amx_bf16). Prints a row per engine with the runner's own summary numbers: mean
latency per image (preprocessing + inference, first batch excluded as warm-up) and images/s.
onnxruntime runs the same file on the runner's preprocessed inputs, so its number (the same on
every row of a batch size) is inference only and compares with the runner's inference part.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.machine_info import cpu_has_native_bf16, describe_machine  # noqa: E402
from src.model_utils.config import load_config  # noqa: E402
from src.model_utils.device_adapter import cap_onednn_isa  # noqa: E402

RUNNER = PROJECT_ROOT / "ascend310_infer" / "out" / "main"


def write_images(folder: Path, count: int) -> None:
    import cv2

    rng = np.random.default_rng(0)
    for index in range(count):
        noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{index:06d}.jpg"), cv2.GaussianBlur(noise, (9, 9), 0))


def runner_engines(build_output: str) -> list[tuple[str, str]]:
    """(engine, precision) pairs to time: what the build has (its configure line), bf16 only where it is native."""
    engines = [("opencv", "f32")]
    if re.search(r"engines: .*openvino \(", build_output):
        engines.append(("openvino", "f32"))
        if cpu_has_native_bf16():
            engines.append(("openvino", "bf16"))
    return engines


def run_runner(model: Path, images: Path, work: Path, engine: str, precision: str, env: dict[str, str]) -> str:
    done = subprocess.run([str(RUNNER), "--model_path", str(model), "--dataset_path", str(images),
                           "--backend", engine, "--precision", precision,
                           "--output_dir", str(work / "result_Files"), "--timing_dir", str(work / "time_Result"),
                           "--input_dump_dir", str(work / "inputs")], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"runner ({engine} {precision}) failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def summary_number(summary: str, pattern: str) -> float:
    return float(re.search(pattern, summary).group(1))


def onnxruntime_ms_per_image(model: Path, inputs: Path, batch_size: int) -> float:
    """Mean inference time per image over full batches of the runner's inputs, first batch excluded."""
    from src.deploy.engines import create_session

    session = create_session(model, "CPU")
    name = session.get_inputs()[0].name
    shape = session.get_inputs()[0].shape[1:]
    images = np.stack([np.fromfile(path, np.float32).reshape(shape) for path in sorted(inputs.glob("*_input.bin"))])
    batches = [images[start:start + batch_size] for start in range(0, len(images) - batch_size + 1, batch_size)]
    session.run(None, {name: batches[0]})
    started = time.perf_counter()
    for batch in batches[1:]:
        session.run(None, {name: batch})
    return (time.perf_counter() - started) * 1000.0 / (len(batches[1:]) * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/ssd300_config_cpu.yaml")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    if args.images < 2 * max(args.batch_sizes):
        raise SystemExit("--images must be at least two batches of the largest batch size (the first is warm-up)")
    built = subprocess.run(["bash", str(PROJECT_ROOT / "ascend310_infer" / "build.sh")], capture_output=True, text=True)
    if built.returncode != 0:
        raise SystemExit(f"building the runner failed:\n{built.stdout}{built.stderr}")
    engines = runner_engines(built.stdout)
    # The oneDNN ISA cap below is for the MindSpore export only: OpenVINO's oneDNN would obey it too (no bf16
    # kernels under AVX2, INT8 without VNNI), so the runner runs without it, as run_infer_cpp.sh runs it.
    runner_env = {name: value for name, value in os.environ.items() if name != "ONEDNN_MAX_CPU_ISA"}
    config = load_config(args.config)
    cap_onednn_isa(config.device_target)  # for the MindSpore export only
    import mindspore as ms

    from src.deploy.export import export_inference_model

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    with tempfile.TemporaryDirectory(prefix="bench_cpp_runner_") as temp:
        temp = Path(temp)
        (temp / "images").mkdir()
        write_images(temp / "images", args.images)
        rows = []
        versions = {}
        for batch_size in args.batch_sizes:
            model = export_inference_model(config, None, "ONNX", batch_size,
                                           temp / f"{config.model_name}_b{batch_size}")
            ort_ms = None
            for engine, precision in engines:
                work = temp / f"run_b{batch_size}_{engine}_{precision}"
                stdout = run_runner(model, temp / "images", work, engine, precision, runner_env)
                name, version = re.search(r"^\[runner\] (OpenCV|OpenVINO) (\S+)", stdout, flags=re.MULTILINE).groups()
                versions[name] = version
                if ort_ms is None:  # every engine's inputs are the same bytes (cpu_preprocess)
                    ort_ms = onnxruntime_ms_per_image(model, work / "inputs", batch_size)
                rows.append((batch_size, f"{engine} {precision}" if engine == "openvino" else engine,
                             summary_number(stdout, r"mean latency per image: ([0-9.]+) ms"),
                             summary_number(stdout, r"\+ inference ([0-9.]+) ms"),
                             summary_number(stdout, r"throughput: ([0-9.]+) images/s"), ort_ms))
    height, width = config.img_shape
    runner_versions = ", ".join(f"{name} {version}" for name, version in versions.items())
    if "OpenVINO" not in versions:
        runner_versions += ", no OpenVINO in this build (see ascend310_infer/build.sh)"
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16 (openvino bf16 not timed)"
    print(f"{describe_machine('onnxruntime', 'openvino')}; {runner_versions} (runner, ONEDNN_MAX_CPU_ISA unset); "
          f"CPU has {bf16}")
    print(f"{config.model_name} {height}x{width}, {args.images} JPEG images 640x480 (first batch excluded as warm-up)")
    for batch_size, engine, latency, inference, throughput, ort_ms in rows:
        print(f"batch {batch_size}: C++ runner {latency:.1f} ms/image (inference {inference:.1f} ms) = "
              f"{throughput:.1f} images/s [{engine}]; onnxruntime inference {ort_ms:.1f} ms/image = "
              f"{1000.0 / ort_ms:.1f} images/s")


if __name__ == "__main__":
    main()
