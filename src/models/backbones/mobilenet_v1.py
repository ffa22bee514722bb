"""MobileNetV1 feature extractor shared by ``ssd_mobilenet_v1`` (300 px) and ``ssd_mobilenet_v1_fpn``.

The model zoo keeps the 27 conv+BN+ReLU6 units in one flat ``network`` list (stem, then a
depthwise/pointwise pair per stage) and the SSD networks tap the outputs of pointwise units by
index; the checkpoints name the units ``network.{0..26}``, so the list stays flat here too.
BatchNorm uses MindSpore's defaults (eps 1e-5, momentum 0.9) like the ImageNet classifier.
"""
from __future__ import annotations

from typing import Sequence

import mindspore as ms
from mindspore import nn

from src.models.layers import conv_bn_relu

STEM_CHANNELS = 32
#: (output channels, depthwise stride) of the 13 depthwise-separable stages.
SEPARABLE_STAGES = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


def pointwise_index(stage: int) -> int:
    """Index in ``MobileNetV1.network`` of the pointwise unit that ends separable ``stage`` (0-based)."""
    return 2 * stage + 2


class MobileNetV1(nn.Cell):
    """Image -> the outputs of the units listed in ``out_indices`` (ascending).

    Units: 0 = 3x3/2 stem; for stage k, 2k+1 = 3x3 depthwise (stride of the stage) and 2k+2 =
    1x1 pointwise. Output channels/strides of the taps the SSDs use: unit 10 256/8, 14 512/16,
    22 512/16, 26 1024/32.
    """

    def __init__(self, out_indices: Sequence[int]) -> None:
        super().__init__()
        units = [conv_bn_relu(3, STEM_CHANNELS, 3, stride=2)]
        channels = STEM_CHANNELS
        for out_channels, stride in SEPARABLE_STAGES:
            units.append(conv_bn_relu(channels, channels, 3, stride=stride, groups=channels))
            units.append(conv_bn_relu(channels, out_channels, 1))
            channels = out_channels
        self.network = nn.CellList(units)
        if list(out_indices) != sorted(set(out_indices)) or not 0 <= min(out_indices) <= max(out_indices) < len(units):
            raise ValueError(f"out_indices {list(out_indices)} must name units 0..{len(units) - 1} in ascending order")
        self.out_indices = tuple(int(i) for i in out_indices)
        self.last_index = max(self.out_indices)

    def stride_stages(self) -> list[tuple[int, nn.Cell]]:
        """(output stride, unit) in forward order, for freezing the high-resolution layers."""
        strides = [2]
        for _, stride in SEPARABLE_STAGES:
            strides += [strides[-1] * stride] * 2  # depthwise unit, then its pointwise unit
        return list(zip(strides, self.network))

    def construct(self, x: ms.Tensor) -> tuple:
        taps = ()
        for index, unit in enumerate(self.network):
            if index <= self.last_index:
                x = unit(x)
                if index in self.out_indices:
                    taps += (x,)
        return taps
