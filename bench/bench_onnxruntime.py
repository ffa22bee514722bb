"""onnxruntime inference latency of an exported SSD on CPU (ms/image), batch 1 and 8 by default.

Usage: .venv/bin/python bench/bench_onnxruntime.py [--config config/ssd300_config_cpu.yaml]
       [--batch_sizes 1 8] [--images 48]

Exports the config's inference network to ONNX at each batch size with export.py's code (initial
weights: the speed does not depend on their values), then times onnxruntime's CPU provider on
random normalised images: one warm-up run, then enough runs to cover --images images. Reports
the median run divided by the batch size, so the number is inference only (no decoding, no
post-processing) and compares with the inference part of bench_cpp_runner.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.machine_info import describe_machine  # noqa: E402
from src.model_utils.config import load_config  # noqa: E402
from src.model_utils.device_adapter import cap_onednn_isa  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/ssd300_config_cpu.yaml")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--images", type=int, default=48, help="images timed per batch size (after one warm-up run)")
    args = parser.parse_args()
    config = load_config(args.config)
    cap_onednn_isa(config.device_target)  # for the MindSpore export only; onnxruntime has its own kernels
    print(describe_machine("onnxruntime"))
    import mindspore as ms

    from src.exporting import export_inference_model
    from src.onnx_predictor import create_session

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    height, width = config.img_shape
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_onnxruntime_") as temp:
        for batch in args.batch_sizes:
            model = export_inference_model(config, None, "ONNX", batch, Path(temp) / f"{config.model_name}_b{batch}")
            session = create_session(model, "CPU")
            feed = {session.get_inputs()[0].name: rng.normal(0, 1, (batch, 3, height, width)).astype(np.float32)}
            session.run(None, feed)
            times = []
            for _ in range(max(3, -(-args.images // batch))):
                started = time.perf_counter()
                session.run(None, feed)
                times.append(time.perf_counter() - started)
            per_image = statistics.median(times) / batch
            print(f"onnxruntime CPU {config.model_name} {height}x{width} batch {batch}: {per_image * 1000:.1f} ms/image "
                  f"({1 / per_image:.1f} images/s; median of {len(times)} runs)")


if __name__ == "__main__":
    main()
