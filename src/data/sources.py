"""Where a config's training or validation images and annotations are, read through the one reader of
their format, and the class names the data itself declares.

`data_source(config, for_training)` is the only place that maps `config.dataset` (coco | voc | other |
yolo) onto a reader (`DataSource.read`); every reader has the shape
`read_<format>(..., classes, report) -> list[ImageRecord]` and gives the same records for the same
images and boxes, whatever the format.

`val_fraction` (0 <= F < 1; 0 = off) splits ONE folder into training and validation images: both
splits then read the training source, and an image is in validation when a hash of its path below the
image folder falls below F (`annotations.in_validation_split`). The split is the same on every run and
machine, and adding images never moves an existing one to the other side. The reader's report then
counts the problems of the whole folder in both conversions.

`resolve_classes` fills in `classes` and `num_classes` from the data when the config leaves them unset
(`classes: []`; `num_classes` is then derived), and compares a configured list with the data's names.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from src.data.annotations import (BAD_LINE, BAD_NUMBER, CHANGES_KEY, CLIPPED, DROPPED, IMAGE_SKIPS, OUT_OF_RANGE,
                                  ConversionReport, ImageRecord, in_validation_split, records_to_coco_dict)
from src.data.coco_reader import coco_class_names, coco_ground_truth, read_coco
from src.data.txt_reader import read_txt
from src.data.voc_reader import read_voc, voc_class_names
from src.data.yolo_reader import (CLASSES_TXT, DATA_YAML, read_yolo, yolo_class_names, yolo_image_files,
                                  yolo_split_folders)
from src.model_utils.errors import UsageError

logger = logging.getLogger("ssd")

#: Index 0 of `config.classes` in every shipped config: the class of unmatched default boxes.
BACKGROUND = "background"
_WHAT = {"coco": "COCO annotation file", "voc": "VOC split folder", "other": "annotation list",
         "yolo": "YOLO label folder"}


@dataclass(frozen=True)
class DataSource:
    """Where one split's annotations and images are, and which config keys to fix when they are not."""

    kind: str  # coco | voc | other | yolo
    annotations: Path  # COCO json, VOC split folder, txt file, or YOLO label folder
    images: Path
    keys: str
    root: Path | None = None  # YOLO: the dataset folder holding data.yaml / classes.txt
    val_fraction: float = 0.0  # > 0: this folder is split, see the module docstring
    validation: bool = False  # which side of the split this source reads

    def check(self, config: Any) -> None:
        """One clear error naming the missing path and the keys that locate it."""
        found = self.annotations.is_dir() if self.kind in ("voc", "yolo") else self.annotations.is_file()
        if not found:
            raise FileNotFoundError(f"{_WHAT[self.kind]} {self.annotations} not found; set the config keys "
                                    f"{self.keys} (data_path is {config.data_path!r})")
        if not self.images.is_dir():
            raise FileNotFoundError(f"image folder {self.images} not found; set the config keys {self.keys} "
                                    f"(data_path is {config.data_path!r})")

    def fingerprint(self, classes: Sequence[str]) -> dict:
        """What the conversion depends on besides the images; a different value means a rebuild.

        These are all the config keys the conversion reads: the dataset kind, the paths (resolved,
        so that ./data and /abs/data name the same source), the class list, which maps names to
        labels, and a `val_fraction` split. img_shape, num_classes and the augmentation keys do not
        shape the records (they store the image file bytes and pixel boxes) and so do not force a
        rebuild. A YOLO source also hashes its image names: an image without a label file is a record too.
        """
        fingerprint = {"dataset": self.kind, "annotations": str(self.annotations.resolve()),
                       "images": str(self.images.resolve()), "classes": [str(name) for name in classes],
                       "annotation_sha256": _sha256_of_files(self._annotation_files(), self.root or self.annotations)}
        if self.kind == "yolo":
            names = "\n".join(path.relative_to(self.images).as_posix() for path in yolo_image_files(self.images))
            fingerprint["image_names_sha256"] = hashlib.sha256(names.encode("utf-8")).hexdigest()
        if self.val_fraction:
            fingerprint["val_fraction"] = self.val_fraction
        return fingerprint

    def _annotation_files(self) -> list[Path]:
        """The files the records are read from (besides the images)."""
        if self.kind == "yolo":
            names = [self.root / DATA_YAML, self.root / CLASSES_TXT]
            return list(self.annotations.rglob("*.txt")) + [path for path in names if path.is_file()]
        if self.annotations.is_dir():
            return list(self.annotations.glob("*.xml")) + list(self.annotations.glob("Annotations/*.xml"))
        return [self.annotations]

    def image_paths(self, records: Sequence[ImageRecord]) -> list[Path]:
        """Every image the annotations name: the records' ones, and for a txt list also those the
        reader skipped as unreadable (they have no record), so fixing one of them rebuilds too."""
        if self.kind != "other":
            return [record.image_path for record in records]
        lines = self.annotations.read_text(encoding="utf-8").splitlines()
        return [self.images / line.split()[0] for line in lines if line.split()]

    def read(self, classes: Sequence[str], report: ConversionReport) -> list[ImageRecord]:
        """All images of the split through the reader of its format (this side of a `val_fraction` split).

        The class list is compared with the data's names here, where the annotations are read anyway,
        so a run reusing its conversion pays nothing for the check (`_compare_classes`).
        """
        found = self.class_names()
        if found is not None:
            _compare_classes(list(classes)[1:], found, str(self.root or self.annotations))
        records = self._read_all(classes, report)
        if not self.val_fraction:
            return records
        return [record for record in records
                if in_validation_split(self._split_name(record), self.val_fraction) == self.validation]

    def _read_all(self, classes: Sequence[str], report: ConversionReport) -> list[ImageRecord]:
        if self.kind == "coco":
            return read_coco(self.annotations, self.images, classes, report)
        if self.kind == "voc":
            return read_voc(self.annotations, classes, report)
        if self.kind == "yolo":
            return read_yolo(self.images, self.annotations, yolo_class_names(self.root), classes, report)
        return read_txt(self.annotations, self.images, classes, report)

    def _split_name(self, record: ImageRecord) -> str:
        """The name the split hashes: the image's path below the image folder (its file name if outside)."""
        try:
            return record.image_path.relative_to(self.images).as_posix()
        except ValueError:
            return record.image_path.name

    def class_names(self) -> list[str] | None:
        """The class names the data declares or uses, background not included; None when it cannot name them."""
        if self.kind == "coco":
            return coco_class_names(self.annotations)
        if self.kind == "voc":
            return voc_class_names(self.annotations)
        if self.kind == "yolo":
            return yolo_class_names(self.root)
        return None


def _sha256_of_files(paths: Sequence[Path], root: Path) -> str:
    """sha256 over each file's name (relative to `root`) and streamed content hash, in name order.

    One file is hashed the same way, so a COCO json, a txt list and a VOC folder of xml files all
    give one value that changes with any edit, whether or not it changes a file's size.
    """
    digest = hashlib.sha256()
    for path in sorted(paths):
        with open(path, "rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
        name = Path(os.path.relpath(path, root)) if root.is_dir() else path.name
        digest.update(f"{name}\0{content}\n".encode("utf-8"))
    return digest.hexdigest()


def data_source(config: Any, for_training: bool) -> DataSource:
    """The split's source per config.dataset; absolute roots are used as they are.

    With `val_fraction` > 0 both splits read the training source (see the module docstring).
    """
    fraction = float(config.get("val_fraction", 0.0))
    source = _split_source(config, for_training or fraction > 0)
    if fraction > 0:
        return DataSource(source.kind, source.annotations, source.images, f"{source.keys}, val_fraction={fraction}",
                          source.root, fraction, validation=not for_training)
    return source


def _split_source(config: Any, for_training: bool) -> DataSource:
    """The training or validation source as the config's keys name it, without a `val_fraction` split."""
    data_path = Path(config.data_path)
    if config.dataset == "coco":
        split = config.train_data_type if for_training else config.val_data_type
        coco_root = data_path / config.coco_root
        split_key = "train_data_type" if for_training else "val_data_type"
        return DataSource("coco", coco_root / config.instances_set.format(split), coco_root / split,
                          f"coco_root={config.coco_root!r}, instances_set={config.instances_set!r}, "
                          f"{split_key}={split!r}")
    if config.dataset == "voc":
        folder = data_path / config.voc_root / ("train" if for_training else "eval")
        return DataSource("voc", folder, folder, f"voc_root={config.voc_root!r} (a folder with train/ and eval/)")
    if config.dataset == "yolo":
        return _yolo_source(config, data_path, for_training)
    image_key, anno_key = "image_dir", "anno_path"
    if not for_training:
        image_key = "val_image_dir" if config.val_image_dir else image_key
        anno_key = "val_anno_path" if config.val_anno_path else anno_key
    image_dir, anno_path = getattr(config, image_key), getattr(config, anno_key)
    if not anno_path:
        raise ValueError(f"dataset {config.dataset!r} reads a text annotation list: set config key {anno_key} "
                         f"(and {image_key}), or choose dataset coco, voc or yolo")
    return DataSource("other", data_path / anno_path, data_path / image_dir,
                      f"{anno_key}={anno_path!r}, {image_key}={image_dir!r}")


def _yolo_source(config: Any, data_path: Path, for_training: bool) -> DataSource:
    """A YOLO split: `yolo_root` plus the split folder (`yolo_train_split` / `yolo_val_split` or data.yaml)."""
    root_key = "yolo_root"
    split_key, split = ("yolo_train_split", "train") if for_training else ("yolo_val_split", "val")
    root = data_path / config.get(root_key, "yolo")
    images, labels = yolo_split_folders(root, config.get(split_key, ""), split)
    hint = "" if for_training else "; a dataset without a validation folder can be split with --val_fraction 0.2"
    return DataSource("yolo", labels, images, f"{root_key}={str(config.get(root_key, 'yolo'))!r}, {split_key}="
                      f"{config.get(split_key, '')!r} (or '{split}' in {DATA_YAML}){hint}", root)


def evaluation_ground_truth(kind: str, annotations: Path, records: Sequence[ImageRecord], classes: Sequence[str],
                            report: ConversionReport) -> dict:
    """The COCO-format ground truth evaluation scores, built from the same reading as the eval records.

    `kind` is the dataset (coco | voc | other | yolo); `report` is the reader's and writer's: the images
    the writer refused (`report.skipped_images`) are left out, and its summary is stored with the counts
    under `CHANGES_KEY` so the evaluation log can say what was changed and where to look. COCO keeps
    its json's own annotations (`coco_ground_truth`); VOC, txt and YOLO have no COCO form of their own
    and are converted from the records (`records_to_coco_dict`).
    """
    kept = [record for record in records if int(record.img_id) not in report.skipped_images]
    if kind == "coco":
        data = coco_ground_truth(annotations, {int(record.img_id) for record in kept})
    else:
        data = records_to_coco_dict(kept, classes)
        data[CHANGES_KEY] = {"source": str(annotations),
                             "images_left_out": sum(report.counts[skip] for skip in IMAGE_SKIPS),
                             "boxes_left_out": sum(report.counts[bad] for bad in (BAD_NUMBER, BAD_LINE, OUT_OF_RANGE)),
                             "boxes_dropped": report.counts[DROPPED], "boxes_clipped": report.counts[CLIPPED]}
    data[CHANGES_KEY]["annotation_check"] = report.summary()
    return data


# ---- classes from the data ----------------------------------------------------------------------------

def _compare_classes(configured: Sequence[str], found: Sequence[str], where: str) -> None:
    """A configured class list against the data's names: a disagreement both ways (a typo or a rename) is an error.

    Config names the data lacks, alone, are a warning (e.g. an 81-class COCO config on a few COCO
    categories: those outputs are never trained); data names the config lacks are a log line (their
    boxes are skipped and counted as unknown classes: training on a subset is legitimate).
    """
    missing = [name for name in configured if name not in found]
    extra = [name for name in found if name not in configured]
    if missing and extra:
        raise UsageError(f"config key classes disagrees with the data in {where}: {missing} are not in the data, "
                         f"{extra} are not in classes; fix the spelling in classes, or set classes to [] to take "
                         f"the data's names")
    if missing:
        logger.warning(f"classes: {len(missing)} configured classes never occur in {where}, their outputs are not "
                       f"trained: {missing}")
    if extra:
        logger.info(f"classes: the boxes of {len(extra)} data classes not in config.classes are skipped "
                    f"(counted as unknown class): {extra}")


def resolve_classes(config: Any) -> list[str]:
    """`config.classes` (background first), taken from the training data when the config leaves it unset.

    `classes: []` means "from the data": COCO's categories in id order, YOLO's data.yaml/classes.txt
    names, the object names of VOC's training xml files (sorted); `classes` becomes 'background' plus
    those names and `num_classes` its length. A txt list cannot name its classes: an error asks for
    them. A configured list is returned as it is, without reading anything (the conversion compares it
    with the data, `DataSource.read`). Call it before the dataset conversion and the network are built:
    both read `classes` and `num_classes`.
    """
    if config.classes:
        return list(config.classes)
    source = data_source(config, for_training=True)
    source.check(config)
    found = source.class_names()
    if found is None:
        raise UsageError(f"classes is [] (take them from the data), but dataset {config.dataset!r} has no class "
                         f"names ({source.annotations}); set classes to ['background', <name of class 1>, ...] in "
                         f"the config or on the command line")
    names = [name for name in found if name != BACKGROUND]
    if not names:
        raise UsageError(f"classes is [] (take them from the data), but {source.annotations} names no class; "
                         f"set classes in the config")
    config.classes = [BACKGROUND, *names]
    config.num_classes = len(config.classes)
    logger.info(f"classes from the data ({source.root or source.annotations}): num_classes {config.num_classes}, "
                f"{config.classes}")
    return list(config.classes)
