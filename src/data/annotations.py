"""Annotation readers (COCO json, Pascal-VOC xml, plain txt) that turn a labelled image folder into
`ImageRecord`s with pixel boxes [ymin, xmin, ymax, xmax] and class indices into `config.classes`.

Every reader keeps ALL images (evaluation needs the images without boxes too; the MindRecord writer
leaves them out of training) and never fails on a data-level problem: it counts it in a
`ConversionReport` so one bad box does not stop a conversion of 100k images, and the user still sees
what was fixed or skipped. Malformed files (json or xml that does not parse, a missing required
key, txt tokens that are not `x1,y1,x2,y2,cls`) raise one `AnnotationError` naming the file,
because those are format mistakes to fix.

What would otherwise corrupt labels silently is skipped and counted, naming the file and image id
(and the line of a txt list): an image id listed twice (pycocotools keeps one entry and pools both
boxes), one image file listed twice (its boxes split between two training samples, each missing
the other's), values that are not finite numbers (json strings, null, true, NaN, Infinity; VOC text),
annotations of an image id or category id the json does not list, and an annotated width/height
that differs from the image file's. The boxes are in the annotated frame but the pixels are the
file's, so such an image's labels cannot be trusted; when the two sizes are exactly swapped and the
file carries an EXIF orientation that rotates by 90 degrees, the boxes were drawn on the rotated
view while every pipeline here reads the stored pixel grid (EXIF ignored, as COCO does), and the
reason says so. The size check runs in the MindRecord writer (`check_image_bytes`), on the bytes it
already holds for its decode check, from the image header: no second read or decode of any image.

Evaluation scores the same cleaned ground truth (`evaluation_ground_truth`): for COCO the json's
own annotations, as given when inside the image, clipped when they cross its border, dropped when
no area is left, and without the images and annotations the reader or the writer skipped. The
pixel rounding that drops boxes thinner than a pixel from the training targets is a storage rule
of the int32 MindRecord rows, not a validity rule, so evaluation keeps such boxes as COCO's
protocol does; a clean json therefore evaluates exactly as given. VOC and txt ground truth is
converted from the records themselves, as before.
"""
from __future__ import annotations

import io
import json
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from src.model_utils.errors import SSDError, wrap_foreign_error

# Problem kinds counted by ConversionReport, with the wording used in its summary.
CLIPPED = "clipped"
DROPPED = "dropped"
UNKNOWN_CLASS = "unknown_class"
CROWD = "crowd"
CORRUPT_IMAGE = "corrupt_image"
NO_BOX = "no_box"
DUPLICATE_ID = "duplicate_id"
DUPLICATE_FILE = "duplicate_file"
BAD_IMAGE_ENTRY = "bad_image_entry"
SIZE_MISMATCH = "size_mismatch"
EXIF_ROTATED = "exif_rotated"
BAD_NUMBER = "bad_number"
UNKNOWN_IMAGE_ID = "unknown_image_id"
UNKNOWN_CATEGORY = "unknown_category"
PROBLEM_DESCRIPTIONS = {
    CLIPPED: "boxes clipped to the image border",
    DROPPED: "boxes dropped (no width or height left after clipping and rounding to pixels)",
    UNKNOWN_CLASS: "boxes skipped: class not in config.classes",
    CROWD: "crowd boxes (iscrowd=1) left out of training targets; COCOeval ignores them at evaluation",
    CORRUPT_IMAGE: "images skipped: missing, unreadable or corrupt file",
    NO_BOX: "images without any valid box (left out of training, kept for evaluation)",
    DUPLICATE_ID: "images skipped: image id listed more than once (whose boxes are whose is unknown); "
                  "give every image its own id",
    DUPLICATE_FILE: "images skipped: the same image file listed more than once (its boxes would be split); "
                    "merge the entries into one",
    BAD_IMAGE_ENTRY: "images skipped: id not an integer, or width/height not positive finite numbers",
    SIZE_MISMATCH: "images skipped: annotated width/height differ from the image file's, so the boxes are in "
                   "another frame; fix the size or the boxes",
    EXIF_ROTATED: "images skipped: annotated size is the file's turned by its EXIF orientation (boxes drawn on the "
                  "rotated view, pixels read unrotated); save the image rotated, without the EXIF orientation",
    BAD_NUMBER: "boxes skipped: coordinates (or COCO area) not finite numbers (text, null, true/false, NaN, Inf)",
    UNKNOWN_IMAGE_ID: "annotations skipped: image_id not among the json's images",
    UNKNOWN_CATEGORY: "annotations skipped: category_id not among the json's categories",
}
#: Kinds that leave a whole image out of the MindRecord and the evaluation ground truth (one count per image).
IMAGE_SKIPS = (CORRUPT_IMAGE, DUPLICATE_ID, DUPLICATE_FILE, BAD_IMAGE_ENTRY, SIZE_MISMATCH, EXIF_ROTATED)
MAX_EXAMPLES = 5
#: Key of the evaluation ground truth json that records what was changed from the source annotations.
CHANGES_KEY = "ground_truth_changes"
EXIF_ORIENTATION_TAG = 0x0112
#: EXIF orientations that turn the stored image by 90 or 270 degrees (width and height swap on display).
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


class AnnotationError(SSDError, ValueError):
    """An annotation file that cannot be used at all: it does not parse or lacks a required list or key."""


@dataclass
class ImageRecord:
    """One image and its training targets; boxes are float pixels [ymin, xmin, ymax, xmax]."""

    img_id: int
    image_path: Path
    height: int
    width: int
    boxes: np.ndarray  # float32 (K, 4)
    labels: np.ndarray  # int32 (K,)


@dataclass
class ConversionReport:
    """Counts problems by kind and remembers a few examples (file, image id, line) per kind so the user
    can look at them."""

    counts: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in PROBLEM_DESCRIPTIONS})
    examples: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in PROBLEM_DESCRIPTIONS})
    #: ids of the records the MindRecord writer refused (`check_image_bytes`), left out of the eval ground truth
    skipped_images: set[int] = field(default_factory=set)

    def add(self, kind: str, example: str, count: int = 1) -> None:
        """Count `count` problems of `kind` seen in file `example`."""
        if kind not in PROBLEM_DESCRIPTIONS:
            raise ValueError(f"unknown problem kind {kind!r}; expected one of {sorted(PROBLEM_DESCRIPTIONS)}")
        self.counts[kind] += count
        self._remember(kind, example)

    def merge(self, other: ConversionReport) -> None:
        """Add another report's counts and examples into this one (e.g. reader + writer)."""
        for kind in PROBLEM_DESCRIPTIONS:
            self.counts[kind] += other.counts[kind]
            for example in other.examples[kind]:
                self._remember(kind, example)
        self.skipped_images |= other.skipped_images

    def _remember(self, kind: str, example: str) -> None:
        """Keep a file name as an example unless already listed or the list is full."""
        names = self.examples[kind]
        if example not in names and len(names) < MAX_EXAMPLES:
            names.append(example)

    def total(self) -> int:
        """Number of problems of every kind together."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """Multi-line, human-readable account of every kind that occurred."""
        if self.total() == 0:
            return "Annotation check: no problems found."
        lines = ["Annotation check (count, up to 5 examples):"]
        for kind, description in PROBLEM_DESCRIPTIONS.items():
            if self.counts[kind]:
                lines.append(f"  {self.counts[kind]:>7d}  {description}: {', '.join(self.examples[kind])}")
        return "\n".join(lines)


def _is_number(value: Any) -> bool:
    """A finite int or float; json's strings, null, true/false, NaN and Infinity are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _numbers(values: Any, count: int) -> list[float] | None:
    """`values` as `count` floats when it is a list of that many finite numbers, else None."""
    if not isinstance(values, (list, tuple)) or len(values) != count or not all(_is_number(v) for v in values):
        return None
    return [float(v) for v in values]


def _is_id(value: Any) -> bool:
    """An int that fits the MindRecord's int32 img_id column (bools are not ids); also for category ids."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 31


def _positive_size(height: Any, width: Any) -> tuple[int, int] | None:
    """(height, width) as ints when both are positive finite numbers, else None."""
    numbers = _numbers([height, width], 2)
    if numbers is None or min(numbers) <= 0:
        return None
    return int(numbers[0]), int(numbers[1])


def clean_boxes(boxes_yxyx: Iterable[Sequence[float]], labels: Iterable[int], height: int, width: int,
                example: str, report: ConversionReport) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image and drop the ones that keep no whole pixel after rounding.

    The rounding rule is the MindRecord writer's (int pixels), so every box that survives here is a
    valid, positive-area row in the MindRecord file.
    """
    boxes = np.asarray(list(boxes_yxyx), dtype=np.float64).reshape(-1, 4)
    labels_arr = np.asarray(list(labels), dtype=np.int32).reshape(-1)
    limits = np.array([height, width, height, width], dtype=np.float64)
    clipped = np.clip(boxes, 0.0, limits)
    changed = np.any(clipped != boxes, axis=1)
    rounded = np.round(clipped)
    keep = (rounded[:, 2] > rounded[:, 0]) & (rounded[:, 3] > rounded[:, 1])
    if np.any(changed & keep):
        report.add(CLIPPED, example, int(np.sum(changed & keep)))
    if np.any(~keep):
        report.add(DROPPED, example, int(np.sum(~keep)))
    return clipped[keep].astype(np.float32), labels_arr[keep]


def _finish_record(img_id: int, image_path: Path, height: int, width: int, boxes: list, labels: list,
                   example: str, report: ConversionReport) -> ImageRecord:
    """Clean the boxes, count an image left without boxes, and build the record."""
    boxes_arr, labels_arr = clean_boxes(boxes, labels, height, width, example, report)
    if len(labels_arr) == 0:
        report.add(NO_BOX, example)
    return ImageRecord(img_id, image_path, int(height), int(width), boxes_arr, labels_arr)


# ---- image files: header size and EXIF orientation, no pixel decoding ----------------------------

def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored); 1 when absent or unreadable (a broken EXIF block
    does not make the pixels unusable)."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - PIL raises many types on malformed EXIF; the tag is then unknown
        return 1


def _image_header(source: Path | io.BytesIO) -> tuple[int, int, int] | None:
    """(height, width, EXIF orientation) from the header of an image file or its bytes (cheap: no
    decoding), None when unreadable."""
    try:
        with Image.open(source) as image:
            width, height = image.size
            return height, width, _exif_orientation(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _size_problem(data: bytes, height: int, width: int) -> tuple[str, str] | None:
    """(kind, detail) when the annotated size differs from the size in the image's header, else None.

    The header gives the stored pixel grid, which is what the pipelines decode. Bytes whose header
    PIL cannot read (a format only OpenCV reads) are not judged: they decoded, which is what matters.
    """
    header = _image_header(io.BytesIO(data))
    if header is None or header[:2] == (height, width):
        return None
    file_height, file_width, orientation = header
    detail = f"annotated {width}x{height}, file {file_width}x{file_height}"
    if (file_height, file_width) == (width, height) and orientation in SWAPPING_ORIENTATIONS:
        return EXIF_ROTATED, f"{detail}, EXIF orientation {orientation}"
    return SIZE_MISMATCH, detail


def check_image_bytes(record: ImageRecord, data: bytes | None, report: ConversionReport) -> bool:
    """Whether the MindRecord writer may store `data` as `record`'s image, counting it when not.

    `data` is None when the writer's test decode failed (corrupt image). Otherwise the size in its
    header must be the annotated one the boxes were clipped to; the writer already holds the bytes,
    so this costs no second read or decode. A refused image's id goes into
    `report.skipped_images`, so the evaluation ground truth leaves it out as well.
    """
    problem = (CORRUPT_IMAGE, "") if data is None else _size_problem(data, record.height, record.width)
    if problem is None:
        return True
    kind, detail = problem
    report.add(kind, record.image_path.name if kind == CORRUPT_IMAGE else
               f"{record.image_path.name} (image id {record.img_id}): {detail}")
    report.skipped_images.add(int(record.img_id))
    return False


def _same_file_key(path: Path) -> str:
    """A key equal for two spellings of one file path (`a/./b.jpg`, `a/../a/b.jpg`, `a//b.jpg`)."""
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def _repeated(keys: Sequence[Any]) -> set:
    """The keys that occur more than once."""
    return {key for key, count in Counter(keys).items() if count > 1}


# ---- COCO --------------------------------------------------------------------------------------

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
    repeated_ids = _repeated([entry["id"] for entry in entries if _is_id(entry["id"])])
    valid = []
    for entry in entries:
        if not _is_id(entry["id"]) or not isinstance(entry["file_name"], str) \
                or _positive_size(entry["height"], entry["width"]) is None:
            report.add(BAD_IMAGE_ENTRY, f"{anno_json.name}: image {entry['file_name']!r} (id {entry['id']!r}, "
                                        f"width {entry['width']!r}, height {entry['height']!r})")
        elif entry["id"] in repeated_ids:
            report.add(DUPLICATE_ID, _coco_image_name(entry))
        else:
            valid.append(entry)
    files = [_same_file_key(Path(entry["file_name"])) for entry in valid]
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
    entry = images.get(image_id) if _is_id(image_id) else None
    if entry is None:
        if _is_id(image_id) and image_id in skipped_ids:
            return "", ""
        return UNKNOWN_IMAGE_ID, f"{json_name}: annotation id {ann.get('id')!r} (image id {image_id!r})"
    where = f"{entry['file_name']} (image id {image_id}, annotation id {ann.get('id')!r})"
    if not _is_id(ann["category_id"]) or ann["category_id"] not in categories:
        return UNKNOWN_CATEGORY, f"{where}: category_id {ann['category_id']!r}"
    if _numbers(ann["bbox"], 4) is None or _numbers([ann["area"]], 1) is None:
        return BAD_NUMBER, f"{where}: bbox {ann['bbox']!r}, area {ann['area']!r}"
    return None


def _check_coco(anno_json: Path, report: ConversionReport) -> _CheckedCoco:
    """Load a COCO json and keep what can be trusted, counting every image and annotation left out."""
    anno_json = Path(anno_json)
    dataset = load_coco_json(anno_json)
    images = _usable_coco_images(anno_json, dataset["images"], report)
    skipped_ids = {entry["id"] for entry in dataset["images"] if _is_id(entry["id"])} - set(images)
    categories = {cat["id"] for cat in dataset["categories"] if _is_id(cat["id"])}
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
                    if _is_id(cat["id"])}
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
            x, y, w, h = _numbers(ann["bbox"], 4)
            boxes.append([y, x, y + h, x + w])
            labels.append(label)
        height, width = _positive_size(info["height"], info["width"])
        records.append(_finish_record(img_id, Path(image_dir) / name, height, width, boxes, labels, name, report))
    return records


def _evaluation_box(ann: dict, height: int, width: int) -> tuple[dict | None, bool]:
    """(the annotation as evaluation scores it, whether it was clipped); None when no area is left.

    Inside the image it is the json's own dict, untouched, so a clean file evaluates exactly as given.
    A clipped box's area is capped at the clipped box's (COCO's area is the mask's, often smaller).
    """
    x, y, w, h = _numbers(ann["bbox"], 4)
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
    images = [entry for entry in checked.dataset["images"] if _is_id(entry["id"]) and entry["id"] in checked.images
              and (keep_ids is None or entry["id"] in keep_ids)]
    sizes = {entry["id"]: _positive_size(entry["height"], entry["width"]) for entry in images}
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


def evaluation_ground_truth(kind: str, annotations: Path, records: Sequence[ImageRecord], classes: Sequence[str],
                            report: ConversionReport) -> dict:
    """The COCO-format ground truth evaluation scores, built from the same reading as the eval records.

    `kind` is the dataset (coco | voc | other); `report` is the reader's and writer's: the images the
    writer refused (`report.skipped_images`) are left out, and its summary is stored with the counts
    under `CHANGES_KEY` so the evaluation log can say what was changed and where to look. COCO keeps
    its json's own annotations (`coco_ground_truth`); VOC and txt have no COCO form of their own and
    are converted from the records (`records_to_coco_dict`).
    """
    kept = [record for record in records if int(record.img_id) not in report.skipped_images]
    if kind == "coco":
        data = coco_ground_truth(annotations, {int(record.img_id) for record in kept})
    else:
        data = records_to_coco_dict(kept, classes)
        data[CHANGES_KEY] = {"source": str(annotations),
                             "images_left_out": sum(report.counts[skip] for skip in IMAGE_SKIPS),
                             "boxes_left_out": report.counts[BAD_NUMBER], "boxes_dropped": report.counts[DROPPED],
                             "boxes_clipped": report.counts[CLIPPED]}
    data[CHANGES_KEY]["annotation_check"] = report.summary()
    return data


def describe_ground_truth_changes(dataset: dict, gt_json: Path | None = None) -> str:
    """One line for the evaluation log: what the ground truth changed from the source annotations.

    Empty for a json without `CHANGES_KEY` (e.g. a user's own instances file scored as given).
    """
    changes = dataset.get(CHANGES_KEY)
    if not isinstance(changes, dict):
        return ""
    source = Path(str(changes.get("source", "the annotations"))).name
    parts = [f"{changes.get(key, 0)} {words}" for key, words in
             (("boxes_dropped", "boxes dropped"), ("boxes_clipped", "clipped"),
              ("images_left_out", "images left out"), ("boxes_left_out", "annotations left out"))
             if changes.get(key, 0)]
    if not parts:
        return f"ground truth: {source} as given (nothing dropped, clipped or left out)"
    where = f"'{CHANGES_KEY}' in {gt_json}" if gt_json is not None else f"'{CHANGES_KEY}' in the ground truth json"
    return (f"ground truth: {', '.join(parts)} from {source}; see the annotation check of the conversion log "
            f"or {where}")


# ---- Pascal VOC --------------------------------------------------------------------------------

def _voc_xml_files(folder: Path) -> list[Path]:
    """The xml files of a VOC split folder: in `folder/Annotations` when present, else in `folder`."""
    annotations = folder / "Annotations"
    xml_dir = annotations if annotations.is_dir() else folder
    files = sorted(xml_dir.glob("*.xml"))
    if not files:
        raise FileNotFoundError(f"no *.xml annotation files in {xml_dir}: a VOC split folder holds the xml "
                                f"files (or an Annotations/ sub-folder) and the images")
    return files


def _voc_image_path(folder: Path, xml_path: Path, file_name: str) -> Path:
    """Find the image of an xml beside it or in the usual VOC image folders (first hit wins)."""
    candidates = [xml_path.parent / file_name, folder / file_name,
                  folder / "Images" / file_name, folder / "JPEGImages" / file_name]
    return next((path for path in candidates if path.is_file()), candidates[0])


def _voc_ids(file_names: Sequence[str]) -> list[int]:
    """int(stem) when every stem is a unique int32-sized number, else 0..n-1 (never a collision)."""
    stems = [Path(name).stem for name in file_names]
    if all(stem.isdigit() for stem in stems):
        numbers = [int(stem) for stem in stems]
        if len(set(numbers)) == len(numbers) and max(numbers, default=0) < 2 ** 31:
            return numbers
    return list(range(len(stems)))


def _voc_parse(xml_path: Path) -> ET.Element:
    """Parse one xml file, naming it in the error when it is broken."""
    try:
        return ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"cannot parse VOC annotation {xml_path}: {err}; fix or remove the file") from None


def _voc_number(element: ET.Element, tag: str, xml_path: Path) -> float | None:
    """A numeric child of an xml element; None when its text is not a finite number (counted by the
    caller), an error naming the file when the child is missing (a format mistake)."""
    text = element.findtext(tag)
    if text is None:
        raise AnnotationError(f"VOC annotation {xml_path} has an <{element.tag}> without <{tag}>")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _voc_shape(root: ET.Element, xml_path: Path, image_path: Path, example: str,
               report: ConversionReport) -> tuple[int, int] | None:
    """(height, width) of a VOC image: the xml's <size> (the writer compares it with the file), else the
    file's header; None (counted) when neither gives a usable size."""
    size = root.find("size")
    if size is None:
        header = _image_header(image_path)
        if header is None:
            report.add(CORRUPT_IMAGE, example)
            return None
        return header[:2]
    shape = _positive_size(_voc_number(size, "height", xml_path), _voc_number(size, "width", xml_path))
    if shape is None:
        report.add(BAD_IMAGE_ENTRY, f"{xml_path.name}: <size> width {size.findtext('width')!r}, "
                                    f"height {size.findtext('height')!r}")
    return shape


def _voc_boxes(root: ET.Element, xml_path: Path, class_index: dict[str, int], example: str,
               report: ConversionReport) -> tuple[list, list]:
    """The [ymin, xmin, ymax, xmax] boxes (1 subtracted: VOC is 1-based) and labels of an xml's objects."""
    boxes, labels = [], []
    for obj in root.iter("object"):
        label = class_index.get((obj.findtext("name") or "").strip(), -1)
        if label <= 0:
            report.add(UNKNOWN_CLASS, example)
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"VOC annotation {xml_path} has an <object> without <bndbox>")
        corners = [_voc_number(bndbox, tag, xml_path) for tag in ("xmin", "ymin", "xmax", "ymax")]
        if None in corners:
            texts = ", ".join(f"{tag} {bndbox.findtext(tag)!r}" for tag in ("xmin", "ymin", "xmax", "ymax"))
            report.add(BAD_NUMBER, f"{xml_path.name}: {texts}")
            continue
        xmin, ymin, xmax, ymax = (value - 1 for value in corners)
        boxes.append([ymin, xmin, ymax, xmax])
        labels.append(label)
    return boxes, labels


def read_voc(folder: Path, classes: Sequence[str], report: ConversionReport) -> list[ImageRecord]:
    """Read a VOC split folder (xml + images, optionally Annotations/ + Images/ or JPEGImages/).

    VOC coordinates are 1-based, so 1 is subtracted from each of them as the seed did. Images whose
    xml gives no size are sized from the image header; unreadable ones are then skipped and counted.
    Two xml files naming the same image file (e.g. one beside the image, one in Annotations/) are
    both skipped: which one holds the right boxes is unknown.
    """
    folder = Path(folder)
    class_index = {name: i for i, name in enumerate(classes)}
    roots = [(xml_path, _voc_parse(xml_path)) for xml_path in _voc_xml_files(folder)]
    names = [root.findtext("filename") or f"{xml_path.stem}.jpg" for xml_path, root in roots]
    paths = [_voc_image_path(folder, xml_path, name) for (xml_path, _), name in zip(roots, names)]
    repeated = _repeated([_same_file_key(path) for path in paths])
    records = []
    for img_id, name, image_path, (xml_path, root) in zip(_voc_ids(names), names, paths, roots):
        if _same_file_key(image_path) in repeated:
            report.add(DUPLICATE_FILE, f"{xml_path.name} -> {image_path.name}")
            continue
        shape = _voc_shape(root, xml_path, image_path, name, report)
        if shape is None:
            continue
        boxes, labels = _voc_boxes(root, xml_path, class_index, name, report)
        records.append(_finish_record(img_id, image_path, shape[0], shape[1], boxes, labels, name, report))
    return records


# ---- txt list ----------------------------------------------------------------------------------

def _txt_box(token: str, anno_path: Path, line_no: int) -> tuple[list[float], int]:
    """Parse `x1,y1,x2,y2,cls` (x first, as the seed's README documents) into ([y1,x1,y2,x2], cls)."""
    parts = token.split(",")
    try:
        if len(parts) != 5:
            raise ValueError
        x1, y1, x2, y2 = (float(p) for p in parts[:4])
        cls = int(parts[4])
    except ValueError:
        raise AnnotationError(f"{anno_path}:{line_no + 1}: box {token!r} is not 'x1,y1,x2,y2,class_index' "
                              f"(pixels, x first, integer class index)") from None
    return [y1, x1, y2, x2], cls


def _txt_lines(anno_path: Path, image_dir: Path) -> tuple[list[tuple[int, list[str]]], dict[int, str]]:
    """(0-based line index, tokens) of every non-empty line, and {line index: example} for the lines
    whose image another line names too."""
    lines = [(line_no, line.split()) for line_no, line in enumerate(anno_path.read_text(encoding="utf-8").splitlines())
             if line.split()]
    keys = [_same_file_key(image_dir / tokens[0]) for _, tokens in lines]
    line_numbers = defaultdict(list)
    for (line_no, _), key in zip(lines, keys):
        line_numbers[key].append(str(line_no + 1))
    duplicates = {line_no: f"{anno_path.name}:{line_no + 1} {tokens[0]} (lines {' and '.join(line_numbers[key])})"
                  for (line_no, tokens), key in zip(lines, keys) if len(line_numbers[key]) > 1}
    return lines, duplicates


def read_txt(anno_path: Path, image_dir: Path, classes: Sequence[str],
             report: ConversionReport) -> list[ImageRecord]:
    """Read the one-line-per-image format `rel/path.jpg x1,y1,x2,y2,cls ...`; id = line index (0-based).

    Columns are x FIRST as the seed's README says (the seed's code read them y first, bug B3). Class
    indices outside 1..len(classes)-1 count as unknown classes. Sizes come from the image headers.
    NaN/inf coordinates skip their box, and lines naming an image another line names too are skipped.
    """
    anno_path, image_dir = Path(anno_path), Path(image_dir)
    lines, duplicates = _txt_lines(anno_path, image_dir)
    records = []
    for line_no, tokens in lines:
        name = tokens[0]
        parsed = [(token, *_txt_box(token, anno_path, line_no)) for token in tokens[1:]]  # format first: it stops
        if line_no in duplicates:
            report.add(DUPLICATE_FILE, duplicates[line_no])
            continue
        image_path = image_dir / name
        header = _image_header(image_path)
        if header is None:
            report.add(CORRUPT_IMAGE, name)
            continue
        boxes, labels = [], []
        for token, box, cls in parsed:
            if not all(math.isfinite(value) for value in box):
                report.add(BAD_NUMBER, f"{anno_path.name}:{line_no + 1} {name}: {token}")
                continue
            if not 0 < cls < len(classes):
                report.add(UNKNOWN_CLASS, name)
                continue
            boxes.append(box)
            labels.append(cls)
        records.append(_finish_record(line_no, image_path, header[0], header[1], boxes, labels, name, report))
    return records


def records_to_coco_dict(records: Sequence[ImageRecord], classes: Sequence[str]) -> dict:
    """COCO-style ground truth for records read from VOC/txt, so they evaluate through pycocotools.

    category_id is the class index itself (so eval maps predictions back by name to the same ids).
    """
    images, annotations = [], []
    for record in records:
        images.append({"id": int(record.img_id), "file_name": record.image_path.name,
                       "height": int(record.height), "width": int(record.width)})
        for (ymin, xmin, ymax, xmax), label in zip(record.boxes.tolist(), record.labels.tolist()):
            w, h = xmax - xmin, ymax - ymin
            annotations.append({"id": len(annotations) + 1, "image_id": int(record.img_id),
                                "category_id": int(label), "bbox": [xmin, ymin, w, h], "area": w * h,
                                "iscrowd": 0, "segmentation": []})
    categories = [{"id": i, "name": name, "supercategory": "none"} for i, name in enumerate(classes) if i > 0]
    return {"info": {"description": "ground truth converted by src.data.annotations"},
            "images": images, "annotations": annotations, "categories": categories}
