"""``ssd_vgg16``: SSD300 on VGG16 (Liu et al. 2016) as the model zoo builds it, 7308 boxes.

fc6/fc7 become a dilated 3x3 conv (rate 6) and a 1x1 conv; four pairs of 1x1 -> 3x3 convs
then shrink 19 -> 10 -> 5 -> 3 -> 1. Following the zoo (and so its checkpoints) the extra
convolutions have no bias, no BatchNorm and no activation between them, and conv4_3 is not
L2-normalised.
"""
from __future__ import annotations

from typing import Sequence

import mindspore as ms
from mindspore import nn

from src.models.backbones.vgg16 import VGG16
from src.models.heads import MultiBox, detection_outputs
from src.models.layers import same_padded_sizes

FC_DROPOUT = 0.5


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
          dilation: int = 1, pad_mode: str = "same") -> nn.Conv2d:
    if padding:
        pad_mode = "pad"
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode=pad_mode,
                     padding=padding, dilation=dilation, has_bias=False)


class SsdVgg16(nn.Cell):
    """Image (B,3,300,300) -> (loc (B,7308,4), logits or scores (B,7308,num_classes)).

    ``batch_norm`` puts BatchNorm into the VGG16 backbone (the zoo's ``ssd_vgg_bn``);
    ``level_channels`` and ``anchors_per_level`` describe the six head levels.
    """

    BACKBONE_PATH = "backbone"

    def __init__(self, num_classes: int, num_boxes: int, level_channels: Sequence[int],
                 anchors_per_level: Sequence[int], batch_norm: bool) -> None:
        super().__init__()
        self.backbone = VGG16(with_bn=batch_norm)
        self.b6_1 = _conv(512, 1024, 3, padding=6, dilation=6)
        self.b6_2 = nn.Dropout(p=FC_DROPOUT)
        self.b7_1 = _conv(1024, 1024, 1)
        self.b7_2 = nn.Dropout(p=FC_DROPOUT)
        self.b8_1 = _conv(1024, 256, 1, padding=1)
        self.b8_2 = _conv(256, 512, 3, stride=2, pad_mode="valid")
        self.b9_1 = _conv(512, 128, 1, padding=1)
        self.b9_2 = _conv(128, 256, 3, stride=2, pad_mode="valid")
        self.b10_1 = _conv(256, 128, 1)
        self.b10_2 = _conv(128, 256, 3, pad_mode="valid")
        self.b11_1 = _conv(256, 128, 1)
        self.b11_2 = _conv(128, 256, 3, pad_mode="valid")
        self.multi_box = MultiBox(level_channels, anchors_per_level, num_classes, num_boxes)

    @staticmethod
    def feature_map_sizes(side: int) -> list[int]:
        """Side of the six head inputs (38, 19, 10, 5, 3, 1 at 300): conv4_3 and fc7 at strides
        8 and 16, two padded stride-2 convs (ceil halving), then two unpadded 3x3 convs (-2 each)."""
        conv4_3, fc7 = same_padded_sizes(side, (8, 16))
        block8 = (fc7 - 1) // 2 + 1
        block9 = (block8 - 1) // 2 + 1
        return [conv4_3, fc7, block8, block9, block9 - 2, block9 - 4]

    def construct(self, x: ms.Tensor) -> tuple:
        conv4_3, pool5 = self.backbone(x)
        fc7 = self.b7_2(self.b7_1(self.b6_2(self.b6_1(pool5))))
        block8 = self.b8_2(self.b8_1(fc7))
        block9 = self.b9_2(self.b9_1(block8))
        block10 = self.b10_2(self.b10_1(block9))
        block11 = self.b11_2(self.b11_1(block10))
        pred_loc, pred_logits = self.multi_box((conv4_3, fc7, block8, block9, block10, block11))
        return detection_outputs(pred_loc, pred_logits, self.training)
