"""SSD300-MobileNetV2: checkpoint layout, forward shapes, train/eval outputs, decoder, helpers.

Forward tests run in GRAPH_MODE (how training and export run) on 300 px inputs; each compile
takes a few seconds on CPU, so every test builds at most two graphs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from src.anchor_generator import default_boxes_from_config
from src.box_utils import BoxCoder
from src.init_params import init_network_weights
from src.layers import FlattenConcat, InvertedResidual
from src.loss import SSDWithLossCell
from src.model_utils.config import Config, load_config
from src.ssd import BoxDecoder, SsdInferWithDecoder, build_ssd, freeze_backbone

NUM_BOXES = 1917
NUM_CLASSES = 81


def ssd300_config() -> Config:
    """A fresh ssd300 configuration (tests change some of its keys)."""
    return load_config("config/ssd300_config_cpu.yaml")


@pytest.fixture()
def graph_mode():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


@pytest.fixture()
def images() -> ms.Tensor:
    rng = np.random.default_rng(0)
    return ms.Tensor(rng.normal(size=(2, 3, 300, 300)).astype(np.float32))


def _read_layout(path: Path) -> list[tuple[str, tuple, bool]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("network."):
            name, shape, _dtype, grad = line.split("\t")
            rows.append((name, tuple(int(d) for d in shape.strip("[]").split(",")), grad == "True"))
    return rows


def test_parameter_layout_matches_zoo_checkpoint(checkpoint_layout_dir: Path) -> None:
    expected = _read_layout(checkpoint_layout_dir / "ssd300.tsv")
    config = ssd300_config()
    loss_cell = SSDWithLossCell(build_ssd(config), config)
    actual = [(name, tuple(p.shape), p.requires_grad) for name, p in loss_cell.parameters_and_names()]
    by_name = {row[0]: row for row in actual}
    problems = [f"missing {row}" for row in expected if row[0] not in by_name]
    problems += [f"expected {row}, got {by_name[row[0]]}" for row in expected
                 if row[0] in by_name and by_name[row[0]] != row]
    expected_names = {row[0] for row in expected}
    problems += [f"unexpected {row}" for row in actual if row[0] not in expected_names]
    assert len(expected) == 409 and not problems, "\n".join(problems)
    # Trainable order fixes the optimizer state order and the all_reduce_fusion_config split points.
    assert [r[0] for r in actual if r[2]] == [r[0] for r in expected if r[2]]


def test_block_hyper_parameters_follow_the_zoo() -> None:
    network = build_ssd(ssd300_config())
    cells = [cell for _, cell in network.cells_and_names()]
    norms = [c for c in cells if isinstance(c, nn.BatchNorm2d)]
    convs = [c for c in cells if isinstance(c, nn.Conv2d)]
    assert len(norms) == 77 and len(convs) == 89  # as many as the checkpoint has BN and conv layers
    # MindSpore keeps 1 - momentum: 0.03 is the zoo's momentum 0.97.
    assert all(c.eps == pytest.approx(1e-3) and c.momentum == pytest.approx(0.03) for c in norms)
    assert all(c.pad_mode == "same" for c in convs)
    assert not [c for c in cells if isinstance(c, (nn.ReLU, nn.Sigmoid))]
    blocks = [c for c in cells if isinstance(c, InvertedResidual)]
    assert sum(b.use_residual for b in blocks) == 10  # repeated blocks of the 24..160 stages
    assert [b.last_relu for b in blocks] == [False] * 17 + [True] * 4


def test_parameter_counts() -> None:
    network = build_ssd(ssd300_config())
    assert sum(p.size for p in network.trainable_params()) == 4_393_461
    assert sum(p.size for p in network.get_parameters()) == 4_445_365


def test_training_forward_shapes_graph_mode(graph_mode, images) -> None:
    network = build_ssd(ssd300_config())
    network.set_train(True)
    pred_loc, pred_label = network(images)
    assert pred_loc.shape == (2, NUM_BOXES, 4) and pred_label.shape == (2, NUM_BOXES, NUM_CLASSES)
    assert pred_loc.dtype == ms.float32 and pred_label.dtype == ms.float32
    assert np.isfinite(pred_loc.asnumpy()).all()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_eval_mode_scores_are_sigmoid_of_training_mode_logits(graph_mode, images) -> None:
    network = build_ssd(ssd300_config())
    # Training-mode network with inference BatchNorm: same arithmetic as eval mode minus the sigmoid.
    network.set_train(True)
    for _, cell in network.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            cell.set_train(False)
    loc_train, logits = (t.asnumpy() for t in network(images))
    network.set_train(False)
    loc_eval, scores = (t.asnumpy() for t in network(images))
    assert logits.min() < 0.0 < logits.max(), "training mode must return raw logits"
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    np.testing.assert_allclose(loc_eval, loc_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, _sigmoid(logits), rtol=1e-5, atol=1e-6)


def test_float16_body_still_outputs_float32(graph_mode, images) -> None:
    network = build_ssd(ssd300_config())
    network.to_float(ms.float16)
    network.set_train(False)
    pred_loc, scores = network(images)
    assert pred_loc.dtype == ms.float32 and scores.dtype == ms.float32
    assert pred_loc.shape == (2, NUM_BOXES, 4) and 0.0 <= scores.asnumpy().min() <= scores.asnumpy().max() <= 1.0


def test_box_decoder_matches_numpy_box_coder(graph_mode) -> None:
    config = ssd300_config()
    anchors = default_boxes_from_config(config)
    # Large offsets so that many boxes leave the image and exercise the clipping.
    loc = np.random.default_rng(1).normal(scale=3.0, size=(2, NUM_BOXES, 4)).astype(np.float32)
    decoded = BoxDecoder(anchors, config.prior_scaling)(ms.Tensor(loc)).asnumpy()
    expected = BoxCoder(anchors, config.prior_scaling).decode(loc)
    assert ((expected == 0.0) | (expected == 1.0)).mean() > 0.1
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-6)


def test_infer_wrapper_decodes_network_output_and_keeps_checkpoint_names(graph_mode, images) -> None:
    config = ssd300_config()
    anchors = default_boxes_from_config(config)
    network = build_ssd(config)
    infer = SsdInferWithDecoder(network, anchors, config.prior_scaling)
    infer.set_train(False)
    boxes, scores = (t.asnumpy() for t in infer(images))
    pred_loc, net_scores = (t.asnumpy() for t in network(images))
    assert boxes.shape == (2, NUM_BOXES, 4) and scores.shape == (2, NUM_BOXES, NUM_CLASSES)
    np.testing.assert_allclose(boxes, BoxCoder(anchors, config.prior_scaling).decode(pred_loc), atol=1e-6)
    np.testing.assert_allclose(scores, net_scores, atol=1e-7)
    training_names = [name for name, _ in SSDWithLossCell(network, config).parameters_and_names()]
    assert [name for name, _ in infer.parameters_and_names()] == training_names


def test_unknown_model_name_lists_known_networks() -> None:
    config = ssd300_config()
    config.model_name = "ssd512"
    with pytest.raises(ValueError, match=r"'ssd512'.*ssd300"):
        build_ssd(config)


def test_unresolved_num_ssd_boxes_is_rejected() -> None:
    config = ssd300_config()
    config.num_ssd_boxes = -1
    with pytest.raises(ValueError, match="num_ssd_boxes"):
        build_ssd(config)


def test_freeze_backbone_removes_only_backbone_from_trainable_params() -> None:
    network = build_ssd(ssd300_config())
    backbone_size = sum(p.size for p in network.backbone.trainable_params())
    freeze_backbone(network)
    trainable = network.trainable_params()
    assert backbone_size > 0
    assert not [p.name for p in trainable if p.name.startswith("backbone.")]
    assert sum(p.size for p in trainable) == 4_393_461 - backbone_size
    assert any(p.name.startswith("multi_residual.") for p in trainable)


def test_init_network_weights_he_normal_and_class_prior() -> None:
    config = ssd300_config()
    network = build_ssd(config)
    before = {p.name: p.asnumpy().copy() for p in network.get_parameters()}
    init_network_weights(network, config.num_classes, prior=0.01)
    class_biases = {p.name for p in network.multi_box.class_biases()}
    for name, param in ((p.name, p) for p in network.get_parameters()):
        value = param.asnumpy()
        if name in class_biases:
            per_anchor = value.reshape(-1, config.num_classes)
            np.testing.assert_allclose(1 / (1 + np.exp(-per_anchor[:, 0])), 0.99, rtol=1e-5)
            np.testing.assert_allclose(1 / (1 + np.exp(-per_anchor[:, 1:])), 0.01, rtol=1e-4)
        elif param.requires_grad and name.endswith("weight"):
            assert not np.array_equal(value, before[name]), name
            fan_in = value.shape[1] * value.shape[2] * value.shape[3]
            assert abs(value.std() / np.sqrt(2.0 / fan_in) - 1) < 0.2 or value.size < 200, name
        else:
            np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_flatten_concat_orders_level_row_column_anchor(graph_mode) -> None:
    rng = np.random.default_rng(2)
    levels = [rng.normal(size=(2, 3 * 5, 4, 4)), rng.normal(size=(2, 6 * 5, 2, 2))]
    out = FlattenConcat(4 * 4 * 3 + 2 * 2 * 6)(tuple(ms.Tensor(x.astype(np.float32)) for x in levels)).asnumpy()
    # Box (level 1, row 1, column 0, anchor 4) -> channels 4*5 .. 4*5+5 of that level's map.
    index = 4 * 4 * 3 + (1 * 2 + 0) * 6 + 4
    np.testing.assert_allclose(out[:, index], levels[1][:, 20:25, 1, 0], rtol=1e-6)
    assert out.shape == (2, 72, 5)
