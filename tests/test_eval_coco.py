"""Post-processing, streamed COCO results and pycocotools evaluation (src.eval.postprocess, .coco, .reports).

The evaluation tests go through the real path: a real ``mindspore.dataset`` pipeline, the real
post-processing and writer, and pycocotools on a COCO json written to tmp_path (or coco128).
"""
import csv
import json
import logging
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from src.data.coco_reader import load_coco_quietly
from src.eval.coco import CocoResultWriter, category_ids_by_name, coco_evaluate, evaluate_detector
from src.eval.postprocess import CANDIDATES_PER_DETECTION, NMS_WINDOW, Detections, batched_nms, postprocess_image
from src.eval.reports import PER_CLASS_CSV_COLUMNS, format_report, write_per_class_csv

NUM_ANCHORS = 64


# ----------------------------------------------------------------------------- references
def reference_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Textbook single-class greedy NMS, float64, one pair at a time."""
    boxes = boxes.astype(np.float64)
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        best = order.pop(0)
        keep.append(best)
        survivors = []
        for other in order:
            ix = max(0.0, min(boxes[best, 2], boxes[other, 2]) - max(boxes[best, 0], boxes[other, 0]))
            iy = max(0.0, min(boxes[best, 3], boxes[other, 3]) - max(boxes[best, 1], boxes[other, 1]))
            inter = ix * iy
            area_b = (boxes[best, 2] - boxes[best, 0]) * (boxes[best, 3] - boxes[best, 1])
            area_o = (boxes[other, 2] - boxes[other, 0]) * (boxes[other, 3] - boxes[other, 1])
            union = area_b + area_o - inter
            if not (union > 0 and inter / union > iou_threshold):
                survivors.append(other)
        order = survivors
    return keep


def reference_postprocess(boxes_yxyx, scores, image_hw, min_score, nms_threshold, max_boxes, top_k):
    """Per class: strict threshold, top_k, pixel boxes, greedy NMS; then the image's max_boxes best.

    Equal scores rank by anchor index, then class: within a class by anchor (stable sort), and
    across classes the final sort's key says so."""
    h, w = image_hw
    pixel = boxes_yxyx.astype(np.float64)[:, [1, 0, 3, 2]] * [w, h, w, h]
    found = []
    for cls in range(1, scores.shape[1]):
        idx = np.flatnonzero(scores[:, cls] > min_score)
        idx = idx[np.argsort(-scores[idx, cls], kind="stable")][:top_k]
        for k in reference_nms(pixel[idx], scores[idx, cls], nms_threshold):
            found.append((float(scores[idx[k], cls]), int(idx[k]), cls, tuple(pixel[idx[k]])))
    found.sort(key=lambda item: (-item[0], item[1], item[2]))
    return found[:max_boxes]


def assert_matches_reference(got: Detections, expected) -> None:
    """Same detections in the same order, bit for bit (both compute the pixel boxes in float64)."""
    assert len(got.scores) == len(expected)
    np.testing.assert_array_equal(got.scores, np.float32([score for score, _, _, _ in expected]))
    np.testing.assert_array_equal(got.labels, np.int64([cls for _, _, cls, _ in expected]))
    np.testing.assert_array_equal(got.boxes_xyxy, np.float32([box for _, _, _, box in expected]).reshape(-1, 4))
    assert got.boxes_xyxy.dtype == np.float32 and got.labels.dtype == np.int64


def random_boxes(rng, n, clusters=6):
    """Normalised yxyx boxes jittered around a few centres, so many of them overlap heavily."""
    centres = rng.uniform(0.2, 0.8, (clusters, 2))[rng.integers(0, clusters, n)]
    centres += rng.normal(0, 0.03, (n, 2))
    sizes = rng.uniform(0.05, 0.3, (n, 2))
    return np.clip(np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1), 0, 1).astype(np.float32)


def as_set(detections: Detections):
    return {(int(l), tuple(np.round(b, 3))) for l, b in zip(detections.labels, detections.boxes_xyxy)}


# ----------------------------------------------------------------------------- NMS / post-processing
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.6])
def test_batched_nms_keeps_exactly_the_reference_sets(iou_threshold):
    rng = np.random.default_rng(int(iou_threshold * 10))
    boxes = random_boxes(rng, 400)[:, [1, 0, 3, 2]] * 500
    scores = rng.uniform(0, 1, 400)
    labels = rng.integers(1, 5, 400)
    keep = batched_nms(boxes, scores, labels, iou_threshold)
    for cls in range(1, 5):
        members = np.flatnonzero(labels == cls)
        expected = members[reference_nms(boxes[members], scores[members], iou_threshold)]
        assert list(keep[labels[keep] == cls]) == list(expected)  # same boxes, same order
    assert np.all(np.diff(scores[keep]) <= 0)
    assert 20 < keep.size < 350  # the clusters really made NMS suppress (and keep) many boxes


def test_batched_nms_over_several_windows_keeps_the_reference_prefix():
    rng = np.random.default_rng(23)
    count = 3 * NMS_WINDOW + 17
    boxes = random_boxes(rng, count, clusters=12)[:, [1, 0, 3, 2]] * 500
    scores = np.round(rng.uniform(0, 1, count), 2)  # ties: the earlier index ranks first
    labels = rng.integers(1, 4, count)
    expected = []
    for cls in range(1, 4):
        members = np.flatnonzero(labels == cls)
        expected += members[reference_nms(boxes[members], scores[members], 0.5)].tolist()
    expected.sort(key=lambda i: (-scores[i], i))
    for max_keep in (None, 1, 40, len(expected) - 1):
        assert batched_nms(boxes, scores, labels, 0.5, max_keep).tolist() == expected[:max_keep]
    rank = np.empty(count, int)
    rank[np.argsort(-scores, kind="stable")] = np.arange(count)
    assert rank[expected[-1]] >= 2 * NMS_WINDOW  # the kept boxes span several windows


@pytest.mark.parametrize("top_k,max_boxes", [(1000, 1000), (15, 1000), (400, 25)])
def test_postprocess_matches_per_class_reference(top_k, max_boxes):
    rng = np.random.default_rng(top_k + max_boxes)
    boxes = random_boxes(rng, 600)
    scores = rng.uniform(0, 1, (600, 6)).astype(np.float32) ** 3
    got = postprocess_image(boxes, scores, (375, 500), 0.05, 0.5, max_boxes, pre_nms_top_k=top_k)
    assert_matches_reference(got, reference_postprocess(boxes, scores, (375, 500), 0.05, 0.5, max_boxes, top_k))
    assert got.labels.min() >= 1


@pytest.mark.parametrize("top_k,max_boxes", [(7, 50), (30, 100), (400, 1000)])
def test_postprocess_breaks_ties_by_anchor_then_class_like_the_reference(top_k, max_boxes):
    rng = np.random.default_rng(top_k)
    boxes = random_boxes(rng, 500)
    scores = np.round(rng.uniform(0, 1, (500, 12)), 1).astype(np.float32)  # 11 distinct values: ties everywhere
    got = postprocess_image(boxes, scores, (375, 500), 0.05, 0.5, max_boxes, pre_nms_top_k=top_k)
    assert_matches_reference(got, reference_postprocess(boxes, scores, (375, 500), 0.05, 0.5, max_boxes, top_k))
    assert np.all((scores[:, 1:] == 1.0).sum(axis=0) > 7)  # the top_k=7 cut falls inside a tie
    assert (scores[:, 1:] == got.scores[-1]).sum() > (got.scores == got.scores[-1]).sum()  # so does the last place


def test_postprocess_of_many_classes_over_top_k_matches_the_reference():
    rng = np.random.default_rng(24)
    boxes = random_boxes(rng, 3000, clusters=30)
    scores = (1 / (1 + np.exp(-rng.normal(-3, 1.5, (3000, 81))))).astype(np.float32)
    got = postprocess_image(boxes, scores, (480, 640), 0.01, 0.6, 100, pre_nms_top_k=20)
    assert_matches_reference(got, reference_postprocess(boxes, scores, (480, 640), 0.01, 0.6, 100, 20))
    assert np.all((scores[:, 1:] > 0.01).sum(axis=0) > 20) and len(set(got.labels.tolist())) > 40


@pytest.mark.parametrize("top_k", [100, 400])
def test_postprocess_ranks_further_when_the_best_candidates_suppress_each_other(top_k):
    # 300 near-identical class-1 boxes outscore everything and collapse to one detection, so the
    # others come from beyond the first CANDIDATES_PER_DETECTION * max_boxes candidates; with
    # top_k=100 class 1 is full after that first prefix and its remaining candidates are dropped
    rng = np.random.default_rng(top_k)
    boxes = random_boxes(rng, 800, clusters=40)
    boxes[:300] = np.float32([0.2, 0.2, 0.6, 0.6]) + rng.uniform(-0.002, 0.002, (300, 4)).astype(np.float32)
    scores = np.zeros((800, 4), np.float32)
    scores[:300, 1] = rng.uniform(0.8, 1.0, 300)
    scores[300:, 1:] = rng.uniform(0.0, 0.7, (500, 3))
    max_boxes = 30
    got = postprocess_image(boxes, scores, (300, 400), 0.05, 0.5, max_boxes, pre_nms_top_k=top_k)
    assert_matches_reference(got, reference_postprocess(boxes, scores, (300, 400), 0.05, 0.5, max_boxes, top_k))
    first_prefix_bar = np.sort(scores[:, 1:].ravel())[::-1][CANDIDATES_PER_DETECTION * max_boxes - 1]
    assert len(got.scores) == max_boxes and got.scores[1] < first_prefix_bar


def test_postprocess_with_every_class_collapsing_runs_out_of_candidates():
    # one box for all anchors: each class keeps exactly its best anchor, fewer than max_boxes
    boxes = np.tile(np.float32([[0.1, 0.2, 0.5, 0.6]]), (700, 1))
    scores = np.random.default_rng(25).uniform(0.02, 1, (700, 21)).astype(np.float32)
    got = postprocess_image(boxes, scores, (480, 640), 0.01, 0.6, 100, pre_nms_top_k=50)
    assert_matches_reference(got, reference_postprocess(boxes, scores, (480, 640), 0.01, 0.6, 100, 50))
    np.testing.assert_array_equal(np.sort(got.labels), np.arange(1, 21))


def test_max_boxes_is_per_image_and_ordered_by_score():
    # 12 x 12 disjoint boxes, every one a candidate in 3 classes -> 432 survivors of NMS
    grid = np.arange(12) / 12
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    boxes = np.stack([ys.ravel(), xs.ravel(), ys.ravel() + 0.05, xs.ravel() + 0.05], axis=1).astype(np.float32)
    rng = np.random.default_rng(3)
    scores = np.zeros((144, 4), np.float32)
    scores[:, 1:] = rng.uniform(0.2, 1.0, (144, 3))
    got = postprocess_image(boxes, scores, (100, 100), 0.1, 0.5, max_boxes=100)
    assert got.scores.shape == (100,) and got.boxes_xyxy.shape == (100, 4)
    assert np.all(np.diff(got.scores) <= 0)
    np.testing.assert_array_equal(got.scores, np.sort(scores[:, 1:].ravel())[::-1][:100])
    assert set(got.labels.tolist()) == {1, 2, 3}


def test_min_score_is_strict_and_background_is_never_detected():
    boxes = np.array([[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7], [0.3, 0.6, 0.4, 0.9]], np.float32)
    scores = np.array([[0.99, 0.25, 0.0],   # background is high: irrelevant
                       [0.0, 0.0, 0.25000003],
                       [0.0, 0.2499999, 0.0]], np.float32)
    got = postprocess_image(boxes, scores, (200, 100), np.float32(0.25), 0.5, 100)
    assert got.labels.tolist() == [2]
    np.testing.assert_allclose(got.boxes_xyxy, [[50, 100, 70, 140]], rtol=1e-6)  # x by width, y by height


def test_nms_uses_continuous_areas_not_plus_one_pixels():
    # 10 x 10 boxes shifted by 5 px: continuous IoU 50/150 = 0.333, +1-pixel IoU 66/176 = 0.375
    boxes = np.array([[0, 0, 10, 10], [0, 5, 10, 15]], np.float32) / 100
    scores = np.array([[0, 0.9], [0, 0.8]], np.float32)
    assert postprocess_image(boxes, scores, (100, 100), 0.1, 0.35, 100).labels.size == 2
    assert postprocess_image(boxes, scores, (100, 100), 0.1, 0.30, 100).labels.size == 1


def test_no_candidates_gives_empty_detections():
    got = postprocess_image(np.zeros((10, 4), np.float32), np.zeros((10, 3), np.float32), (50, 50), 0.1, 0.5, 100)
    assert got.boxes_xyxy.shape == (0, 4) and got.scores.shape == (0,) and got.labels.shape == (0,)


def test_bad_shapes_are_rejected_with_the_shapes_named():
    with pytest.raises(ValueError, match=r"\(5, 4\) and \(6, 3\)"):
        postprocess_image(np.zeros((5, 4)), np.zeros((6, 3)), (10, 10), 0.1, 0.5, 100)


# ----------------------------------------------------------------------------- result writer
def tiny_coco(path: Path, images, annotations, categories) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_category_ids_by_name_and_writer_rounding_mapping_and_dropping(tmp_path):
    gt = tiny_coco(tmp_path / "gt.json", [{"id": 5, "height": 50, "width": 60}], [],
                   [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}])
    classes = ["background", "car", "unicorn", "dog"]
    ids = category_ids_by_name(load_coco_quietly(gt), classes)
    assert ids.tolist() == [-1, 3, -1, 18]
    dets = Detections(np.array([[1.234567, 2.345678, 11.1, 12.2], [0, 0, 1, 1], [5, 5, 6, 6], [1, 1, 2, 2]],
                               np.float32),
                      np.array([0.123456789, 0.9, 0.8, 0.7], np.float32), np.array([1, 2, 3, 2]))
    out = tmp_path / "res" / "det.json"
    with pytest.warns(UserWarning, match="'unicorn'") as caught:
        with CocoResultWriter(out, ids, classes) as writer:
            writer.write(5, dets)
            writer.write(5, Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int)))
    assert len(caught) == 1  # one warning although two unicorn boxes were dropped
    assert (writer.num_images, writer.num_detections, writer.num_dropped) == (2, 2, 2)
    records = json.loads(out.read_text())
    assert records == [
        {"image_id": 5, "category_id": 3, "bbox": [1.23, 2.35, 9.87, 9.85], "score": 0.12346},
        {"image_id": 5, "category_id": 18, "bbox": [5.0, 5.0, 1.0, 1.0], "score": 0.8},
    ]


def test_writer_names_files_and_categories_when_asked(tmp_path):
    """predict.py's records: file_name per image and category_name per detection; COCO tools still load them."""
    gt = tiny_coco(tmp_path / "gt.json", [{"id": 5, "height": 50, "width": 60}, {"id": 6, "height": 50, "width": 60}],
                   [], [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}])
    classes = ["background", "car", "dog"]
    dets = Detections(np.array([[1, 2, 11, 12], [5, 5, 6, 6]], np.float32), np.array([0.9, 0.8], np.float32),
                      np.array([2, 1]))
    out = tmp_path / "det.json"
    with CocoResultWriter(out, np.array([-1, 3, 18]), classes, category_names=True) as writer:
        writer.write(5, dets, file_name="photos/a.jpg")
        writer.write(6, dets)
    records = json.loads(out.read_text())
    assert records[:2] == [
        {"image_id": 5, "file_name": "photos/a.jpg", "category_id": 18, "category_name": "dog",
         "bbox": [1.0, 2.0, 10.0, 10.0], "score": 0.9},
        {"image_id": 5, "file_name": "photos/a.jpg", "category_id": 3, "category_name": "car",
         "bbox": [5.0, 5.0, 1.0, 1.0], "score": 0.8}]
    assert [set(record) for record in records[2:]] == [{"image_id", "category_id", "category_name", "bbox", "score"}] * 2
    assert len(load_coco_quietly(gt).loadRes(str(out)).anns) == 4
    with pytest.raises(ValueError, match="needs the class names"):
        CocoResultWriter(out, np.array([-1, 3, 18]), category_names=True)


def test_writer_without_detections_writes_an_empty_json_array(tmp_path):
    with CocoResultWriter(tmp_path / "det.json", np.array([-1, 1])):
        pass
    assert json.loads((tmp_path / "det.json").read_text()) == []


@pytest.mark.slow
def test_writer_memory_does_not_grow_with_the_number_of_images(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (100, 2))
    dets = Detections(np.concatenate([xy, xy + rng.uniform(1, 100, (100, 2))], 1).astype(np.float32),
                      rng.uniform(0.1, 1, 100).astype(np.float32), rng.integers(1, 81, 100))
    out = tmp_path / "det.json"
    tracemalloc.start()
    try:
        with CocoResultWriter(out, np.arange(81)) as writer:
            for img_id in range(2000):  # a fresh copy per image, as post-processing would hand over
                writer.write(img_id, Detections(*(part.copy() for part in dets)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.num_detections == 200_000
    assert out.stat().st_size > 15e6
    # holding the detections even as compact numpy arrays would take > 5 MB; python dicts ~100 MB
    assert peak < 3e6, f"writer peaked at {peak / 1e6:.1f} MB of traced memory"


# ----------------------------------------------------------------------------- evaluation, synthetic COCO
CATEGORIES = [{"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "bird"},
              {"id": 11, "name": "zebra"}]  # zebra has no ground truth
CLASSES = ["background", "cat", "dog", "bird", "zebra"]


def synthetic_coco(path: Path, rng) -> Path:
    """7 images of various sizes, 1-5 boxes each in distinct 3x3 grid cells, one image without
    annotations and one crowd box; non-contiguous image and category ids."""
    images, annotations = [], []
    for n, img_id in enumerate([3, 4, 8, 15, 16, 23, 42]):
        h, w = [(480, 640), (300, 300), (427, 640), (640, 480), (200, 350), (375, 500), (333, 250)][n]
        images.append({"id": img_id, "height": h, "width": w, "file_name": f"{img_id}.jpg"})
        count = 0 if img_id == 8 else int(rng.integers(1, 6))
        for cell in rng.choice(9, count, replace=False):
            cy, cx = divmod(int(cell), 3)
            bw, bh = rng.uniform(0.3, 0.9) * w / 3, rng.uniform(0.3, 0.9) * h / 3
            x, y = (cx + 0.05) * w / 3, (cy + 0.05) * h / 3
            annotations.append({"id": len(annotations) + 1, "image_id": img_id, "bbox": [x, y, bw, bh],
                                "area": bw * bh, "iscrowd": 0, "category_id": [2, 5, 9][int(rng.integers(3))]})
    crowd = dict(annotations[0], id=len(annotations) + 1, iscrowd=1)
    crowd["bbox"] = [crowd["bbox"][0] + 1, crowd["bbox"][1] + 1, 20.0, 20.0]
    annotations.append(crowd)
    return tiny_coco(path, images, annotations, CATEGORIES)


def fake_network_outputs(gt_json: Path, classes, rng, shift: float = 0.0):
    """Per image: GT boxes (normalised yxyx, optionally shifted right by ``shift`` of their width)
    in random anchor slots with score 0.9 for their class, random noise boxes scoring 0.01."""
    coco = load_coco_quietly(gt_json)
    class_of = {cid: i for i, cid in enumerate(category_ids_by_name(coco, classes)) if cid >= 0}
    outputs = {}
    for img_id, img in coco.imgs.items():
        h, w = img["height"], img["width"]
        noise = rng.uniform(0, 1, (NUM_ANCHORS, 2))
        boxes = np.concatenate([noise, noise + rng.uniform(0.02, 0.3, (NUM_ANCHORS, 2))], 1).clip(0, 1)
        scores = np.zeros((NUM_ANCHORS, len(classes)))
        scores[np.arange(NUM_ANCHORS), rng.integers(1, len(classes), NUM_ANCHORS)] = 0.01
        gts = [a for a in coco.imgToAnns[img_id] if not a["iscrowd"]]
        for slot, ann in zip(rng.choice(NUM_ANCHORS, len(gts), replace=False), gts):
            x, y, bw, bh = ann["bbox"]
            x += shift * bw
            boxes[slot] = [y / h, x / w, (y + bh) / h, (x + bw) / w]
            scores[slot] = 0
            scores[slot, class_of[ann["category_id"]]] = 0.9
        outputs[img_id] = (boxes.astype(np.float32), scores.astype(np.float32), (h, w))
    return outputs


def run_evaluation(tmp_path, gt_json, outputs, classes, config, batch_size=3, only=None):
    """evaluate_detector over a real MindSpore dataset; each 'image' carries its row number so the
    predict_batch closure can return that image's fake outputs."""
    import mindspore.dataset as ds

    img_ids = sorted(outputs) if only is None else only
    data = {"img_id": np.array(img_ids, np.int32).reshape(-1, 1),
            "image": np.broadcast_to(np.arange(len(img_ids), dtype=np.float32)[:, None, None, None],
                                     (len(img_ids), 3, 4, 4)).copy(),
            "image_shape": np.array([outputs[i][2] for i in img_ids], np.int32)}
    dataset = ds.NumpySlicesDataset(data, shuffle=False).batch(batch_size)

    def predict_batch(images):
        rows = [img_ids[int(r)] for r in images[:, 0, 0, 0]]
        return np.stack([outputs[i][0] for i in rows]), np.stack([outputs[i][1] for i in rows])

    return evaluate_detector(predict_batch, dataset, gt_json, classes, config, tmp_path / "results.json")


def eval_config(**overrides):
    return SimpleNamespace(**{"min_score": 0.1, "nms_threshold": 0.6, "max_boxes": 100, **overrides})


def test_ground_truth_as_predictions_gives_map_one(tmp_path):
    rng = np.random.default_rng(7)
    gt = synthetic_coco(tmp_path / "gt.json", rng)
    # min_score below the noise score: the noise boxes are written and evaluated too
    result = run_evaluation(tmp_path, gt, fake_network_outputs(gt, CLASSES, rng), CLASSES,
                            eval_config(min_score=0.005))
    assert result.map == pytest.approx(1.0) and result.stats[1] == pytest.approx(1.0)
    assert len(result.summary_lines) == 12 and "Average Precision" in result.summary_lines[0]
    assert result.num_images == 7 and result.num_crowd == 1
    coco = json.loads(gt.read_text())
    by_name = {c.name: c for c in result.per_class}
    for cat in CATEGORIES:
        num_gt = sum(1 for a in coco["annotations"] if a["category_id"] == cat["id"] and not a["iscrowd"])
        assert by_name[cat["name"]].num_gt == num_gt
        assert by_name[cat["name"]].ap == (pytest.approx(1.0) if num_gt else pytest.approx(np.nan, nan_ok=True))
    written = json.loads((tmp_path / "results.json").read_text())
    assert result.num_detections == len(written) > len(coco["annotations"])  # noise included
    assert {d["category_id"] for d in written} <= {2, 5, 9, 11}


def test_shifted_boxes_lower_the_map(tmp_path):
    rng = np.random.default_rng(8)
    gt = synthetic_coco(tmp_path / "gt.json", rng)
    # boxes shifted by 20% of their width: IoU 0.8 / 1.2 = 0.667 -> matched at IoU 0.50..0.65 only
    result = run_evaluation(tmp_path, gt, fake_network_outputs(gt, CLASSES, rng, shift=0.2), CLASSES,
                            eval_config())
    assert result.stats[1] == pytest.approx(1.0)  # AP50
    assert result.map == pytest.approx(0.4, abs=1e-6)
    with_gt = [c for c in result.per_class if c.num_gt]
    assert len(with_gt) == 3
    assert all(c.ap == pytest.approx(0.4, abs=1e-6) and c.ap50 == pytest.approx(1.0) for c in with_gt)


def test_partial_dataset_still_evaluates_every_image_of_the_json(tmp_path):
    rng = np.random.default_rng(9)
    gt = synthetic_coco(tmp_path / "gt.json", rng)
    outputs = fake_network_outputs(gt, CLASSES, rng)
    with pytest.warns(UserWarning, match="covered 5 of the 7 images"):
        result = run_evaluation(tmp_path, gt, outputs, CLASSES, eval_config(), only=sorted(outputs)[:5])
    assert result.num_images == 7
    assert 0 < result.map < 1  # the ground truth of the two skipped images counts as missed


def test_no_detections_at_all_gives_zero_without_crashing(tmp_path):
    rng = np.random.default_rng(10)
    gt = synthetic_coco(tmp_path / "gt.json", rng)
    outputs = {k: (b, np.zeros_like(s), hw) for k, (b, s, hw) in fake_network_outputs(gt, CLASSES, rng).items()}
    result = run_evaluation(tmp_path, gt, outputs, CLASSES, eval_config())
    assert json.loads((tmp_path / "results.json").read_text()) == []
    assert result.map == 0.0 and result.num_detections == 0 and len(result.summary_lines) == 12
    again = coco_evaluate(gt, tmp_path / "results.json")
    np.testing.assert_array_equal(again.stats, result.stats)


def test_mismatched_inputs_get_clear_errors(tmp_path):
    rng = np.random.default_rng(11)
    gt = synthetic_coco(tmp_path / "gt.json", rng)
    outputs = fake_network_outputs(gt, CLASSES, rng)
    outputs[999] = outputs[3]
    with pytest.raises(ValueError, match="image id 999 of the eval dataset is not in"):
        run_evaluation(tmp_path, gt, outputs, CLASSES, eval_config())
    with pytest.raises(ValueError, match="scores 5 classes but the class list has 4"):
        run_evaluation(tmp_path, gt, outputs, CLASSES[:4], eval_config(), only=[3])
    (tmp_path / "foreign.json").write_text(json.dumps([{"image_id": 77, "category_id": 2,
                                                        "bbox": [0, 0, 1, 1], "score": 0.5}]))
    with pytest.raises(ValueError, match="1 image ids that the annotation file does not contain"):
        coco_evaluate(gt, tmp_path / "foreign.json")


def evaluation_with_a_weak_class(tmp_path):
    """The synthetic evaluation with the dog boxes shifted (dog AP below the others) and zebra without GT."""
    rng = np.random.default_rng(12)
    gt = synthetic_coco(tmp_path / "gt.json", rng)
    outputs = fake_network_outputs(gt, CLASSES, rng)
    dog_images = {a["image_id"] for a in json.loads(gt.read_text())["annotations"] if a["category_id"] == 5}
    for img_id in dog_images:
        outputs[img_id] = fake_network_outputs(gt, CLASSES, np.random.default_rng(img_id), shift=0.2)[img_id]
    return run_evaluation(tmp_path, gt, outputs, CLASSES, eval_config())


def test_format_report_lists_summary_map_crowd_and_classes_by_ap(tmp_path):
    result = evaluation_with_a_weak_class(tmp_path)
    lines = format_report(result).splitlines()
    assert lines[:12] == result.summary_lines
    assert lines[12] == f"mAP: {result.map}"
    assert "1 crowd boxes handled by COCOeval as ignore regions" in lines[13]
    table = [line.split()[0] for line in lines[15:]]
    assert table == sorted(table, key=lambda name: -np.nan_to_num(
        next(c.ap for c in result.per_class if c.name == name), nan=-1.0))
    assert table[-1] == "zebra" and lines[-1].split()[1] == "-"


def test_per_class_csv_is_the_printed_table_at_full_precision(tmp_path):
    result = evaluation_with_a_weak_class(tmp_path)
    path = tmp_path / "report" / "per_class_ap.csv"
    write_per_class_csv(result, path)
    with open(path, encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert tuple(header) == PER_CLASS_CSV_COLUMNS == ("class", "category_id", "AP", "AP50", "num_gt")
    assert [row[0] for row in rows] == [line.split()[0] for line in format_report(result).splitlines()[15:]]
    by_name = {c.name: c for c in result.per_class}
    assert len(rows) == len(by_name) == 4
    for name, category_id, ap, ap50, num_gt in rows:
        expected = by_name[name]
        assert (int(category_id), int(num_gt)) == (expected.category_id, expected.num_gt)
        if np.isnan(expected.ap):
            assert (ap, ap50) == ("", "")  # no ground truth: AP undefined, written as an empty cell
        else:
            assert (float(ap), float(ap50)) == (expected.ap, expected.ap50)
    assert rows[-1] == ["zebra", "11", "", "", "0"]
    assert rows[-2][0] == "dog" and 0 < float(rows[-2][2]) < float(rows[0][2])  # the shifted class ranks low


# ----------------------------------------------------------------------------- evaluation, real COCO sample
def test_coco128_ground_truth_as_predictions(tmp_path, coco128_root):
    gt = coco128_root / "annotations" / "instances_train2017.json"
    coco = json.loads(gt.read_text())
    classes = ["background"] + [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    rng = np.random.default_rng(13)
    # real crowded scenes hold same-class GT pairs with IoU up to 0.87, which NMS rightly merges;
    # a 0.95 threshold lets this test check the bookkeeping (ids, categories, crowd, all images)
    result = run_evaluation(tmp_path, gt, fake_network_outputs(gt, classes, rng), classes,
                            eval_config(nms_threshold=0.95), batch_size=16)
    assert result.num_images == 128 and result.num_crowd == 10
    assert result.map == pytest.approx(1.0)
    assert sum(c.num_gt for c in result.per_class) == 939 - 10
    assert sum(not np.isnan(c.ap) for c in result.per_class) == 71


def jittered_ground_truth(coco: dict, rng) -> list[dict]:
    """Three detections per GT box, corners moved by ~10 % of its size, 10 % of them with a wrong
    category, random scores rounded to 0.01 (ties are where COCOeval implementations could differ):
    a result file with a middling, non-trivial COCO score."""
    detections = []
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        for _ in range(3):
            dx, dy, dw, dh = rng.normal(0, 0.1, 4) * [w, h, w, h]
            wrong = rng.random() < 0.1
            category = int(rng.choice([c["id"] for c in coco["categories"]])) if wrong else ann["category_id"]
            detections.append({"image_id": ann["image_id"], "category_id": category,
                               "bbox": [x + dx, y + dy, max(1.0, w + dw), max(1.0, h + dh)],
                               "score": round(float(rng.uniform(0.05, 1)), 2)})  # many ties, as in real runs
    return detections


def test_faster_coco_eval_gives_the_pycocotools_numbers(tmp_path, coco128_root, monkeypatch, caplog):
    pytest.importorskip("faster_coco_eval", reason="the optional faster-coco-eval backend is not installed")
    gt = coco128_root / "annotations" / "instances_train2017.json"
    results = tmp_path / "det.json"
    results.write_text(json.dumps(jittered_ground_truth(json.loads(gt.read_text()), np.random.default_rng(14))))
    monkeypatch.setattr(logging.getLogger("ssd"), "propagate", True)  # an entry script's logger may have cut it
    with caplog.at_level(logging.INFO, logger="ssd"):
        fast = coco_evaluate(gt, results)
        monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import fails -> pycocotools
        reference = coco_evaluate(gt, results)
    assert [r.getMessage() for r in caplog.records if "backend" in r.getMessage()] == [
        "COCO evaluation backend: faster_coco_eval", "COCO evaluation backend: pycocotools"]
    assert 0.2 < reference.map < 0.8
    np.testing.assert_array_almost_equal(fast.stats, reference.stats, decimal=4)
    assert fast.summary_lines == reference.summary_lines and len(fast.summary_lines) == 12
    np.testing.assert_allclose([c.ap for c in fast.per_class], [c.ap for c in reference.per_class], atol=1e-4)
    np.testing.assert_allclose([c.ap50 for c in fast.per_class], [c.ap50 for c in reference.per_class], atol=1e-4)
