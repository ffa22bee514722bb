"""VOC and txt sets evaluate through the same real path as COCO: eval MindRecord, eval pipeline,
converted ground-truth json, post-processing and pycocotools (ground truth as predictions -> 1.0)."""
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from src.data.dataset import create_ssd_dataset
from src.data.demo_data import DEMO_CLASSES, generate_demo_dataset
from src.data.mindrecord import ensure_mindrecord, ground_truth_json
from src.eval.coco import evaluate_detector
from src.model_utils.config import load_config

NUM_BOXES = 1917


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("formats") / "demo", 4, 6, seed=11, image_size=160,
                                 min_size=30, max_size=80, layouts=("coco", "voc", "txt"))


def format_config(root: Path, dataset: str, mindrecord_dir: Path):
    overrides = {"data_path": str(root), "dataset": dataset, "mindrecord_dir": str(mindrecord_dir),
                 "classes": list(DEMO_CLASSES), "num_classes": len(DEMO_CLASSES), "eval_batch_size": 2}
    if dataset == "voc":
        overrides["voc_root"] = "voc"
    else:
        overrides.update(image_dir="txt", anno_path="txt/train.txt", val_anno_path="txt/val.txt")
    return load_config("config/ssd300_config_cpu.yaml", overrides=overrides)


def ground_truth_predictor(gt: COCO, img_ids: list[int], num_classes: int):
    """Fake network outputs holding each image's ground truth (the images come in dataset order)."""
    queue = list(img_ids)

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.zeros((len(images), NUM_BOXES, 4), np.float32)
        scores = np.full((len(images), NUM_BOXES, num_classes), 0.01, np.float32)
        for b in range(len(images)):
            img_id = queue.pop(0)
            info = gt.loadImgs(img_id)[0]
            for slot, ann in enumerate(gt.loadAnns(gt.getAnnIds(imgIds=img_id))):
                x, y, w, h = ann["bbox"]
                boxes[b, slot] = [y / info["height"], x / info["width"], (y + h) / info["height"],
                                  (x + w) / info["width"]]
                scores[b, slot, ann["category_id"]] = 0.9
        return boxes, scores

    return predict


@pytest.mark.parametrize("dataset", ["voc", "other"])
def test_ground_truth_as_predictions_scores_one(demo_root, tmp_path, dataset):
    config = format_config(demo_root, dataset, tmp_path / "mindrecord")
    mindrecord = ensure_mindrecord(config, for_training=False)
    gt_json = ground_truth_json(config)
    gt = COCO(str(gt_json))
    order = [int(row["img_id"].reshape(-1)[0]) for row in create_ssd_dataset(mindrecord, config, 1, is_training=False)
             .create_dict_iterator(output_numpy=True, num_epochs=1)]
    assert sorted(order) == sorted(gt.getImgIds()) and len(order) == 6
    dataset_iter = create_ssd_dataset(mindrecord, config, 2, is_training=False)
    result = evaluate_detector(ground_truth_predictor(gt, order, config.num_classes), dataset_iter, gt_json,
                               config.classes, config, tmp_path / "detections.json")
    assert result.map == pytest.approx(1.0)
    assert result.num_images == 6


def test_txt_boxes_are_read_x_first(demo_root):
    """The txt layout holds the same boxes as the COCO json of the same scenes (x first, not y)."""
    coco = COCO(str(demo_root / "annotations" / "instances_val2017.json"))
    lines = (demo_root / "txt" / "val.txt").read_text().splitlines()
    first_line_boxes = sorted(tuple(int(v) for v in item.split(",")[:4]) for item in lines[0].split()[1:])
    first_image = coco.loadImgs(sorted(coco.getImgIds())[0])[0]
    coco_boxes = sorted((round(x), round(y), round(x + w), round(y + h)) for x, y, w, h in
                        (a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=first_image["id"]))))
    assert first_line_boxes == coco_boxes
