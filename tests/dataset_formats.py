"""Test helper: write one set of images and boxes as a COCO json, Pascal-VOC xml and YOLO label folders.

The evidence that the four readers agree: the same images and boxes, written in each format, must
convert to the same MindRecord rows. Boxes are taken as whole pixels (the MindRecord stores int32
pixels), so every format reproduces them exactly: COCO [x, y, w, h], VOC 1-based corners, YOLO
normalised centre and size written with full float precision. Category ids in the COCO json are
deliberately not 1..N (10, 20, ...), the way real COCO's have gaps.
"""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np

from src.data.annotations import ImageRecord


def _pixel_boxes(record: ImageRecord) -> list[tuple[int, int, int, int, int]]:
    """(xmin, ymin, xmax, ymax, label) of each box, rounded to whole pixels."""
    boxes = np.round(record.boxes).astype(int).tolist()
    return [(xmin, ymin, xmax, ymax, int(label)) for (ymin, xmin, ymax, xmax), label in zip(boxes, record.labels)]


def write_coco(records: Sequence[ImageRecord], classes: Sequence[str], root: Path, split: str) -> None:
    """<root>/<split>/ images and <root>/annotations/instances_<split>.json."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for record in records:
        shutil.copyfile(record.image_path, root / split / record.image_path.name)
        images.append({"id": int(record.img_id), "file_name": record.image_path.name,
                       "width": int(record.width), "height": int(record.height)})
        for xmin, ymin, xmax, ymax, label in _pixel_boxes(record):
            annotations.append({"id": len(annotations) + 1, "image_id": int(record.img_id), "category_id": 10 * label,
                                "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                                "area": (xmax - xmin) * (ymax - ymin), "iscrowd": 0})
    categories = [{"id": 10 * i, "name": name} for i, name in enumerate(classes) if i > 0]
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}), encoding="utf-8")


def write_voc(records: Sequence[ImageRecord], classes: Sequence[str], folder: Path) -> None:
    """One split folder: each image with its xml beside it (1-based corners, as VOC writes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        shutil.copyfile(record.image_path, folder / record.image_path.name)
        root = ET.Element("annotation")
        ET.SubElement(root, "filename").text = record.image_path.name
        size = ET.SubElement(root, "size")
        ET.SubElement(size, "width").text = str(record.width)
        ET.SubElement(size, "height").text = str(record.height)
        for xmin, ymin, xmax, ymax, label in _pixel_boxes(record):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = classes[label]
            box = ET.SubElement(obj, "bndbox")
            for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
                ET.SubElement(box, tag).text = str(value + 1)
        ET.ElementTree(root).write(folder / f"{record.image_path.stem}.xml", encoding="utf-8")


def write_yolo(records: Sequence[ImageRecord], classes: Sequence[str], root: Path, split: str) -> None:
    """<root>/images/<split>/ and labels/<split>/*.txt (class id = label - 1), names in <root>/data.yaml."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for record in records:
        shutil.copyfile(record.image_path, root / "images" / split / record.image_path.name)
        lines = []
        for xmin, ymin, xmax, ymax, label in _pixel_boxes(record):
            cx, cy = (xmin + xmax) / 2 / record.width, (ymin + ymax) / 2 / record.height
            w, h = (xmax - xmin) / record.width, (ymax - ymin) / record.height
            lines.append(f"{label - 1} {cx!r} {cy!r} {w!r} {h!r}")
        (root / "labels" / split / f"{record.image_path.stem}.txt").write_text("\n".join(lines), encoding="utf-8")
    names = "\n".join(f"  {i}: {json.dumps(name)}" for i, name in enumerate(classes[1:]))
    (root / "data.yaml").write_text(f"train: images/train\nval: images/val\nnames:\n{names}\n", encoding="utf-8")


def write_all_formats(records: Sequence[ImageRecord], classes: Sequence[str], data_path: Path) -> dict[str, dict]:
    """The records as <data_path>/coco, voc and yolo (each split train = val = the records), and for each format
    the config overrides that read it."""
    write_coco(records, classes, data_path / "coco", "train2017")
    write_coco(records, classes, data_path / "coco", "val2017")
    for split in ("train", "eval"):
        write_voc(records, classes, data_path / "voc" / split)
    for split in ("train", "val"):
        write_yolo(records, classes, data_path / "yolo", split)
    common = {"data_path": str(data_path), "classes": list(classes), "num_classes": len(classes)}
    return {"coco": {**common, "dataset": "coco", "coco_root": "coco", "mindrecord_dir": "mr_coco"},
            "voc": {**common, "dataset": "voc", "voc_root": "voc", "mindrecord_dir": "mr_voc"},
            "yolo": {**common, "dataset": "yolo", "yolo_root": "yolo", "mindrecord_dir": "mr_yolo"}}
