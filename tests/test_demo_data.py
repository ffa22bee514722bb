"""The synthetic shapes set: deterministic, idempotent, and drawn the way its annotations say."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from src.data.annotations import ConversionReport
from src.data.coco_reader import read_coco
from src.data.demo_data import COCO_SHAPE_NAMES, DEMO_CLASSES, MAX_IOU, MAX_STRETCH, generate_demo_dataset
from src.model_utils.config import load_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


@pytest.fixture(scope="module")
def demo128(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "set", num_train=40, num_val=4, image_size=128,
                                 min_objects=1, max_objects=4)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a = generate_demo_dataset(tmp_path / "a", 6, 2, seed=3, image_size=64, layouts=("coco", "voc", "txt"))
    b = generate_demo_dataset(tmp_path / "b", 6, 2, seed=3, image_size=64, layouts=("coco", "voc", "txt"))
    c = generate_demo_dataset(tmp_path / "c", 6, 2, seed=4, image_size=64, layouts=("coco", "voc", "txt"))
    files_a = _files(a)
    assert files_a == _files(b)
    files_c = _files(c)
    assert files_a.keys() == files_c.keys()
    assert files_a["train2017/000001.jpg"] != files_c["train2017/000001.jpg"]


def test_image_depends_on_its_index_not_on_the_split_size(tmp_path):
    small = generate_demo_dataset(tmp_path / "small", 2, 1, image_size=64)
    large = generate_demo_dataset(tmp_path / "large", 5, 3, image_size=64)
    for name in ("train2017/000001.jpg", "train2017/000002.jpg", "val2017/000001.jpg"):
        assert (small / name).read_bytes() == (large / name).read_bytes()


def test_second_call_is_a_no_op_and_new_parameters_regenerate(tmp_path):
    root = generate_demo_dataset(tmp_path / "d", 4, 2, image_size=64)
    image = root / "train2017" / "000001.jpg"
    stamp = image.stat().st_mtime_ns
    generate_demo_dataset(tmp_path / "d", 4, 2, image_size=64)
    assert image.stat().st_mtime_ns == stamp
    generate_demo_dataset(tmp_path / "d", 3, 2, image_size=64)
    assert sorted(p.name for p in (root / "train2017").iterdir()) == ["000001.jpg", "000002.jpg", "000003.jpg"]
    marker = json.loads((root / ".complete").read_text())
    assert marker["num_train"] == 3 and not (root / ".generating").exists()


def test_refuses_to_overwrite_folders_it_did_not_make(tmp_path):
    (tmp_path / "user" / "train2017").mkdir(parents=True)
    (tmp_path / "user" / "train2017" / "mine.jpg").write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="not written by the demo generator"):
        generate_demo_dataset(tmp_path / "user", 2, 1, image_size=64)
    assert (tmp_path / "user" / "train2017" / "mine.jpg").read_bytes() == b"user data"


def test_bad_parameters_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown demo layouts"):
        generate_demo_dataset(tmp_path / "x", 1, 1, layouts=("yolo",))
    with pytest.raises(ValueError, match="at least one train and one val image"):
        generate_demo_dataset(tmp_path / "x", 3, 0)
    with pytest.raises(ValueError, match="min_size"):
        generate_demo_dataset(tmp_path / "x", 1, 1, image_size=64, min_size=50, max_size=40)


def test_coco_json_describes_varied_non_occluding_objects(demo128):
    coco = COCO(str(demo128 / "annotations" / "instances_train2017.json"))
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == list(enumerate(DEMO_CLASSES))[1:]
    assert len(coco.getImgIds()) == 40
    labels, counts, stretches, long_sides = set(), [], [], []
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        assert (info["height"], info["width"]) == (128, 128)
        assert cv2.imread(str(demo128 / "train2017" / info["file_name"])).shape == (128, 128, 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        counts.append(len(anns))
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
            assert ann["area"] == w * h and ann["iscrowd"] == 0
            long_sides.append(max(w, h))
            stretches.append(max(w, h) / min(w, h))
            labels.add(ann["category_id"])
        for a, b in combinations(anns, 2):
            assert _iou(a["bbox"], b["bbox"]) <= MAX_IOU + 1e-6
    assert labels == {1, 2, 3, 4}
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    assert 12 <= min(long_sides) and max(long_sides) <= 64 and max(long_sides) - min(long_sides) > 25
    assert max(stretches) > 1.3 and max(stretches) <= MAX_STRETCH + 0.1


def test_each_shape_stands_out_from_the_background_around_its_box(demo128):
    """The fill colour at a box centre differs clearly from the ring just outside the box."""
    coco = COCO(str(demo128 / "annotations" / "instances_train2017.json"))
    checked = 0
    for img_id in coco.getImgIds():
        image = cv2.imread(str(demo128 / "train2017" / f"{img_id:06d}.jpg")).astype(np.float64)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        for ann in anns:
            x, y, w, h = ann["bbox"]
            ring_box = (x - 3, y - 3, w + 6, h + 6)
            if any(_iou(ring_box, other["bbox"]) > 0 for other in anns if other is not ann):
                continue
            cy, cx = y + h // 2, x + w // 2
            centre = image[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(axis=0)
            y0, y1, x0, x1 = max(0, y - 3), min(128, y + h + 3), max(0, x - 3), min(128, x + w + 3)
            ring = np.ones((y1 - y0, x1 - x0), dtype=bool)
            ring[y - y0:y - y0 + h, x - x0:x - x0 + w] = False
            around = image[y0:y1, x0:x1][ring].mean(axis=0)
            assert np.linalg.norm(centre - around) > 60, (img_id, ann["bbox"])
            checked += 1
    assert checked >= 20


def test_command_line_writes_a_coco_set(tmp_path):
    result = subprocess.run([sys.executable, "-m", "src.data.demo_data", "--root", str(tmp_path / "cli"),
                             "--num_train", "3", "--num_val", "2", "--image_size", "64"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "demo dataset ready" in result.stdout
    data = json.loads((tmp_path / "cli" / "annotations" / "instances_val2017.json").read_text())
    assert [img["file_name"] for img in data["images"]] == ["000001.jpg", "000002.jpg"]
    assert len(list((tmp_path / "cli" / "train2017").glob("*.jpg"))) == 3


def _json(root: Path, split: str = "train2017") -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_coco_names_label_the_same_scenes_for_the_coco_class_list(tmp_path):
    shapes = generate_demo_dataset(tmp_path / "shapes", 6, 2, image_size=64, layouts=("coco", "voc"))
    named = generate_demo_dataset(tmp_path / "named", 6, 2, image_size=64, layouts=("coco", "voc"),
                                  class_names=COCO_SHAPE_NAMES)
    images = [p for p in _files(shapes) if p.endswith(".jpg")]
    assert images and all((shapes / p).read_bytes() == (named / p).read_bytes() for p in images)
    shape_json, named_json = _json(shapes), _json(named)
    assert [c["name"] for c in named_json["categories"]] == list(COCO_SHAPE_NAMES)
    assert named_json["annotations"] == shape_json["annotations"]  # same boxes, same category ids 1..4
    voc_names = {o.text for x in (named / "voc" / "train").glob("*.xml") for o in ET.parse(x).iter("name")}
    assert voc_names and voc_names <= set(COCO_SHAPE_NAMES)
    # The 81-class COCO configs read them by name: shape k becomes COCO label classes.index(name k).
    classes = load_config(PROJECT_ROOT / "config" / "ssd300_config_cpu.yaml").classes
    report = ConversionReport()
    records = read_coco(named / "annotations" / "instances_train2017.json", named / "train2017", classes, report)
    shape_records = read_coco(shapes / "annotations" / "instances_train2017.json", shapes / "train2017",
                              DEMO_CLASSES, ConversionReport())
    to_coco = {k + 1: classes.index(name) for k, name in enumerate(COCO_SHAPE_NAMES)}
    assert report.total() == 0
    assert [[to_coco[int(v)] for v in r.labels] for r in shape_records] == [list(r.labels) for r in records]


def test_txt_class_indices_follow_the_given_names(tmp_path):
    shapes = generate_demo_dataset(tmp_path / "shapes", 3, 1, image_size=64, layouts=("txt",))
    named = generate_demo_dataset(tmp_path / "named", 3, 1, image_size=64, layouts=("txt",),
                                  class_names=COCO_SHAPE_NAMES)
    assert (named / "txt" / "train.txt").read_text() == (shapes / "txt" / "train.txt").read_text()


def test_marker_records_the_names_and_other_names_regenerate(tmp_path):
    root = generate_demo_dataset(tmp_path / "d", 3, 1, image_size=64)
    assert json.loads((root / ".complete").read_text())["class_names"] == list(DEMO_CLASSES[1:])
    generate_demo_dataset(tmp_path / "d", 3, 1, image_size=64, class_names=COCO_SHAPE_NAMES)
    assert json.loads((root / ".complete").read_text())["class_names"] == list(COCO_SHAPE_NAMES)
    assert [c["name"] for c in _json(root, "val2017")["categories"]] == list(COCO_SHAPE_NAMES)


@pytest.mark.parametrize("names", [("a", "b", "c"), ("a", "b", "c", "a"), ("a", "b", "", "d"),
                                   ("background", "b", "c", "d"), ("a", "b", "c", "hexagon"), "abcd"])
def test_bad_class_names_are_rejected(tmp_path, names):
    with pytest.raises(ValueError, match="class_names must be 4 distinct non-empty names"):
        generate_demo_dataset(tmp_path / "x", 1, 1, image_size=64, class_names=names)
    assert not (tmp_path / "x").exists()


def test_command_line_coco_names(tmp_path):
    result = subprocess.run([sys.executable, "-m", "src.data.demo_data", "--root", str(tmp_path / "cli"),
                             "--num_train", "2", "--num_val", "1", "--image_size", "64", "--coco_names"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "classes sports ball, tv, kite, airplane" in result.stdout
    assert [c["name"] for c in _json(tmp_path / "cli")["categories"]] == list(COCO_SHAPE_NAMES)
