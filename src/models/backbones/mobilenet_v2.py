"""MobileNetV2 feature extractor of SSD300 (the model zoo's ``SSDWithMobileNetV2``).

The 17 inverted-residual blocks are split where SSD taps its first feature map (after block
12, stride 16) so the checkpoint names ``features_1.{0..13}`` / ``features_2.{0..4}`` match.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn

from src.models.layers import ConvBNReLU, InvertedResidual

#: (expand ratio t, output channels c, repeats n, first stride s) of MobileNetV2 (width 1.0).
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
#: Blocks 0..12 end at 19x19 (96 channels) for a 300 px input; SSD reads its first feature there,
#: widened x6 like the expansion conv of block 13.
FIRST_SPLIT_BLOCKS = 13
SPLIT_CHANNELS = 96
SPLIT_EXPANSION = 6
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def _inverted_residual_blocks() -> list:
    """The 17 blocks in order, each stage's first block carrying the stride."""
    blocks, inp = [], STEM_CHANNELS
    for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
        for i in range(n):
            blocks.append(InvertedResidual(inp, c, s if i == 0 else 1, expand_ratio=t))
            inp = c
    return blocks


class MobileNetV2Backbone(nn.Cell):
    """Image (B,3,H,W) -> (576 x H/16 x W/16, 1280 x H/32 x W/32) feature maps.

    ``expand_layer_conv_13`` repeats the expansion conv of block 13 with its own weights to get
    a wide 576-channel map at stride 16 (the split point is a 96-channel bottleneck). It is
    created first because the zoo's checkpoints (and ``all_reduce_fusion_config``) list its
    parameters first.
    """

    def __init__(self) -> None:
        super().__init__()
        blocks = _inverted_residual_blocks()
        self.expand_layer_conv_13 = ConvBNReLU(SPLIT_CHANNELS, SPLIT_CHANNELS * SPLIT_EXPANSION, kernel_size=1)
        self.features_1 = nn.SequentialCell(
            [ConvBNReLU(3, STEM_CHANNELS, stride=2)] + blocks[:FIRST_SPLIT_BLOCKS])
        self.features_2 = nn.SequentialCell(
            blocks[FIRST_SPLIT_BLOCKS:] + [ConvBNReLU(INVERTED_RESIDUAL_SETTINGS[-1][1], LAST_CHANNELS, 1)])

    def stride_stages(self) -> list[tuple[int, nn.Cell]]:
        """(output stride, cell) in forward order, for freezing the high-resolution layers."""
        strides = [2]
        for _, _, repeats, stride in INVERTED_RESIDUAL_SETTINGS:
            strides += [strides[-1] * stride] * repeats
        blocks = list(self.features_1) + list(self.features_2)[:-1]
        staged = list(zip(strides, blocks))
        split = len(self.features_1)
        return staged[:split] + [(16, self.expand_layer_conv_13)] + staged[split:] + [(32, self.features_2[-1])]

    def construct(self, x: ms.Tensor) -> tuple:
        out = self.features_1(x)
        return self.expand_layer_conv_13(out), self.features_2(out)
