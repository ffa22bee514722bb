"""Numbers that must be finite are: NaN/Inf never reach a json file or a network's weights silently.

Checkpoints: ``read_checkpoint`` (the one loader behind eval, export, predict, resume and
--pre_trained) refuses tensors holding NaN/Inf and files that are not checkpoints, with one line
naming the file. Result files: NaN/Inf in the C++ runner's ``.bin`` outputs are dropped before
post-processing, counted and reported, and the detections json stays standard JSON (json.loads
with a ``parse_constant`` that raises). The json writers refuse NaN outright.
"""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from pathlib import Path

import mindspore as ms
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from src.data.coco_reader import load_coco_quietly
from src.eval.coco import CocoResultWriter, category_ids_by_name
from src.eval.offline import evaluate_offline_results
from src.eval.postprocess import Detections
from src.model_utils.config import load_config
from src.model_utils.errors import InputFileError, SSDError
from src.model_utils.files import write_json_atomic
from src.weights.checkpoint import NonFiniteCheckpointError, load_network_weights, read_checkpoint
from tests.conftest import DEMO_CONFIG, run_script

IMAGE_HW = (200, 300)


def small_config() -> SimpleNamespace:
    """The keys the offline evaluation reads, with the demo config's thresholds and 40 anchors (fast)."""
    return SimpleNamespace(num_ssd_boxes=40, num_classes=4, classes=["background", "circle", "square", "triangle"],
                           min_score=0.1, nms_threshold=0.6, max_boxes=100)


def strict_json(text: str):
    """json.loads that fails on NaN, Infinity and -Infinity (which Python's json would accept)."""
    def refuse(constant: str):
        raise AssertionError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def save_tensors(path: Path, tensors: dict[str, np.ndarray], append_dict: dict | None = None) -> Path:
    ms.save_checkpoint([{"name": name, "data": ms.Parameter(ms.Tensor(value), name=name)}
                        for name, value in tensors.items()], str(path), append_dict=append_dict)
    return path


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_with_nan_and_inf_is_refused_naming_file_and_first_tensors(tmp_path):
    good = np.ones((2, 3), np.float32)
    nan = good.copy()
    nan[1, 2] = np.nan
    inf = np.full(4, np.inf, np.float16)
    path = save_tensors(tmp_path / "diverged.ckpt", {
        "network.backbone.0.weight": good, "multibox.cls_layers.0.weight": nan, "multibox.cls_layers.1.weight": nan,
        "multibox.loc_layers.0.bias": inf, "moments.loc_layers.0.bias": nan, "global_step": np.array([7], np.int32)})
    with pytest.raises(NonFiniteCheckpointError) as refused:
        read_checkpoint(path)
    message = str(refused.value)
    assert isinstance(refused.value, SSDError) and "\n" not in message
    assert message == (f"checkpoint {path}: 4 tensors hold NaN/Inf (multibox.cls_layers.0.weight, "
                       f"multibox.cls_layers.1.weight, multibox.loc_layers.0.bias, ...); it is from a diverged "
                       f"run, pick an earlier checkpoint")


def test_finite_checkpoint_with_ints_and_strings_loads(tmp_path):
    path = save_tensors(tmp_path / "fine.ckpt", {"network.w": np.linspace(-1, 1, 6, dtype=np.float32)},
                        append_dict={"epoch_num": 3, "note": "strings are not tensors"})
    params = read_checkpoint(path)
    np.testing.assert_array_equal(params["network.w"].asnumpy(), np.linspace(-1, 1, 6, dtype=np.float32))
    assert int(params["epoch_num"].asnumpy()) == 3


def test_loading_into_a_network_refuses_nan_and_changes_nothing(tmp_path):
    cell = ms.nn.Dense(3, 2)
    before = {p.name: p.asnumpy().copy() for p in cell.get_parameters()}
    tensors = {f"network.{name}": np.full(value.shape, np.nan, np.float32) for name, value in before.items()}
    with pytest.raises(NonFiniteCheckpointError, match=r"2 tensors hold NaN/Inf \(network\.weight, network\.bias\)"):
        load_network_weights(save_tensors(tmp_path / "nan.ckpt", tensors), cell, prefix="network.")
    for param in cell.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), before[param.name])


def write_onnx(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "onnx"])
def test_a_file_that_is_not_a_checkpoint_is_one_line_naming_it(tmp_path, kind):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "truncated":
        whole = save_tensors(tmp_path / "whole.ckpt", {"network.w": np.ones((64, 64), np.float32)}).read_bytes()
        path.write_bytes(whole[:len(whole) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        write_onnx(path)
    with pytest.raises(InputFileError) as refused:
        read_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: cannot read it as a MindSpore checkpoint (") and "\n" not in message
    assert message.endswith("pass a .ckpt written by train.py or mindspore.save_checkpoint (not an .onnx/.mindir "
                            "file, nor a truncated copy)")
    assert "filter_prefix" not in message  # MindSpore's misleading reason for a protobuf without tensors


@pytest.mark.slow
def test_export_py_refuses_a_diverged_checkpoint_and_keeps_the_old_export(tmp_path):
    checkpoint = save_tensors(tmp_path / "ssd-9_1.ckpt", {"network.w": np.array([np.nan, 1], np.float32)})
    old_export = tmp_path / "ssd.mindir"
    old_export.write_bytes(b"the user's previous export")
    done = run_script("export.py", "--config_path", str(DEMO_CONFIG), "--checkpoint_file_path", str(checkpoint),
                      "--file_name", str(tmp_path / "ssd"), "--output_path", str(tmp_path / "out"))
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"export.py: error: checkpoint {checkpoint}: 1 tensors hold NaN/Inf (network.w)" in done.stderr
    assert "Traceback" not in done.stderr
    assert old_export.read_bytes() == b"the user's previous export"


# ---------------------------------------------------------------- json writers


def test_write_json_atomic_refuses_nan_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "marker.json"
    write_json_atomic({"step": 1.5}, path)
    with pytest.raises(SSDError, match=rf"^{path}: not written: Out of range float values .*NaN or Infinity"):
        write_json_atomic({"step": float("inf")}, path)
    assert strict_json(path.read_text()) == {"step": 1.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker.json"]  # no temporary file left behind


def test_result_writer_drops_and_counts_non_finite_detections(tmp_path, caplog, monkeypatch):
    """The writer eval.py, predict.py and postprocess.py share: a NaN/Inf detection never reaches the file."""
    monkeypatch.setattr(logging.getLogger("ssd"), "propagate", True)  # an entry script's logger may have cut it
    boxes = np.array([[1, 2, 30, 40], [np.nan, 2, 30, 40], [5, 5, np.inf, 9], [3, 3, 8, 8]], np.float32)
    detections = Detections(boxes, np.array([0.9, 0.8, 0.7, np.nan], np.float32), np.array([1, 1, 2, 2]))
    path = tmp_path / "detections.json"
    with caplog.at_level(logging.WARNING, logger="ssd"):
        with CocoResultWriter(path, np.array([-1, 11, 12])) as writer:
            writer.write(5, detections)
    records = strict_json(path.read_text())
    assert records == [{"image_id": 5, "category_id": 11, "bbox": [1.0, 2.0, 29.0, 38.0], "score": 0.9}]
    assert writer.num_non_finite == 3 and writer.num_detections == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"3 detections with a NaN/Inf box or score were dropped from {path}: the model's outputs are not finite; "
        f"check the checkpoint or exported model it was run with"]


# ---------------------------------------------------------------- offline (C++ runner) results


def write_ground_truth(path: Path, classes: list[str], num_images: int) -> Path:
    """One box of class 1 per image, at a different place in each."""
    height, width = IMAGE_HW
    images = [{"id": i, "file_name": f"img{i}.jpg", "height": height, "width": width} for i in range(1, num_images + 1)]
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [10.0 * i, 20.0, 50.0, 60.0], "area": 3000.0,
                    "iscrowd": 0} for i in range(1, num_images + 1)]
    categories = [{"id": label, "name": name} for label, name in enumerate(classes) if label]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def perfect_outputs(image_id: int, num_boxes: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Runner outputs whose anchor 0 is image ``image_id``'s ground-truth box, class 1, score 0.9."""
    height, width = IMAGE_HW
    boxes = np.zeros((num_boxes, 4), np.float32)
    scores = np.zeros((num_boxes, num_classes), np.float32)
    x, y = 10.0 * image_id, 20.0
    boxes[0] = [y / height, x / width, (y + 60) / height, (x + 50) / width]
    scores[0, 1] = 0.9
    return boxes, scores


def write_results(folder: Path, outputs: dict[int, tuple[np.ndarray, np.ndarray]]) -> Path:
    folder.mkdir(parents=True)
    for image_id, (boxes, scores) in outputs.items():
        boxes.astype("<f4").tofile(folder / f"img{image_id}_0.bin")
        scores.astype("<f4").tofile(folder / f"img{image_id}_1.bin")
    return folder


def test_offline_results_with_nan_are_counted_and_the_json_stays_valid(tmp_path):
    config = small_config()
    num_boxes, num_classes = int(config.num_ssd_boxes), int(config.num_classes)
    gt_json = write_ground_truth(tmp_path / "gt.json", list(config.classes), 3)
    clean = {i: perfect_outputs(i, num_boxes, num_classes) for i in (1, 2, 3)}
    broken = {i: (boxes.copy(), scores.copy()) for i, (boxes, scores) in clean.items()}
    broken[1][0][5] = np.nan  # a confident box with NaN coordinates: would be a NaN detection
    broken[1][1][5, 2] = 0.95
    broken[2][1][7, 3] = np.inf  # an Inf score: would be written as Infinity
    broken[2][1][8, 0] = np.nan  # NaN in the background column: still a broken row
    coco_gt = load_coco_quietly(gt_json)

    reference = evaluate_offline_results(config, coco_gt, gt_json, write_results(tmp_path / "clean", clean),
                                         tmp_path / "clean.json")
    outcome = evaluate_offline_results(config, coco_gt, gt_json, write_results(tmp_path / "broken", broken),
                                       tmp_path / "broken.json")
    tally = outcome.non_finite
    assert (tally.num_images, tally.num_values, tally.num_boxes) == (2, 6, 3)
    assert tally.files == ["img1_0.bin", "img2_1.bin"]
    assert tally.summary(tmp_path / "broken") == (
        f"2 images' result files in {tmp_path / 'broken'} hold NaN/Inf (6 values in img1_0.bin, img2_1.bin); their "
        f"3 boxes were dropped before post-processing and are not in the detections json: the model or the runner "
        f"produced non-finite outputs")
    assert reference.non_finite.num_images == 0 and reference.non_finite.summary(tmp_path) == ""
    # the remaining boxes give exactly the detections and the mAP of outputs without the broken rows
    assert strict_json((tmp_path / "broken.json").read_text()) == strict_json((tmp_path / "clean.json").read_text())
    assert outcome.result.map == reference.result.map == pytest.approx(1.0)


def test_an_image_whose_every_box_is_nan_scores_no_detections(tmp_path):
    config = small_config()
    num_boxes, num_classes = int(config.num_ssd_boxes), int(config.num_classes)
    gt_json = write_ground_truth(tmp_path / "gt.json", list(config.classes), 2)
    outputs = {i: perfect_outputs(i, num_boxes, num_classes) for i in (1, 2)}
    outputs[2] = (np.full((num_boxes, 4), np.nan, np.float32), outputs[2][1])
    outcome = evaluate_offline_results(config, load_coco_quietly(gt_json), gt_json,
                                       write_results(tmp_path / "results", outputs), tmp_path / "dt.json")
    assert (outcome.non_finite.num_images, outcome.non_finite.num_boxes) == (1, num_boxes)
    assert [record["image_id"] for record in strict_json((tmp_path / "dt.json").read_text())] == [1]
    assert outcome.result.map == pytest.approx(0.5, abs=0.01)  # one of the two ground-truth boxes found


@pytest.mark.slow
def test_postprocess_py_reports_nan_results_and_writes_standard_json(demo_root, tmp_path):
    """The user's view: ground truth written as the runner's outputs, two images with NaN/Inf in them."""
    config = load_config(DEMO_CONFIG, {"data_path": str(demo_root), "coco_root": "coco"})
    gt_json = demo_root / "coco" / "annotations" / f"instances_{config.val_data_type}.json"
    coco_gt = load_coco_quietly(gt_json)
    labels = {int(cid): label for label, cid in enumerate(category_ids_by_name(coco_gt, config.classes)) if cid >= 0}
    results = tmp_path / "result_Files"
    results.mkdir()
    num_boxes, num_classes = int(config.num_ssd_boxes), int(config.num_classes)
    for position, (image_id, image) in enumerate(sorted(coco_gt.imgs.items())):
        boxes = np.zeros((num_boxes, 4), np.float32)
        scores = np.zeros((num_boxes, num_classes), np.float32)
        for anchor, ann in enumerate(coco_gt.imgToAnns[image_id]):
            x, y, w, h = ann["bbox"]
            boxes[anchor] = [y / image["height"], x / image["width"], (y + h) / image["height"],
                             (x + w) / image["width"]]
            scores[anchor, labels[ann["category_id"]]] = 0.9
        if position < 2:  # a NaN box and an Inf score on spare anchors of the first two images
            boxes[100], scores[101, 1] = np.nan, np.inf
        stem = Path(image["file_name"]).stem
        boxes.tofile(results / f"{stem}_0.bin")
        scores.tofile(results / f"{stem}_1.bin")
    saved = tmp_path / "detections.json"
    done = run_script("postprocess.py", "--config_path", str(DEMO_CONFIG), "--data_path", str(demo_root),
                      "--coco_root", "coco", "--mindrecord_dir", "MindRecord", "--output_path", str(tmp_path / "out"),
                      "--result_path", str(results), "--save_detections", str(saved))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"2 images' result files in {results} hold NaN/Inf (10 values in " in done.stdout
    assert "their 4 boxes were dropped before post-processing" in done.stdout
    assert "mAP: 1.0\n" in done.stdout
    assert len(strict_json(saved.read_text())) == sum(len(anns) for anns in coco_gt.imgToAnns.values())
    assert "Traceback" not in done.stderr
