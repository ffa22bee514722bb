"""The five networks: checkpoint layout, sizes, outputs; SSD300 details, decoder, helpers.

Forward tests run in GRAPH_MODE (how training and export run) on 300 px inputs; each compile
takes a few seconds on CPU, so every test builds at most two graphs.
"""
from __future__ import annotations

import re
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from src.boxes.anchors import default_boxes_from_config
from src.boxes.coding import BoxCoder
from src.model_utils.config import Config, ConfigError, load_config
from src.models.fpn import upsample_2x
from src.models.init_weights import init_network_weights
from src.models.layers import FlattenConcat, InvertedResidual
from src.models.registry import NETWORKS, build_ssd, inference_network
from src.models.ssd import BoxDecoder, SsdInferWithDecoder, freeze_layers
from src.train.loss import SSDWithLossCell
from tests.conftest import read_layout

NUM_BOXES = 1917
NUM_CLASSES = 81


def ssd300_config() -> Config:
    """A fresh ssd300 configuration (tests change some of its keys)."""
    return load_config("config/ssd300_config_cpu.yaml")



@pytest.fixture()
def images() -> ms.Tensor:
    rng = np.random.default_rng(0)
    return ms.Tensor(rng.normal(size=(2, 3, 300, 300)).astype(np.float32))


#: model_name -> (boxes, trainable elements, all network elements) from REFERENCE_SSD.md §2.10, for the
#: network built from its registry record's seed config (the model zoo's config of that network).
NETWORK_FACTS = {
    "ssd300": (1917, 4_393_461, 4_445_365),
    "ssd_mobilenet_v1": (1917, 11_294_517, 11_329_461),
    "ssd_vgg16": (7308, 24_305_589, 24_316_853),
    "ssd_mobilenet_v1_fpn": (51150, 12_534_846, 12_579_774),
    "ssd_resnet50_fpn": (51150, 33_294_654, 33_370_814),
}


def seed_config(model_name: str, overrides: dict | None = None) -> Config:
    """The model zoo's config of ``model_name``, as its registry record names it."""
    return load_config(NETWORKS[model_name].config_path, overrides)


def test_every_registered_network_has_its_reference_facts() -> None:
    assert set(NETWORK_FACTS) == set(NETWORKS)


@pytest.mark.parametrize("model_name", sorted(NETWORKS))
def test_parameter_layout_matches_zoo_checkpoint(checkpoint_layout_dir: Path, model_name: str) -> None:
    """Every network.* row of the zoo's table: name, shape, trainability; and the trainable order."""
    expected = read_layout(checkpoint_layout_dir, model_name)
    config = seed_config(model_name)
    loss_cell = SSDWithLossCell(build_ssd(config), config.gamma, config.alpha)
    actual = [(name, tuple(p.shape), p.requires_grad) for name, p in loss_cell.parameters_and_names()]
    by_name = {row[0]: row for row in actual}
    problems = [f"missing {row}" for row in expected if row[0] not in by_name]
    problems += [f"expected {row}, got {by_name[row[0]]}" for row in expected
                 if row[0] in by_name and by_name[row[0]] != row]
    expected_names = {row[0] for row in expected}
    problems += [f"unexpected {row}" for row in actual if row[0] not in expected_names]
    assert expected and not problems, "\n".join(problems)
    # Parameter.name is what save_checkpoint writes: shared tower convs keep their first path.
    assert sorted(p.name for p in loss_cell.get_parameters()) == sorted(expected_names)
    # Trainable order fixes the optimizer state order and the all_reduce_fusion_config split points.
    assert [r[0] for r in actual if r[2]] == [r[0] for r in expected if r[2]]


@pytest.mark.parametrize("model_name", sorted(NETWORKS))
def test_parameter_counts(model_name: str) -> None:
    _, trainable, total = NETWORK_FACTS[model_name]
    network = build_ssd(seed_config(model_name))
    assert sum(p.size for p in network.trainable_params()) == trainable
    assert sum(p.size for p in network.get_parameters()) == total


@pytest.mark.slow
@pytest.mark.parametrize("model_name", sorted(NETWORKS))
def test_every_network_outputs_decoded_boxes_and_scores(graph_mode, model_name: str) -> None:
    num_boxes = NETWORK_FACTS[model_name][0]
    config = seed_config(model_name)
    infer = inference_network(config)
    infer.set_train(False)
    images = np.random.default_rng(0).normal(size=(2, 3, *config.img_shape)).astype(np.float32)
    boxes, scores = (t.asnumpy() for t in infer(ms.Tensor(images)))
    assert boxes.shape == (2, num_boxes, 4) and scores.shape == (2, num_boxes, NUM_CLASSES)
    assert 0.0 <= boxes.min() and boxes.max() <= 1.0 and 0.0 <= scores.min() and scores.max() <= 1.0
    # Batch items are independent (no cross-talk through reshapes): image 1 alone gives the same result.
    single_boxes, single_scores = (t.asnumpy() for t in infer(ms.Tensor(images[1:])))
    np.testing.assert_allclose(single_boxes[0], boxes[1], atol=1e-5)
    np.testing.assert_allclose(single_scores[0], scores[1], atol=1e-5)


@pytest.mark.parametrize("model_name", sorted(NETWORKS))
def test_feature_maps_are_the_ones_the_anchors_assume(model_name: str) -> None:
    config = seed_config(model_name)
    sizes = type(build_ssd(config)).feature_map_sizes(config.img_shape[0])
    if config.use_anchor_generator:
        assert sizes == [config.img_shape[0] // step for step in config.steps]
    else:
        assert sizes == list(config.feature_size)


@pytest.mark.parametrize("model_name, img_shape, key", [
    ("ssd300", [320, 320], "feature_size"),
    ("ssd_vgg16", [512, 512], "feature_size"),
    ("ssd300", [300, 320], "feature_size"),
])
def test_img_shape_that_does_not_fit_the_anchors_is_refused(model_name: str, img_shape: list, key: str) -> None:
    config = seed_config(model_name)
    config.img_shape = img_shape
    with pytest.raises(ValueError, match=rf"img_shape {re.escape(str(img_shape))}.*{key}"):
        build_ssd(config)


def test_fpn_img_shape_must_be_a_multiple_of_every_anchor_stride() -> None:
    """Then the SAME-padded maps are exactly img_shape / stride, which the grid anchors assume."""
    with pytest.raises(ConfigError, match=r"img_shape \[768, 704\].*stride 128"):
        seed_config("ssd_resnet50_fpn", {"img_shape": [768, 704]})
    config = seed_config("ssd_resnet50_fpn", {"img_shape": [768, 512]})
    assert config.num_ssd_boxes == 6 * sum((768 // s) * (512 // s) for s in config.steps)
    build_ssd(config)


class _Upsample(nn.Cell):
    """upsample_2x next to the op the zoo's checkpoints were trained with."""

    def __init__(self) -> None:
        super().__init__()
        self.reference = ops.ResizeBilinearV2(align_corners=False, half_pixel_centers=False)

    def construct(self, x):
        return upsample_2x(x), self.reference(x, (2 * x.shape[2], 2 * x.shape[3]))


def test_fpn_upsampling_uses_the_asymmetric_bilinear_mapping(graph_mode) -> None:
    """source = destination * in / out, no half-pixel offset (MindSpore 1.x ResizeBilinear)."""
    rng = np.random.default_rng(4)
    coarse = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    expected = np.empty((2, 3, 6, 10), np.float32)
    for i in range(6):
        y = i * 3 / 6
        y0, fy = int(np.floor(y)), y - np.floor(y)
        y1 = min(y0 + 1, 2)
        for j in range(10):
            x = j * 5 / 10
            x0, fx = int(np.floor(x)), x - np.floor(x)
            x1 = min(x0 + 1, 4)
            top = coarse[..., y0, x0] * (1 - fx) + coarse[..., y0, x1] * fx
            bottom = coarse[..., y1, x0] * (1 - fx) + coarse[..., y1, x1] * fx
            expected[..., i, j] = top * (1 - fy) + bottom * fy
    ours, resize_bilinear_v2 = (t.asnumpy() for t in _Upsample()(ms.Tensor(coarse)))
    np.testing.assert_allclose(resize_bilinear_v2, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ours, resize_bilinear_v2)  # same rounding, not just close
    large = rng.normal(scale=30.0, size=(2, 8, 20, 20)).astype(np.float32)
    ours, resize_bilinear_v2 = (t.asnumpy() for t in _Upsample()(ms.Tensor(large)))
    np.testing.assert_array_equal(ours, resize_bilinear_v2)


@pytest.mark.parametrize("model_name", ["ssd_mobilenet_v1_fpn", "ssd_resnet50_fpn"])
def test_fpn_head_shares_conv_weights_but_not_batchnorm_across_levels(model_name: str) -> None:
    head = build_ssd(seed_config(model_name)).multi_box
    for tower in (head.addition_layer_loc, head.addition_layer_cls):
        assert len(tower) == 5 and all(len(level) == 4 for level in tower)
        for layer in range(4):
            convs = {id(level[layer].features[0]) for level in tower}
            norms = {id(level[layer].features[1]) for level in tower}
            assert len(convs) == 1 and len(norms) == 5
    loc_convs = {id(level[0].features[0]) for level in head.addition_layer_loc}
    assert loc_convs.isdisjoint(id(level[0].features[0]) for level in head.addition_layer_cls)


def test_resnet_starts_each_residual_branch_at_zero() -> None:
    resnet = build_ssd(seed_config("ssd_resnet50_fpn")).feature_extractor.resnet
    blocks = [block for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4) for block in stage]
    assert len(blocks) == 16
    assert all(not block.bn3.gamma.asnumpy().any() for block in blocks)
    assert all(block.bn1.gamma.asnumpy().all() and block.bn1.eps == pytest.approx(1e-3) for block in blocks)
    assert [block.down_sample for block in blocks].count(True) == 4


def test_vgg_extras_follow_the_zoo_padding_and_dilation() -> None:
    network = build_ssd(seed_config("ssd_vgg16"))
    assert network.b6_1.padding == 6 and network.b6_1.pad_mode == "pad" and 6 in network.b6_1.dilation
    assert network.b8_1.padding == 1 and network.b8_2.pad_mode == "valid" and network.b10_2.pad_mode == "valid"
    norms = [name for name, cell in network.cells_and_names() if isinstance(cell, nn.BatchNorm2d)]
    assert norms and all(name.startswith("multi_box.") for name in norms)  # ssd_vgg_bn False: none in VGG


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


@pytest.mark.slow
def test_training_forward_shapes_graph_mode(graph_mode, images) -> None:
    network = build_ssd(ssd300_config())
    network.set_train(True)
    pred_loc, pred_label = network(images)
    assert pred_loc.shape == (2, NUM_BOXES, 4) and pred_label.shape == (2, NUM_BOXES, NUM_CLASSES)
    assert pred_loc.dtype == ms.float32 and pred_label.dtype == ms.float32
    assert np.isfinite(pred_loc.asnumpy()).all()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    training_names = [name for name, _ in SSDWithLossCell(network, config.gamma, config.alpha).parameters_and_names()]
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
    freeze_layers(network, "backbone")
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
