"""OpenVINO and INT8 deployment: every engine gives the checkpoint's outputs; INT8 runs everywhere.

The chain a user deploys through: a train.py checkpoint -> export.py (ONNX, OPENVINO IR, INT8) ->
onnxruntime / OpenVINO through src/deploy/engines.py (what eval_onnx.py and predict.py use). Float
engines must agree with MindSpore within 1e-4 on the same inputs; the INT8 model must run in every
engine and stay close to its float model. Bad inputs are one clear error, and a failed export
leaves neither a finished-looking file nor a temporary behind.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from src.deploy.engines import (OnnxModelError, check_model_fits_config, open_session, openvino_cpu_has_bf16,
                                session_predictor)
from src.deploy.export import ExportError, export_inference_model
from src.deploy.quantize import CalibrationError, calibration_image_paths, load_calibration_set
from src.model_utils.config import load_config
from src.models.init_weights import init_network_weights
from src.models.registry import build_ssd, inference_network
from src.train.loss import SSDWithLossCell
from src.weights.checkpoint import load_network_weights
from tests.conftest import DEMO_CONFIG, PROJECT_ROOT, demo_args, randomise_batch_norm, run_script

CONFIG = PROJECT_ROOT / "config" / "ssd300_config_cpu.yaml"
TOLERANCE = 1e-4
BATCH = 2


@pytest.fixture(scope="module")
def float_exports(tmp_path_factory):
    """A random-weight checkpoint (random BatchNorm statistics too), its ONNX and IR at batch 2, and
    MindSpore's outputs for two inputs."""
    ms.set_context(mode=ms.GRAPH_MODE)
    folder = tmp_path_factory.mktemp("float_exports")
    config = load_config(CONFIG)
    network = build_ssd(config)
    init_network_weights(network, config.num_classes)
    randomise_batch_norm(network, np.random.default_rng(11))
    checkpoint = folder / "ssd300.ckpt"
    ms.save_checkpoint(SSDWithLossCell(network, config.gamma, config.alpha), str(checkpoint))
    reference_net = inference_network(config)
    load_network_weights(checkpoint, reference_net)
    reference_net.set_train(False)
    rng = np.random.default_rng(5)
    inputs = [rng.normal(0, 1, (BATCH, 3, *config.img_shape)).astype(np.float32) for _ in range(2)]
    references = [tuple(out.asnumpy() for out in reference_net(ms.Tensor(x))) for x in inputs]
    onnx_file = export_inference_model(config, checkpoint, "ONNX", BATCH, folder / "ssd300")
    ir_file = export_inference_model(config, checkpoint, "OPENVINO", BATCH, folder / "ssd300")
    return config, onnx_file, ir_file, inputs, references


def max_difference(got, want) -> float:
    return max(float(np.abs(np.asarray(g) - np.asarray(w)).max()) for g, w in zip(got, want))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["onnxruntime onnx", "openvino onnx", "openvino xml"])
def test_every_float_engine_gives_the_checkpoint_outputs(float_exports, engine):
    config, onnx_file, ir_file, inputs, references = float_exports
    backend, kind = engine.split()
    session = open_session(onnx_file if kind == "onnx" else ir_file, backend, "CPU", "f32")
    check_model_fits_config(session, config)
    assert session.batch_size == BATCH and " f32" in session.description
    assert max_difference(references[0], references[1]) > 1e-2, "the two inputs must give different outputs"
    predict = session_predictor(session)
    for x, reference in zip(inputs, references):
        assert max_difference(predict(x), reference) <= TOLERANCE, engine
    # three images through a batch-2 file: full batch + padded batch, padding dropped
    three = np.concatenate([inputs[0], inputs[1][:1]])
    boxes, scores = predict(three)
    assert boxes.shape[0] == scores.shape[0] == 3
    assert max_difference((boxes[2:], scores[2:]), (references[1][0][:1], references[1][1][:1])) <= TOLERANCE


@pytest.mark.slow
def test_the_ir_keeps_float32_weights_and_replaces_an_earlier_export(float_exports):
    _, _, ir_file, _, _ = float_exports
    assert ir_file.with_suffix(".bin").is_file()
    text = ir_file.read_text(encoding="utf-8")
    assert 'element_type="f16"' not in text and 'element_type="f32"' in text
    assert not [p for p in ir_file.parent.iterdir() if p.name.startswith(".")], "temporaries left behind"


@pytest.mark.slow
def test_a_failed_export_leaves_the_earlier_files_and_no_temporaries(float_exports, monkeypatch):
    config, _, ir_file, _, _ = float_exports
    before = {path: path.read_bytes() for path in (ir_file, ir_file.with_suffix(".bin"))}

    def broken_conversion(onnx_path, xml_path):
        xml_path.write_text("<half")
        xml_path.with_suffix(".bin").write_bytes(b"\0")
        raise RuntimeError("disk full")

    monkeypatch.setattr("src.deploy.export._convert_to_openvino", broken_conversion)
    with pytest.raises(RuntimeError, match="disk full"):
        export_inference_model(config, None, "OPENVINO", BATCH, ir_file)
    assert {path: path.read_bytes() for path in before} == before
    assert not [p for p in ir_file.parent.iterdir() if p.name.startswith(".")], "temporaries left behind"


@pytest.mark.slow
def test_engine_refusals_name_the_file_and_the_fix(float_exports, tmp_path, monkeypatch):
    config, onnx_file, ir_file, _, _ = float_exports
    lonely_xml = tmp_path / "model.xml"
    lonely_xml.write_bytes(ir_file.read_bytes())
    with pytest.raises(OnnxModelError, match=r"model.bin not found.*\.xml and its \.bin side by side"):
        open_session(lonely_xml, "openvino")
    with pytest.raises(OnnxModelError, match="onnxruntime reads .onnx files; run an OpenVINO IR with --backend"):
        open_session(ir_file, "onnxruntime")
    with pytest.raises(OnnxModelError, match="precision bf16 is an OpenVINO option"):
        open_session(onnx_file, "onnxruntime", precision="bf16")
    with pytest.raises(OnnxModelError, match="runs on the CPU here"):
        open_session(onnx_file, "openvino", "GPU")
    other = load_config(PROJECT_ROOT / "config" / "ssd_mobilenet_v1_fpn_config_cpu.yaml")
    with pytest.raises(OnnxModelError, match=r"input \(B, 3, H, W\) has shape .* pass the --config_path"):
        check_model_fits_config(open_session(ir_file, "openvino"), other)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(Exception, match="garbage.onnx"):
        open_session(garbage, "openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the package were not installed
    with pytest.raises(OnnxModelError, match="needs the openvino package.*--backend onnxruntime"):
        open_session(onnx_file, "openvino")


def test_quantize_requests_are_checked_before_any_work():
    config = load_config(CONFIG)
    with pytest.raises(ExportError, match="--quantize int8 writes an ONNX or OpenVINO model"):
        export_inference_model(config, None, "MINDIR", 1, "unused", quantize="int8")
    with pytest.raises(ExportError, match="quantize 'int4' is not supported"):
        export_inference_model(config, None, "ONNX", 1, "unused", quantize="int4")


def test_calibration_set_counts_unreadable_images_and_refuses_none(tmp_path, demo_root):
    config = load_config(DEMO_CONFIG, {"data_path": str(demo_root), "coco_root": "coco"})
    paths, source = calibration_image_paths(config, 5)
    assert len(paths) == 5 and source == "5 of the 48 training images"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    calibration = load_calibration_set([*paths[:3], broken], config.img_shape, 2, source)
    assert calibration.num_images == 3 and calibration.unreadable == [broken]
    assert [batch.shape for batch in calibration.batches] == [(2, 3, *config.img_shape)] * 2
    with pytest.raises(CalibrationError, match="none of the 1 calibration images could be read"):
        load_calibration_set([broken], config.img_shape, 2, source)
    empty = load_config(DEMO_CONFIG, {"data_path": str(tmp_path), "coco_root": "coco"})
    with pytest.raises(CalibrationError, match="calibrates on the training images"):
        calibration_image_paths(empty, 5)


@pytest.mark.slow
def test_int8_export_runs_in_every_engine_and_reports_its_accuracy(trained_run, demo_root, tmp_path):
    checkpoint = sorted((trained_run / "ckpt_0").glob("ssd-*.ckpt"))[-1]
    common = ["--checkpoint_file_path", str(checkpoint), *demo_args(demo_root, tmp_path / "export"),
              "--batch_size", "2"]
    exports = {}
    for file_format, quantize in (("ONNX", "none"), ("ONNX", "int8"), ("OPENVINO", "int8")):
        name = tmp_path / f"model_{quantize}"
        done = run_script("export.py", *common, "--file_format", file_format, "--file_name", str(name),
                          "--quantize", quantize, "--calib_images", "8")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        exports[file_format, quantize] = Path(re.search(r"to (\S+) \(input", done.stdout + done.stderr).group(1))
        if quantize == "int8":
            log = done.stdout + done.stderr
            assert "INT8 calibration on 8 images (8 of the 48 training images)" in log
            change = re.search(r"FP32 mAP [\d.]+ AP50 ([\d.]+); INT8 mAP [\d.]+ AP50 ([\d.]+); AP50 change", log)
            assert change, log[-2000:]
    config = load_config(DEMO_CONFIG)
    validation_images = sorted((demo_root / "coco" / "val2017").glob("*.jpg"))[:4]
    images = np.concatenate(load_calibration_set(validation_images, config.img_shape, BATCH, "val").batches)
    float_boxes, float_scores = session_predictor(open_session(exports["ONNX", "none"], "openvino"))(images)
    runs = {"onnxruntime int8 onnx": open_session(exports["ONNX", "int8"], "onnxruntime"),
            "openvino int8 onnx": open_session(exports["ONNX", "int8"], "openvino"),
            "openvino int8 ir": open_session(exports["OPENVINO", "int8"], "openvino")}
    for engine, session in runs.items():
        boxes, scores = session_predictor(session)(images)
        assert boxes.shape == float_boxes.shape and scores.shape == float_scores.shape, engine
        assert not np.array_equal(scores, float_scores), f"{engine}: INT8 gave the float outputs exactly"
        assert float(np.abs(scores - float_scores).mean()) < 0.05, engine  # a broken model differs by ~0.3
        assert float(np.abs(boxes - float_boxes).mean()) < 0.05, engine


@pytest.mark.slow
def test_bf16_is_explicit_and_compiles_under_mindspores_onednn_cap(float_exports):
    """conftest caps oneDNN at AVX2 for MindSpore, as the entry scripts do; OpenVINO must compile bf16 anyway."""
    config, onnx_file, _, inputs, references = float_exports
    assert os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2"
    if not openvino_cpu_has_bf16():
        with pytest.raises(OnnxModelError, match="needs a CPU with native bf16"):
            open_session(onnx_file, "openvino", precision="bf16")
        return
    session = open_session(onnx_file, "openvino", precision="bf16")
    assert "CPU bf16" in session.description and os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    outputs = session_predictor(session)(inputs[0])
    assert max_difference(outputs, references[0]) > TOLERANCE, "bf16 must differ from f32"
    # rounding only: single scores of this random-weight network move by up to ~0.6, the mean hardly at all
    assert all(float(np.abs(got - want).mean()) < 0.02 for got, want in zip(outputs, references[0]))
