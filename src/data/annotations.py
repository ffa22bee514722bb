"""Annotation readers (COCO json, Pascal-VOC xml, plain txt) that turn a labelled image folder into
`ImageRecord`s with pixel boxes [ymin, xmin, ymax, xmax] and class indices into `config.classes`.

Every reader keeps ALL images (evaluation needs the images without boxes too; the MindRecord writer
leaves them out of training) and never fails on a data-level problem: it counts it in a
`ConversionReport` so one bad box does not stop a conversion of 100k images, and the user still sees
what was fixed or skipped. Malformed files (xml that does not parse, txt tokens that are not
`x1,y1,x2,y2,cls`) raise one error naming the file, because those are format mistakes to fix.
"""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

# Problem kinds counted by ConversionReport, with the wording used in its summary.
CLIPPED = "clipped"
DROPPED = "dropped"
UNKNOWN_CLASS = "unknown_class"
CROWD = "crowd"
CORRUPT_IMAGE = "corrupt_image"
NO_BOX = "no_box"
PROBLEM_DESCRIPTIONS = {
    CLIPPED: "boxes clipped to the image border",
    DROPPED: "boxes dropped (no width or height left after clipping and rounding to pixels)",
    UNKNOWN_CLASS: "boxes skipped: class not in config.classes",
    CROWD: "crowd boxes (iscrowd=1) left out of training targets; COCOeval ignores them at evaluation",
    CORRUPT_IMAGE: "images skipped: missing, unreadable or corrupt file",
    NO_BOX: "images without any valid box (left out of training, kept for evaluation)",
}
MAX_EXAMPLES = 5


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
    """Counts problems by kind and remembers a few file names per kind so the user can look at them."""

    counts: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in PROBLEM_DESCRIPTIONS})
    examples: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in PROBLEM_DESCRIPTIONS})

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
        lines = ["Annotation check (count, up to 5 example files):"]
        for kind, description in PROBLEM_DESCRIPTIONS.items():
            if self.counts[kind]:
                lines.append(f"  {self.counts[kind]:>7d}  {description}: {', '.join(self.examples[kind])}")
        return "\n".join(lines)


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


def load_coco_quietly(gt_json: Path) -> COCO:
    """Load an annotation file without pycocotools' prints; one clear error for a bad file."""
    gt_json = Path(gt_json)
    if not gt_json.is_file():
        raise FileNotFoundError(f"COCO annotation file {gt_json} not found: check data_path/coco_root "
                                f"and instances_set in the config")
    with redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_json))
    for key in ("images", "categories", "annotations"):
        if key not in coco.dataset:
            raise ValueError(f"{gt_json} has no '{key}' list: it is not a COCO instances file")
    broken = next((ann.get("id") for ann in coco.dataset["annotations"]
                   if "bbox" not in ann or "area" not in ann), None)
    if broken is not None:
        raise ValueError(f"annotation id {broken} in {gt_json} lacks 'bbox' or 'area', which COCOeval "
                         f"needs: regenerate the json with both fields")
    return coco


def read_coco(anno_json: Path, image_dir: Path, classes: Sequence[str],
              report: ConversionReport) -> list[ImageRecord]:
    """Read every image of a COCO instances json, in image-id order.

    Categories are matched to `classes` by NAME, so a json with non-contiguous COCO ids (1..90) maps
    onto training labels 1..80. Crowd boxes are counted and left out: COCOeval ignores them anyway.
    """
    coco = load_coco_quietly(anno_json)
    class_index = {name: i for i, name in enumerate(classes)}
    cat_to_label = {cat["id"]: class_index.get(cat["name"], -1) for cat in coco.loadCats(coco.getCatIds())}
    records = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        name = info["file_name"]
        boxes, labels = [], []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
            if ann.get("iscrowd", 0):
                report.add(CROWD, name)
                continue
            label = cat_to_label.get(ann["category_id"], -1)
            if label <= 0:
                report.add(UNKNOWN_CLASS, name)
                continue
            x, y, w, h = ann["bbox"]
            boxes.append([y, x, y + h, x + w])
            labels.append(label)
        records.append(_finish_record(img_id, Path(image_dir) / name, info["height"], info["width"],
                                      boxes, labels, name, report))
    return records


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
        raise ValueError(f"cannot parse VOC annotation {xml_path}: {err}; fix or remove the file") from err


def _voc_number(element: ET.Element, tag: str, xml_path: Path) -> float:
    """A numeric child of an xml element, with an error naming the file when it is missing."""
    text = element.findtext(tag)
    if text is None:
        raise ValueError(f"VOC annotation {xml_path} has an <{element.tag}> without <{tag}>")
    return float(text)


def _image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the image header (cheap: no decoding), None when unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return height, width


def read_voc(folder: Path, classes: Sequence[str], report: ConversionReport) -> list[ImageRecord]:
    """Read a VOC split folder (xml + images, optionally Annotations/ + Images/ or JPEGImages/).

    VOC coordinates are 1-based, so 1 is subtracted from each of them as the seed did. Images whose
    xml gives no size are sized from the image header; unreadable ones are then skipped and counted.
    """
    folder = Path(folder)
    class_index = {name: i for i, name in enumerate(classes)}
    roots = [(xml_path, _voc_parse(xml_path)) for xml_path in _voc_xml_files(folder)]
    names = [root.findtext("filename") or f"{xml_path.stem}.jpg" for xml_path, root in roots]
    records = []
    for img_id, name, (xml_path, root) in zip(_voc_ids(names), names, roots):
        image_path = _voc_image_path(folder, xml_path, name)
        size = root.find("size")
        if size is not None:
            shape = (int(_voc_number(size, "height", xml_path)), int(_voc_number(size, "width", xml_path)))
        else:
            shape = _image_size(image_path)
        if shape is None:
            report.add(CORRUPT_IMAGE, name)
            continue
        boxes, labels = [], []
        for obj in root.iter("object"):
            label = class_index.get((obj.findtext("name") or "").strip(), -1)
            if label <= 0:
                report.add(UNKNOWN_CLASS, name)
                continue
            bndbox = obj.find("bndbox")
            if bndbox is None:
                raise ValueError(f"VOC annotation {xml_path} has an <object> without <bndbox>")
            xmin, ymin, xmax, ymax = (_voc_number(bndbox, tag, xml_path) - 1
                                      for tag in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([ymin, xmin, ymax, xmax])
            labels.append(label)
        records.append(_finish_record(img_id, image_path, shape[0], shape[1], boxes, labels, name, report))
    return records


def _txt_box(token: str, anno_path: Path, line_no: int) -> tuple[list[float], int]:
    """Parse `x1,y1,x2,y2,cls` (x first, as the seed's README documents) into ([y1,x1,y2,x2], cls)."""
    parts = token.split(",")
    try:
        if len(parts) != 5:
            raise ValueError
        x1, y1, x2, y2 = (float(p) for p in parts[:4])
        cls = int(parts[4])
    except ValueError:
        raise ValueError(f"{anno_path}:{line_no + 1}: box {token!r} is not 'x1,y1,x2,y2,class_index' "
                         f"(pixels, x first, integer class index)") from None
    return [y1, x1, y2, x2], cls


def read_txt(anno_path: Path, image_dir: Path, classes: Sequence[str],
             report: ConversionReport) -> list[ImageRecord]:
    """Read the one-line-per-image format `rel/path.jpg x1,y1,x2,y2,cls ...`; id = line index (0-based).

    Columns are x FIRST as the seed's README says (the seed's code read them y first, bug B3). Class
    indices outside 1..len(classes)-1 count as unknown classes. Sizes come from the image headers.
    """
    anno_path, image_dir = Path(anno_path), Path(image_dir)
    records = []
    for line_no, line in enumerate(anno_path.read_text(encoding="utf-8").splitlines()):
        tokens = line.split()
        if not tokens:
            continue
        name = tokens[0]
        image_path = image_dir / name
        shape = _image_size(image_path)
        if shape is None:
            report.add(CORRUPT_IMAGE, name)
            continue
        boxes, labels = [], []
        for token in tokens[1:]:
            box, cls = _txt_box(token, anno_path, line_no)
            if not 0 < cls < len(classes):
                report.add(UNKNOWN_CLASS, name)
                continue
            boxes.append(box)
            labels.append(cls)
        records.append(_finish_record(line_no, image_path, shape[0], shape[1], boxes, labels, name, report))
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

