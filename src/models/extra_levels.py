"""Forward pass shared by the two 300 px MobileNet SSDs (``ssd300``, ``ssd_mobilenet_v1``).

Both take two feature levels from the backbone (strides 16 and 32) and grow four more by
applying each extra block (``multi_residual``, stride 2) to the previous level; they differ only
in the backbone and in the kind of extra block, which the subclasses build.
"""
from __future__ import annotations

from typing import NamedTuple

import mindspore as ms
from mindspore import nn

from src.models.heads import detection_outputs
from src.models.layers import same_padded_sizes

#: Total strides of the six head levels (backbone 16, 32; extras 64 .. 512).
LEVEL_STRIDES = (16, 32, 64, 128, 256, 512)
NUM_BACKBONE_LEVELS = 2


class ExtraLevel(NamedTuple):
    """How one extra level grows from the previous one (the zoo's ``extras_*`` lists, one entry each).

    ``expand_ratio`` is the inverted-residual expansion of ssd300's blocks; the plain conv
    blocks of ``ssd_mobilenet_v1`` have none and ignore it.
    """

    in_channels: int
    out_channels: int
    stride: int
    expand_ratio: float


class SsdWithExtraLevels(nn.Cell):
    """Subclasses set ``multi_residual`` (CellList), ``multi_box`` and implement ``backbone_levels``."""

    @staticmethod
    def feature_map_sizes(side: int) -> list[int]:
        """Side of the six head inputs for a square input of ``side`` pixels (19 .. 1 at 300)."""
        return same_padded_sizes(side, LEVEL_STRIDES)

    def backbone_levels(self, x: ms.Tensor) -> tuple:
        """The backbone's two feature maps (strides 16 and 32)."""
        raise NotImplementedError

    def construct(self, x: ms.Tensor) -> tuple:
        features = self.backbone_levels(x)
        feature = features[-1]
        for block in self.multi_residual:
            feature = block(feature)
            features += (feature,)
        pred_loc, pred_logits = self.multi_box(features)
        return detection_outputs(pred_loc, pred_logits, self.training)
