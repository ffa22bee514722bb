"""Datasets are checked for what silently corrupts labels, and evaluation scores the same cleaned ground truth.

Small COCO / VOC / txt sets are written to tmp_path with one defect each; the readers and the MindRecord
writer must count each as a named skip (file, image id, line), and evaluation must score the ground truth
the conversion kept: a box outside the image is not a miss, a clean json scores exactly as given.
"""
import json
from pathlib import Path

import mindspore.dataset as ds
import numpy as np
import pytest
from PIL import Image

from src.data.annotations import (BAD_IMAGE_ENTRY, BAD_NUMBER, CHANGES_KEY, CLIPPED, CROWD, DROPPED, DUPLICATE_FILE,
                                  DUPLICATE_ID, EXIF_ROTATED, NO_BOX, SIZE_MISMATCH, UNKNOWN_CATEGORY, UNKNOWN_IMAGE_ID,
                                  AnnotationError, ConversionReport)
from src.data.coco_reader import coco_ground_truth, read_coco
from src.data.txt_reader import read_txt
from src.data.voc_reader import read_voc
from src.data.demo_data import DEMO_CLASSES, generate_demo_dataset
from src.data.mindrecord import EVAL_PREFIX, GROUND_TRUTH_JSON, ensure_mindrecord, ground_truth_json, write_mindrecord
from src.eval.coco import coco_evaluate
from src.eval.reports import format_report
from src.eval.validation import evaluate_predictor_on_validation
from src.model_utils.config import load_config
from src.model_utils.errors import InputFileError

CONFIG = "config/ssd300_config_cpu.yaml"
NUM_BOXES = 1917  # ssd300's default boxes: the fake network's output size
CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]


def _problems(report: ConversionReport) -> dict:
    """The kinds that occurred, with their counts."""
    return {kind: count for kind, count in report.counts.items() if count}


def _image(path: Path, height: int = 48, width: int = 64, orientation: int | None = None) -> None:
    """A real JPEG of that stored size, with an EXIF orientation tag when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(path.name)).integers(0, 255, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if orientation is None:
        image.save(path, quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(path, quality=90, exif=exif.tobytes())


def _img(img_id, file_name, width=64, height=48) -> dict:
    return {"id": img_id, "file_name": file_name, "width": width, "height": height}


def _ann(ann_id, image_id, bbox, category_id=1, area=100.0, **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": area,
            "iscrowd": 0, **extra}


def _write_coco(folder: Path, images: list, annotations: list, split: str = "val2017") -> Path:
    """instances_<split>.json (NaN/Infinity written as json's non-standard tokens, as Python's json reads them)."""
    path = folder / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def test_coco_json_defects_are_counted_skips_naming_file_and_image_id(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"):
        _image(tmp_path / "val2017" / name)
    images = [_img(1, "a.jpg"), _img(2, "b.jpg"), _img(2, "c.jpg"),  # id 2 twice
              _img(3, "d.jpg"), _img(4, "./d.jpg"),  # one file, two entries
              _img(5, "e.jpg", width="64"), _img(6, "f.jpg", height=None), _img(True, "g.jpg"),  # bad fields
              _img(7, "h.jpg", height=float("nan"))]
    annotations = [_ann(1, 1, [4, 4, 20, 20]),
                   _ann(2, 1, ["4", 4, 20, 20]), _ann(3, 1, [4, None, 20, 20]), _ann(4, 1, [4, 4, True, 20]),
                   _ann(5, 1, [4, 4, float("nan"), 20]), _ann(6, 1, [4, 4, 20, float("inf")]),
                   _ann(7, 1, [4, 4, 20, 20], area=float("nan")), _ann(8, 1, [4, 4, 20]),
                   _ann(9, 99, [4, 4, 20, 20]),  # no image 99
                   _ann(10, 1, [4, 4, 20, 20], category_id=7),  # no category 7
                   _ann(11, 2, [4, 4, 20, 20]), _ann(12, 3, [4, 4, 20, 20])]  # of skipped images: not counted again
    anno = _write_coco(tmp_path, images, annotations)
    report = ConversionReport()
    records = read_coco(anno, tmp_path / "val2017", DEMO_CLASSES, report)
    assert [r.img_id for r in records] == [1]
    np.testing.assert_array_equal(records[0].boxes, [[4, 4, 24, 24]])
    assert _problems(report) == {DUPLICATE_ID: 2, DUPLICATE_FILE: 2, BAD_IMAGE_ENTRY: 4, BAD_NUMBER: 7,
                                 UNKNOWN_IMAGE_ID: 1, UNKNOWN_CATEGORY: 1}
    assert report.examples[DUPLICATE_ID] == ["b.jpg (image id 2)", "c.jpg (image id 2)"]
    assert report.examples[DUPLICATE_FILE] == ["d.jpg (image ids 3 and 4)", "./d.jpg (image ids 3 and 4)"]
    assert report.examples[BAD_IMAGE_ENTRY][0] == "instances_val2017.json: image 'e.jpg' (id 5, width '64', height 48)"
    assert report.examples[BAD_NUMBER][0] == "a.jpg (image id 1, annotation id 2): bbox ['4', 4, 20, 20], area 100.0"
    assert report.examples[UNKNOWN_IMAGE_ID] == ["instances_val2017.json: annotation id 9 (image id 99)"]
    assert report.examples[UNKNOWN_CATEGORY] == ["a.jpg (image id 1, annotation id 10): category_id 7"]
    summary = report.summary()
    assert "image id listed more than once" in summary and "not finite numbers" in summary


def test_a_coco_file_that_cannot_be_used_is_one_clear_error(tmp_path):
    anno = _write_coco(tmp_path, [_img(1, "a.jpg")], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}])
    with pytest.raises(AnnotationError, match=r"instances_val2017.json: annotations\[0\] lacks 'area'"):
        read_coco(anno, tmp_path, DEMO_CLASSES, ConversionReport())
    anno.write_text('{"images": [')
    with pytest.raises(InputFileError, match=r"instances_val2017.json: cannot read it as json"):
        read_coco(anno, tmp_path, DEMO_CLASSES, ConversionReport())
    anno.write_text('{"images": [], "annotations": []}')
    with pytest.raises(AnnotationError, match="has no 'categories' list"):
        read_coco(anno, tmp_path, DEMO_CLASSES, ConversionReport())


def _read_rows(path: Path) -> list[int]:
    data = ds.MindDataset(str(path), columns_list=["img_id"], shuffle=False)
    return sorted(int(row["img_id"][0]) for row in data.create_dict_iterator(output_numpy=True, num_epochs=1))


def _size_defects(root: Path) -> Path:
    """val2017 with a good image (1), a json size that is not the file's (2), an EXIF-rotated one (3)."""
    _image(root / "val2017" / "good.jpg")
    _image(root / "val2017" / "wide.jpg", width=80)  # the json says 64 wide
    _image(root / "val2017" / "turned.jpg", height=48, width=64, orientation=6)  # shown 48 wide, 64 high
    return _write_coco(root, [_img(1, "good.jpg"), _img(2, "wide.jpg"), _img(3, "turned.jpg", width=48, height=64)],
                       [_ann(1, 1, [4, 4, 20, 20]), _ann(2, 2, [4, 4, 20, 20]), _ann(3, 3, [4, 4, 20, 20])])


def test_annotated_size_that_is_not_the_files_skips_the_image_in_the_writers_pass(tmp_path):
    anno = _size_defects(tmp_path)
    report = ConversionReport()
    records = read_coco(anno, tmp_path / "val2017", DEMO_CLASSES, report)
    assert [r.img_id for r in records] == [1, 2, 3] and report.total() == 0  # the reader opens no image
    path = write_mindrecord(records, tmp_path / "mr", EVAL_PREFIX, 2, for_training=False, report=report)
    assert _read_rows(path) == [1]
    assert _problems(report) == {SIZE_MISMATCH: 1, EXIF_ROTATED: 1}
    assert report.examples[SIZE_MISMATCH] == ["wide.jpg (image id 2): annotated 64x48, file 80x48"]
    assert report.examples[EXIF_ROTATED] == ["turned.jpg (image id 3): annotated 48x64, file 64x48, EXIF orientation 6"]
    assert report.skipped_images == {2, 3}


def test_the_eval_ground_truth_leaves_out_the_images_the_writer_refused(tmp_path):
    _size_defects(tmp_path / "coco")
    config = _config(tmp_path)
    ensure_mindrecord(config, for_training=False)
    gt = json.loads(ground_truth_json(config).read_text())
    assert [image["id"] for image in gt["images"]] == [1] and [a["id"] for a in gt["annotations"]] == [1]
    assert gt[CHANGES_KEY]["images_left_out"] == 2 and "EXIF orientation 6" in gt[CHANGES_KEY]["annotation_check"]
    (tmp_path / "mr" / GROUND_TRUTH_JSON).unlink()  # rebuilt from the source: the same images are left out
    assert [image["id"] for image in json.loads(ground_truth_json(config).read_text())["images"]] == [1]


def _voc_xml(folder: Path, stem: str, file_name: str, width="64", height="48",
             boxes=(("circle", "5", "5", "20", "20"),)):
    objects = "".join(f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                      f"<ymax>{y2}</ymax></bndbox></object>" for name, x1, y1, x2, y2 in boxes)
    size = "" if width is None else f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.xml").write_text(f"<annotation><filename>{file_name}</filename>{size}{objects}</annotation>")


def test_voc_defects_are_counted_skips(tmp_path):
    folder = tmp_path / "eval"
    for name in ("1.jpg", "2.jpg", "3.jpg", "4.jpg"):
        _image(folder / "JPEGImages" / name)
    notes = folder / "Annotations"
    _voc_xml(notes, "1", "1.jpg", boxes=(("circle", "5", "5", "20", "20"), ("square", "ten", "5", "20", "20"),
                                         ("circle", "5", "nan", "20", "20"), ("circle", "5", "5", "inf", "20")))
    _voc_xml(notes, "2", "2.jpg", width="abc")
    _voc_xml(notes, "3", "3.jpg")
    _voc_xml(notes, "5", "3.jpg")  # a second xml for 3.jpg: which one is right is unknown
    _voc_xml(notes, "4", "4.jpg", width="100", height="100")  # not the file's size: the writer refuses it
    report = ConversionReport()
    records = read_voc(folder, DEMO_CLASSES, report)
    assert [r.image_path.name for r in records] == ["1.jpg", "4.jpg"]  # ids 0 and 3: stem 3 repeats, so running ids
    np.testing.assert_array_equal(records[0].boxes, [[4, 4, 19, 19]])
    assert _problems(report) == {BAD_NUMBER: 3, BAD_IMAGE_ENTRY: 1, DUPLICATE_FILE: 2}
    assert report.examples[BAD_NUMBER][0] == "1.xml: xmin 'ten', ymin '5', xmax '20', ymax '20'"
    assert report.examples[BAD_IMAGE_ENTRY] == ["2.xml: <size> width 'abc', height '48'"]
    assert report.examples[DUPLICATE_FILE] == ["3.xml -> 3.jpg", "5.xml -> 3.jpg"]
    path = write_mindrecord(records, tmp_path / "mr", EVAL_PREFIX, 2, for_training=False, report=report)
    assert _read_rows(path) == [0] and report.examples[SIZE_MISMATCH] == ["4.jpg (image id 3): annotated 100x100, "
                                                                         "file 64x48"]


def test_txt_defects_name_the_file_and_line(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _image(tmp_path / "img" / name)
    (tmp_path / "list.txt").write_text("a.jpg 4,4,20,20,1\n"
                                       "b.jpg 4,4,20,20,1 nan,4,20,20,1 4,4,inf,20,2\n"
                                       "c.jpg 4,4,20,20,1\n"
                                       "sub/../a.jpg 4,4,30,30,2\n")  # a.jpg again, spelled otherwise
    report = ConversionReport()
    records = read_txt(tmp_path / "list.txt", tmp_path / "img", DEMO_CLASSES, report)
    assert [r.img_id for r in records] == [1, 2]
    np.testing.assert_array_equal(records[0].boxes, [[4, 4, 20, 20]])
    assert _problems(report) == {BAD_NUMBER: 2, DUPLICATE_FILE: 2}
    assert report.examples[BAD_NUMBER] == ["list.txt:2 b.jpg: nan,4,20,20,1", "list.txt:2 b.jpg: 4,4,inf,20,2"]
    assert report.examples[DUPLICATE_FILE] == ["list.txt:1 a.jpg (lines 1 and 4)", "list.txt:4 sub/../a.jpg "
                                                                                  "(lines 1 and 4)"]


# ---- evaluation scores the cleaned ground truth -------------------------------------------------

def _config(root: Path, **overrides):
    values = {"data_path": str(root), "coco_root": "coco", "mindrecord_dir": "mr", "classes": list(DEMO_CLASSES),
              "num_classes": len(DEMO_CLASSES), "eval_batch_size": 2, **overrides}
    return load_config(CONFIG, overrides=values)


def _fixed_predictor(boxes_by_image: dict[int, list], order: list[int], size: tuple[int, int]):
    """Fake network outputs: image k of the dataset order gets boxes_by_image[id] (pixel xywh, class)."""
    queue = list(order)
    height, width = size

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.zeros((len(images), NUM_BOXES, 4), np.float32)
        scores = np.full((len(images), NUM_BOXES, len(DEMO_CLASSES)), 0.01, np.float32)
        for b in range(len(images)):
            for slot, ((x, y, w, h), label) in enumerate(boxes_by_image[queue.pop(0)]):
                boxes[b, slot] = [y / height, x / width, (y + h) / height, (x + w) / width]
                scores[b, slot, label] = 0.9
        return boxes, scores

    return predict


def _dataset_order(config) -> list[int]:
    from src.data.dataset import create_ssd_dataset

    mindrecord = ensure_mindrecord(config, for_training=False)
    rows = create_ssd_dataset(mindrecord, config, 1, is_training=False).create_dict_iterator(output_numpy=True,
                                                                                             num_epochs=1)
    return [int(row["img_id"].reshape(-1)[0]) for row in rows]


def test_a_box_outside_the_image_is_not_scored_and_the_report_says_so(tmp_path):
    """The eval.py flow: eval MindRecord, pipeline, cleaned ground truth, COCOeval, report."""
    for name in ("1.jpg", "2.jpg"):
        _image(tmp_path / "coco" / "val2017" / name, height=64, width=64)
    anno = _write_coco(tmp_path / "coco", [_img(1, "1.jpg", 64, 64), _img(2, "2.jpg", 64, 64)],
                       [_ann(1, 1, [10, 10, 20, 20], area=400.0), _ann(2, 1, [100, 100, 10, 10]),  # wholly outside
                        _ann(3, 2, [8, 8, 16, 16], 2, area=256.0), _ann(4, 2, [50, 40, 30, 10], 2, area=300.0)])
    config = _config(tmp_path)
    detections = {1: [((10, 10, 20, 20), 1)], 2: [((8, 8, 16, 16), 2), ((50, 40, 14, 10), 2)]}  # annotation 4 clipped
    result = evaluate_predictor_on_validation(_fixed_predictor(detections, _dataset_order(config), (64, 64)), config,
                                              tmp_path / "detections.json", 2)
    assert result.map == pytest.approx(1.0)
    assert result.ground_truth_note.startswith("ground truth: 1 boxes dropped, 1 clipped from instances_val2017.json;")
    assert result.ground_truth_note in format_report(result)
    gt = json.loads(ground_truth_json(config).read_text())
    assert [a["id"] for a in gt["annotations"]] == [1, 3, 4]
    assert gt["annotations"][2]["bbox"] == [50, 40, 14, 10] and gt["annotations"][2]["area"] == 140
    raw = coco_evaluate(anno, tmp_path / "detections.json", classes=config.classes)  # the json as given
    assert raw.map < 0.75 and raw.ground_truth_note == ""


def _scored_detections(gt: dict, path: Path) -> Path:
    """Detections near every ground-truth box with varied scores, plus a false positive per image."""
    rng = np.random.default_rng(5)
    detections = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        jitter = rng.uniform(-0.15, 0.15, 4) * [w, h, w, h]
        detections.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                           "bbox": [float(v) for v in np.add([x, y, w, h], jitter)], "score": float(rng.uniform())})
    for image in gt["images"]:
        detections.append({"image_id": image["id"], "category_id": gt["categories"][0]["id"],
                           "bbox": [1.0, 1.0, 9.0, 9.0], "score": float(rng.uniform())})
    path.write_text(json.dumps(detections))
    return path


def _assert_same_scores(raw_json: Path, cleaned_json: Path, results: Path) -> None:
    raw, cleaned = coco_evaluate(raw_json, results), coco_evaluate(cleaned_json, results)
    assert 0.05 < raw.map < 0.95  # a real, non-trivial score
    np.testing.assert_array_equal(cleaned.stats, raw.stats)
    assert cleaned.summary_lines == raw.summary_lines
    assert [(c.name, c.category_id, c.num_gt) for c in cleaned.per_class] == [(c.name, c.category_id, c.num_gt)
                                                                               for c in raw.per_class]
    np.testing.assert_array_equal([(c.ap, c.ap50) for c in cleaned.per_class], [(c.ap, c.ap50) for c in raw.per_class])
    assert "as given (nothing dropped, clipped or left out)" in cleaned.ground_truth_note


def test_a_clean_demo_set_scores_exactly_as_its_json(tmp_path):
    root = generate_demo_dataset(tmp_path / "coco", 2, 12, seed=4, image_size=96)
    config = _config(tmp_path)
    cleaned = ground_truth_json(config)
    raw_json = root / "annotations" / "instances_val2017.json"
    raw = json.loads(raw_json.read_text())
    assert cleaned != raw_json and json.loads(cleaned.read_text())["annotations"] == raw["annotations"]
    _assert_same_scores(raw_json, cleaned, _scored_detections(raw, tmp_path / "detections.json"))


def test_coco128_scores_exactly_as_its_json(coco128_root, tmp_path):
    raw_json = coco128_root / "annotations" / "instances_train2017.json"
    cleaned = coco_ground_truth(raw_json)
    assert {key: cleaned[CHANGES_KEY][key] for key in ("images_left_out", "boxes_left_out", "boxes_dropped",
                                                          "boxes_clipped")} == dict.fromkeys(
        ("images_left_out", "boxes_left_out", "boxes_dropped", "boxes_clipped"), 0)
    cleaned_json = tmp_path / "cleaned.json"
    cleaned_json.write_text(json.dumps(cleaned))
    _assert_same_scores(raw_json, cleaned_json, _scored_detections(cleaned, tmp_path / "detections.json"))


def test_dropped_and_clipped_boxes_of_the_demo_errors_leave_the_evaluation(tmp_path):
    """The demo's injected errors: a zero-width box is dropped, a box over the border clipped, crowd kept."""
    root = generate_demo_dataset(tmp_path / "coco", 3, 3, image_size=64, min_size=10, max_size=30,
                                 inject_errors=True)
    report = ConversionReport()
    read_coco(root / "annotations" / "instances_train2017.json", root / "train2017", DEMO_CLASSES, report)
    assert report.counts[DROPPED] == 1 and report.counts[CLIPPED] == 1 and report.counts[CROWD] == 1
    assert report.counts[NO_BOX] == 1
    gt = coco_ground_truth(root / "annotations" / "instances_train2017.json")
    assert {key: gt[CHANGES_KEY][key] for key in ("boxes_dropped", "boxes_clipped")} == {"boxes_dropped": 1,
                                                                                       "boxes_clipped": 1}
    assert [a["bbox"] for a in gt["annotations"] if a["image_id"] == 1 and a["bbox"][0] == 54] == [[54, 5, 10, 20]]
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 1  # crowd regions stay: COCOeval ignores them
