"""COCO instances json: the reader (`read_coco`), the json loaders COCOeval uses, the cleaned evaluation
ground truth (`coco_ground_truth`) and the class names a json declares (`coco_class_names`).

Categories are matched to `config.classes` by name, so any category ids (COCO's 1..90 with gaps, 0-based,
arbitrary) map onto training labels 1..N. See `annotations` for what is counted and skipped.
"""
from __future__ import annotations

import io
import json
from collections import defaultdict
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pycocotools.coco import COCO

from src.data.annotations import (BAD_IMAGE_ENTRY, BAD_NUMBER, CHANGES_KEY, CROWD, DUPLICATE_FILE, DUPLICATE_ID,
                                  UNKNOWN_CATEGORY, UNKNOWN_CLASS, UNKNOWN_IMAGE_ID, AnnotationError, ConversionReport,
                                  ImageRecord, finish_record, finite_numbers, is_id, positive_size, repeated_keys,
                                  same_file_key)
from src.model_utils.errors import wrap_foreign_error

#: Keys every entry of each list must have: for COCOeval, and for the readers (which also need the files and sizes).
EVALUATION_KEYS = {"images": ("id",), "annotations": ("image_id", "category_id", "bbox", "area"),
                   "categories": ("id",)}
READER_KEYS = {"images": ("id", "file_name", "width", "height"),
               "annotations": ("image_id", "category_id", "bbox", "area"), "categories": ("id", "name")}


def _coco_structure_problem(dataset: Any, required_keys: dict[str, tuple[str, ...]]) -> str | None:
    """What makes a parsed json unusable as a COCO instances file (a list or a key missing), else None."""
    if not isinstance(dataset, dict):
        return "it is not a json object with 'images', 'annotations' and 'categories' lists"
    for key, required in required_keys.items():
        entries = dataset.get(key)
        if not isinstance(entries, list):
            return f"it has no '{key}' list: it is not a COCO instances file"
        for position, entry in enumerate(entries):
            missing = [name for name in required if not isinstance(entry, dict) or name not in entry]
            if missing:
                return (f"{key}[{position}] lacks {', '.join(repr(name) for name in missing)}: regenerate the "
                        f"json with these fields")
    return None


def load_coco_json(anno_json: Path, required_keys: dict[str, tuple[str, ...]] = READER_KEYS) -> dict:
    """The parsed instances json, checked for the lists and keys the readers (or, with
    `EVALUATION_KEYS`, COCOeval) need.

    Values are not checked here: a bad value costs one image or box (counted by the readers), a
    missing list or key makes the whole file unusable and raises one `AnnotationError`.
    """
    anno_json = Path(anno_json)
    if not anno_json.is_file():
        raise FileNotFoundError(f"COCO annotation file {anno_json} not found: check data_path/coco_root "
                                f"and instances_set in the config")
    try:
        with open(anno_json, encoding="utf-8") as handle:
            dataset = json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise wrap_foreign_error(anno_json, "json", error, "fix or re-download the annotation file") from None
    problem = _coco_structure_problem(dataset, required_keys)
    if problem:
        raise AnnotationError(f"{anno_json}: {problem}")
    return dataset


def _coco_from_dict(dataset: dict) -> COCO:
    """A pycocotools COCO object over an already loaded dict, without its prints."""
    coco = COCO()
    coco.dataset = dataset
    with redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_quietly(gt_json: Path) -> COCO:
    """Load an annotation file for COCOeval without pycocotools' prints; one clear error for a bad file."""
    return _coco_from_dict(load_coco_json(gt_json, EVALUATION_KEYS))


@dataclass
class _CheckedCoco:
    """A COCO json and what of it can be trusted, in the json's own order."""

    dataset: dict
    images: dict[int, dict]  # usable image entries by id
    annotations: list[dict]  # usable annotations: of a usable image, a listed category, finite numbers


def _coco_image_name(entry: dict) -> str:
    return f"{entry['file_name']} (image id {entry['id']})"


def _usable_coco_images(anno_json: Path, entries: list[dict], report: ConversionReport) -> dict[int, dict]:
    """The image entries with valid fields, a unique id and a file of their own, by id.

    An id is a duplicate when any other entry has it, valid or not: pycocotools would pool both
    entries' boxes. Whether the size matches the file is the writer's check (`check_image_bytes`).
    """
    repeated_ids = repeated_keys([entry["id"] for entry in entries if is_id(entry["id"])])
    valid = []
    for entry in entries:
        if not is_id(entry["id"]) or not isinstance(entry["file_name"], str) \
                or positive_size(entry["height"], entry["width"]) is None:
            report.add(BAD_IMAGE_ENTRY, f"{anno_json.name}: image {entry['file_name']!r} (id {entry['id']!r}, "
                                        f"width {entry['width']!r}, height {entry['height']!r})")
        elif entry["id"] in repeated_ids:
            report.add(DUPLICATE_ID, _coco_image_name(entry))
        else:
            valid.append(entry)
    files = [same_file_key(Path(entry["file_name"])) for entry in valid]
    ids_by_file = defaultdict(list)
    for entry, key in zip(valid, files):
        ids_by_file[key].append(str(entry["id"]))
    usable = {}
    for entry, key in zip(valid, files):
        if len(ids_by_file[key]) > 1:
            report.add(DUPLICATE_FILE, f"{entry['file_name']} (image ids {' and '.join(ids_by_file[key])})")
        else:
            usable[entry["id"]] = entry
    return usable


def _annotation_problem(ann: dict, images: dict[int, dict], skipped_ids: set, categories: set,
                        json_name: str) -> tuple[str, str] | None:
    """(kind, example) for an annotation that cannot be used, ("", "") when its image was skipped
    (already counted there), None when it is usable."""
    image_id = ann["image_id"]
    entry = images.get(image_id) if is_id(image_id) else None
    if entry is None:
        if is_id(image_id) and image_id in skipped_ids:
            return "", ""
        return UNKNOWN_IMAGE_ID, f"{json_name}: annotation id {ann.get('id')!r} (image id {image_id!r})"
    where = f"{entry['file_name']} (image id {image_id}, annotation id {ann.get('id')!r})"
    if not is_id(ann["category_id"]) or ann["category_id"] not in categories:
        return UNKNOWN_CATEGORY, f"{where}: category_id {ann['category_id']!r}"
    if finite_numbers(ann["bbox"], 4) is None or finite_numbers([ann["area"]], 1) is None:
        return BAD_NUMBER, f"{where}: bbox {ann['bbox']!r}, area {ann['area']!r}"
    return None


def _check_coco(anno_json: Path, report: ConversionReport) -> _CheckedCoco:
    """Load a COCO json and keep what can be trusted, counting every image and annotation left out."""
    anno_json = Path(anno_json)
    dataset = load_coco_json(anno_json)
    images = _usable_coco_images(anno_json, dataset["images"], report)
    skipped_ids = {entry["id"] for entry in dataset["images"] if is_id(entry["id"])} - set(images)
    categories = {cat["id"] for cat in dataset["categories"] if is_id(cat["id"])}
    annotations = []
    for ann in dataset["annotations"]:
        problem = _annotation_problem(ann, images, skipped_ids, categories, anno_json.name)
        if problem is None:
            annotations.append(ann)
        elif problem[0]:
            report.add(*problem)
    return _CheckedCoco(dataset, images, annotations)


def read_coco(anno_json: Path, image_dir: Path, classes: Sequence[str],
              report: ConversionReport) -> list[ImageRecord]:
    """Read every usable image of a COCO instances json, in image-id order.

    Categories are matched to `classes` by NAME, so a json with non-contiguous COCO ids (1..90) maps
    onto training labels 1..80. Crowd boxes are counted and left out: COCOeval ignores them anyway.
    """
    checked = _check_coco(anno_json, report)
    class_index = {name: i for i, name in enumerate(classes)}
    cat_to_label = {cat["id"]: class_index.get(cat["name"], -1) for cat in checked.dataset["categories"]
                    if is_id(cat["id"])}
    by_image = defaultdict(list)
    for ann in checked.annotations:
        by_image[ann["image_id"]].append(ann)
    records = []
    for img_id in sorted(checked.images):
        info = checked.images[img_id]
        name = info["file_name"]
        boxes, labels = [], []
        for ann in by_image[img_id]:
            if ann.get("iscrowd", 0):
                report.add(CROWD, name)
                continue
            label = cat_to_label[ann["category_id"]]
            if label <= 0:
                report.add(UNKNOWN_CLASS, name)
                continue
            x, y, w, h = finite_numbers(ann["bbox"], 4)
            boxes.append([y, x, y + h, x + w])
            labels.append(label)
        height, width = positive_size(info["height"], info["width"])
        records.append(finish_record(img_id, Path(image_dir) / name, height, width, boxes, labels, name, report))
    return records


def _evaluation_box(ann: dict, height: int, width: int) -> tuple[dict | None, bool]:
    """(the annotation as evaluation scores it, whether it was clipped); None when no area is left.

    Inside the image it is the json's own dict, untouched, so a clean file evaluates exactly as given.
    A clipped box's area is capped at the clipped box's (COCO's area is the mask's, often smaller).
    """
    x, y, w, h = finite_numbers(ann["bbox"], 4)
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        return None, False
    if (x0, y0, x1, y1) == (x, y, x + w, y + h):
        return ann, False
    return {**ann, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": min(float(ann["area"]), (x1 - x0) * (y1 - y0))}, True


def coco_ground_truth(anno_json: Path, keep_ids: set[int] | None = None) -> dict:
    """The instances json cleaned for evaluation the way `read_coco` cleaned it for training.

    Left out: the images the reader skipped (and those not in `keep_ids`, the reader's records, when
    given), annotations it could not use, boxes with no area inside the image; boxes crossing the
    border are clipped. Everything else (ids, order, crowd flags, areas, extra keys) is the json's own.
    `CHANGES_KEY` counts what changed. The caller adds the reader's summary (`evaluation_ground_truth`).
    """
    checked = _check_coco(anno_json, ConversionReport())
    images = [entry for entry in checked.dataset["images"] if is_id(entry["id"]) and entry["id"] in checked.images
              and (keep_ids is None or entry["id"] in keep_ids)]
    sizes = {entry["id"]: positive_size(entry["height"], entry["width"]) for entry in images}
    annotations, dropped, clipped, considered = [], 0, 0, 0
    for ann in checked.annotations:
        if ann["image_id"] not in sizes:
            continue
        considered += 1
        kept, was_clipped = _evaluation_box(ann, *sizes[ann["image_id"]])
        dropped += kept is None
        clipped += was_clipped
        if kept is not None:
            annotations.append(kept)
    changes = {"source": str(anno_json), "images_left_out": len(checked.dataset["images"]) - len(images),
               "boxes_left_out": len(checked.dataset["annotations"]) - considered,
               "boxes_dropped": dropped, "boxes_clipped": clipped}
    return {**checked.dataset, "images": images, "annotations": annotations, CHANGES_KEY: changes}


def coco_class_names(anno_json: Path) -> list[str]:
    """The category names a json declares, in category-id order, each once (background not included)."""
    categories = [cat for cat in load_coco_json(anno_json)["categories"] if is_id(cat["id"])]
    return list(dict.fromkeys(str(cat["name"]) for cat in sorted(categories, key=lambda cat: cat["id"])))
