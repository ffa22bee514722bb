"""Building blocks shared by every SSD network (backbones, extra layers and heads).

Attribute and index layouts here are part of the checkpoint format: the model zoo's
checkpoints name parameters after the Cell path (e.g. ``...conv.1.features.0.weight``), so
the order of the layers inside each ``SequentialCell`` must not change. All convolutions use
TensorFlow-style SAME padding (extra pad bottom/right), as the checkpoints were trained with.
"""
from __future__ import annotations

from typing import Optional, Sequence

import mindspore as ms
from mindspore import nn, ops

#: BatchNorm hyper-parameters of the zoo's ``ssd.py`` blocks (MobileNetV2, extras, heads).
#: MindSpore's momentum is the weight of the running statistic (PyTorch momentum 0.03).
SSD_BN_EPS = 1e-3
SSD_BN_MOMENTUM = 0.97


def batch_norm(channels: int, eps: float = SSD_BN_EPS, momentum: float = SSD_BN_MOMENTUM,
               gamma_init: str = "ones") -> nn.BatchNorm2d:
    """BatchNorm2d with explicit eps/momentum: the networks differ here (ssd.py 1e-3/0.97,
    MobileNetV1/FPN 1e-5/0.9, ResNet 1e-3/0.997 with ``gamma_init="zeros"`` on each last BN)."""
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum, gamma_init=gamma_init)


def conv2d(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Conv2d:
    """SAME convolution with a zero-initialised bias (the zoo's ``_conv2d``, used by heads).

    MindSpore >= 2.3 draws biases from a uniform distribution by default; the checkpoints'
    recipe starts them at zero, so that is requested explicitly.
    """
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="same",
                     has_bias=True, bias_init="zeros")


class DepthwiseConv2d(nn.Conv2d):
    """SAME depthwise convolution without bias: ``nn.Conv2d`` with ``group=channels``, same parameters.

    ``cpu_kernel`` is None (MindSpore's own kernel) until ``src.models.cpu_depthwise`` sets the
    project's faster CPU kernel for training; graph mode resolves the branch when it compiles.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(channels, channels, kernel_size, stride=stride, pad_mode="same", group=channels,
                         has_bias=False)
        self.cpu_kernel = None

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        if self.cpu_kernel is None:
            return self.conv2d(x, self.weight)
        return self.cpu_kernel(x, self.weight)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, eps: float = 1e-5, momentum: float = 0.9,
                 conv: Optional[nn.Cell] = None) -> nn.SequentialCell:
    """``[0: conv (SAME, no bias), 1: BatchNorm, 2: ReLU6]``.

    Used directly (MindSpore default BN hyper-parameters) by MobileNetV1 and the FPN necks, and
    wrapped by ``ConvBNReLU``. ``groups == in_channels`` gives a depthwise conv. A ``conv``
    passed in replaces the convolution so several levels can share one set of weights while
    keeping their own BatchNorm (the FPN heads' weight-shared towers).
    """
    if groups not in (1, in_channels) or (groups != 1 and out_channels != in_channels):
        raise ValueError(f"groups={groups} with {in_channels}->{out_channels} channels: only dense (1) and "
                         "depthwise (groups == in_channels == out_channels) convolutions are built here")
    if conv is None and groups != 1:
        conv = DepthwiseConv2d(in_channels, kernel_size, stride)
    elif conv is None:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="same", has_bias=False)
    return nn.SequentialCell([conv, batch_norm(out_channels, eps, momentum), nn.ReLU6()])


class ConvBNReLU(nn.Cell):
    """Conv + BN(eps 1e-3, momentum 0.97) + ReLU6 held as ``features`` (the zoo's ``ConvBNReLU``).

    ``groups != 1`` means depthwise: the output width then equals the input width, whatever
    ``out_channels`` says, exactly as in the checkpoints.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, shared_conv: Optional[nn.Cell] = None) -> None:
        super().__init__()
        if groups != 1:
            groups = out_channels = in_channels
        self.features = conv_bn_relu(in_channels, out_channels, kernel_size, stride, groups,
                                     SSD_BN_EPS, SSD_BN_MOMENTUM, shared_conv)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.features(x)


class InvertedResidual(nn.Cell):
    """MobileNetV2 block: [1x1 expand] -> 3x3 depthwise -> 1x1 linear projection (+ skip).

    The skip connection exists iff stride is 1 and the width is unchanged; ``last_relu`` adds a
    final ReLU6, which the SSD extra layers use. The hidden width is ``round(inp * t)`` so
    fractional ratios (0.2, 0.25 of the extras) give the checkpoints' 256/128/128/64.
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: float, last_relu: bool = False) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        layers = [ConvBNReLU(inp, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, pad_mode="same", has_bias=False),
            batch_norm(oup),
        ]
        self.conv = nn.SequentialCell(layers)
        self.use_residual = stride == 1 and inp == oup
        self.last_relu = last_relu
        self.relu = nn.ReLU6()

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        out = self.conv(x)
        if self.use_residual:
            out = out + x
        if self.last_relu:
            out = self.relu(out)
        return out


def last_conv2d(in_channels: int, out_channels: int) -> nn.SequentialCell:
    """Depthwise-separable prediction layer of ``MultiBox``:
    ``[0: dw 3x3 (no bias), 1: BN, 2: ReLU6, 3: 1x1 conv with bias]``."""
    return nn.SequentialCell([
        DepthwiseConv2d(in_channels),
        batch_norm(in_channels),
        nn.ReLU6(),
        conv2d(in_channels, out_channels, kernel_size=1),
    ])


class FlattenConcat(nn.Cell):
    """Per-level (B, A*K, H, W) maps -> one (B, num_boxes, K) tensor.

    Each level is moved to channels-last before flattening, so boxes come out ordered
    level -> row -> column -> anchor with an anchor's K values contiguous: the order of the
    default boxes and of the training targets.
    """

    def __init__(self, num_boxes: int) -> None:
        super().__init__()
        if num_boxes <= 0:
            raise ValueError(f"num_ssd_boxes must be positive, got {num_boxes}; load the config with "
                             "src.model_utils.config.load_config, which resolves num_ssd_boxes: -1")
        self.num_boxes = num_boxes

    def construct(self, inputs: tuple) -> ms.Tensor:
        batch = inputs[0].shape[0]
        flat = ()
        for x in inputs:
            flat += (ops.reshape(ops.transpose(x, (0, 2, 3, 1)), (batch, -1)),)
        return ops.reshape(ops.concat(flat, axis=1), (batch, self.num_boxes, -1))


def same_padded_sizes(side: int, strides: Sequence[int]) -> list[int]:
    """Side of the maps at each total stride for SAME-padded layers: ``ceil(side / stride)``.

    Networks use it to say which feature maps an input size gives, so a config whose
    ``feature_size`` or anchors assume other maps is refused before anything is built.
    """
    return [-(-side // stride) for stride in strides]
