"""Training-pipeline throughput (images/s) of create_ssd_dataset, everything included, per config and worker count.

Usage: .venv/bin/python bench/bench_pipeline.py [--configs A.yaml B.yaml] [--workers 1 2]
       [--batch_size N] [--epochs 6] [--repeats 3] [--python_multiprocessing]

Reads coco128 (../shared/data/coco128: 128 real COCO JPEGs, about 640x480), converted once into a
training MindRecord in a temporary folder by the project's own converter (read_coco +
write_mindrecord, as train.py does); without ../shared it says so and uses generated 640x640 demo
images instead. The default configs are the 300 px / 1917-anchor SSD300 and the 640 px /
51150-anchor FPN pipeline. A rate is all images of the timed epochs over their wall time, read
from the consumer side exactly as training sees it (decode, augmentation, colour jitter, box
encoding, normalisation, batching); the first epoch (pipeline start-up, first prefetch) is not
timed. Each measurement is repeated and printed with the 1-minute load average before it (which
also counts this bench's own threads of the measurement before), because on a shared machine other
processes take cores; the table reports the median. The encode-only
rate (BoxCoder.encode on each image's ground truth, one thread) shows how much of an image's time
the anchor matching takes.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.bench_data import coco128_or_demo  # noqa: E402
from bench.machine_info import describe_machine  # noqa: E402
from src.boxes.anchors import default_boxes_from_config  # noqa: E402
from src.boxes.coding import BoxCoder  # noqa: E402
from src.data.annotations import ConversionReport, ImageRecord  # noqa: E402
from src.data.coco_reader import read_coco  # noqa: E402
from src.data.augment import normalise_boxes  # noqa: E402
from src.data.dataset import create_ssd_dataset  # noqa: E402
from src.data.mindrecord import write_mindrecord  # noqa: E402
from src.model_utils.config import load_config  # noqa: E402

DEFAULT_CONFIGS = ("config/ssd300_config_cpu.yaml", "config/ssd_mobilenet_v1_fpn_config_cpu.yaml")
DEMO_IMAGES, DEMO_SIZE = 128, 640


def source_records(folder: Path, classes: list[str]) -> tuple[list[ImageRecord], str]:
    """coco128's records (labels by `classes`), or generated demo images' when ../shared is absent."""
    images = coco128_or_demo(folder, classes, DEMO_IMAGES, DEMO_SIZE)
    return read_coco(images.anno_json, images.image_dir, images.classes, ConversionReport()), images.description


def training_mindrecord(records: list[ImageRecord], folder: Path) -> Path:
    """The training MindRecord train.py would write for these records (images without boxes left out)."""
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # the conversion summary and progress bar
        return write_mindrecord(records, folder, "bench.mindrecord", 1, True, ConversionReport())


def pipeline_rate(mindrecord: Path, config, batch_size: int, workers: int, epochs: int,
                  python_multiprocessing: bool) -> float:
    """Images per second over epochs 2..`epochs` of one training pipeline."""
    dataset = create_ssd_dataset(mindrecord, config, batch_size, is_training=True, num_parallel_workers=workers,
                                 python_multiprocessing=python_multiprocessing)
    iterator = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    for _ in iterator:  # warm-up epoch
        pass
    images = 0
    start = time.perf_counter()
    for _ in range(epochs - 1):
        for batch in iterator:
            images += len(batch[0])
    return images / (time.perf_counter() - start)


def encode_rate(records: list[ImageRecord], coder: BoxCoder, min_seconds: float = 1.0) -> float:
    """Images per second of BoxCoder.encode alone, on each image's own (un-augmented) ground truth."""
    targets = [(normalise_boxes(r.boxes, r.height, r.width), r.labels) for r in records if len(r.labels)]
    encoded = 0
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        for boxes, labels in targets:
            coder.encode(boxes, labels)
        encoded += len(targets)
    return encoded / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch_size", type=int, default=None, help="default: each config's batch_size")
    parser.add_argument("--epochs", type=int, default=6, help="including the untimed warm-up epoch")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row; the table shows the median")
    parser.add_argument("--python_multiprocessing", action="store_true",
                        help="run the Python augmentation map in processes (training's default is threads)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is the untimed warm-up")
    configs = {name: load_config(PROJECT_ROOT / name) for name in args.configs}
    print(describe_machine("numpy", "opencv-python-headless"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as temp:
        records, description = source_records(Path(temp), list(next(iter(configs.values())).classes))
        mindrecord = training_mindrecord(records, Path(temp) / "mindrecord")
        print(f"data: {description}, {sum(1 for r in records if len(r.labels))} training images; "
              f"Python map in {'processes' if args.python_multiprocessing else 'threads'}; "
              f"{args.epochs - 1} timed epochs after a warm-up, {args.repeats} repeats")
        for name, config in configs.items():
            batch_size = args.batch_size or int(config.batch_size)
            for workers in args.workers:
                rates = []
                for _ in range(args.repeats):
                    load = os.getloadavg()[0]
                    rates.append(pipeline_rate(mindrecord, config, batch_size, workers, args.epochs,
                                               args.python_multiprocessing))
                    print(f"  {name} workers={workers}: {rates[-1]:.1f} img/s (load average before: {load:.2f})",
                          flush=True)
                rows.append((name, config, batch_size, workers, rates))
        encode = {}
        for name, config in configs.items():
            coder = BoxCoder(default_boxes_from_config(config), config.prior_scaling, config.match_threshold)
            encode[name] = (coder.num_anchors, encode_rate(records, coder))
    print(f"\n{'config':<46} {'img_shape':>9} {'anchors':>7} {'batch':>5} {'workers':>7} {'img/s':>7} "
          f"{'min-max':>11}")
    for name, config, batch_size, workers, rates in rows:
        shape = "x".join(str(int(v)) for v in config.img_shape)
        print(f"{name:<46} {shape:>9} {encode[name][0]:>7} {batch_size:>5} {workers:>7} "
              f"{statistics.median(rates):>7.1f} {f'{min(rates):.0f}-{max(rates):.0f}':>11}")
    print("\nencode only (BoxCoder.encode per image, one thread, un-augmented ground truth):")
    for name, (anchors, rate) in encode.items():
        print(f"  {name}: {anchors} anchors, {rate:.0f} images/s")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
