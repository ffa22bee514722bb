"""One deployment table: the same model and images through every engine, at batch 1 and 8.

    python bench/bench_deploy.py --checkpoint output/demo/ckpt_0/ssd-4_125.ckpt
        [--config config/ssd300_demo_config_cpu.yaml] [--batches 1 8] [--images 64] [--calib_images 300]
        [--no_map] [--no_cpp] [--work_dir bench_deploy_work]

Exports the checkpoint once per format and batch (MINDIR, ONNX, OpenVINO IR, INT8 IR/ONNX), then
runs each engine in its own process so that its peak RSS is its own: MindSpore (checkpoint,
GRAPH_MODE), MINDIR (nn.GraphCell), onnxruntime f32 and INT8, OpenVINO f32, bf16 (only on CPUs
with native bf16) and INT8, and the C++ runner (ascend310_infer/out/main, built when missing) with
each of its CPU backends. Python rows time the model call on preprocessed images (median over
--rounds passes, first batch excluded) and add the measured JPEG decode + preprocessing time per
image for the "with decode" column; C++ rows report the runner's own summary, decode included.
mAP/AP50 are on the config's validation set (the demo's 200 images by default) through eval.py's
pre/post-processing (postprocess.py for the C++ runner's result files).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# MindSpore's NCHW convolutions need oneDNN capped at AVX2 on AVX-512 CPUs (docs/PLATFORM.md), as the entry
# scripts do; OpenVINO lifts the cap for its own compile (src/deploy/engines.py) and the C++ runner runs without it.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUNNER = REPO / "ascend310_infer" / "out" / "main"
#: (engine, precision, export format, quantize) of each Python row.
PYTHON_ROWS = [("mindspore-ckpt", "f32", "CKPT", "none"), ("mindspore-mindir", "f32", "MINDIR", "none"),
               ("onnxruntime", "f32", "ONNX", "none"), ("openvino", "f32", "OPENVINO", "none"),
               ("openvino", "bf16", "OPENVINO", "none"), ("onnxruntime", "int8", "ONNX", "int8"),
               ("openvino", "int8", "OPENVINO", "int8")]
#: (runner backend, precision, export format, quantize) of each C++ row.
CPP_ROWS = [("cpp-opencv", "f32", "ONNX", "none"), ("cpp-openvino", "f32", "OPENVINO", "none"),
            ("cpp-openvino", "int8", "OPENVINO", "int8")]


# ---- worker: one engine in this process ------------------------------------------------------------

def _predict_function(job: dict, config):
    """(predict, description) for the job's engine."""
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    from src.eval.validation import predictor

    if job["engine"] == "mindspore-ckpt":
        from src.models.registry import inference_network
        from src.weights.checkpoint import load_network_weights

        net = inference_network(config)
        load_network_weights(job["model"], net, config=config)
        net.set_train(False)
        return predictor(net), "MindSpore GRAPH_MODE"
    if job["engine"] == "mindspore-mindir":
        return predictor(ms.nn.GraphCell(ms.load(job["model"]))), "MindSpore nn.GraphCell"
    from src.deploy.engines import open_session, session_predictor

    session = open_session(job["model"], job["engine"], "CPU", "bf16" if job["precision"] == "bf16" else "f32")
    return session_predictor(session), session.description


def run_worker(job: dict) -> dict:
    """Time one engine on preprocessed images and score it; the result as a dict (printed as json)."""
    import resource

    import numpy as np

    from src.deploy.predict import eval_preprocessor, read_image
    from src.eval.validation import evaluate_predictor_on_validation
    from src.model_utils.config import load_config

    config = load_config(job["config"])
    predict, description = _predict_function(job, config)
    files = job["images"]
    preprocess = eval_preprocessor(config.img_shape)
    started = time.perf_counter()
    inputs = np.stack([preprocess(read_image(Path(path))) for path in files])
    decode_ms = (time.perf_counter() - started) * 1000 / len(files)
    batch = job["batch"]
    batches = [inputs[start:start + batch] for start in range(0, len(inputs) - batch + 1, batch)]
    predict(batches[0])  # compile / warm up
    passes = []
    for _ in range(job["rounds"]):
        started = time.perf_counter()
        for images in batches[1:]:
            predict(images)
        passes.append((time.perf_counter() - started) * 1000 / len(batches[1:]))
    batch_ms = float(np.median(passes))
    result = {"description": description, "batch_ms": batch_ms, "img_s": batch * 1000 / batch_ms,
              "decode_ms": decode_ms}
    if job["map"]:
        coco = evaluate_predictor_on_validation(predict, config, Path(job["work"]) / "detections.json", batch)
        result.update(map=float(coco.stats[0]), ap50=float(coco.stats[1]))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_isolated(args: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[int, float]:
    """Run a command in its own process; (exit status, its own peak RSS in MB)."""
    with log.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024


# ---- exports ---------------------------------------------------------------------------------------

def export_models(checkpoint: Path, config_path: str, batches: list[int], calib_images: int,
                  work: Path) -> dict:
    """Every (format, quantize, batch) file the rows need, exported with export.py as a user would."""
    models = {}
    for batch in batches:
        for file_format, quantize in (("MINDIR", "none"), ("ONNX", "none"), ("OPENVINO", "none"),
                                      ("ONNX", "int8"), ("OPENVINO", "int8")):
            name = work / f"ssd_b{batch}_{quantize}"
            suffix = {"MINDIR": ".mindir", "ONNX": ".onnx", "OPENVINO": ".xml"}[file_format]
            target = Path(str(name) + suffix)
            if not target.is_file():
                command = [sys.executable, "export.py", "--config_path", config_path, "--checkpoint_file_path",
                           str(checkpoint), "--file_format", file_format, "--file_name", str(name),
                           "--batch_size", str(batch), "--quantize", quantize, "--calib_images", str(calib_images),
                           "--output_path", str(work / "export_logs")]
                print(f"[bench] export {file_format} {quantize} batch {batch}", flush=True)
                status, _ = run_isolated(command, work / f"export_{target.name}.log")
                if status:
                    raise SystemExit(f"export failed, see {work / f'export_{target.name}.log'}")
            models[file_format, quantize, batch] = target
        models["CKPT", "none", batch] = checkpoint
    return models


# ---- C++ runner ------------------------------------------------------------------------------------

def ensure_runner() -> bool:
    if not RUNNER.is_file():
        print("[bench] building the C++ runner", flush=True)
        subprocess.run(["bash", str(REPO / "ascend310_infer" / "build.sh")], cwd=REPO, capture_output=True)
    return RUNNER.is_file()


def cpp_row(backend: str, precision: str, model: Path, images: Path, config_path: str, batch: int, work: Path,
            score: bool) -> dict:
    """The runner over the validation images, then postprocess.py for its mAP."""
    results, timing = work / "result_Files", work / "time_Result"
    command = [str(RUNNER), "--model_path", str(model), "--dataset_path", str(images), "--batch_size", str(batch),
               "--backend", backend.removeprefix("cpp-"), "--output_dir", str(results), "--timing_dir", str(timing)]
    if backend == "cpp-openvino":
        command += ["--precision", "f32" if precision == "int8" else precision]
    uncapped = {name: value for name, value in os.environ.items() if name != "ONEDNN_MAX_CPU_ISA"}
    status, rss = run_isolated(command, work / "runner.log", uncapped)
    summary = (work / "runner.log").read_text()
    if status:
        return {"error": summary.strip().splitlines()[-1] if summary.strip() else f"exit {status}"}
    latency = float(re.search(r"mean latency per image: ([\d.]+) ms \(preprocessing ([\d.]+) ms \+ inference "
                              r"([\d.]+) ms", summary).group(1))
    inference = float(re.search(r"inference ([\d.]+) ms\) over", summary).group(1))
    row = {"description": summary.splitlines()[1].removeprefix("[runner] ")[:90], "batch_ms": inference * batch,
           "img_s": 1000 / latency, "with_decode_ms": latency, "peak_rss_mb": rss}
    if score:
        done = subprocess.run([sys.executable, "postprocess.py", "--config_path", config_path, "--result_path",
                               str(results), "--output_path", str(work)], cwd=REPO, capture_output=True, text=True)
        found = re.search(r"mAP: ([\d.]+)", done.stdout + done.stderr)
        ap50 = re.search(r"IoU=0\.50 +\| area= +all \| maxDets=100 \] = ([\d.]+)", done.stdout + done.stderr)
        if found and ap50:
            row.update(map=float(found.group(1)), ap50=float(ap50.group(1)))
    return row


# ---- main ------------------------------------------------------------------------------------------

def format_row(engine: str, precision: str, batch: int, row: dict) -> str:
    if "error" in row:
        return f"| {engine} | {precision} | {batch} | failed: {row['error'][:80]} | | | | | |"
    with_decode = row.get("with_decode_ms", row["batch_ms"] / batch + row.get("decode_ms", 0.0))
    score = (f"{row['map']:.3f} | {row['ap50']:.3f}" if "map" in row else "- | -")
    return (f"| {engine} | {precision} | {batch} | {row['batch_ms']:.1f} | {row['batch_ms'] / batch:.1f} | "
            f"{with_decode:.1f} | {row['img_s']:.1f} | {row['peak_rss_mb']:.0f} | {score} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=False)
    parser.add_argument("--config", default="config/ssd300_demo_config_cpu.yaml")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--images", type=int, default=64, help="validation images timed per pass")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calib_images", type=int, default=300)
    parser.add_argument("--no_map", action="store_true", help="skip the mAP of each engine")
    parser.add_argument("--no_cpp", action="store_true", help="skip the C++ runner rows")
    parser.add_argument("--work_dir", default="bench_deploy_work")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))))
        return
    if not args.checkpoint:
        parser.error("--checkpoint is required (e.g. the demo's output/demo/ckpt_0/ssd-4_125.ckpt)")
    from bench.machine_info import cpu_has_native_bf16, describe_machine

    from src.model_utils.config import load_config

    config = load_config(args.config)
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    val_images = sorted((Path(config.data_path) / config.coco_root / config.val_data_type).glob("*.jpg"))
    if not val_images:
        raise SystemExit(f"no validation images for {args.config}; run bash scripts/run_demo.sh first")
    print(describe_machine("onnxruntime", "openvino", "nncf") + " (MindSpore rows; OpenVINO and the C++ runner "
          "run without the cap)", flush=True)
    models = export_models(Path(args.checkpoint).resolve(), args.config, args.batches, args.calib_images, work)
    header = ("| engine | precision | batch | ms/batch (model) | ms/img (model) | ms/img with decode | img/s | "
              "peak RSS MB | mAP | AP50 |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for batch in args.batches:
        for engine, precision, file_format, quantize in PYTHON_ROWS:
            if precision == "bf16" and not cpu_has_native_bf16():
                continue
            job = {"engine": engine, "precision": precision, "model": str(models[file_format, quantize, batch]),
                   "config": args.config, "batch": batch, "rounds": args.rounds, "map": not args.no_map,
                   "images": [str(path) for path in val_images[:args.images]],
                   "work": tempfile.mkdtemp(dir=work)}
            status, rss = run_isolated([sys.executable, __file__, "--worker", json.dumps(job)], work / "worker.log")
            text = (work / "worker.log").read_text()
            found = re.search(r"^RESULT (.*)$", text, re.MULTILINE)
            row = json.loads(found.group(1)) if status == 0 and found else {"error": text.strip()[-200:]}
            if "error" not in row:
                row["peak_rss_mb"] = rss
            rows.append(format_row(engine, precision, batch, row))
            print(rows[-1], flush=True)
        if not args.no_cpp and ensure_runner():
            for engine, precision, file_format, quantize in CPP_ROWS:
                row = cpp_row(engine, precision, models[file_format, quantize, batch], val_images[0].parent,
                              args.config, batch, Path(tempfile.mkdtemp(dir=work)), not args.no_map)
                rows.append(format_row(engine, precision, batch, row))
                print(rows[-1], flush=True)
    print("\n" + header + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
