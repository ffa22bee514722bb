"""check_dataset.py and its library: numbers against independent computations, warnings, fatal exits, outputs.

The coverage numbers are checked against the full IoU matrix of ``pairwise_iou`` (and a hand-written
IoU for a few boxes), the counts against the annotation json read directly, on the generated demo set
and, when it is beside the checkout, on coco128. The entry script runs in-process under ``run_entry``
as a user's command line would.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

import check_dataset
import train
from src.boxes.anchors import default_boxes_from_config, grid_anchors
from src.boxes.coding import center_to_corners, pairwise_iou
from src.boxes.coverage import best_default_box_iou
from src.data.dataset_check import SIZE_BUCKETS, check_dataset as run_check, log_training_data_check
from src.data.demo_data import generate_demo_dataset
from src.model_utils.config import load_config
from src.model_utils.errors import RUNTIME_EXIT, USAGE_EXIT, run_entry
from tests.conftest import DEMO_CONFIG, PROJECT_ROOT

CPU_CONFIG = PROJECT_ROOT / "config" / "ssd300_config_cpu.yaml"


def _demo_config(data: Path, output: Path, **overrides):
    values = {"data_path": str(data), "coco_root": "coco", "output_path": str(output)}
    return load_config(DEMO_CONFIG, {**values, **overrides})


def _json_boxes(anno_json: Path, classes: list[str]) -> tuple[np.ndarray, list[str], dict[int, tuple[int, int]]]:
    """Non-crowd boxes of known classes straight from a COCO json: pixel corners, class names, image sizes."""
    data = json.loads(anno_json.read_text(encoding="utf-8"))
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    names = {category["id"]: category["name"] for category in data["categories"]}
    rows, labels = [], []
    for ann in data["annotations"]:
        if ann.get("iscrowd") or names[ann["category_id"]] not in classes:
            continue
        x, y, w, h = ann["bbox"]
        height, width = sizes[ann["image_id"]]
        rows.append([y / height, x / width, (y + h) / height, (x + w) / width, w * h])
        labels.append(names[ann["category_id"]])
    return np.asarray(rows, dtype=np.float64), labels, sizes


def _brute_force_coverage(rows: np.ndarray, default_boxes: np.ndarray, threshold: float) -> tuple[float, dict]:
    """Coverage from the full IoU matrix and the size buckets from the json areas."""
    best = pairwise_iou(rows[:, :4].astype(np.float32), center_to_corners(default_boxes)).max(axis=1)
    covered = best >= threshold
    shares = {}
    for name, low, high in SIZE_BUCKETS:
        inside = (rows[:, 4] >= low) & (rows[:, 4] < high)
        shares[name] = float(covered[inside].mean()) if inside.any() else None
    return float(covered.mean()), shares


def _iou_by_hand(a: list[float], b: list[float]) -> float:
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = height * width
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---- best IoU per box -----------------------------------------------------------------------------

def _random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    centres = rng.uniform(0, 1, (count, 2))
    sizes = np.exp(rng.uniform(np.log(0.004), 0, (count, 2)))
    return np.clip(np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1), 0, 1)


@pytest.mark.parametrize("anchors", ["ssd300", "fpn", "scattered"])
def test_best_iou_equals_the_full_iou_matrix(anchors: str) -> None:
    rng = np.random.default_rng(7)
    default_boxes = {"ssd300": lambda: default_boxes_from_config(load_config(CPU_CONFIG)),
                     "fpn": lambda: grid_anchors([384, 640], [8, 16, 32, 64, 128]),
                     # two sizes on centres that are no grid: the blocked fallback
                     "scattered": lambda: np.array([[0.2, 0.2, 0.3, 0.1], [0.7, 0.9, 0.3, 0.1], [0.5, 0.4, 0.2, 0.2],
                                                    [0.9, 0.1, 0.2, 0.2], [0.1, 0.6, 0.2, 0.2]], np.float32)}[anchors]()
    boxes = _random_boxes(rng, 1000)
    boxes[:3] = center_to_corners(default_boxes[[0, len(default_boxes) // 2, -1]])  # exact anchors: IoU 1

    best = best_default_box_iou(boxes, default_boxes)

    expected = pairwise_iou(boxes.astype(np.float32), center_to_corners(default_boxes)).max(axis=1)
    np.testing.assert_allclose(best, expected, atol=1e-5)
    np.testing.assert_allclose(best[:3], 1.0, atol=1e-6)


def test_best_iou_of_a_handful_of_boxes_by_hand() -> None:
    default_boxes = np.array([[cy, cx, h, w] for cy in (0.25, 0.75) for cx in (0.25, 0.75)
                              for h, w in ((0.5, 0.5), (0.2, 0.4))], np.float32)
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.1, 0.3, 0.3, 0.7], [0.4, 0.4, 0.6, 0.6], [0.9, 0.9, 1.0, 1.0]]
    corners = center_to_corners(default_boxes.astype(np.float64)).tolist()

    best = best_default_box_iou(np.asarray(boxes), default_boxes)

    expected = [max(_iou_by_hand(box, anchor) for anchor in corners) for box in boxes]
    np.testing.assert_allclose(best, expected, atol=1e-6)
    # box 1's centre x (0.5) is half-way between two anchor columns: either gives 0.15 x 0.15 of overlap
    assert best[0] == pytest.approx(1.0) and best[1] == pytest.approx(0.0225 / (0.08 + 0.08 - 0.0225))


# ---- the check on generated data ------------------------------------------------------------------

def test_demo_numbers_match_the_annotation_json(demo_root: Path, tmp_path: Path) -> None:
    config = _demo_config(demo_root, tmp_path)

    check = run_check(config, for_training=True, check_images=True)

    report = check.report
    rows, labels, sizes = _json_boxes(demo_root / "coco" / "annotations" / "instances_train2017.json",
                                      list(config.classes))
    assert report["images"] == {"listed": len(sizes), "skipped_by_reader": 0, "usable": len(sizes)}
    assert report["boxes"]["total"] == len(rows)
    assert report["boxes"]["per_class"] == {name: Counter(labels)[name] for name in config.classes[1:]}
    assert report["boxes"]["size_buckets"] == {name: int(((rows[:, 4] >= low) & (rows[:, 4] < high)).sum())
                                               for name, low, high in SIZE_BUCKETS}
    overall, per_bucket = _brute_force_coverage(rows, default_boxes_from_config(config), config.match_threshold)
    assert report["anchor_coverage"]["covered"] == pytest.approx(overall)
    assert report["anchor_coverage"]["per_size_bucket"] == pytest.approx(per_bucket)
    assert report["anchor_coverage"]["default_boxes"] == 1917
    assert report["image_files"]["found"] == report["image_files"]["decodable_and_of_annotated_size"] == len(sizes)
    assert report["image_files"]["duplicate_images"] == 0 and check.fatal == []


def test_duplicate_and_undecodable_images_are_counted_and_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_demo_dataset(data / "coco", num_train=8, num_val=1, seed=5)
    images = sorted((data / "coco" / "train2017").glob("*.jpg"))
    shutil.copyfile(images[0], images[1])
    images[2].write_bytes(b"not an image at all")

    check = run_check(_demo_config(data, tmp_path / "out"), check_images=True)

    files = check.report["image_files"]
    assert files == {"found": 8, "decodable_and_of_annotated_size": 7, "duplicate_images": 1,
                     "duplicate_examples": [[str(images[0]), str(images[1])]]}
    assert check.report["problems"]["corrupt_image"]["examples"] == [images[2].name]
    assert any("byte-identical" in warning and images[1].name in warning for warning in check.warnings)
    assert check.fatal == []


def test_tiny_boxes_give_a_coverage_warning_with_a_concrete_suggestion(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_demo_dataset(data / "coco", num_train=12, num_val=1, seed=2, min_size=4, max_size=9)

    check = run_check(_demo_config(data, tmp_path / "out"), check_images=False)

    coverage = check.report["anchor_coverage"]
    assert coverage["covered"] < 0.9 and coverage["per_size_bucket"]["small"] < 0.9
    warning = next(w for w in check.warnings if w.startswith("anchor coverage"))
    assert "smaller than the smallest default box (30 px" in warning and "a larger img_shape, about [" in warning
    assert coverage["advice"] and "image_files" not in check.report


# ---- the entry script -----------------------------------------------------------------------------

def _run(capsys, *args: str) -> tuple[int, str]:
    """Exit status and stderr without the image check's progress bar (which tqdm draws there)."""
    status = run_entry(check_dataset.main, "check_dataset.py", ["--config_path", str(DEMO_CONFIG), *args])
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    return status, "\n".join(line for line in lines if line.strip() and not line.startswith("checking images"))


def test_entry_script_writes_the_report_and_the_picture(demo_root: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "out"

    status, err = _run(capsys, "--data_path", str(demo_root), "--output_path", str(output))

    assert status == 0, err
    report = json.loads((output / "dataset_check" / "report.json").read_text(encoding="utf-8"))
    assert report["split"] == "train" and report["model_name"] == "ssd300" and report["fatal"] == []
    assert report["images"]["usable"] == 48 and report["image_files"]["decodable_and_of_annotated_size"] == 48
    assert set(report["anchor_coverage"]["per_size_bucket"]) == {"small", "medium", "large"}
    picture = cv2.imread(str(output / "dataset_check" / "box_sizes.png"))
    assert picture is not None and picture.shape[:2] == (650, 700)
    log = (output / "log" / "check_dataset_rank0.log").read_text(encoding="utf-8")
    assert "dataset check (train): 48 images (0 skipped)" in log and "48 of 48 images usable" in log

    status, err = _run(capsys, "--data_path", str(demo_root), "--output_path", str(output), "--split", "val",
                       "--skip_images")
    report = json.loads((output / "dataset_check" / "report_val.json").read_text(encoding="utf-8"))
    assert status == 0 and report["images"]["usable"] == 16 and "image_files" not in report
    assert (output / "dataset_check" / "box_sizes_val.png").is_file()


def _coco_folder(root: Path, images: list[dict], annotations: list[dict], files: dict[str, bytes]) -> Path:
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "train2017").mkdir()
    for name, data in files.items():
        (root / "coco" / "train2017" / name).write_bytes(data)
    categories = [{"id": 1, "name": "circle"}]
    (root / "coco" / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}), encoding="utf-8")
    return root


def _jpeg() -> bytes:
    return cv2.imencode(".jpg", np.full((40, 60, 3), 128, np.uint8))[1].tobytes()


IMAGE = {"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}
BOX = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0}
FATAL_CASES = {
    "no image": ([], [], {}, "no usable image: 0 listed"),
    "no box": ([IMAGE], [], {"a.jpg": _jpeg()}, "no box at all in 1 images"),
    "nothing decodes": ([IMAGE], [BOX], {"a.jpg": b"\xff\xd8 broken"}, "none of the 1 images can be used"),
}


@pytest.mark.parametrize("case", FATAL_CASES)
def test_fatal_problems_exit_1_with_one_line_and_a_report(case: str, tmp_path: Path, capsys) -> None:
    images, annotations, files, message = FATAL_CASES[case]
    data = _coco_folder(tmp_path / "data", images, annotations, files)

    status, err = _run(capsys, "--data_path", str(data), "--output_path", str(tmp_path / "out"))

    assert status == RUNTIME_EXIT and err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"check_dataset.py: error: {message}") and "report.json" in err
    report = json.loads((tmp_path / "out" / "dataset_check" / "report.json").read_text(encoding="utf-8"))
    assert report["fatal"][0].startswith(message)


def test_missing_data_is_a_usage_error(tmp_path: Path, capsys) -> None:
    status, err = _run(capsys, "--data_path", str(tmp_path), "--output_path", str(tmp_path / "out"))

    assert status == USAGE_EXIT and err.count("\n") == 0
    assert err.startswith("check_dataset.py: error: cannot read the training data: COCO annotation file")


# ---- coco128 and train.py ---------------------------------------------------------------------------

def test_coco128_numbers_and_speed(coco128_root: Path, tmp_path: Path) -> None:
    config = load_config(CPU_CONFIG, {"data_path": str(tmp_path), "coco_root": str(coco128_root),
                                      "train_data_type": "train2017", "output_path": str(tmp_path / "out")})
    run_check(config, check_images=False)  # the first call imports and warms up; the second is timed
    started = time.time()
    check = run_check(config, check_images=False)
    seconds = time.time() - started

    rows, labels, sizes = _json_boxes(coco128_root / "annotations" / "instances_train2017.json", list(config.classes))
    boxes = check.report["boxes"]
    assert check.report["images"]["usable"] == len(sizes) == 128 and boxes["total"] == len(rows)
    assert {name: n for name, n in boxes["per_class"].items() if n} == dict(Counter(labels))
    overall, per_bucket = _brute_force_coverage(rows, default_boxes_from_config(config), config.match_threshold)
    assert check.report["anchor_coverage"]["covered"] == pytest.approx(overall)
    assert check.report["anchor_coverage"]["per_size_bucket"] == pytest.approx(per_bucket)
    assert overall < 0.9 and any("img_shape" in warning for warning in check.warnings)
    assert seconds < 3, f"the check without images took {seconds:.1f} s"


def test_train_py_logs_the_cheap_check_before_converting(demo_root: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "out"
    args = ["--config_path", str(DEMO_CONFIG), "--data_path", str(demo_root), "--mindrecord_dir",
            str(tmp_path / "mindrecord"), "--output_path", str(output), "--feature_extractor_base_param", "", "--freeze_layer", "None",
            "--only_create_dataset", "True"]

    status = run_entry(train.main, "train.py", args)

    assert status == 0, capsys.readouterr().err
    log = (output / "log" / "train_rank0.log").read_text(encoding="utf-8").splitlines()
    lines = [n for n, line in enumerate(log) if "dataset check (train)" in line]
    written = next(n for n, line in enumerate(log) if "ssd.mindrecord: wrote" in line)
    assert len(lines) == 1 and lines[0] < written and "48 images" in log[lines[0]]
    assert not any("warning: anchor coverage" in line for line in log)  # the demo objects fit the anchors
    started = time.time()
    log_training_data_check(_demo_config(demo_root, tmp_path / "again"))
    assert time.time() - started < 1.0


def test_the_check_reads_any_format_and_classes_from_the_data(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "demo", num_train=10, num_val=2, seed=4, layouts=("coco", "voc"))
    common = {"data_path": str(root), "output_path": str(tmp_path / "out"), "classes": []}
    coco = run_check(load_config(DEMO_CONFIG, {**common, "coco_root": "."}), check_images=False).report
    voc = run_check(load_config(DEMO_CONFIG, {**common, "dataset": "voc", "voc_root": "voc"}),
                    check_images=False).report

    assert coco["boxes"]["total"] > 0 and set(coco["boxes"]["per_class"]) == {"circle", "square", "triangle", "plus"}
    for key in ("total", "per_class", "size_buckets"):
        assert voc["boxes"][key] == coco["boxes"][key]
    assert voc["anchor_coverage"]["covered"] == pytest.approx(coco["anchor_coverage"]["covered"])
