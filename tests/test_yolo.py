"""YOLO import, classes from the data, --val_fraction, and the four formats giving the same MindRecord content.

Real files throughout: JPEG/PNG images written with PIL or OpenCV (EXIF-rotated ones with `exif=`),
label files, data.yaml, and MindRecord conversions read back with MindSpore.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mindspore.dataset as ds
import numpy as np
import pytest
from PIL import Image, ImageOps

from dataset_formats import write_all_formats
from src.data.annotations import (BAD_LINE, BAD_NUMBER, CLIPPED, CORRUPT_IMAGE, DIFFICULT, DUPLICATE_FILE, NO_BOX,
                                  NO_LABEL_FILE, OUT_OF_RANGE, UNKNOWN_CLASS, AnnotationError, ConversionReport,
                                  in_validation_split)
from src.data.coco_reader import read_coco
from src.data.dataset import decode_rgb
from src.data.demo_data import DEMO_CLASSES, generate_demo_dataset
from src.data.mindrecord import EVAL_PREFIX, GROUND_TRUTH_JSON, ensure_mindrecord, mindrecord_folder, read_split
from src.data.sources import data_source, resolve_classes
from src.data.voc_reader import read_voc
from src.data.yolo_reader import label_folder, read_yolo, yolo_class_names, yolo_split_folders
from src.model_utils.config import load_config
from src.model_utils.errors import UsageError

CONFIG = "config/ssd300_config_cpu.yaml"
CLASSES = ["background", "cat", "dog"]


def _image(path: Path, width: int = 40, height: int = 30, **save_options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save_options)
    return path


def _yolo_set(root: Path, labels: dict[str, str], names: str | None = "names: [cat, dog]\n") -> Path:
    """images/train/<name> (40x30) with labels/train/<stem>.txt holding the given text (None = no label file)."""
    for name, text in labels.items():
        _image(root / "images" / "train" / name)
        if text is not None:
            label = root / "labels" / "train" / Path(name).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text, encoding="utf-8")
    if names is not None:
        (root / "data.yaml").write_text(names, encoding="utf-8")
    return root


def _read(root: Path, classes=CLASSES) -> tuple[list, ConversionReport]:
    report = ConversionReport()
    images, labels = yolo_split_folders(root, "", "train")
    return read_yolo(images, labels, yolo_class_names(root), classes, report), report


# ---- reading YOLO labels ------------------------------------------------------------------------------------

def test_yolo_boxes_are_pixel_corners_in_sorted_file_order(tmp_path: Path) -> None:
    root = _yolo_set(tmp_path / "yolo", {"b.jpg": "1 0.5 0.5 0.5 0.4\n", "a.jpg": "0 0.25 0.5 0.5 1.0\n"})
    records, report = _read(root)
    assert [(r.img_id, r.image_path.name) for r in records] == [(1, "a.jpg"), (2, "b.jpg")]
    np.testing.assert_allclose(records[0].boxes, [[0, 0, 30, 20]], atol=1e-4)  # ymin xmin ymax xmax
    np.testing.assert_allclose(records[1].boxes, [[9, 10, 21, 30]], atol=1e-4)
    assert records[0].labels.tolist() == [1] and records[1].labels.tolist() == [2]
    assert report.total() == 0


def test_bad_yolo_lines_are_counted_naming_file_and_line(tmp_path: Path) -> None:
    text = ("0 0.5 0.5 0.2 0.2\n"  # fine
            "7 0.5 0.5 0.2 0.2\n"  # class id without a name
            "0 12 15 8 8\n"  # pixel coordinates
            "0 0.5 0.5\n"  # too few numbers
            "dog 0.5 0.5 0.2 0.2\n"  # text
            "0 nan 0.5 0.2 0.2\n"  # not finite
            "1.5 0.5 0.5 0.2 0.2\n"  # fractional class id
            "1 1.0005 0.5 0.2 0.2\n")  # within the tolerance: clipped like any box crossing the border
    records, report = _read(_yolo_set(tmp_path / "yolo", {"x.jpg": text}))
    assert records[0].labels.tolist() == [1, 2]
    assert (report.counts[UNKNOWN_CLASS], report.counts[OUT_OF_RANGE], report.counts[BAD_LINE],
            report.counts[BAD_NUMBER], report.counts[CLIPPED]) == (1, 1, 3, 1, 1)
    assert report.examples[UNKNOWN_CLASS] == ["x.txt:2 '7 0.5 0.5 0.2 0.2'"]
    assert report.examples[OUT_OF_RANGE] == ["x.txt:3 '0 12 15 8 8'"]
    assert [example.split()[0] for example in report.examples[BAD_LINE]] == ["x.txt:4", "x.txt:5", "x.txt:7"]
    assert "x.txt:6" in report.summary()


def test_missing_label_file_is_an_image_without_objects_and_counted(tmp_path: Path) -> None:
    records, report = _read(_yolo_set(tmp_path / "yolo", {"a.jpg": "0 0.5 0.5 0.2 0.2", "b.jpg": None}))
    assert [len(r.labels) for r in records] == [1, 0]
    assert report.counts[NO_LABEL_FILE] == 1 and report.examples[NO_LABEL_FILE] == ["b.jpg"]
    assert report.counts[NO_BOX] == 1


def test_two_images_sharing_one_label_file_are_skipped_but_same_names_in_two_folders_are_not(tmp_path: Path) -> None:
    root = _yolo_set(tmp_path / "yolo", {"a.jpg": "0 0.5 0.5 0.2 0.2", "a.png": None,
                                         "x/c.jpg": "0 0.5 0.5 0.2 0.2", "y/c.jpg": "1 0.5 0.5 0.2 0.2"})
    records, report = _read(root)
    assert [r.image_path.relative_to(root).as_posix() for r in records] == ["images/train/x/c.jpg",
                                                                            "images/train/y/c.jpg"]
    assert [r.labels.tolist() for r in records] == [[1], [2]]
    assert [r.img_id for r in records] == [3, 4]  # ids follow the sorted file list, skipped images included
    assert report.counts[DUPLICATE_FILE] == 2


def test_corrupt_image_is_counted(tmp_path: Path) -> None:
    root = _yolo_set(tmp_path / "yolo", {"a.jpg": "0 0.5 0.5 0.2 0.2"})
    (root / "images" / "train" / "bad.jpg").write_bytes(b"not a jpeg")
    records, report = _read(root)
    assert len(records) == 1 and report.examples[CORRUPT_IMAGE] == ["bad.jpg"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_rotated_jpeg_boxes_follow_the_pixels_the_user_sees(tmp_path: Path, orientation: int) -> None:
    """A white block drawn in the stored grid; its label is drawn on the displayed (EXIF-applied) view, as a label
    tool shows it. The record must put the box on the block in the stored grid, which the pipeline decodes."""
    stored = np.zeros((60, 100, 3), dtype=np.uint8)
    stored[10:20, 60:90] = 255  # rows 10..20, columns 60..90
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "yolo" / "images" / "train" / "rotated.jpg"
    path.parent.mkdir(parents=True)
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("L")) > 128
    rows, cols = np.nonzero(shown)
    height, width = shown.shape
    cx, cy = (cols.min() + cols.max() + 1) / 2 / width, (rows.min() + rows.max() + 1) / 2 / height
    w, h = (cols.max() + 1 - cols.min()) / width, (rows.max() + 1 - rows.min()) / height
    label = tmp_path / "yolo" / "labels" / "train" / "rotated.txt"
    label.parent.mkdir(parents=True)
    label.write_text(f"0 {cx} {cy} {w} {h}\n")
    (record,), report = _read(tmp_path / "yolo")
    decoded = decode_rgb(np.frombuffer(path.read_bytes(), dtype=np.uint8))
    assert (record.height, record.width) == decoded.shape[:2] == (60, 100)
    np.testing.assert_allclose(record.boxes, [[10, 60, 20, 90]], atol=1e-6)
    assert report.total() == 0


def test_names_from_an_id_mapping_or_classes_txt_and_roboflow_layout(tmp_path: Path) -> None:
    root = tmp_path / "rf"
    _image(root / "train" / "images" / "a.jpg")
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.4 0.4\n")
    (root / "classes.txt").write_text("dog\ncat\n")
    records, _ = _read(root)
    assert records[0].labels.tolist() == [1, 2]  # mapped by name: id 1 = cat = label 1, id 0 = dog = label 2
    (root / "data.yaml").write_text("train: train/images\nnames: {1: cat, 0: dog}\n")
    assert yolo_class_names(root) == ["dog", "cat"]
    (root / "data.yaml").write_text("names: {1: cat, 2: dog}\n")
    with pytest.raises(AnnotationError, match="ids 0..1"):
        yolo_class_names(root)
    assert label_folder(Path("d/images/x/images/train")) == Path("d/images/x/labels/train")


# ---- the four formats give the same records -----------------------------------------------------------------

def _rows(config) -> dict[str, tuple]:
    """{sha256 of the image bytes: (height-free sorted annotation rows)} of a converted eval MindRecord."""
    shard = ensure_mindrecord(config, for_training=False)
    rows = {}
    for row in ds.MindDataset(str(shard), columns_list=["image", "annotation"], shuffle=False).create_dict_iterator(
            output_numpy=True):
        key = hashlib.sha256(row["image"].tobytes()).hexdigest()
        rows[key] = tuple(sorted(map(tuple, row["annotation"].reshape(-1, 5).tolist())))
    return rows


def _same_content_in_every_format(records, classes, data_path: Path) -> None:
    overrides = write_all_formats(records, classes, data_path)
    contents = {kind: _rows(load_config(CONFIG, values)) for kind, values in overrides.items()}
    assert len(contents["coco"]) == len([r for r in records])
    assert contents["coco"] == contents["voc"] == contents["yolo"]
    truths = {kind: json.loads((mindrecord_folder(load_config(CONFIG, values)) / GROUND_TRUTH_JSON).read_text())
              for kind, values in overrides.items()}
    counts = {kind: (len(truth["images"]), len(truth["annotations"])) for kind, truth in truths.items()}
    assert counts["coco"] == counts["voc"] == counts["yolo"]


def test_coco_voc_and_yolo_give_the_same_mindrecord_on_demo_data(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "demo", 10, 2, image_size=64, min_size=10, max_size=30)
    records = read_coco(root / "annotations" / "instances_train2017.json", root / "train2017", DEMO_CLASSES,
                        ConversionReport())
    _same_content_in_every_format(records, DEMO_CLASSES, tmp_path / "formats")


@pytest.mark.slow
def test_coco128_as_coco_voc_and_yolo_gives_the_same_mindrecord(coco128_root: Path, tmp_path: Path) -> None:
    classes = load_config(CONFIG).classes
    report = ConversionReport()
    records = read_coco(coco128_root / "annotations" / "instances_train2017.json", coco128_root / "train2017",
                        classes, report)
    _same_content_in_every_format(records, classes, tmp_path / "formats")


# ---- classes from the data -----------------------------------------------------------------------------------

def test_classes_from_the_data_for_coco_yolo_and_voc(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "demo", 4, 2, image_size=64, min_size=10, max_size=30,
                                 layouts=("coco", "voc", "txt"))
    coco = load_config(CONFIG, {"data_path": str(root), "coco_root": ".", "classes": []})
    assert resolve_classes(coco) == list(DEMO_CLASSES) and coco.num_classes == len(DEMO_CLASSES)
    voc = load_config(CONFIG, {"data_path": str(root), "dataset": "voc", "voc_root": "voc", "classes": []})
    assert resolve_classes(voc)[0] == "background" and set(voc.classes[1:]) <= set(DEMO_CLASSES[1:])
    yolo = _yolo_set(tmp_path / "yolo", {"a.jpg": "0 0.5 0.5 0.2 0.2"}, names="names: [cat, dog, bird]\n")
    config = load_config(CONFIG, {"data_path": str(tmp_path), "dataset": "yolo", "classes": []})
    assert resolve_classes(config) == ["background", "cat", "dog", "bird"] and config.num_classes == 4
    assert yolo.is_dir()


def test_txt_list_cannot_name_its_classes(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "demo", 4, 2, image_size=64, min_size=10, max_size=30, layouts=("txt",))
    config = load_config(CONFIG, {"data_path": str(root), "dataset": "other", "classes": [],
                                  "image_dir": "txt", "anno_path": "txt/train.txt"})
    assert (root / "txt" / "train.txt").is_file()
    with pytest.raises(UsageError, match=r"set classes to \['background'"):
        resolve_classes(config)


def test_a_config_class_list_that_disagrees_with_the_data_names_the_differences(tmp_path: Path) -> None:
    _yolo_set(tmp_path / "yolo", {"a.jpg": "0 0.5 0.5 0.2 0.2"})
    typo = load_config(CONFIG, {"data_path": str(tmp_path), "dataset": "yolo", "classes": ["background", "cat", "dgo"],
                                "num_classes": 3})
    with pytest.raises(UsageError, match=r"\['dgo'\] are not in the data, \['dog'\] are not in classes"):
        read_split(typo, for_training=True)
    subset = load_config(CONFIG, {"data_path": str(tmp_path), "dataset": "yolo", "classes": ["background", "cat"],
                                  "num_classes": 2})
    records, _ = read_split(subset, for_training=True)  # training on a subset is legitimate
    assert records[0].labels.tolist() == [1]


# ---- --val_fraction -----------------------------------------------------------------------------------------

def test_val_fraction_split_is_deterministic_disjoint_and_stable_when_images_are_added(tmp_path: Path) -> None:
    labels = {f"img{i:03d}.jpg": "0 0.5 0.5 0.2 0.2" for i in range(40)}
    _yolo_set(tmp_path / "yolo", labels)
    config = load_config(CONFIG, {"data_path": str(tmp_path), "dataset": "yolo", "classes": CLASSES,
                                  "num_classes": 3, "val_fraction": 0.25})
    train = {r.image_path.name for r in read_split(config, True)[0]}
    val = {r.image_path.name for r in read_split(config, False)[0]}
    assert train.isdisjoint(val) and len(train | val) == 40 and 4 <= len(val) <= 18
    assert val == {name for name in labels if in_validation_split(name, 0.25)}
    _yolo_set(tmp_path / "yolo", {f"new{i}.jpg": "1 0.5 0.5 0.2 0.2" for i in range(10)})
    assert val <= {r.image_path.name for r in read_split(config, False)[0]}
    assert data_source(config, False).fingerprint(CLASSES)["val_fraction"] == 0.25
    assert data_source(load_config(CONFIG, {"val_fraction": 0.0}), True).val_fraction == 0


def test_missing_yolo_val_folder_suggests_val_fraction(tmp_path: Path) -> None:
    _yolo_set(tmp_path / "yolo", {"a.jpg": "0 0.5 0.5 0.2 0.2"})
    config = load_config(CONFIG, {"data_path": str(tmp_path), "dataset": "yolo", "classes": CLASSES, "num_classes": 3})
    with pytest.raises(FileNotFoundError, match="--val_fraction"):
        read_split(config, for_training=False)


# ---- bad input: VOC, image modes, paths ---------------------------------------------------------------------

def _voc_xml(folder: Path, name: str, body: str) -> None:
    (folder / f"{Path(name).stem}.xml").write_text(f"<annotation><filename>{name}</filename>{body}</annotation>")


def test_voc_without_size_with_difficult_and_fractional_coordinates(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    _image(folder / "a.jpg", 40, 30)
    _voc_xml(folder, "a.jpg", "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>1.5</xmin>"
                              "<ymin>2</ymin><xmax>20.5</xmax><ymax>12</ymax></bndbox></object>")
    report = ConversionReport()
    (record,) = read_voc(folder, CLASSES, report)
    assert (record.height, record.width) == (30, 40)  # no <size>: the file's header
    np.testing.assert_allclose(record.boxes, [[1, 0.5, 11, 19.5]])
    assert report.counts[DIFFICULT] == 1 and report.examples[DIFFICULT] == ["a.xml: cat"]


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK"])
def test_image_modes_decode_to_three_channel_uint8(tmp_path: Path, mode: str) -> None:
    """Grey, grey+alpha, RGBA, palette and 16-bit PNGs and a CMYK JPEG: the pipeline's decoder gives HxWx3 uint8."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    image = rgb.convert("I").convert("I;16") if mode == "I;16" else rgb.convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    decoded = decode_rgb(np.frombuffer(path.read_bytes(), dtype=np.uint8))
    assert decoded.shape == (30, 40, 3) and decoded.dtype == np.uint8


def test_unicode_and_spaces_in_paths_convert(tmp_path: Path) -> None:
    root = tmp_path / "mes données" / "jeu yolo"
    _yolo_set(root, {"chat noir é.jpg": "0 0.5 0.5 0.2 0.2", "狗 1.png": "1 0.5 0.5 0.4 0.4"})
    config = load_config(CONFIG, {"data_path": str(tmp_path / "mes données"), "dataset": "yolo",
                                  "yolo_root": "jeu yolo", "yolo_val_split": "images/train", "classes": CLASSES,
                                  "num_classes": 3, "mindrecord_dir": "mr ü"})
    shard = ensure_mindrecord(config, for_training=False)
    rows = list(ds.MindDataset(str(shard), columns_list=["img_id", "annotation"], shuffle=False)
                .create_dict_iterator(output_numpy=True))
    assert sorted(int(row["img_id"][0]) for row in rows) == [1, 2]
    assert shard.name.startswith(EVAL_PREFIX)
