"""The images the benches run on: coco128 from ../shared, or generated demo images without it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from src.data.demo_data import DEMO_CLASSES, generate_demo_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COCO128 = PROJECT_ROOT.parent / "shared" / "data" / "coco128"


@dataclass(frozen=True)
class BenchImages:
    """A COCO-format image set: annotation json, image folder, the class names to read it with."""

    anno_json: Path
    image_dir: Path
    classes: list[str]
    description: str
    is_coco128: bool


def coco128_or_demo(folder: Path, coco_classes: Sequence[str], demo_images: int, demo_size: int) -> BenchImages:
    """coco128 (real COCO JPEGs, read with ``coco_classes``) when ../shared has it; otherwise says so
    and generates ``demo_images`` demo images of ``demo_size`` px in ``folder``."""
    anno_json = COCO128 / "annotations" / "instances_train2017.json"
    if anno_json.is_file():
        return BenchImages(anno_json, COCO128 / "train2017", list(coco_classes), "coco128 (real COCO JPEGs)", True)
    print(f"note: {COCO128} not found; generating {demo_images} demo images of {demo_size}x{demo_size} instead "
          "(rates are not comparable with coco128's)")
    root = generate_demo_dataset(folder / "demo", num_train=demo_images, num_val=1, image_size=demo_size)
    return BenchImages(root / "annotations" / "instances_train2017.json", root / "train2017", list(DEMO_CLASSES),
                       f"{demo_images} generated {demo_size}x{demo_size} demo images", False)
