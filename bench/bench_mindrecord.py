"""MindRecord conversion rate (images/s): annotation reading plus image checking and writing.

Usage: .venv/bin/python bench/bench_mindrecord.py [--repeats 8] [--shards 1 8]

Converts coco128 (../shared/data/coco128: 128 real COCO JPEGs and their annotations) the way
train.py does before its first epoch: read_coco (json parse, box cleaning) then write_mindrecord
(every JPEG read and test-decoded at 1/8 scale, rows written by MindSpore's FileWriter). The
images are copied --repeats times under new ids so the run lasts long enough to time; each
shard count converts the same set once into a fresh folder. Without ../shared it says so and
converts generated demo images instead. The time printed is wall time of the whole
conversion, so images/s is what a user waits for per image before training starts. The files are
in the page cache after the first conversion (as on a machine that just downloaded them).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
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
from src.data.annotations import ConversionReport  # noqa: E402
from src.data.coco_reader import read_coco  # noqa: E402
from src.data.mindrecord import write_mindrecord  # noqa: E402
from src.model_utils.config import load_config  # noqa: E402


def repeated_coco(source_json: Path, source_images: Path, folder: Path, repeats: int) -> tuple[Path, Path]:
    """A COCO json whose images are the source's, `repeats` times under fresh ids and file names.

    Hard links (or copies across file systems) keep the bytes identical, so the rate is the
    rate on these real JPEGs and not on a cache-friendly single file.
    """
    data = json.loads(source_json.read_text())
    images_dir = folder / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    id_step = max(image["id"] for image in data["images"]) + 1
    for copy in range(repeats):
        for image in data["images"]:
            name = f"{copy}_{image['file_name']}"
            target = images_dir / name
            try:
                os.link(source_images / image["file_name"], target)
            except OSError:
                shutil.copyfile(source_images / image["file_name"], target)
            images.append({**image, "id": image["id"] + copy * id_step, "file_name": name})
        annotations += [{**ann, "id": ann["id"] + copy * 10 ** 7, "image_id": ann["image_id"] + copy * id_step}
                        for ann in data["annotations"]]
    out_json = folder / "instances.json"
    out_json.write_text(json.dumps({**data, "images": images, "annotations": annotations}))
    return out_json, images_dir


def source_set(folder: Path, repeats: int) -> tuple[Path, Path, list[str], str]:
    """(json, image folder, classes, description) of coco128 x repeats, or of generated demo data without it."""
    classes = list(load_config(PROJECT_ROOT / "config" / "ssd300_config_cpu.yaml").classes)
    images = coco128_or_demo(folder, classes, 128 * repeats, 300)
    if not images.is_coco128:
        return images.anno_json, images.image_dir, images.classes, images.description
    anno, image_dir = repeated_coco(images.anno_json, images.image_dir, folder, repeats)
    return anno, image_dir, images.classes, f"coco128 x {repeats} (real COCO JPEGs)"


def convert_seconds(anno: Path, images: Path, classes: list[str], out_dir: Path, shards: int) -> tuple[float, int]:
    """Wall time of one full conversion and the number of images written."""
    report = ConversionReport()
    started = time.perf_counter()
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # its summary and progress bar would break the table
        records = read_coco(anno, images, classes, report)
        write_mindrecord(records, out_dir, "bench.mindrecord", shards, True, report)
    seconds = time.perf_counter() - started
    marker = json.loads((out_dir / "bench.mindrecord.done").read_text())  # written by write_mindrecord
    return seconds, int(marker["counts"]["images_written"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=8, help="copies of the 128 images converted")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    print(describe_machine())
    with tempfile.TemporaryDirectory(prefix="bench_mindrecord_") as temp:
        anno, images, classes, description = source_set(Path(temp) / "source", args.repeats)
        print(f"converting {description} into a training MindRecord (images without boxes left out)")
        print(f"{'shards':>6} {'images':>7} {'seconds':>8} {'images/s':>9}")
        for shards in args.shards:
            seconds, written = convert_seconds(anno, images, classes, Path(temp) / f"out{shards}", shards)
            print(f"{shards:>6} {written:>7} {seconds:>8.2f} {written / seconds:>9.1f}")


if __name__ == "__main__":
    main()
