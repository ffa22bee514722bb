"""``ssd300``: SSD300 on MobileNetV2, 1917 boxes (the model zoo's default network)."""
from __future__ import annotations

from typing import Any

import mindspore as ms
from mindspore import nn

from src.heads import MultiBox, detection_outputs
from src.layers import InvertedResidual, same_padded_sizes
from src.mobilenet_v2 import MobileNetV2Backbone

#: Total strides of the six head levels (backbone 16, 32; extras 64 .. 512).
LEVEL_STRIDES = (16, 32, 64, 128, 256, 512)
NUM_BACKBONE_LEVELS = 2


class SSD300MobileNetV2(nn.Cell):
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
            for i in range(NUM_BACKBONE_LEVELS, len(config.extras_in_channels))
        ])
        self.multi_box = MultiBox(config)

    @staticmethod
    def feature_map_sizes(side: int) -> list[int]:
        """Side of the six head inputs for a square input of ``side`` pixels (19 .. 1 at 300)."""
        return same_padded_sizes(side, LEVEL_STRIDES)

    def construct(self, x: ms.Tensor) -> tuple:
        features = self.backbone(x)
        feature = features[-1]
        for block in self.multi_residual:
            feature = block(feature)
            features += (feature,)
        pred_loc, pred_logits = self.multi_box(features)
        return detection_outputs(pred_loc, pred_logits, self.training)
