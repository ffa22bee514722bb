"""NMS inside the exported ONNX graph (src/deploy/nms_graph.py, export.py --export_nms True).

The graph must give exactly the detections of the Python post-processing (postprocess_image) in
onnxruntime and in OpenVINO at f32, for any batch size: on hand-made boxes and scores fed through
the appended tail alone (ties, overlaps across classes, the per-class candidate cap, the strict
score threshold, IoU at the threshold, empty images), on a real exported ssd300 with tens of
thousands of candidates per image, and in COCO mAP through eval_onnx.py (and predict.py) on coco128.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from src.deploy.engines import open_session
from src.deploy.export import ExportError, export_inference_model
from src.deploy.nms_graph import (BATCH_AXIS, NMS_OUTPUT_NAMES, NmsGraphError, NmsSettings, append_nms,
                                  detections_from_outputs, in_model_postprocessing)
from src.deploy.predict import PredictError, PredictOptions, check_options_fit_model, within_options
from src.eval.postprocess import Detections, postprocess_image
from src.model_utils.config import load_config
from src.models.init_weights import init_network_weights
from src.models.registry import build_ssd
from src.train.loss import SSDWithLossCell
from tests.conftest import PROJECT_ROOT, randomise_batch_norm, run_script

BACKENDS = ("onnxruntime", "openvino")
SSD300_CONFIG = PROJECT_ROOT / "config" / "ssd300_config_cpu.yaml"


def assert_same_detections(got: Detections, want: Detections, where: str) -> None:
    """Same count, labels and scores exactly; pixel boxes within 1e-5."""
    assert got.scores.size == want.scores.size, f"{where}: {got.scores.size} detections, Python {want.scores.size}"
    np.testing.assert_array_equal(got.labels, want.labels, err_msg=where)
    np.testing.assert_array_equal(got.scores, want.scores, err_msg=where)
    np.testing.assert_allclose(got.boxes_xyxy, want.boxes_xyxy, rtol=0, atol=1e-5, err_msg=where)


# ---- the appended graph alone, on hand-made outputs -----------------------------------------------

#: Normalised [ymin, xmin, ymax, xmax] boxes of the hand-made anchors (binary fractions: exact IoUs).
BOX_A = [0.25, 0.25, 0.75, 0.75]
BOX_A_SHIFTED = [0.3125, 0.25, 0.8125, 0.75]  # IoU with BOX_A 0.78
HALF_OF_A = [0.25, 0.25, 0.75, 0.5]  # IoU with BOX_A exactly 0.5 = nms_threshold below: not suppressed
FAR_BOXES = [[0.0, 0.0, 0.125, 0.125], [0.0, 0.875, 0.125, 1.0], [0.875, 0.0, 1.0, 0.125],
             [0.875, 0.875, 1.0, 1.0], [0.0, 0.375, 0.125, 0.625]]  # apart from each other and from BOX_A
SYNTHETIC = NmsSettings(min_score=0.3, nms_threshold=0.5, max_boxes=4, pre_nms_top_k=3)
NUM_ANCHORS, NUM_CLASSES = 8, 3


def synthetic_images() -> tuple[np.ndarray, np.ndarray]:
    """(boxes (4, 8, 4), scores (4, 8, 3)) for four images, background column 0.

    0: BOX_A for classes 1 and 2 at 0.9 (one box, two classes: both kept, class 1 first), a copy of it
       tied at 0.9 for class 1 (the lower anchor wins), an overlapping box at 0.8, and three far boxes at
       0.7 / 0.7 / 0.65 that are class 1's 4th-6th candidates: the cap of 3 leaves them out, so
       NMS keeps 2 boxes of max_boxes 4; a class-2 score equal to min_score is no candidate.
    1: six far-apart boxes all scoring 0.6 for both classes: the 4 kept are chosen by anchor, then class
       (anchor 0 class 1, anchor 0 class 2, anchor 1 class 1, anchor 1 class 2).
    2: nothing above min_score.
    3: BOX_A and HALF_OF_A (IoU exactly 0.5 = nms_threshold: not suppressed) of class 2.
    """
    boxes = np.tile(np.array([0.0, 0.0, 0.1, 0.1], np.float32), (4, NUM_ANCHORS, 1))
    scores = np.full((4, NUM_ANCHORS, NUM_CLASSES), 0.05, np.float32)
    boxes[0, :6] = [BOX_A, BOX_A, BOX_A_SHIFTED, *FAR_BOXES[:3]]
    scores[0, :6, 1] = [0.9, 0.9, 0.8, 0.7, 0.7, 0.65]
    scores[0, 0, 2], scores[0, 3, 2] = 0.9, SYNTHETIC.min_score
    boxes[1, :6] = [BOX_A, *FAR_BOXES]
    scores[1, :6, 1:] = 0.6
    scores[2, :, 1:] = [0.3, 0.29]
    boxes[3, :2] = [BOX_A, HALF_OF_A]
    scores[3, :2, 2] = [0.8, 0.7]
    return boxes, scores


def synthetic_nms_model(path: Path) -> Path:
    """A stand-in decode model with NMS appended: one input (2, N, 4 + C) split into boxes and scores, opset 10,
    its batch fixed at 2 the ways MindSpore fixes it (a Reshape target [2, -1, 4]; a Slice whose ends are
    begin + size, size [2, N, C], as in the FPN's upsampling), which append_nms must free."""
    batch = 2
    constants = {"box_rows": [batch, -1, 4], "boxes_end": [4], "last_axis": [2],
                 "scores_begin": [0, 0, 4], "scores_size": [batch, NUM_ANCHORS, NUM_CLASSES], "all_axes": [0, 1, 2]}
    nodes = [helper.make_node("Slice", ["decoded", "all_axes_start", "boxes_end", "last_axis"], ["box_columns"]),
             helper.make_node("Reshape", ["box_columns", "box_rows"], ["boxes"]),
             helper.make_node("Add", ["scores_begin", "scores_size"], ["scores_end"]),
             helper.make_node("Slice", ["decoded", "scores_begin", "scores_end", "all_axes"], ["scores"])]
    graph = helper.make_graph(
        nodes, "decode",
        [helper.make_tensor_value_info("decoded", TensorProto.FLOAT, [batch, NUM_ANCHORS, 4 + NUM_CLASSES])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, NUM_ANCHORS, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, NUM_ANCHORS, NUM_CLASSES])],
        initializer=[numpy_helper.from_array(np.array(values, np.int64), name) for name, values in
                     {**constants, "all_axes_start": [0]}.items()])
    decode = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    onnx.save(append_nms(decode, SYNTHETIC), str(path))
    return path


#: Image of synthetic_images whose two boxes have an IoU of exactly nms_threshold.
IOU_AT_THRESHOLD_IMAGE = 3
#: OpenVINO's NonMaxSuppression also suppresses at an IoU equal to the threshold (ONNX and Python: only above).
SUPPRESSES_AT_THRESHOLD = {"onnxruntime": False, "openvino": True}


@pytest.mark.parametrize("backend", BACKENDS)
def test_appended_graph_gives_the_python_detections(backend, tmp_path):
    session = open_session(synthetic_nms_model(tmp_path / "synthetic.onnx"), backend, "CPU", "f32")
    assert session.output_names == NMS_OUTPUT_NAMES and session.input_shape[0] is None
    boxes, scores = synthetic_images()
    image_hw = np.array([(100, 200), (50, 50), (640, 480), (100, 100)])
    deviates = SUPPRESSES_AT_THRESHOLD[backend]
    for images in ([0, 1, 2, 3], [2, 0]):  # the batch is free: 4 images, then 2 others
        outputs = session.run(np.concatenate([boxes, scores], axis=2)[images])
        for image, detections in zip(images, detections_from_outputs(outputs, image_hw[images])):
            want = postprocess_image(boxes[image], scores[image], tuple(image_hw[image]), SYNTHETIC.min_score,
                                     SYNTHETIC.nms_threshold, SYNTHETIC.max_boxes, SYNTHETIC.pre_nms_top_k)
            if not (image == IOU_AT_THRESHOLD_IMAGE and deviates):
                assert_same_detections(detections, want, f"{backend} image {image}")
        for row, count in enumerate(outputs[3]):
            assert not any(output[row, count:].any() for output in outputs[:3]), "rows past num_detections: zeros"
    outputs = session.run(np.concatenate([boxes, scores], axis=2))
    assert outputs[3].tolist() == [2, 4, 0, 1 if deviates else 2]
    assert outputs[2][0, :2].tolist() == [1, 2] and outputs[2][1].tolist() == [1, 2, 1, 2]
    np.testing.assert_array_equal(outputs[0][IOU_AT_THRESHOLD_IMAGE, :2],  # xyxy; padding zeros
                                  [[0.25, 0.25, 0.75, 0.75], [0, 0, 0, 0] if deviates else [0.25, 0.25, 0.5, 0.75]])


def test_predict_can_only_tighten_the_thresholds_of_an_nms_model(tmp_path):
    """predict.py's --score_threshold / --max_boxes on an NMS model: stricter values give the Python
    detections at those values; looser ones (or another NMS IoU) are refused."""
    session = open_session(synthetic_nms_model(tmp_path / "synthetic.onnx"), "onnxruntime", "CPU", "f32")
    boxes, scores = synthetic_images()
    image_hw = np.array([(100, 200)] * len(boxes))
    found = detections_from_outputs(session.run(np.concatenate([boxes, scores], axis=2)), image_hw)
    stricter = PredictOptions(min_score=0.65, nms_threshold=SYNTHETIC.nms_threshold, max_boxes=3, kept_classes=None,
                              draw_threshold=0.3)
    check_options_fit_model(stricter, SYNTHETIC)
    for image, detections in enumerate(found):
        want = postprocess_image(boxes[image], scores[image], (100, 200), stricter.min_score, stricter.nms_threshold,
                                 stricter.max_boxes, SYNTHETIC.pre_nms_top_k)
        assert_same_detections(within_options(detections, stricter), want, f"image {image}")
    for looser in ({"min_score": 0.2}, {"max_boxes": 5}, {"nms_threshold": 0.6}):
        with pytest.raises(PredictError, match=r"fixed at export \(score > 0.3, NMS IoU 0.5, at most 4 boxes"):
            check_options_fit_model(dataclasses.replace(stricter, **looser), SYNTHETIC)


def test_nms_model_file_form(tmp_path):
    """Opset 10, free batch in the input and every output, output types, thresholds in the metadata."""
    model = onnx.load(str(synthetic_nms_model(tmp_path / "synthetic.onnx")))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 10)]
    outputs = {value.name: value.type.tensor_type for value in model.graph.output}
    assert list(outputs) == list(NMS_OUTPUT_NAMES)
    assert [outputs[name].elem_type for name in NMS_OUTPUT_NAMES] == [TensorProto.FLOAT, TensorProto.FLOAT,
                                                                     TensorProto.INT64, TensorProto.INT64]
    for value in [model.graph.input[0], *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == BATCH_AXIS
    assert [d.dim_value for d in outputs["boxes"].shape.dim[1:]] == [SYNTHETIC.max_boxes, 4]
    recorded = {prop.key: prop.value for prop in model.metadata_props}
    assert NmsSettings.from_metadata(recorded) == SYNTHETIC


# ---- export.py: refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("file_format, quantize", [("MINDIR", "none"), ("AIR", "none"), ("ONNX", "int8")])
def test_export_nms_needs_a_float_onnx_export(file_format, quantize, tmp_path):
    config = load_config(SSD300_CONFIG, {"export_nms": True, "device_target": "Ascend" if file_format == "AIR"
                                         else "CPU"})
    with pytest.raises(ExportError, match=f"--export_nms True appends NMS to the float ONNX graph .*pass "
                                          f"--file_format ONNX --quantize none.*got --file_format {file_format} "
                                          f"--quantize {quantize}"):
        export_inference_model(config, tmp_path / "not_read.ckpt", file_format, 1, tmp_path / "ssd", quantize)
    assert not list(tmp_path.iterdir())


def test_export_py_reports_export_nms_with_mindir_in_one_line(tmp_path):
    done = run_script("export.py", "--config_path", str(SSD300_CONFIG), "--checkpoint_file_path",
                      str(tmp_path / "not_read.ckpt"), "--file_format", "MINDIR", "--export_nms", "True",
                      "--file_name", str(tmp_path / "ssd"), "--output_path", str(tmp_path / "out"))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("export.py: error: --export_nms True appends NMS")
    assert not (tmp_path / "ssd.mindir").exists()


# ---- a real exported ssd300 ---------------------------------------------------------------------

#: Low enough for tens of thousands of candidates per image and more than pre_nms_top_k in some classes.
MIN_SCORE = 0.02


@pytest.fixture(scope="module")
def exported_nms_model(tmp_path_factory) -> Path:
    """ssd300 with its initial weights (focal prior) and random BatchNorm statistics, exported by
    export_inference_model with export_nms at batch 1: class scores spread over (0, 1)."""
    folder = tmp_path_factory.mktemp("nms_export")
    config = load_config(SSD300_CONFIG, {"export_nms": True, "min_score": MIN_SCORE})
    previous_mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        network = build_ssd(config)
        init_network_weights(network, config.num_classes)
        randomise_batch_norm(network, np.random.default_rng(0))
        ms.save_checkpoint(SSDWithLossCell(network, config.gamma, config.alpha), str(folder / "ssd300.ckpt"))
        return export_inference_model(config, folder / "ssd300.ckpt", "ONNX", 1, folder / "ssd300_nms")
    finally:
        ms.set_context(mode=previous_mode)


def with_decode_outputs(nms_file: Path, target: Path) -> Path:
    """A copy of the NMS model that also returns the decoded boxes and scores its NMS reads, so that one
    run gives the graph's detections and the Python post-processing's input from the same arithmetic."""
    model = onnx.load(str(nms_file))
    nodes = {node.name: node for node in model.graph.node}
    decoded = [nodes["nms/selected"].input[0], nodes["nms/foreground"].input[0]]  # boxes, scores
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in decoded)
    onnx.save(model, str(target))
    return target


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_exported_nms_model_gives_the_python_detections_at_batch_1_and_3(exported_nms_model, backend, tmp_path):
    session = open_session(with_decode_outputs(exported_nms_model, tmp_path / "debug.onnx"), backend, "CPU", "f32")
    assert session.input_shape[0] is None, "the NMS model's batch must be free"
    images = np.random.default_rng(7).normal(0, 1, (3, 3, 300, 300)).astype(np.float32)
    image_hw = np.array([(480, 640), (300, 300), (427, 640)])
    settings = NmsSettings(MIN_SCORE, 0.6, 100)
    for batch in (1, 3):
        outputs = session.run(images[:batch])
        boxes, scores = outputs[4:]
        candidates = scores[..., 1:] > MIN_SCORE
        assert candidates.sum(axis=(1, 2)).min() > 10_000 and candidates.sum(axis=1).max() > settings.pre_nms_top_k
        for image, detections in enumerate(detections_from_outputs(outputs[:4], image_hw[:batch])):
            want = postprocess_image(boxes[image], scores[image], tuple(image_hw[image]), settings.min_score,
                                     settings.nms_threshold, settings.max_boxes)
            assert want.scores.size == settings.max_boxes
            assert_same_detections(detections, want, f"{backend} batch {batch} image {image}")


@pytest.mark.slow
def test_loaded_nms_model_reports_its_thresholds_and_checks_the_config(exported_nms_model):
    session = open_session(exported_nms_model, "onnxruntime", "CPU", "f32")
    config = load_config(SSD300_CONFIG)  # min_score 0.1: the file's own 0.02 is what it applies
    assert in_model_postprocessing(session, config) == NmsSettings(MIN_SCORE, 0.6, 100)
    with pytest.raises(NmsGraphError, match=r"needs input \['B', 3, 640, 640\]; pass the --config_path"):
        in_model_postprocessing(session, load_config(PROJECT_ROOT / "config" / "ssd_mobilenet_v1_fpn_config_cpu.yaml"))


# ---- COCO evaluation and prediction on coco128 ---------------------------------------------------

def _map_line(stdout: str) -> float:
    return float(next(line for line in stdout.splitlines() if line.startswith("mAP: ")).split()[1])


@pytest.mark.slow
def test_nms_model_evaluates_and_predicts_as_the_plain_export_on_coco128(coco128_root, tmp_path):
    """7 training steps on half of coco128, exported with and without NMS in the graph: eval_onnx.py on the
    other half writes the same detections (hence the same mAP), and predict.py the same detections.json."""
    data = ["--data_path", str(tmp_path), "--coco_root", str(coco128_root), "--train_data_type", "train2017",
            "--val_data_type", "train2017", "--val_fraction", "0.5", "--mindrecord_dir", str(tmp_path / "mindrecord")]
    trained = run_script("train.py", "--config_path", str(SSD300_CONFIG), *data, "--output_path", str(tmp_path / "run"),
                         "--batch_size", "8", "--epoch_size", "1", "--save_checkpoint_epochs", "1",
                         "--feature_extractor_base_param", "", "--freeze_layer", "None")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    (checkpoint,) = (tmp_path / "run" / "ckpt_0").glob("ssd-1_*.ckpt")
    images = [str(path) for path in sorted((coco128_root / "train2017").glob("*.jpg"))[:3]]
    outputs = {}
    for name, extra in (("plain", []), ("nms", ["--export_nms", "True"])):
        exported = run_script("export.py", "--checkpoint_file_path", str(checkpoint), "--file_format", "ONNX",
                              "--file_name", str(tmp_path / name), "--min_score", str(MIN_SCORE), *extra,
                              "--output_path", str(tmp_path / f"export_{name}"))
        assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
        evaluated = run_script("eval_onnx.py", "--file_name", str(tmp_path / f"{name}.onnx"), *data,
                               "--output_path", str(tmp_path / f"eval_{name}"))
        assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
        predicted = run_script("predict.py", "--model", str(tmp_path / f"{name}.onnx"), "--input", *images,
                               "--output_dir", str(tmp_path / f"predict_{name}"))
        assert predicted.returncode == 0, predicted.stdout[-3000:] + predicted.stderr[-3000:]
        outputs[name] = (evaluated.stdout, (tmp_path / f"eval_{name}" / "eval_onnx_detections.json").read_text(),
                         (tmp_path / f"predict_{name}" / "detections.json").read_text())
    assert f"post-processing: NMS in the model, score > {MIN_SCORE}" in outputs["nms"][0]
    assert f"post-processing: Python, score > {MIN_SCORE}" in outputs["plain"][0]
    assert json.loads(outputs["nms"][1]), "the trained model must detect something"
    assert outputs["nms"][1:] == outputs["plain"][1:]
    assert round(_map_line(outputs["nms"][0]), 3) == round(_map_line(outputs["plain"][0]), 3)
