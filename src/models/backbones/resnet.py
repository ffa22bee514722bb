"""ResNet-50 v1.5 feature extractor of ``ssd_resnet50_fpn`` (no pooling head, no classifier).

v1.5 puts the stride on the 3x3 convolution of each bottleneck. BatchNorm uses eps 1e-3 and
momentum 0.997 as the model zoo's SSD ResNet does, and the last BN of every bottleneck starts
with gamma 0 so that each residual branch starts as the identity (Goyal et al., 2017). Attribute
names (``conv1``, ``layer1.0.down_sample_layer.0`` ...) are the checkpoint names.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn

from src.models.layers import batch_norm

RESNET_BN_EPS = 1e-3
RESNET_BN_MOMENTUM = 0.997
EXPANSION = 4
STEM_CHANNELS = 64
#: (blocks, output channels, stride of the first block) of the four ResNet-50 stages.
RESNET50_STAGES = ((3, 256, 1), (4, 512, 2), (6, 1024, 2), (3, 2048, 2))


def _bn(channels: int, last: bool = False) -> nn.BatchNorm2d:
    return batch_norm(channels, RESNET_BN_EPS, RESNET_BN_MOMENTUM, "zeros" if last else "ones")


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="same", has_bias=False)


class Bottleneck(nn.Cell):
    """1x1 reduce -> 3x3 (stride) -> 1x1 expand, plus a projected shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        mid = out_channels // EXPANSION
        self.conv1, self.bn1 = _conv(in_channels, mid, 1), _bn(mid)
        self.conv2, self.bn2 = _conv(mid, mid, 3, stride), _bn(mid)
        self.conv3, self.bn3 = _conv(mid, out_channels, 1), _bn(out_channels, last=True)
        self.relu = nn.ReLU()
        self.down_sample = stride != 1 or in_channels != out_channels
        if self.down_sample:
            self.down_sample_layer = nn.SequentialCell([_conv(in_channels, out_channels, 1, stride),
                                                        _bn(out_channels)])

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.down_sample_layer(x) if self.down_sample else x
        return self.relu(out + shortcut)


class ResNet50(nn.Cell):
    """Image -> (c1, c2, c3, c4, c5) at strides 4, 4, 8, 16, 32 (64/256/512/1024/2048 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv(3, STEM_CHANNELS, 7, stride=2)
        self.bn1 = _bn(STEM_CHANNELS)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        stages, in_channels = [], STEM_CHANNELS
        for blocks, out_channels, stride in RESNET50_STAGES:
            stages.append(nn.SequentialCell([Bottleneck(in_channels if i == 0 else out_channels, out_channels,
                                                        stride if i == 0 else 1) for i in range(blocks)]))
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def stride_stages(self) -> list[tuple[int, nn.Cell]]:
        """(output stride, cell) in forward order, for freezing the high-resolution layers."""
        return [(2, self.conv1), (2, self.bn1), (4, self.layer1), (8, self.layer2), (16, self.layer3),
                (32, self.layer4)]

    def construct(self, x: ms.Tensor) -> tuple:
        c1 = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(c1)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c1, c2, c3, c4, c5
