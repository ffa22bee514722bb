"""Post-processing throughput on one core: images/s through box decode + threshold + per-class top-k + NMS + cap.

Usage: .venv/bin/python bench/bench_nms.py [--images 16] [--repeats 5] [--background_logit -6] [--core N]

For SSD300 (1917 anchors) and MobileNetV1-FPN (51150 anchors), 81 classes each, generates raw
outputs like a trained detector's: loc offsets near zero (boxes near their default boxes) and
background scores sigmoid(N(-6, 1)), plus 2-8 objects per image whose matched anchors (the
training encoder's positives) regress onto the object with a little noise and score 0.2-0.95
on its class. Timed per image: BoxCoder.decode of the offsets with the config's default boxes
(what the exported graph's decoder does) and postprocess_image. At min_score 0.01 about 8 %
of the anchor-class pairs are candidates (~12k per SSD300 image, ~330k per FPN image).

Runs pinned to one core with one BLAS/OpenMP thread, times ``--repeats`` passes over the images
and reports the median pass; the load average is printed because other processes on the
machine slow the numbers down.
"""
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy is imported: its BLAS reads them once

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_postprocess import detector_scores, random_objects  # noqa: E402
from bench.machine_info import describe_machine  # noqa: E402
from src.boxes.anchors import default_boxes_from_config  # noqa: E402
from src.boxes.coding import BoxCoder  # noqa: E402
from src.eval.postprocess import postprocess_image  # noqa: E402
from src.model_utils.config import load_config  # noqa: E402

NETWORKS = {"ssd300": "config/ssd300_config_cpu.yaml",
            "ssd_mobilenet_v1_fpn": "config/ssd_mobilenet_v1_fpn_config_cpu.yaml"}
MIN_SCORE_GOAL = 0.01
GOALS = {"ssd300": 200, "ssd_mobilenet_v1_fpn": 20}  # images/s at min_score 0.01 (issue 6)
IMAGE_HW = (480, 640)
#: Standard deviation of the offsets (in encoded units: 0.1 / 0.2 of the anchor size per unit).
LOC_NOISE = 0.5


def synthetic_outputs(rng: np.random.Generator, coder: BoxCoder, num_classes: int,
                      background_logit: float) -> tuple[np.ndarray, np.ndarray]:
    """One image's box offsets (N, 4) and scores (N, C): objects found by their matched anchors."""
    objects, labels = random_objects(rng, num_classes)
    loc, anchor_labels, _ = coder.encode(objects, labels)
    loc = loc + rng.normal(0, LOC_NOISE, loc.shape).astype(np.float32)
    hits = np.flatnonzero(anchor_labels)
    scores = detector_scores(rng, coder.num_anchors, num_classes, hits, anchor_labels[hits], background_logit)
    return loc, scores


def images_per_second(images: list[tuple[np.ndarray, np.ndarray]], coder: BoxCoder, config, min_score: float,
                      repeats: int) -> tuple[float, float]:
    """Images per wall-clock second and per CPU second of this process, each the median over
    ``repeats`` timed passes over all images (after one untimed warm-up pass). On a busy machine
    the core is shared, so the wall rate drops while the CPU rate stays put."""
    wall, cpu = [], []
    for _ in range(repeats + 1):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        for loc, scores in images:
            postprocess_image(coder.decode(loc), scores, IMAGE_HW, min_score, float(config.nms_threshold),
                              int(config.max_boxes))
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return len(images) / statistics.median(wall[1:]), len(images) / statistics.median(cpu[1:])


def bench_network(name: str, args: argparse.Namespace) -> list[str]:
    """Table rows of one network at its config's min_score and at 0.01."""
    config = load_config(NETWORKS[name])
    coder = BoxCoder(default_boxes_from_config(config), config.prior_scaling, config.match_threshold)
    rng = np.random.default_rng(0)
    images = [synthetic_outputs(rng, coder, int(config.num_classes), args.background_logit)
              for _ in range(args.images)]
    rows = []
    for min_score in sorted({float(config.min_score), MIN_SCORE_GOAL}, reverse=True):
        candidates = np.mean([(scores[:, 1:] > min_score).sum() for _, scores in images])
        detections = np.mean([postprocess_image(coder.decode(loc), scores, IMAGE_HW, min_score,
                                                float(config.nms_threshold), int(config.max_boxes)).scores.size
                              for loc, scores in images])
        wall_rate, cpu_rate = images_per_second(images, coder, config, min_score, args.repeats)
        goal = f">= {GOALS[name]}" if min_score == MIN_SCORE_GOAL else "-"
        rows.append(f"{name:<22} {coder.num_anchors:>7} {min_score:>9.2f} {candidates:>15.0f} {detections:>15.1f} "
                    f"{wall_rate:>9.1f} {cpu_rate:>14.1f} {goal:>7}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="distinct synthetic images per network")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the images; the median counts")
    parser.add_argument("--background_logit", type=float, default=-6.0,
                        help="mean logit of the background anchor-class scores")
    parser.add_argument("--core", type=int, default=min(os.sched_getaffinity(0)), help="CPU core to run on")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    print(describe_machine())
    print(f"pinned to core {args.core}; {args.images} images x {args.repeats} timed passes; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'network':<22} {'anchors':>7} {'min_score':>9} {'mean candidates':>15} {'mean detections':>15} "
          f"{'images/s':>9} {'images/CPU s':>14} {'goal':>7}")
    for name in NETWORKS:
        for row in bench_network(name, args):
            print(row, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
