"""Feature pyramid of the FPN SSDs: top-down merge of three backbone levels plus two extra levels.

``FpnTopDown`` turns (C3, C4, C5) into (P3, P4, P5) and ``BottomUp`` appends P6 and P7 by
strided convolutions of the coarsest map, giving five 256-channel maps at strides 8..128.
Upsampling uses the *asymmetric* bilinear mapping (source = destination * in / out, no
half-pixel offset) of MindSpore 1.x's ``ResizeBilinear``, which the model zoo's FPN
checkpoints were trained with; PyTorch-style half-pixel resizing would shift every P3/P4 map
by a quarter/half cell and change the detections of those checkpoints.

The FPN levels are always exactly 2x apart (img_shape is a multiple of 128, see
``grid_anchors``), and for a factor of 2 that mapping is simple: even outputs copy the input,
odd outputs average it with its next neighbour (the last one repeats). ``upsample_2x`` writes
exactly that with slices and reshapes. It equals ``ops.ResizeBilinearV2(align_corners=False,
half_pixel_centers=False)`` bit for bit (tested), but unlike that op MindSpore 2.10 can export it to ONNX,
and OpenCV's ONNX importer runs it, so one formulation serves training, MINDIR and ONNX.
"""
from __future__ import annotations

from typing import Sequence

import mindspore as ms
from mindspore import nn, ops

from src.models.backbones.mobilenet_v1 import MobileNetV1
from src.models.backbones.resnet import ResNet50
from src.models.layers import conv2d, conv_bn_relu

FPN_CHANNELS = 256
#: MobileNetV1 units giving C3 (256 ch, stride 8), C4 (512, 16) and C5 (1024, 32).
MOBILENET_V1_FPN_TAPS = (10, 22, 26)
MOBILENET_V1_FPN_CHANNELS = (256, 512, 1024)
RESNET50_FPN_CHANNELS = (512, 1024, 2048)
EXTRA_LEVELS = 2


def _upsample_axis_2x(x: ms.Tensor, axis: int) -> ms.Tensor:
    """Double ``axis``: out[2i] = x[i], out[2i+1] = x[i] + (x[min(i+1, n-1)] - x[i]) / 2."""
    size = x.shape[axis]
    following = ops.concat((ops.narrow(x, axis, 1, size - 1), ops.narrow(x, axis, size - 1, 1)), axis)
    between = x + (following - x) * 0.5
    interleaved = ops.concat((ops.expand_dims(x, axis + 1), ops.expand_dims(between, axis + 1)), axis + 1)
    return ops.reshape(interleaved, x.shape[:axis] + (2 * size,) + x.shape[axis + 1:])


def upsample_2x(x: ms.Tensor) -> ms.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W) with the asymmetric bilinear mapping (see module docstring).

    Width first, then height, each as ``a + (b - a) * 0.5``: the order in which MindSpore's
    resize kernel rounds, so the result is bit-identical, not merely close.
    """
    return _upsample_axis_2x(_upsample_axis_2x(x, 3), 2)


class FpnTopDown(nn.Cell):
    """(C3, C4, C5) -> (P3, P4, P5), fine to coarse.

    ``lateral_convs_list[i]`` (1x1 with bias) projects C_i to 256 channels; each level adds the
    2x-upsampled merged map of the level above (inputs must be 2x apart); ``fpn_convs_list[i]`` (3x3 conv+BN+ReLU6) smooths
    merged level i.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.lateral_convs_list = nn.CellList([conv2d(c, out_channels, kernel_size=1) for c in in_channels])
        self.fpn_convs_list = nn.CellList([conv_bn_relu(out_channels, out_channels, 3) for _ in in_channels])

    def construct(self, inputs: tuple) -> tuple:
        num_levels = len(inputs)
        merged = self.lateral_convs_list[num_levels - 1](inputs[num_levels - 1])
        coarse_to_fine = (merged,)
        for level in range(num_levels - 2, -1, -1):
            lateral = self.lateral_convs_list[level](inputs[level])
            merged = upsample_2x(merged) + lateral
            coarse_to_fine += (merged,)
        outputs = ()
        for level in range(num_levels):
            outputs += (self.fpn_convs_list[level](coarse_to_fine[num_levels - 1 - level]),)
        return outputs


class BottomUp(nn.Cell):
    """Appends ``levels`` maps, each a stride-2 3x3 conv+BN+ReLU6 of the previous last map."""

    def __init__(self, levels: int = EXTRA_LEVELS, channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.blocks = nn.CellList([conv_bn_relu(channels, channels, 3, stride=2) for _ in range(levels)])

    def construct(self, features: tuple) -> tuple:
        for block in self.blocks:
            features += (block(features[-1]),)
        return features


class MobileNetV1Fpn(nn.Cell):
    """Image -> P3..P7 (256 channels each) from MobileNetV1 units 10, 22 and 26."""

    def __init__(self) -> None:
        super().__init__()
        self.mobilenet_v1 = MobileNetV1(MOBILENET_V1_FPN_TAPS)
        self.fpn = FpnTopDown(MOBILENET_V1_FPN_CHANNELS)
        self.bottom_up = BottomUp()

    def construct(self, x: ms.Tensor) -> tuple:
        return self.bottom_up(self.fpn(self.mobilenet_v1(x)))


class ResNetV1Fpn(nn.Cell):
    """Image -> P3..P7 (256 channels each) from ResNet-50 stages 2..4 (C3, C4, C5)."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet50()
        self.fpn = FpnTopDown(RESNET50_FPN_CHANNELS)
        self.bottom_up = BottomUp()

    def construct(self, x: ms.Tensor) -> tuple:
        _, _, c3, c4, c5 = self.resnet(x)
        return self.bottom_up(self.fpn((c3, c4, c5)))
