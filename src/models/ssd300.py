"""``ssd300``: SSD300 on MobileNetV2, 1917 boxes (the model zoo's default network)."""
from __future__ import annotations

from typing import Sequence

import mindspore as ms
from mindspore import nn

from src.models.backbones.mobilenet_v2 import MobileNetV2Backbone
from src.models.extra_levels import ExtraLevel, SsdWithExtraLevels
from src.models.heads import MultiBox
from src.models.layers import InvertedResidual


class SSD300MobileNetV2(SsdWithExtraLevels):
    """The model zoo's ``ssd300``: MobileNetV2 features, 4 inverted-residual extras, MultiBox.

    The backbone gives the first two feature levels; each of ``extras`` grows one more as an
    ``InvertedResidual`` with a final ReLU6 applied to the previous level. ``level_channels`` and
    ``anchors_per_level`` describe all six levels for the head.
    """

    BACKBONE_PATH = "backbone"

    def __init__(self, num_classes: int, num_boxes: int, level_channels: Sequence[int],
                 anchors_per_level: Sequence[int], extras: Sequence[ExtraLevel]) -> None:
        super().__init__()
        self.backbone = MobileNetV2Backbone()
        self.multi_residual = nn.CellList([
            InvertedResidual(level.in_channels, level.out_channels, level.stride, level.expand_ratio, last_relu=True)
            for level in extras
        ])
        self.multi_box = MultiBox(level_channels, anchors_per_level, num_classes, num_boxes)

    def backbone_levels(self, x: ms.Tensor) -> tuple:
        return self.backbone(x)
