"""``ssd300``: SSD300 on MobileNetV2, 1917 boxes (the model zoo's default network)."""
from __future__ import annotations

from typing import Any

import mindspore as ms
from mindspore import nn

from src.models.backbones.mobilenet_v2 import MobileNetV2Backbone
from src.models.extra_levels import SsdWithExtraLevels, extra_levels
from src.models.heads import MultiBox
from src.models.layers import InvertedResidual


class SSD300MobileNetV2(SsdWithExtraLevels):
    """The model zoo's ``ssd300``: MobileNetV2 features, 4 inverted-residual extras, MultiBox.

    The backbone gives the first two feature levels; extra level i (i >= 2) is
    ``InvertedResidual(extras_in_channels[i] -> extras_out_channels[i], extras_strides[i],
    extras_ratio[i])`` with a final ReLU6, applied to the previous level.
    """

    BACKBONE_PATH = "backbone"

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.backbone = MobileNetV2Backbone()
        self.multi_residual = nn.CellList([
            InvertedResidual(config.extras_in_channels[i], config.extras_out_channels[i],
                             config.extras_strides[i], config.extras_ratio[i], last_relu=True)
            for i in extra_levels(config)
        ])
        self.multi_box = MultiBox(config)

    def backbone_levels(self, x: ms.Tensor) -> tuple:
        return self.backbone(x)
