"""The format-independent core of the annotation readers: `ImageRecord`, `ConversionReport` and its
problem kinds, box cleaning, image header and size checks, and the evaluation ground-truth helpers.

One module per format turns a labelled image folder into `ImageRecord`s with pixel boxes [ymin,
xmin, ymax, xmax] and class indices into `config.classes`, all with the shape
`read_<format>(..., classes, report) -> list[ImageRecord]`: `coco_reader` (COCO json),
`voc_reader` (Pascal-VOC xml), `txt_reader` (plain txt list) and `yolo_reader` (YOLO label
folders); `sources` picks one per config and is the only place that dispatches on the format.

Every reader keeps ALL images (evaluation needs the images without boxes too; the MindRecord writer
leaves them out of training) and never fails on a data-level problem: it counts it in a
`ConversionReport` so one bad box does not stop a conversion of 100k images, and the user still sees
what was fixed or skipped. Malformed files (json or xml that does not parse, a missing required
key, txt tokens that are not `x1,y1,x2,y2,cls`) raise one `AnnotationError` naming the file,
because those are format mistakes to fix.

What would otherwise corrupt labels silently is skipped and counted, naming the file and image id
(and the line of a txt list or YOLO label file): an image id listed twice (pycocotools keeps one
entry and pools both boxes), one image file listed twice (its boxes split between two training
samples, each missing the other's), values that are not finite numbers (json strings, null, true,
NaN, Infinity; VOC and YOLO text), annotations of an image id or category id the json does not
list, and an annotated width/height that differs from the image file's. The boxes are in the
annotated frame but the pixels are the file's, so such an image's labels cannot be trusted; when
the two sizes are exactly swapped and the file carries an EXIF orientation that rotates by 90
degrees, the boxes were drawn on the rotated view while every pipeline here reads the stored pixel
grid (EXIF ignored, as COCO does), and the reason says so. (YOLO labels carry no size: they are
turned into the stored grid by the reader, see `yolo_reader`.) The size check runs in the
MindRecord writer (`check_image_bytes`), on the bytes it already holds for its decode check, from
the image header: no second read or decode of any image.

Evaluation scores the same cleaned ground truth (`sources.evaluation_ground_truth`): for COCO the
json's own annotations, as given when inside the image, clipped when they cross its border, dropped
when no area is left, and without the images and annotations the reader or the writer skipped. The
pixel rounding that drops boxes thinner than a pixel from the training targets is a storage rule
of the int32 MindRecord rows, not a validity rule, so evaluation keeps such boxes as COCO's
protocol does; a clean json therefore evaluates exactly as given. VOC, txt and YOLO ground truth is
converted from the records themselves (`records_to_coco_dict`).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from src.model_utils.errors import SSDError

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
BAD_LINE = "bad_line"
OUT_OF_RANGE = "out_of_range"
NO_LABEL_FILE = "no_label_file"
DIFFICULT = "difficult"
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
    BAD_LINE: "YOLO label lines skipped: not 'class cx cy w h' (too few or too many values, text, a fractional "
              "class id; polygons are not read)",
    OUT_OF_RANGE: "YOLO label lines skipped: cx, cy, w or h outside [0, 1] by more than 0.001 (pixel coordinates "
                  "instead of normalised ones?)",
    NO_LABEL_FILE: "images without a YOLO label file (read as images without objects)",
    DIFFICULT: "VOC boxes flagged difficult: kept as ordinary boxes in training and evaluation (as the model zoo did)",
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


def in_validation_split(name: str, fraction: float) -> bool:
    """Whether the image called `name` (its path relative to the split's image folder) is in the
    validation part of a `val_fraction` split.

    Decided by a hash of the name alone, not by position or a random draw: the same image stays on
    the same side on every run and machine, and adding or removing other images moves none.
    """
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < fraction


def is_finite_number(value: Any) -> bool:
    """A finite int or float; json's strings, null, true/false, NaN and Infinity are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def finite_numbers(values: Any, count: int) -> list[float] | None:
    """`values` as `count` floats when it is a list of that many finite numbers, else None."""
    if not isinstance(values, (list, tuple)) or len(values) != count or not all(is_finite_number(v) for v in values):
        return None
    return [float(v) for v in values]


def is_id(value: Any) -> bool:
    """An int that fits the MindRecord's int32 img_id column (bools are not ids); also for category ids."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 31


def positive_size(height: Any, width: Any) -> tuple[int, int] | None:
    """(height, width) as ints when both are positive finite numbers, else None."""
    numbers = finite_numbers([height, width], 2)
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


def finish_record(img_id: int, image_path: Path, height: int, width: int, boxes: list, labels: list,
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


def image_header(source: Path | io.BytesIO) -> tuple[int, int, int] | None:
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
    header = image_header(io.BytesIO(data))
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


def same_file_key(path: Path) -> str:
    """A key equal for two spellings of one file path (`a/./b.jpg`, `a/../a/b.jpg`, `a//b.jpg`)."""
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def repeated_keys(keys: Sequence[Any]) -> set:
    """The keys that occur more than once."""
    return {key for key, count in Counter(keys).items() if count > 1}



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
