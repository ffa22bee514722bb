"""Pascal-VOC xml: one xml per image beside it (or Annotations/ + JPEGImages/ or Images/), read by
`read_voc`; `voc_class_names` lists the object names the xml files use.

Coordinates are 1-based in VOC (1 is subtracted) and may be fractional (kept; the MindRecord rows round
them). `difficult` objects are kept as ordinary boxes, as the model zoo did, and counted so the report
says how many there were. See `annotations` for what else is counted and skipped.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from src.data.annotations import (BAD_IMAGE_ENTRY, BAD_NUMBER, CORRUPT_IMAGE, DIFFICULT, DUPLICATE_FILE, UNKNOWN_CLASS,
                                  AnnotationError, ConversionReport, ImageRecord, finish_record, image_header,
                                  positive_size, repeated_keys, same_file_key)

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
        header = image_header(image_path)
        if header is None:
            report.add(CORRUPT_IMAGE, example)
            return None
        return header[:2]
    shape = positive_size(_voc_number(size, "height", xml_path), _voc_number(size, "width", xml_path))
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
        if (obj.findtext("difficult") or "").strip() == "1":
            report.add(DIFFICULT, f"{xml_path.name}: {obj.findtext('name')}")
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
    repeated = repeated_keys([same_file_key(path) for path in paths])
    records = []
    for img_id, name, image_path, (xml_path, root) in zip(_voc_ids(names), names, paths, roots):
        if same_file_key(image_path) in repeated:
            report.add(DUPLICATE_FILE, f"{xml_path.name} -> {image_path.name}")
            continue
        shape = _voc_shape(root, xml_path, image_path, name, report)
        if shape is None:
            continue
        boxes, labels = _voc_boxes(root, xml_path, class_index, name, report)
        records.append(finish_record(img_id, image_path, shape[0], shape[1], boxes, labels, name, report))
    return records


def voc_class_names(folder: Path) -> list[str]:
    """The object names used in a VOC split folder's xml files, sorted (VOC declares no class list)."""
    names = {(obj.findtext("name") or "").strip() for xml_path in _voc_xml_files(Path(folder))
             for obj in _voc_parse(xml_path).iter("object")}
    return sorted(names - {""})
