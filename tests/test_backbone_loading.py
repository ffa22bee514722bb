"""ImageNet backbone loading and ``freeze_layer: backbone`` for all five networks.

Each test writes a synthetic ImageNet classification checkpoint with random values under the
names the model zoo's (or torchvision's) classification network uses, spelled out here from the
reference (REFERENCE_SSD.md §2.11), loads it into a freshly built SSD network, and checks that
every backbone tensor took its source value (BatchNorm gamma adapted where the eps differs) and
that nothing outside the backbone moved.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import convert_torchvision_backbone
from src.model_utils.config import Config, load_config
from src.models.registry import NETWORKS, build_ssd
from src.models.ssd import freeze_layers
from src.train.loss import SSDWithLossCell
from src.train.step import build_optimizer, build_train_step
from src.weights.checkpoint import CheckpointMismatchError
from src.weights.pretrained import BACKBONE_MAPPINGS, backbone_mapping, load_backbone_weights
from tests.test_pretrained import write_torch_state_dict

IMAGENET_BN_EPS = 1e-5
#: Where each network keeps its ImageNet backbone (REFERENCE_SSD.md §2.10), as parameter-name prefixes.
BACKBONE_PREFIX = {
    "ssd300": "backbone.",
    "ssd_mobilenet_v1": "feature_extractor.mobilenet_v1.",
    "ssd_mobilenet_v1_fpn": "feature_extractor.mobilenet_v1.",
    "ssd_resnet50_fpn": "feature_extractor.resnet.",
    "ssd_vgg16": "backbone.",
}


def config_for(model_name: str, **overrides):
    return load_config(NETWORKS[model_name].cpu_config_path, overrides=overrides)


# ---------------------------------------------------------------- synthetic classification networks

@dataclass(frozen=True)
class Layer:
    """One conv / BatchNorm / dense layer of a classification network, named as in both frameworks.

    ``zoo``: module name in the MindSpore model zoo's checkpoint; ``torch``: in torchvision's
    state dict (None when torchvision has no such network). ``shape``: weight shape, (C,) for BN.
    """

    kind: str
    zoo: str
    torch: str | None
    shape: tuple
    bias: bool = False


def conv(zoo: str, torch: str | None, shape: tuple, bias: bool = False) -> Layer:
    return Layer("conv", zoo, torch, shape, bias)


def bn(zoo: str, torch: str | None, channels: int) -> Layer:
    return Layer("bn", zoo, torch, (channels,))


def dense(zoo: str, torch: str | None, shape: tuple) -> Layer:
    return Layer("dense", zoo, torch, shape, bias=True)


ZOO_BN = ("gamma", "beta", "moving_mean", "moving_variance")
TORCH_BN = ("weight", "bias", "running_mean", "running_var")


def materialise(layers: list[Layer], seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random values under the zoo names and the same values under the torchvision names.

    BN variances span 1e-4..1 so that the eps adaptation (1e-5 -> 1e-3) visibly changes gammas.
    """
    rng = np.random.default_rng(seed)
    zoo, torch = {}, {}

    def put(layer: Layer, zoo_leaf: str, torch_leaf: str, value: np.ndarray) -> None:
        zoo[f"{layer.zoo}.{zoo_leaf}"] = value
        if layer.torch is not None:
            torch[f"{layer.torch}.{torch_leaf}"] = value

    for layer in layers:
        if layer.kind == "bn":
            channels = layer.shape
            values = (rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels), rng.normal(0, 0.5, channels),
                      10.0 ** rng.uniform(-4, 0, channels))
            for zoo_leaf, torch_leaf, value in zip(ZOO_BN, TORCH_BN, values):
                put(layer, zoo_leaf, torch_leaf, value.astype(np.float32))
            if layer.torch is not None:
                torch[f"{layer.torch}.num_batches_tracked"] = np.array(5004, dtype=np.int64)
            continue
        put(layer, "weight", "weight", rng.normal(0, 0.05, layer.shape).astype(np.float32))
        if layer.bias:
            put(layer, "bias", "bias", rng.normal(0, 0.05, layer.shape[:1]).astype(np.float32))
    return zoo, torch


MOBILENET_V1_CHANNELS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


def mobilenet_v1_layers() -> list[Layer]:
    """The zoo's MobileNetV1: ``network.{0..26}.{0: conv, 1: BN}`` (stem, then dw/pw pairs) + ``dense``."""
    layers = [conv("network.0.0", None, (32, 3, 3, 3)), bn("network.0.1", None, 32)]
    for stage, (c_in, c_out) in enumerate(zip(MOBILENET_V1_CHANNELS, MOBILENET_V1_CHANNELS[1:])):
        depthwise, pointwise = 2 * stage + 1, 2 * stage + 2
        layers += [conv(f"network.{depthwise}.0", None, (c_in, 1, 3, 3)), bn(f"network.{depthwise}.1", None, c_in),
                   conv(f"network.{pointwise}.0", None, (c_out, c_in, 1, 1)), bn(f"network.{pointwise}.1", None, c_out)]
    return layers + [dense("dense", None, (1000, 1024))]


def resnet50_layers() -> list[Layer]:
    """ResNet-50: zoo ``down_sample_layer`` / ``end_point`` = torchvision ``downsample`` / ``fc``."""
    layers = [conv("conv1", "conv1", (64, 3, 7, 7)), bn("bn1", "bn1", 64)]
    in_channels = 64
    for stage, (blocks, out) in enumerate(((3, 256), (4, 512), (6, 1024), (3, 2048)), start=1):
        mid = out // 4
        for block in range(blocks):
            name = f"layer{stage}.{block}"
            block_in = in_channels if block == 0 else out
            for index, shape in enumerate(((mid, block_in, 1, 1), (mid, mid, 3, 3), (out, mid, 1, 1)), start=1):
                layers += [conv(f"{name}.conv{index}", f"{name}.conv{index}", shape),
                           bn(f"{name}.bn{index}", f"{name}.bn{index}", shape[0])]
            if block == 0:
                layers += [conv(f"{name}.down_sample_layer.0", f"{name}.downsample.0", (out, block_in, 1, 1)),
                           bn(f"{name}.down_sample_layer.1", f"{name}.downsample.1", out)]
        in_channels = out
    return layers + [dense("end_point", "fc", (1000, 2048))]


VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
#: Positions of the 13 convolutions in the classification VGG16's flat layer list, without / with BN.
VGG16_CONV_INDICES = {False: (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
                      True: (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)}
#: The SSD backbone's convolutions, without / with ``ssd_vgg_bn``.
SSD_VGG16_CONVS = {False: ("b1.0", "b1.2", "b2.0", "b2.2", "b3.0", "b3.2", "b3.4", "b4.0", "b4.2", "b4.4",
                           "b5.0", "b5.2", "b5.4"),
                   True: ("b1.0", "b1.3", "b2.0", "b2.3", "b3.0", "b3.3", "b3.6", "b4.0", "b4.3", "b4.6",
                          "b5.0", "b5.3", "b5.6")}


def vgg16_layers(with_bn: bool) -> list[Layer]:
    """VGG16(-BN): zoo ``layers.{i}`` = torchvision ``features.{i}``, convs with bias, BN at i + 1."""
    layers, in_channels = [], 3
    for index, width in zip(VGG16_CONV_INDICES[with_bn], VGG16_WIDTHS):
        layers.append(conv(f"layers.{index}", f"features.{index}", (width, in_channels, 3, 3), bias=True))
        if with_bn:
            layers.append(bn(f"layers.{index + 1}", f"features.{index + 1}", width))
        in_channels = width
    return layers + [dense("classifier.6", "classifier.6", (1000, 4096))]


MOBILENET_V2_BLOCKS = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))


def mobilenet_v2_layers() -> list[Layer]:
    """The zoo's MobileNetV2 (``ConvBNReLU`` units hold conv/BN as ``features.{0,1}``, torchvision has no
    ``features`` level there) with the zoo head ``head.1`` = torchvision ``classifier.1``."""
    layers = [conv("features.0.features.0", "features.0.0", (32, 3, 3, 3)),
              bn("features.0.features.1", "features.0.1", 32)]
    index, inp = 1, 32
    for expand, out, repeats in MOBILENET_V2_BLOCKS:
        for _ in range(repeats):
            name, hidden = f"features.{index}.conv", inp * expand
            if expand != 1:
                layers += [conv(f"{name}.0.features.0", f"{name}.0.0", (hidden, inp, 1, 1)),
                           bn(f"{name}.0.features.1", f"{name}.0.1", hidden)]
            dw = 1 if expand != 1 else 0
            layers += [conv(f"{name}.{dw}.features.0", f"{name}.{dw}.0", (hidden, 1, 3, 3)),
                       bn(f"{name}.{dw}.features.1", f"{name}.{dw}.1", hidden),
                       conv(f"{name}.{dw + 1}", f"{name}.{dw + 1}", (out, hidden, 1, 1)),
                       bn(f"{name}.{dw + 2}", f"{name}.{dw + 2}", out)]
            index, inp = index + 1, out
    layers += [conv("features.18.features.0", "features.18.0", (1280, 320, 1, 1)),
               bn("features.18.features.1", "features.18.1", 1280)]
    return layers + [dense("head.1", "classifier.1", (1000, 1280))]


# ---------------------------------------------------------------- expected source of every backbone tensor

def same_name(name: str) -> str:
    return name


def mobilenet_v2_source(name: str) -> str:
    """features_1.i = features.i, features_2.j = features.(j + 14), expand_layer_conv_13 = features.14.conv.0."""
    if match := re.fullmatch(r"features_1\.(\d+)\.(.+)", name):
        return f"features.{match[1]}.{match[2]}"
    if match := re.fullmatch(r"features_2\.(\d+)\.(.+)", name):
        return f"features.{int(match[1]) + 14}.{match[2]}"
    return re.sub(r"^expand_layer_conv_13\.", "features.14.conv.0.", name)


def vgg16_source(source_bn: bool, ssd_bn: bool) -> Callable[[str], str | None]:
    table = {}
    for ssd, index in zip(SSD_VGG16_CONVS[ssd_bn], VGG16_CONV_INDICES[source_bn]):
        table[f"{ssd}.weight"] = f"layers.{index}.weight"
        if source_bn and ssd_bn:
            block, slot = ssd.split(".")
            table.update({f"{block}.{int(slot) + 1}.{leaf}": f"layers.{index + 1}.{leaf}" for leaf in ZOO_BN})
    return table.get


@dataclass(frozen=True)
class Case:
    model_name: str
    layers: Callable[[], list[Layer]]
    source: Callable[[str], str | None]  # SSD backbone parameter -> zoo key (None: stays at init)
    classifier: tuple[str, ...]  # zoo keys of the classifier (must end up unused)
    rescaled_bns: int  # loaded BNs whose SSD eps differs from ImageNet's 1e-5
    overrides: dict = field(default_factory=dict)


CASES = {
    "ssd300": Case("ssd300", mobilenet_v2_layers, mobilenet_v2_source, ("head.1.weight", "head.1.bias"), 53),
    "ssd_mobilenet_v1": Case("ssd_mobilenet_v1", mobilenet_v1_layers, same_name, ("dense.weight", "dense.bias"), 0),
    "ssd_mobilenet_v1_fpn": Case("ssd_mobilenet_v1_fpn", mobilenet_v1_layers, same_name,
                                 ("dense.weight", "dense.bias"), 0),
    "ssd_resnet50_fpn": Case("ssd_resnet50_fpn", resnet50_layers, same_name,
                             ("end_point.weight", "end_point.bias"), 53),
    "ssd_vgg16": Case("ssd_vgg16", lambda: vgg16_layers(False), vgg16_source(False, False),
                      ("classifier.6.weight", "classifier.6.bias"), 0),
    "ssd_vgg16-bn": Case("ssd_vgg16", lambda: vgg16_layers(True), vgg16_source(True, True),
                         ("classifier.6.weight", "classifier.6.bias"), 0,
                         {"pretrain_vgg_bn": True, "ssd_vgg_bn": True}),
    "ssd_vgg16-bn_source_plain_ssd": Case("ssd_vgg16", lambda: vgg16_layers(True), vgg16_source(True, False),
                                          ("classifier.6.weight", "classifier.6.bias"), 0, {"pretrain_vgg_bn": True}),
    "ssd_vgg16-plain_source_bn_ssd": Case("ssd_vgg16", lambda: vgg16_layers(False), vgg16_source(False, True),
                                          ("classifier.6.weight", "classifier.6.bias"), 0, {"ssd_vgg_bn": True}),
}
TORCHVISION_CASES = ("ssd300", "ssd_resnet50_fpn", "ssd_vgg16", "ssd_vgg16-bn", "ssd_vgg16-bn_source_plain_ssd")


def write_zoo_checkpoint(path: Path, weights: dict[str, np.ndarray]) -> Path:
    ms.save_checkpoint([{"name": key, "data": ms.Tensor(value)} for key, value in weights.items()], str(path))
    return path


def all_values(network: nn.Cell) -> dict[str, np.ndarray]:
    """Copies: ``asnumpy()`` may share memory with the parameter, which a training step updates in place."""
    return {name: param.asnumpy().copy() for name, param in network.parameters_and_names()}


def batchnorm_eps(network: nn.Cell) -> dict[str, float]:
    """BN cell name -> its eps."""
    return {name: cell.eps for name, cell in network.cells_and_names() if isinstance(cell, nn.BatchNorm2d)}


def check_loaded(case: Case, network: nn.Cell, before: dict, report, zoo: dict[str, np.ndarray]) -> None:
    """Every backbone tensor with a source holds it (gamma eps-adapted), everything else is untouched."""
    prefix = BACKBONE_PREFIX[case.model_name]
    after, eps = all_values(network), batchnorm_eps(network)
    backbone = [name[len(prefix):] for name in after if name.startswith(prefix)]
    sources = {name: case.source(name) for name in backbone}
    loaded = {name: key for name, key in sources.items() if key is not None}
    assert report.mismatched == []
    assert report.loaded == len(loaded) > 0
    assert sorted(report.left_at_init) == sorted(name for name, key in sources.items() if key is None)
    assert sorted(report.unused) == sorted(set(zoo) - set(loaded.values()))
    assert set(case.classifier) <= set(report.unused)
    assert report.bn_eps_adjusted == case.rescaled_bns
    for name, key in loaded.items():
        value = after[prefix + name]
        cell, _, leaf = name.rpartition(".")
        if leaf == "gamma":
            variance = zoo[key.rsplit(".", 1)[0] + ".moving_variance"].astype(np.float64)
            scale = np.sqrt((variance + eps[prefix + cell]) / (variance + IMAGENET_BN_EPS))
            np.testing.assert_allclose(value, zoo[key] * scale, rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(value, zoo[key], err_msg=name)
    untouched = [name for name in after if not name.startswith(prefix) or name[len(prefix):] not in loaded]
    assert len(untouched) == len(after) - len(loaded)
    for name in untouched:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def load_case(case_id: str, tmp_path: Path, torchvision: bool):
    case = CASES[case_id]
    config = config_for(case.model_name, **case.overrides)
    network = build_ssd(config)
    before = all_values(network)
    zoo, torch = materialise(case.layers(), seed=len(case_id))
    if torchvision:
        path = write_torch_state_dict(tmp_path / f"{case_id}.pth", torch)
    else:
        path = write_zoo_checkpoint(tmp_path / f"{case_id}.ckpt", zoo)
    report = load_backbone_weights(network, path, config)
    return case, network, before, report, zoo


def test_every_network_has_a_backbone_mapping():
    assert set(BACKBONE_MAPPINGS) == {record.backbone for record in NETWORKS.values()}
    assert set(BACKBONE_PREFIX) == set(NETWORKS)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(CASES))
def test_zoo_classification_checkpoint_fills_the_backbone(case_id, tmp_path):
    case, network, before, report, zoo = load_case(case_id, tmp_path, torchvision=False)
    check_loaded(case, network, before, report, zoo)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", TORCHVISION_CASES)
def test_torchvision_state_dict_fills_the_backbone(case_id, tmp_path):
    case, network, before, report, zoo = load_case(case_id, tmp_path, torchvision=True)
    check_loaded(case, network, before, report, zoo)


@pytest.mark.slow
def test_vgg_batchnorm_tensors_load_only_when_both_sides_have_them(tmp_path):
    """The counts the table-driven checks above rely on, stated outright."""
    assert load_case("ssd_vgg16", tmp_path, False)[3].loaded == 13
    assert load_case("ssd_vgg16-bn", tmp_path, False)[3].loaded == 13 * 5
    mixed = load_case("ssd_vgg16-bn_source_plain_ssd", tmp_path, False)[3]
    assert mixed.loaded == 13 and len(mixed.unused) == 13 * 5 + 2  # 13 biases, 13 x 4 BN tensors, classifier
    plain_into_bn = load_case("ssd_vgg16-plain_source_bn_ssd", tmp_path, False)[3]
    assert plain_into_bn.loaded == 13 and len(plain_into_bn.left_at_init) == 13 * 4
    assert "b1.1.gamma" in plain_into_bn.left_at_init and "left at initial values: b1.1" in plain_into_bn.summary()


@pytest.mark.parametrize("case_id, stem", [("ssd_resnet50_fpn", "resnet50"), ("ssd_vgg16", "vgg16"),
                                           ("ssd_vgg16-bn", "vgg16_bn")])
@pytest.mark.slow
def test_converter_tells_the_architecture_from_the_keys_and_writes_zoo_names(case_id, stem, tmp_path, monkeypatch,
                                                                               capsys):
    zoo, torch = materialise(CASES[case_id].layers(), seed=3)
    pth = write_torch_state_dict(tmp_path / "torchvision.pth", torch)
    monkeypatch.chdir(tmp_path)
    assert convert_torchvision_backbone.main(["--pth", str(pth)]) == 0
    assert f"wrote {stem}_imagenet.ckpt" in capsys.readouterr().out
    converted = ms.load_checkpoint(str(tmp_path / f"{stem}_imagenet.ckpt"))
    assert sorted(converted) == sorted(zoo)
    for key, value in zoo.items():
        np.testing.assert_array_equal(converted[key].asnumpy(), value, err_msg=key)


# ---------------------------------------------------------------- bad input

@pytest.mark.slow
@pytest.mark.parametrize("model_name", list(NETWORKS))
def test_checkpoint_of_another_backbone_raises_and_changes_nothing(model_name, tmp_path):
    other = mobilenet_v1_layers() if model_name == "ssd300" else mobilenet_v2_layers()
    path = write_zoo_checkpoint(tmp_path / "other_backbone.ckpt", materialise(other, seed=1)[0])
    config = config_for(model_name)
    network = build_ssd(config)
    before = all_values(network)
    with pytest.raises(CheckpointMismatchError,
                       match=rf"other_backbone\.ckpt does not fit the {model_name} backbone .*0 tensors loadable"):
        load_backbone_weights(network, path, config)
    for name, value in all_values(network).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_vgg_checkpoint_with_batchnorm_needs_pretrain_vgg_bn(tmp_path):
    path = write_zoo_checkpoint(tmp_path / "vgg16_bn.ckpt", materialise(vgg16_layers(True), seed=2)[0])
    config = config_for("ssd_vgg16")
    with pytest.raises(CheckpointMismatchError,
                       match=r"vgg16_bn\.ckpt does not fit .*set pretrain_vgg_bn: True.*\n"
                             r".*b2\.2\.weight \[128, 128, 3, 3\] <- layers\.7\.weight \[128, 64, 3, 3\]"):
        load_backbone_weights(build_ssd(config), path, config)


def test_model_without_a_mapping_is_named():
    with pytest.raises(ValueError, match="no ImageNet backbone mapping for model_name 'ssd512'.*ssd_vgg16"):
        backbone_mapping(Config({"model_name": "ssd512"}))


@pytest.mark.parametrize("model_name", ["ssd_mobilenet_v1", "ssd_mobilenet_v1_fpn"])
def test_torch_file_for_mobilenet_v1_is_refused(model_name, tmp_path):
    path = write_torch_state_dict(tmp_path / "mobilenet.pth",
                                  {"features.0.0.weight": np.ones((32, 3, 3, 3), np.float32)})
    config = config_for(model_name)
    with pytest.raises(CheckpointMismatchError,
                       match=r"mobilenet\.pth is a PyTorch file, but this backbone has no torchvision counterpart.*"
                             r"MindSpore \.ckpt of an ImageNet MobileNetV1 \(the model zoo's network\.\{0\.\.26\}"):
        load_backbone_weights(build_ssd(config), path, config)


# ---------------------------------------------------------------- freeze_layer

#: What ``freeze_layer: backbone_stride8`` must freeze, written out by hand from each backbone's
#: layer strides (MobileNetV2 stem + blocks 0-5, MobileNetV1 units 0-10, ResNet-50 stem + layer1-2,
#: VGG16 blocks 1-4): the layers whose output is at most 1/8 of the input side.
STRIDE8_LAYERS = {
    "ssd300": r"backbone\.features_1\.[0-6]\.",
    "ssd_mobilenet_v1": r"feature_extractor\.mobilenet_v1\.network\.([0-9]|10)\.",
    "ssd_mobilenet_v1_fpn": r"feature_extractor\.mobilenet_v1\.network\.([0-9]|10)\.",
    "ssd_resnet50_fpn": r"feature_extractor\.resnet\.(conv1|bn1|layer1|layer2)\.",
    "ssd_vgg16": r"backbone\.b[1-4]\.",
}


def _trainable(network) -> set[str]:
    return {name for name, param in network.parameters_and_names() if param.requires_grad}


@pytest.mark.parametrize("model_name", list(NETWORKS))
def test_freeze_layer_takes_exactly_its_layers_out_of_training(model_name):
    config = config_for(model_name)
    network = build_ssd(config)
    before = _trainable(network)
    backbone = {name for name in before if name.startswith(BACKBONE_PREFIX[model_name])}
    stride8 = {name for name in before if re.match(STRIDE8_LAYERS[model_name], name)}
    assert stride8 and stride8 < backbone
    freeze_layers(network, "backbone_stride8")
    assert _trainable(network) == before - stride8
    frozen_by_stride = [before - _trainable(network)]
    for setting in ("backbone_stride4", "backbone_stride16"):
        network = build_ssd(config)
        freeze_layers(network, setting)
        frozen_by_stride.append(before - _trainable(network))
    assert frozen_by_stride[1] < stride8 < frozen_by_stride[2] <= backbone  # nested, growing with the stride
    network = build_ssd(config)
    assert freeze_layers(network, "None") == [] and _trainable(network) == before
    freeze_layers(network, "backbone")
    assert _trainable(network) == before - backbone
    modes = {(name.startswith(BACKBONE_PREFIX[model_name]), cell.use_batch_statistics)
             for name, cell in network.cells_and_names() if isinstance(cell, nn.BatchNorm2d)}
    assert modes <= {(True, False), (False, None)}  # stored statistics in the frozen backbone only
    assert (True, False) in modes or model_name == "ssd_vgg16"  # VGG16 has no BatchNorm
    loss_net = SSDWithLossCell(network, config.gamma, config.alpha)
    optimizer = build_optimizer(loss_net, np.full(2, 0.01, np.float32), config)
    assert {id(p) for p in optimizer.parameters} == {id(p) for p in network.trainable_params()}


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["backbone", "backbone_stride8"])
def test_frozen_layers_keep_weights_and_statistics_through_a_training_step(setting):
    """GRAPH_MODE step of ssd_mobilenet_v1: the head learns; frozen layers keep weights and BN statistics."""
    config = config_for("ssd_mobilenet_v1", use_float16=False, use_global_norm=False)
    network = build_ssd(config)
    freeze_layers(network, setting)
    loss_net = SSDWithLossCell(network, config.gamma, config.alpha)
    step = build_train_step(loss_net, build_optimizer(loss_net, np.full(1, 0.05, np.float32), config), config)
    step.set_train(True)
    before = all_values(network)
    rng = np.random.default_rng(0)
    boxes = config.num_ssd_boxes
    labels = np.zeros((1, boxes), np.int32)
    labels[0, rng.choice(boxes, 20, replace=False)] = rng.integers(1, config.num_classes, 20)
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        loss, overflow, *_ = step(ms.Tensor(rng.normal(size=(1, 3, 300, 300)).astype(np.float32)),
                                 ms.Tensor(rng.normal(0, 0.5, (1, boxes, 4)).astype(np.float32)),
                                 ms.Tensor(labels), ms.Tensor(np.array([20], np.int32)))
    finally:
        ms.set_context(mode=previous)
    assert np.isfinite(loss.asnumpy()) and not bool(overflow.asnumpy())
    after = all_values(network)
    changed = {name for name in after if not np.array_equal(after[name], before[name])}
    backbone = {name for name in after if name.startswith(BACKBONE_PREFIX["ssd_mobilenet_v1"])}
    frozen = backbone if setting == "backbone" else {
        name for name in backbone if re.match(STRIDE8_LAYERS["ssd_mobilenet_v1"], name)}
    assert frozen and not changed & frozen  # weights and moving statistics alike
    assert "multi_box.multi_cls_layers.0.3.weight" in changed
    if setting == "backbone_stride8":  # the layers above stride 8 train, statistics and all
        assert "feature_extractor.mobilenet_v1.network.12.0.weight" in changed
        assert "feature_extractor.mobilenet_v1.network.12.1.moving_mean" in changed
