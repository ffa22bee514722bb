"""Annotation readers on generated COCO / VOC / txt sets with injected errors, and on real COCO."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from src.data.annotations import (CLIPPED, CORRUPT_IMAGE, CROWD, DROPPED, NO_BOX, UNKNOWN_CLASS, ConversionReport,
                                  clean_boxes, records_to_coco_dict)
from src.data.coco_reader import read_coco
from src.data.txt_reader import read_txt
from src.data.voc_reader import read_voc
from src.data.demo_data import DEMO_CLASSES, generate_demo_dataset

SIZE = 64
NUM_TRAIN = 12


@pytest.fixture(scope="module")
def broken_demo(tmp_path_factory) -> Path:
    """12 train images + a corrupt .jpg (id 13) + an image without objects (id 14), in all layouts."""
    return generate_demo_dataset(tmp_path_factory.mktemp("broken") / "demo", NUM_TRAIN, 3, image_size=SIZE,
                                 min_size=10, max_size=30, layouts=("coco", "voc", "txt"), inject_errors=True)


def _read_coco(root: Path, report: ConversionReport):
    return read_coco(root / "annotations" / "instances_train2017.json", root / "train2017", DEMO_CLASSES, report)


def _problems(report: ConversionReport) -> dict:
    """The kinds that occurred, with their counts (every other kind is 0)."""
    return {kind: count for kind, count in report.counts.items() if count}


def _by_id(records):
    return {r.img_id: r for r in records}


def test_coco_reader_counts_each_injected_problem(broken_demo):
    report = ConversionReport()
    records = _read_coco(broken_demo, report)
    assert [r.img_id for r in records] == list(range(1, NUM_TRAIN + 3))
    assert _problems(report) == {CLIPPED: 1, DROPPED: 1, UNKNOWN_CLASS: 1, CROWD: 1, NO_BOX: 1}
    assert report.examples[CLIPPED] == report.examples[CROWD] == ["000001.jpg"]
    assert report.examples[NO_BOX] == ["000014.jpg"]
    first = records[0]
    clipped = first.boxes[np.isclose(first.boxes[:, 1], SIZE - 10)]
    np.testing.assert_allclose(clipped, [[5, SIZE - 10, 25, SIZE]])  # [y, x, y+h, x+w] cut at the right edge
    assert first.boxes.dtype == np.float32 and first.labels.dtype == np.int32
    assert records[-1].boxes.shape == (0, 4) and records[-1].labels.shape == (0,)
    # the corrupt file is not the reader's business (no decoding here): the writer catches it
    assert records[-2].image_path == broken_demo / "train2017" / "000013.jpg" and len(records[-2].labels) == 1
    summary = report.summary()
    assert "crowd" in summary and "000014.jpg" in summary and summary.count("\n") == 5


def test_voc_reader_gives_the_coco_boxes_back(broken_demo):
    coco = _by_id(_read_coco(broken_demo, ConversionReport()))
    report = ConversionReport()
    voc = _by_id(read_voc(broken_demo / "voc" / "train", DEMO_CLASSES, report))
    assert voc.keys() == coco.keys()  # numeric, unique stems -> ids = int(stem)
    for img_id, record in voc.items():
        np.testing.assert_array_equal(record.boxes, coco[img_id].boxes)
        np.testing.assert_array_equal(record.labels, coco[img_id].labels)
        assert (record.height, record.width) == (SIZE, SIZE)
    assert _problems(report) == {CLIPPED: 1, DROPPED: 1, UNKNOWN_CLASS: 1, NO_BOX: 1}


def test_txt_reader_reads_x_first_and_skips_the_corrupt_image(broken_demo):
    coco = _by_id(_read_coco(broken_demo, ConversionReport()))
    report = ConversionReport()
    records = read_txt(broken_demo / "txt" / "train.txt", broken_demo / "txt", DEMO_CLASSES, report)
    # ids are 0-based line indices; line 12 (the corrupt image) is skipped
    assert [r.img_id for r in records] == [i for i in range(NUM_TRAIN + 2) if i != NUM_TRAIN]
    for record in records:
        np.testing.assert_array_equal(record.boxes, coco[record.img_id + 1].boxes)
        np.testing.assert_array_equal(record.labels, coco[record.img_id + 1].labels)
    assert _problems(report) == {CLIPPED: 1, DROPPED: 1, UNKNOWN_CLASS: 1, CORRUPT_IMAGE: 1, NO_BOX: 1}
    assert report.examples[CORRUPT_IMAGE] == ["train/000013.jpg"]


def test_txt_columns_are_x_first_on_a_non_square_image(tmp_path):
    cv2.imwrite(str(tmp_path / "wide.jpg"), np.full((60, 120, 3), 128, np.uint8))  # 60 high, 120 wide
    (tmp_path / "list.txt").write_text("wide.jpg 70,10,110,50,2 5,5,20,20,5 1,1,9,9,0\n\n")
    report = ConversionReport()
    [record] = read_txt(tmp_path / "list.txt", tmp_path, DEMO_CLASSES, report)
    assert (record.height, record.width) == (60, 120)
    # read y-first, x=70..110 would be rows beyond the 60-pixel height and get clipped
    np.testing.assert_array_equal(record.boxes, [[10, 70, 50, 110]])
    assert record.labels.tolist() == [2]
    assert report.counts[CLIPPED] == 0 and report.counts[UNKNOWN_CLASS] == 2  # class 5 and class 0


def test_txt_format_mistakes_name_the_file_and_line(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "list.txt").write_text("a.jpg 1,1,5,5,1\na.jpg 1,2,3\n")
    with pytest.raises(ValueError, match=r"list.txt:2: box '1,2,3' is not 'x1,y1,x2,y2,class_index'"):
        read_txt(tmp_path / "list.txt", tmp_path, DEMO_CLASSES, ConversionReport())


def test_voc_sub_folders_missing_size_and_colliding_stems(broken_demo, tmp_path):
    """Annotations/ + JPEGImages/ layout; stems 1 and 001 would collide as ints -> running index."""
    folder = tmp_path / "voc"
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir()
    source = broken_demo / "voc" / "train"
    for stem, new_stem in (("000002", "001"), ("000003", "1"), ("000004", "b")):
        shutil.copy(source / f"{stem}.jpg", folder / "JPEGImages" / f"{new_stem}.jpg")
        xml = (source / f"{stem}.xml").read_text().replace(f"{stem}.jpg", f"{new_stem}.jpg")
        if new_stem == "b":  # no <size>: the reader must take it from the image header
            start, end = xml.index("<size>"), xml.index("</size>") + len("</size>")
            xml = xml[:start] + xml[end:]
        (folder / "Annotations" / f"{new_stem}.xml").write_text(xml)
    report = ConversionReport()
    records = read_voc(folder, DEMO_CLASSES, report)
    assert [(r.img_id, r.image_path.name) for r in records] == [(0, "001.jpg"), (1, "1.jpg"), (2, "b.jpg")]
    assert all(r.image_path.parent == folder / "JPEGImages" for r in records)
    assert (records[2].height, records[2].width) == (SIZE, SIZE)
    coco = _by_id(_read_coco(broken_demo, ConversionReport()))
    np.testing.assert_array_equal(records[0].boxes, coco[2].boxes)
    assert report.total() == 0


def test_voc_without_xml_or_with_broken_xml_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*.xml annotation files"):
        read_voc(tmp_path, DEMO_CLASSES, ConversionReport())
    (tmp_path / "bad.xml").write_text("<annotation><filename>x.jpg</filename>")
    with pytest.raises(ValueError, match="cannot parse VOC annotation .*bad.xml"):
        read_voc(tmp_path, DEMO_CLASSES, ConversionReport())


def test_clean_boxes_clips_and_drops_by_whole_pixels():
    report = ConversionReport()
    boxes, labels = clean_boxes([[-5, 2, 10, 12], [3, 10.1, 9, 10.3], [0, 0, 4, 4], [2, 2, 2, 9]],
                                [1, 2, 3, 4], height=8, width=16, example="x.jpg", report=report)
    np.testing.assert_array_equal(boxes, [[0, 2, 8, 12], [0, 0, 4, 4]])
    assert labels.tolist() == [1, 3]
    assert report.counts[CLIPPED] == 1 and report.counts[DROPPED] == 2


def test_report_keeps_five_examples_and_merges():
    report, other = ConversionReport(), ConversionReport()
    for i in range(7):
        report.add(DROPPED, f"{i}.jpg")
    report.add(DROPPED, "0.jpg")
    other.add(DROPPED, "z.jpg", count=3)
    other.add(CORRUPT_IMAGE, "c.jpg")
    report.merge(other)
    assert report.counts[DROPPED] == 11 and report.counts[CORRUPT_IMAGE] == 1
    assert report.examples[DROPPED] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert report.examples[CORRUPT_IMAGE] == ["c.jpg"]
    assert ConversionReport().summary() == "Annotation check: no problems found."
    with pytest.raises(ValueError, match="unknown problem kind"):
        report.add("typo", "a.jpg")


def test_converted_ground_truth_evaluates_perfectly_against_itself(broken_demo, tmp_path):
    records = read_voc(broken_demo / "voc" / "train", DEMO_CLASSES, ConversionReport())
    data = records_to_coco_dict(records, DEMO_CLASSES)
    assert [c["name"] for c in data["categories"]] == list(DEMO_CLASSES[1:])
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    original = json.loads((broken_demo / "annotations" / "instances_train2017.json").read_text())
    clean_bboxes = sorted(a["bbox"] for a in original["annotations"] if a["image_id"] not in (1, 13))
    assert sorted(a["bbox"] for a in data["annotations"] if a["image_id"] not in (1, 13)) == clean_bboxes
    (tmp_path / "gt.json").write_text(json.dumps(data))
    gt = COCO(str(tmp_path / "gt.json"))
    detections = gt.loadRes([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                              "score": 1.0} for a in data["annotations"]])
    evaluator = COCOeval(gt, detections, iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_coco128_crowd_boxes_and_every_image(coco128_root):
    anno = coco128_root / "annotations" / "instances_train2017.json"
    categories = json.loads(anno.read_text())["categories"]
    classes = ["background"] + [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    report = ConversionReport()
    records = read_coco(anno, coco128_root / "train2017", classes, report)
    assert len(records) == 128 and all(r.image_path.is_file() for r in records)
    assert report.counts[CROWD] == 10 and report.counts[UNKNOWN_CLASS] == 0
    assert report.counts[NO_BOX] == 2
    kept = sum(len(r.labels) for r in records)
    assert kept + report.counts[CROWD] + report.counts[DROPPED] == 939
    # category ids are non-contiguous (1..90); labels are indices into classes (1..80)
    assert max(r.labels.max() for r in records if len(r.labels)) <= 80
    person = classes.index("person")
    assert any(person in r.labels for r in records)
