"""VGG16 feature extractor of ``ssd_vgg16`` (conv1_1 .. pool5, no fully connected layers).

Convolutions are 3x3 SAME without bias (the model zoo's VGG16 has none), optionally with
BatchNorm (``ssd_vgg_bn``). The checkpoint names the layers of block k ``b{k}.{index}``: with
BatchNorm every conv takes three slots (conv, BN, ReLU), without it two (conv, ReLU).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn

#: Output widths of the convolutions of blocks b1..b5.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _block(in_channels: int, widths: tuple, with_bn: bool) -> nn.SequentialCell:
    layers = []
    for width in widths:
        layers.append(nn.Conv2d(in_channels, width, 3, pad_mode="same", has_bias=False))
        if with_bn:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())
        in_channels = width
    return nn.SequentialCell(layers)


class VGG16(nn.Cell):
    """Image -> (conv4_3 output before pool4, pool5 output): 512 x H/8 and 512 x H/16 maps.

    Pools 1-4 are 2x2/2 SAME (so 75 -> 38 at 300 px); pool5 is 3x3/1 SAME as in the SSD paper,
    keeping conv5 at stride 16 for the dilated fc6 that follows.
    """

    def __init__(self, with_bn: bool = False) -> None:
        super().__init__()
        blocks, in_channels = [], 3
        for widths in VGG16_BLOCKS:
            blocks.append(_block(in_channels, widths, with_bn))
            in_channels = widths[-1]
        self.b1, self.b2, self.b3, self.b4, self.b5 = blocks
        self.m1, self.m2, self.m3, self.m4 = (nn.MaxPool2d(kernel_size=2, stride=2, pad_mode="same")
                                              for _ in range(4))
        self.m5 = nn.MaxPool2d(kernel_size=3, stride=1, pad_mode="same")

    def stride_stages(self) -> list[tuple[int, nn.Cell]]:
        """(output stride, block) in forward order, for freezing the high-resolution layers."""
        return [(1, self.b1), (2, self.b2), (4, self.b3), (8, self.b4), (16, self.b5)]

    def construct(self, x: ms.Tensor) -> tuple:
        x = self.m3(self.b3(self.m2(self.b2(self.m1(self.b1(x))))))
        conv4_3 = self.b4(x)
        pool5 = self.m5(self.b5(self.m4(conv4_3)))
        return conv4_3, pool5
