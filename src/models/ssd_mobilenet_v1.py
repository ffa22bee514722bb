"""``ssd_mobilenet_v1``: SSD300 on MobileNetV1, 1917 boxes (the model zoo's ``SsdMobilenetV1Feature``).

The backbone gives two levels (unit 14: 512 x 19 x 19, unit 26: 1024 x 10 x 10); four 3x3
stride-2 conv+BN+ReLU6 extras shrink 10 -> 5 -> 3 -> 2 -> 1. ``multi_box`` is created first
because the zoo's checkpoints (and so their optimiser state) list its parameters first.
"""
from __future__ import annotations

from typing import Sequence

import mindspore as ms
from mindspore import nn

from src.models.backbones.mobilenet_v1 import MobileNetV1
from src.models.extra_levels import ExtraLevel, SsdWithExtraLevels
from src.models.heads import MultiBox
from src.models.layers import ConvBNReLU

#: MobileNetV1 units feeding the head: conv7 pointwise (stride 16) and conv13 pointwise (stride 32).
MOBILENET_V1_SSD_TAPS = (14, 26)


class MobileNetV1Feature(nn.Cell):
    """Image -> (512 x H/16, 1024 x H/32) maps; holds the backbone as ``mobilenet_v1`` for the checkpoint names."""

    def __init__(self) -> None:
        super().__init__()
        self.mobilenet_v1 = MobileNetV1(MOBILENET_V1_SSD_TAPS)

    def construct(self, x: ms.Tensor) -> tuple:
        return self.mobilenet_v1(x)


class SsdMobileNetV1(SsdWithExtraLevels):
    """Image (B,3,300,300) -> (loc (B,1917,4), logits or scores (B,1917,num_classes)).

    Each of ``extras`` is a 3x3 conv+BN+ReLU6 from the previous level; ``level_channels`` and
    ``anchors_per_level`` describe all six levels for the head.
    """

    BACKBONE_PATH = "feature_extractor.mobilenet_v1"

    def __init__(self, num_classes: int, num_boxes: int, level_channels: Sequence[int],
                 anchors_per_level: Sequence[int], extras: Sequence[ExtraLevel]) -> None:
        super().__init__()
        self.multi_box = MultiBox(level_channels, anchors_per_level, num_classes, num_boxes)
        self.feature_extractor = MobileNetV1Feature()
        self.multi_residual = nn.CellList([
            ConvBNReLU(level.in_channels, level.out_channels, stride=level.stride) for level in extras
        ])

    def backbone_levels(self, x: ms.Tensor) -> tuple:
        return self.feature_extractor(x)
