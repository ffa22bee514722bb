"""YOLO (Ultralytics / Darknet) label folders: `images/<split>/...` with `labels/<split>/<same name>.txt`,
one object per line `class cx cy w h` (class id from 0, the rest normalised to [0, 1]), read by `read_yolo`.

Layout (`yolo_split_folders`): the split's image folder is the config key `yolo_train_split` /
`yolo_val_split` when set, else the `train` / `val` entry of `<yolo_root>/data.yaml`, else
`images/<split>` or `<split>/images` (the Roboflow export), all relative to `yolo_root` (data.yaml's own
`path` is not read: the yaml sits in the dataset it describes). Labels live where Ultralytics looks for
them: the last `images` folder of the image path replaced by `labels`, the same sub-folders and stem.
Class names (`yolo_class_names`) come from data.yaml's `names` (a list, or an {id: name} mapping with
ids 0..n-1) or from `classes.txt` (one name a line); with names, class ids map to `config.classes` by
name, without, id k is label k + 1 (background is label 0).

Images are taken in sorted order of their path below the image folder and numbered 1..N, so the ids are
the same on every run (the COCO-style evaluation ground truth matches predictions by id). Two images that
would share one label file (`a.jpg` and `a.png`) are both skipped: whose boxes they are is unknown.

EXIF: label tools and Ultralytics draw on the image as a viewer shows it (EXIF orientation applied),
while the training pipeline decodes the stored pixel grid (`dataset.decode_image` ignores the tag, as
COCO does). The record's width/height are the stored grid's and each box is turned from the displayed
frame into it (`_stored_frame_box`), so the box stays on the same pixels the user labelled.

Bad lines never stop a conversion; each is skipped and counted naming the file and line: not five
values, text or a fractional class id (`BAD_LINE`), NaN/Inf (`BAD_NUMBER`), a class id without a name
or a name not in `config.classes` (`UNKNOWN_CLASS`), cx, cy, w or h outside [0, 1] by more than
`RANGE_TOLERANCE` (`OUT_OF_RANGE`: usually pixel coordinates). Values within the tolerance, and boxes
crossing the border, are clipped like every format's (`clean_boxes`). An image without a label file is
an image without objects (`NO_LABEL_FILE`), as in Ultralytics.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import yaml

from src.data.annotations import (BAD_LINE, BAD_NUMBER, CORRUPT_IMAGE, DUPLICATE_FILE, NO_LABEL_FILE, OUT_OF_RANGE,
                                  UNKNOWN_CLASS, AnnotationError, ConversionReport, ImageRecord, finish_record,
                                  image_header, repeated_keys)
from src.model_utils.errors import wrap_foreign_error

DATA_YAML = "data.yaml"
CLASSES_TXT = "classes.txt"
#: Image suffixes the pipeline's OpenCV decoder reads (matched case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: How far outside [0, 1] a normalised value may lie and still be clipped (label tools' rounding).
RANGE_TOLERANCE = 1e-3
#: EXIF orientation -> the stored-frame point (x, y) of a displayed-frame point (dx, dy), all normalised.
_DISPLAY_TO_STORED = {
    1: lambda dx, dy: (dx, dy),
    2: lambda dx, dy: (1 - dx, dy),
    3: lambda dx, dy: (1 - dx, 1 - dy),
    4: lambda dx, dy: (dx, 1 - dy),
    5: lambda dx, dy: (dy, dx),
    6: lambda dx, dy: (dy, 1 - dx),
    7: lambda dx, dy: (1 - dy, 1 - dx),
    8: lambda dx, dy: (1 - dy, dx),
}


def load_data_yaml(root: Path) -> dict:
    """`<root>/data.yaml` as a mapping; {} when there is none."""
    path = Path(root) / DATA_YAML
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise wrap_foreign_error(path, "YAML", error, "fix the file (Ultralytics format: path, train, val, names)")
    if not isinstance(data, dict):
        raise AnnotationError(f"{path} is not a YAML mapping; write 'train: ...', 'val: ...' and 'names: [...]'")
    return data


def _names_from_yaml(names: Any, path: Path) -> list[str]:
    """data.yaml's `names`: a list, or a mapping whose keys are exactly the ids 0..n-1."""
    if isinstance(names, dict):
        ids = sorted(names, key=lambda key: (not isinstance(key, int), key if isinstance(key, int) else 0, str(key)))
        if ids != list(range(len(names))):
            raise AnnotationError(f"{path}: names has ids {ids}; give ids 0..{len(names) - 1} (one per class) or a "
                                  f"list of names")
        names = [names[i] for i in ids]
    if not isinstance(names, list) or not names:
        raise AnnotationError(f"{path}: names must be a non-empty list of class names or an {{id: name}} mapping")
    return [str(name).strip() for name in names]


def yolo_class_names(root: Path) -> list[str] | None:
    """The class names of a YOLO dataset in id order (data.yaml's, else classes.txt's); None when it names none."""
    root = Path(root)
    data = load_data_yaml(root)
    if "names" in data:
        return _names_from_yaml(data["names"], root / DATA_YAML)
    classes_txt = root / CLASSES_TXT
    if classes_txt.is_file():
        names = [line.strip() for line in classes_txt.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise AnnotationError(f"{classes_txt} lists no class names; write one name per line, class id 0 first")
        return names
    return None


def yolo_split_folders(root: Path, setting: str, split: str) -> tuple[Path, Path]:
    """(image folder, label folder) of one split; see the module docstring for the order of the rules."""
    root = Path(root)
    entry = setting or load_data_yaml(root).get(split)
    if entry is not None and not isinstance(entry, str):
        raise AnnotationError(f"{root / DATA_YAML}: '{split}' is {entry!r}; give one image folder relative to "
                              f"{root} (lists and .txt image lists are not read)")
    if entry:
        images = root / entry
    else:
        candidates = [root / "images" / split, root / split / "images"]
        images = next((path for path in candidates if path.is_dir()), candidates[0])
    return images, label_folder(images)


def label_folder(images: Path) -> Path:
    """Ultralytics' rule: the last path component named `images` becomes `labels` (else labels lie beside)."""
    parts = list(images.parts)
    if "images" not in parts:
        return images
    last = len(parts) - 1 - parts[::-1].index("images")
    parts[last] = "labels"
    return Path(*parts)


def yolo_image_files(images: Path) -> list[Path]:
    """Every image below the folder, in sorted order of the path below it (the order of the image ids)."""
    files = [path for path in Path(images).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    return sorted(files, key=lambda path: path.relative_to(images).as_posix())


def _stored_frame_box(box: Sequence[float], orientation: int) -> list[float]:
    """A normalised [x1, y1, x2, y2] drawn on the displayed image, in the stored pixel grid's frame."""
    to_stored = _DISPLAY_TO_STORED.get(orientation, _DISPLAY_TO_STORED[1])
    (ax, ay), (bx, by) = to_stored(box[0], box[1]), to_stored(box[2], box[3])
    return [min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)]


def _parse_line(text: str) -> tuple[str, int, list[float]] | None:
    """(problem kind or "", class id, [cx, cy, w, h]) of one label line; None for an empty line."""
    tokens = text.split()
    if not tokens:
        return None
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        return BAD_LINE, -1, []
    if len(values) != 5:
        return BAD_LINE, -1, []
    if not all(math.isfinite(value) for value in values):
        return BAD_NUMBER, -1, []
    if values[0] != int(values[0]) or values[0] < 0:
        return BAD_LINE, -1, []
    if not all(-RANGE_TOLERANCE <= value <= 1 + RANGE_TOLERANCE for value in values[1:]):
        return OUT_OF_RANGE, -1, []
    return "", int(values[0]), values[1:]


def _label(class_id: int, names: Sequence[str] | None, class_index: dict[str, int]) -> int:
    """The training label of a YOLO class id: by name when the data names its classes, else id + 1; -1 if none."""
    if names is None:
        return class_id + 1 if class_id + 1 < len(class_index) else -1
    return class_index.get(names[class_id], -1) if class_id < len(names) else -1


def _read_label_file(label_path: Path, shape: tuple[int, int, int], names: Sequence[str] | None,
                     class_index: dict[str, int], report: ConversionReport) -> tuple[list, list]:
    """The [ymin, xmin, ymax, xmax] pixel boxes (stored frame) and labels of one label file."""
    height, width, orientation = shape
    try:
        lines = label_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise wrap_foreign_error(label_path, "a UTF-8 YOLO label file", error, "save it as UTF-8 text") from None
    boxes, labels = [], []
    for line_no, text in enumerate(lines, start=1):
        parsed = _parse_line(text)
        if parsed is None:
            continue
        kind, class_id, values = parsed
        label = -1 if kind else _label(class_id, names, class_index)
        if not kind and label <= 0:
            kind = UNKNOWN_CLASS
        if kind:
            report.add(kind, f"{label_path.name}:{line_no} {text.strip()[:60]!r}")
            continue
        cx, cy, w, h = values
        x1, y1, x2, y2 = _stored_frame_box([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], orientation)
        boxes.append([y1 * height, x1 * width, y2 * height, x2 * width])
        labels.append(label)
    return boxes, labels


def read_yolo(images: Path, labels: Path, names: Sequence[str] | None, classes: Sequence[str],
              report: ConversionReport) -> list[ImageRecord]:
    """Read one YOLO split: every image below `images` with its label file below `labels`; ids 1..N.

    `names` are the dataset's class names in id order (`yolo_class_names`), None when it names none.
    """
    images, labels = Path(images), Path(labels)
    class_index = {name: i for i, name in enumerate(classes)}
    files = yolo_image_files(images)
    label_paths = [labels / path.relative_to(images).with_suffix(".txt") for path in files]
    shared = repeated_keys(label_paths)
    records = []
    for img_id, (image_path, label_path) in enumerate(zip(files, label_paths), start=1):
        name = image_path.relative_to(images).as_posix()
        if label_path in shared:
            report.add(DUPLICATE_FILE, f"{name} (shares {label_path.name} with another image)")
            continue
        shape = image_header(image_path)
        if shape is None:
            report.add(CORRUPT_IMAGE, name)
            continue
        boxes, box_labels = [], []
        if label_path.is_file():
            boxes, box_labels = _read_label_file(label_path, shape, names, class_index, report)
        else:
            report.add(NO_LABEL_FILE, name)
        records.append(finish_record(img_id, image_path, shape[0], shape[1], boxes, box_labels, name, report))
    return records
