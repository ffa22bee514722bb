"""Peak memory and speed of postprocess.py on a COCO-sized run: 5000 images of 1917 anchors x 81 classes.

Usage: .venv/bin/python bench/bench_postprocess.py [--images 5000] [--config config/ssd300_config_cpu.yaml]
       [--background_logit -6]

Writes into a temporary folder, one image at a time, what the C++ runner would write
(<stem>_0.bin boxes, <stem>_1.bin scores: 3.3 GB for 5000 images) and a COCO ground truth json
(640x480 images, 2-8 objects each), then runs postprocess.py on them as a user does. Scores look
like a trained detector's: background anchors draw logits from N(-6, 1) (about 10 anchor-class
pairs per image pass min_score 0.1), and around each object 10-25 anchors score 0.2-0.95 on its
class with jittered boxes. --background_logit -4 is a worst case: ~5000 background candidates per
image, so nearly every image keeps the maximum of 100 detections. Prints the child's peak resident memory (RSS high-water mark from
getrusage), wall time and images/s; exits 1 if the peak reaches 2 GB (the seed needed 70 GB+).
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.machine_info import describe_machine  # noqa: E402
from src.model_utils.config import load_config  # noqa: E402

LIMIT_BYTES = 2 * 1024 ** 3
IMAGE_HEIGHT, IMAGE_WIDTH = 480, 640


def random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """Normalised [ymin, xmin, ymax, xmax] boxes of 5-50 % of the image side."""
    size = rng.uniform(0.05, 0.5, (count, 2))
    corner = rng.uniform(0, 1, (count, 2)) * (1 - size)
    return np.concatenate([corner, corner + size], axis=1)


def random_objects(rng: np.random.Generator, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """2-8 objects of one image: normalised [ymin, xmin, ymax, xmax] boxes and class indices 1..C-1."""
    objects = random_boxes(rng, int(rng.integers(2, 9)))
    return objects, rng.integers(1, num_classes, objects.shape[0])


def detector_scores(rng: np.random.Generator, num_boxes: int, num_classes: int, hit_anchors: np.ndarray,
                    hit_labels: np.ndarray, background_logit: float) -> np.ndarray:
    """(num_boxes, num_classes) float32 scores like a trained detector's: every anchor-class pair a
    sigmoid of N(background_logit, 1), and 0.2-0.95 where an anchor fires on an object's class."""
    logits = rng.normal(background_logit, 1.0, (num_boxes, num_classes)).astype(np.float32)
    scores = 1 / (1 + np.exp(-logits))
    scores[hit_anchors, hit_labels] = rng.uniform(0.2, 0.95, hit_anchors.size)
    return scores


def write_image_outputs(rng: np.random.Generator, folder: Path, stem: str, num_boxes: int, num_classes: int,
                        objects: np.ndarray, labels: np.ndarray, background_logit: float) -> None:
    """One image's runner outputs: tiny background scores plus 10-25 confident anchors on each object."""
    hits = [rng.choice(num_boxes, int(rng.integers(10, 26)), replace=False) for _ in labels]
    scores = detector_scores(rng, num_boxes, num_classes, np.concatenate(hits),
                             np.repeat(labels, [anchors.size for anchors in hits]), background_logit)
    boxes = random_boxes(rng, num_boxes).astype(np.float32)
    for box, anchors in zip(objects, hits):
        boxes[anchors] = np.clip(box + rng.normal(0, 0.02, (anchors.size, 4)), 0, 1)
    boxes.tofile(folder / f"{stem}_0.bin")
    scores.tofile(folder / f"{stem}_1.bin")


def write_synthetic_run(root: Path, config, num_images: int, background_logit: float) -> Path:
    """Runner outputs and ground truth for ``num_images`` images; returns the result folder."""
    rng = np.random.default_rng(0)
    results = root / "result_Files"
    results.mkdir()
    (root / "coco" / config.val_data_type).mkdir(parents=True)  # the image folder must exist; it stays empty
    categories = [{"id": index, "name": name} for index, name in enumerate(config.classes) if index > 0]
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        stem = f"{image_id:012d}"
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": IMAGE_HEIGHT, "width": IMAGE_WIDTH})
        objects, labels = random_objects(rng, int(config.num_classes))
        for (ymin, xmin, ymax, xmax), label in zip(objects, labels):
            width, height = (xmax - xmin) * IMAGE_WIDTH, (ymax - ymin) * IMAGE_HEIGHT
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [xmin * IMAGE_WIDTH, ymin * IMAGE_HEIGHT, width, height],
                                "area": width * height, "iscrowd": 0})
        write_image_outputs(rng, results, stem, int(config.num_ssd_boxes), int(config.num_classes), objects, labels,
                            background_logit)
    gt_path = root / "coco" / config.instances_set.format(config.val_data_type)
    gt_path.parent.mkdir(parents=True, exist_ok=True)
    gt_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/ssd300_config_cpu.yaml")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--background_logit", type=float, default=-6.0,
                        help="mean logit of background anchor scores (-4: about 100 detections per image)")
    args = parser.parse_args()
    config = load_config(args.config)
    print(describe_machine("onnxruntime", "pycocotools", "faster-coco-eval"))
    with tempfile.TemporaryDirectory(prefix="bench_postprocess_") as temp:
        root = Path(temp)
        started = time.perf_counter()
        results = write_synthetic_run(root, config, args.images, args.background_logit)
        print(f"wrote {args.images} images x {config.num_ssd_boxes} anchors x {config.num_classes} classes of "
              f"synthetic runner output in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(PROJECT_ROOT / "postprocess.py"), "--config_path", args.config,
                               "--data_path", str(root), "--coco_root", "coco", "--result_path", str(results),
                               "--output_path", str(root / "output")], capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"postprocess.py failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    mean_ap = re.search(r"^mAP: (\S+)$", done.stdout, flags=re.MULTILINE)
    detections = re.search(r"^\d+ images, (\d+) detections", done.stdout, flags=re.MULTILINE)
    print(f"postprocess.py ({config.model_name} config): {args.images} images in {seconds:.1f} s = "
          f"{args.images / seconds:.1f} images/s (reading, NMS, streaming and COCOeval), "
          f"{detections.group(1) if detections else '?'} detections, mAP {mean_ap.group(1) if mean_ap else '?'}")
    print(f"peak RSS {peak / 1024 ** 2:.0f} MB (limit {LIMIT_BYTES / 1024 ** 2:.0f} MB)")
    if peak >= LIMIT_BYTES:
        sys.exit(1)


if __name__ == "__main__":
    main()
