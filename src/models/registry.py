"""One record per network: everything the rest of the project needs to know about it by name.

``config.model_name`` picks a ``NetworkRecord``; the record turns the config into the network's
constructor arguments (the one place where config keys meet cells), and names the network's
default config files, input size, ImageNet backbone, the backbone weight files it accepts and the
tensors that depend on the class count. The hub, the pre-trained loaders, the converters, the
scripts and the tests all read this table, so adding a network is one record plus its module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mindspore import nn

from src.boxes.anchors import default_boxes_from_config
from src.model_utils.config import ConfigError
from src.models.extra_levels import NUM_BACKBONE_LEVELS, ExtraLevel
from src.models.fpn import FPN_CHANNELS
from src.models.ssd import SsdInferWithDecoder
from src.models.ssd300 import SSD300MobileNetV2
from src.models.ssd_fpn import LEVEL_STRIDES as FPN_LEVEL_STRIDES
from src.models.ssd_fpn import SsdMobileNetV1Fpn, SsdResNet50Fpn
from src.models.ssd_mobilenet_v1 import SsdMobileNetV1
from src.models.ssd_vgg16 import SsdVgg16

#: Folder of the shipped configs that the records name.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

#: Backbone weight formats a record can accept (``feature_extractor_base_param``).
ZOO_CHECKPOINT = "model zoo .ckpt"
TORCHVISION_PTH = "torchvision .pth"


@dataclass(frozen=True)
class NetworkRecord:
    """A network by name: how to build it from a config and what it expects.

    ``class_tensors`` are fnmatch patterns of the checkpoint names (``network.`` prefix, as
    training checkpoints store them) whose shape depends on ``num_classes``: the tensors to drop
    and re-initialise when fine-tuning to another class count.
    """

    name: str
    network: type[nn.Cell]
    arguments: Callable[[Any], dict[str, Any]]
    config_file: str
    cpu_config_file: str
    input_size: tuple[int, int]
    backbone: str
    backbone_formats: tuple[str, ...]
    class_tensors: tuple[str, ...]

    @property
    def config_path(self) -> Path:
        """The model zoo's default config of this network (the one its published checkpoints fit)."""
        return CONFIG_DIR / self.config_file

    @property
    def cpu_config_path(self) -> Path:
        """The CPU recipe of this network (the one the tests and benches run)."""
        return CONFIG_DIR / self.cpu_config_file


def _head_arguments(config: Any) -> dict[str, Any]:
    """Arguments shared by the networks with one ``MultiBox`` predictor per level."""
    return {"num_classes": int(config.num_classes), "num_boxes": int(config.num_ssd_boxes),
            "level_channels": [int(c) for c in config.extras_out_channels],
            "anchors_per_level": [int(a) for a in config.num_default]}


def _extra_levels_arguments(config: Any) -> dict[str, Any]:
    """Head arguments plus the extra levels grown after the backbone's two (the ``extras_*`` lists)."""
    extras = [ExtraLevel(int(config.extras_in_channels[i]), int(config.extras_out_channels[i]),
                         int(config.extras_strides[i]), float(config.extras_ratio[i]))
              for i in range(NUM_BACKBONE_LEVELS, len(config.extras_in_channels))]
    return {**_head_arguments(config), "extras": extras}


def _vgg16_arguments(config: Any) -> dict[str, Any]:
    return {**_head_arguments(config), "batch_norm": bool(config.ssd_vgg_bn)}


def _fpn_arguments(config: Any) -> dict[str, Any]:
    """The weight-shared head serves every pyramid level, so all levels must look alike."""
    anchors, channels = list(config.num_default), list(config.extras_out_channels)
    if len(anchors) != len(FPN_LEVEL_STRIDES) or len(set(anchors)) != 1:
        raise ConfigError(f"config num_default {anchors} must give the same anchor count for each of the "
                         f"{len(FPN_LEVEL_STRIDES)} FPN levels: the FPN head is shared by all levels")
    if set(channels) != {FPN_CHANNELS}:
        raise ConfigError(f"config extras_out_channels {channels} must be {FPN_CHANNELS} on every level: "
                         f"that is the width of the FPN {config.model_name} builds")
    return {"num_classes": int(config.num_classes), "num_boxes": int(config.num_ssd_boxes),
            "anchors_per_location": int(anchors[0]), "tower_depth": int(config.num_addition_layers)}


_MULTIBOX_CLASS_TENSORS = ("network.multi_box.multi_cls_layers.*.3.weight", "network.multi_box.multi_cls_layers.*.3.bias")
_SHARED_CLASS_TENSORS = ("network.multi_box.cls_layers.0.weight", "network.multi_box.cls_layers.0.bias")

NETWORKS: dict[str, NetworkRecord] = {record.name: record for record in (
    NetworkRecord("ssd300", SSD300MobileNetV2, _extra_levels_arguments, "ssd300_config.yaml",
                  "ssd300_config_cpu.yaml", (300, 300), "mobilenet_v2", (ZOO_CHECKPOINT, TORCHVISION_PTH),
                  _MULTIBOX_CLASS_TENSORS),
    NetworkRecord("ssd_mobilenet_v1", SsdMobileNetV1, _extra_levels_arguments, "ssd_mobilenet_v1_300_config_gpu.yaml",
                  "ssd_mobilenet_v1_300_config_cpu.yaml", (300, 300), "mobilenet_v1", (ZOO_CHECKPOINT,),
                  _MULTIBOX_CLASS_TENSORS),
    NetworkRecord("ssd_vgg16", SsdVgg16, _vgg16_arguments, "ssd_vgg16_config.yaml", "ssd_vgg16_config_cpu.yaml",
                  (300, 300), "vgg16", (ZOO_CHECKPOINT, TORCHVISION_PTH), _MULTIBOX_CLASS_TENSORS),
    NetworkRecord("ssd_mobilenet_v1_fpn", SsdMobileNetV1Fpn, _fpn_arguments, "ssd_mobilenet_v1_fpn_config.yaml",
                  "ssd_mobilenet_v1_fpn_config_cpu.yaml", (640, 640), "mobilenet_v1", (ZOO_CHECKPOINT,),
                  _SHARED_CLASS_TENSORS),
    NetworkRecord("ssd_resnet50_fpn", SsdResNet50Fpn, _fpn_arguments, "ssd_resnet50_fpn_config.yaml",
                  "ssd_resnet50_fpn_config_cpu.yaml", (640, 640), "resnet50", (ZOO_CHECKPOINT, TORCHVISION_PTH),
                  _SHARED_CLASS_TENSORS),
)}


def network_record(name: str) -> NetworkRecord:
    """The record of ``name``; a ConfigError listing the known names otherwise."""
    if name not in NETWORKS:
        raise ConfigError(f"unknown model_name {name!r} in the config; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name]


def check_input_shape(config: Any) -> None:
    """Refuse an ``img_shape`` whose feature maps differ from those the anchors were laid out for.

    The head flattens whatever maps the network produces, so a mismatch would otherwise pair
    predictions with the wrong default boxes (or fail deep inside graph compilation).
    """
    network = network_record(getattr(config, "model_name", None)).network
    height, width = config.img_shape
    actual = [(h, w) for h, w in zip(network.feature_map_sizes(height), network.feature_map_sizes(width))]
    if getattr(config, "use_anchor_generator", False):
        expected = [(height // step, width // step) for step in config.steps]
        keys = "steps"
    else:
        expected = [(size, size) for size in config.feature_size]
        keys = "feature_size"
    if actual != expected:
        raise ConfigError(
            f"img_shape {list(config.img_shape)} gives {config.model_name} feature maps "
            f"{[list(s) for s in actual]} but the anchors ({keys} {list(getattr(config, keys))}) assume "
            f"{[list(s) for s in expected]}; use the img_shape of the model's config or change {keys} to match")


def build_ssd(config: Any) -> nn.Cell:
    """The network named by ``config.model_name``, after checking img_shape against its anchors."""
    record = network_record(getattr(config, "model_name", None))
    check_input_shape(config)
    return record.network(**record.arguments(config))


def inference_network(config: Any, network: nn.Cell | None = None) -> SsdInferWithDecoder:
    """Image -> (boxes (B,N,4) yxyx in [0,1], scores (B,N,C)): the network eval, export, predict and the hub run.

    ``network`` is the detector to wrap (the trainer passes its live one, so evaluation during
    training sees the current weights); by default a new one is built from ``config``. The
    wrapper keeps the detector as ``network`` so training checkpoints load into it unchanged
    (``src.weights.checkpoint.load_network_weights``). Call ``set_train(False)`` on it for
    sigmoid scores.
    """
    detector = build_ssd(config) if network is None else network
    return SsdInferWithDecoder(detector, default_boxes_from_config(config), config.prior_scaling)
