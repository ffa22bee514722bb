"""Training-pipeline throughput (images/s) on generated 300x300 demo images, per worker count.

Usage: .venv/bin/python bench/bench_pipeline.py [--config config/ssd300_config_cpu.yaml]
       [--images 64] [--batch_size 8] [--workers 1 2] [--epochs 4]

The rate is the median over batches after one warm-up epoch (pipeline start-up and the first
epoch's prefetch are excluded), measured on the consumer side exactly as training sees it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.annotations import ConversionReport, read_coco  # noqa: E402
from src.dataset import create_ssd_dataset  # noqa: E402
from src.demo_data import DEMO_CLASSES, generate_demo_dataset  # noqa: E402
from src.mindrecord_io import write_mindrecord  # noqa: E402
from src.model_utils.config import load_config  # noqa: E402


def demo_mindrecord(folder: Path, num_images: int) -> Path:
    """A training MindRecord of `num_images` synthetic 300x300 JPEG scenes."""
    root = generate_demo_dataset(folder / "demo", num_train=num_images, num_val=1, image_size=300)
    report = ConversionReport()
    records = read_coco(root / "annotations" / "instances_train2017.json", root / "train2017",
                        DEMO_CLASSES, report)
    return write_mindrecord(records, folder / "mindrecord", "bench.mindrecord", 1, True, report)


def images_per_second(mindrecord: Path, config, batch_size: int, workers: int, epochs: int) -> float:
    """Median batch rate after a warm-up epoch, in images per second."""
    dataset = create_ssd_dataset(mindrecord, config, batch_size, is_training=True,
                                 num_parallel_workers=workers)
    iterator = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    for _ in iterator:  # warm-up epoch
        pass
    durations = []
    for _ in range(epochs - 1):
        start = time.perf_counter()
        for _ in iterator:
            now = time.perf_counter()
            durations.append(now - start)
            start = now
    return batch_size / statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/ssd300_config_cpu.yaml")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=4, help="including the warm-up epoch")
    args = parser.parse_args()
    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        mindrecord = demo_mindrecord(Path(tmp), args.images)
        print(f"{args.config}: expand={config.use_expand}, color_jitter={list(config.color_jitter)}, "
              f"{args.images} images of 300x300, batch {args.batch_size}, cpu_count {os.cpu_count()}")
        for workers in args.workers:
            rate = images_per_second(mindrecord, config, args.batch_size, workers, args.epochs)
            print(f"num_parallel_workers={workers}: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
