"""The two FPN SSDs (640 px, 51150 grid anchors): MobileNetV1-FPN and ResNet50-FPN.

Both are "SSD with FPN feature extractor" in the sense of the TF Object Detection API, which
the model zoo follows: a five-level pyramid (P3..P7) and the weight-shared RetinaNet-style box
predictor. The head is created before the feature extractor, as in the zoo, so parameters (and
optimiser moments) come in the zoo's checkpoint order.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn

from src.models.fpn import FPN_CHANNELS, MobileNetV1Fpn, ResNetV1Fpn
from src.models.heads import WeightSharedMultiBox, detection_outputs
from src.models.layers import same_padded_sizes

#: Total strides of P3 .. P7.
LEVEL_STRIDES = (8, 16, 32, 64, 128)


class _SsdFpn(nn.Cell):
    """Image -> (loc (B,N,4), logits or scores (B,N,num_classes)) with N = 51150 at 640 px.

    The pyramid has ``FPN_CHANNELS`` channels on each of its ``len(LEVEL_STRIDES)`` levels; the
    head gives ``anchors_per_location`` boxes at each location through towers ``tower_depth`` deep.
    """

    def __init__(self, num_classes: int, num_boxes: int, anchors_per_location: int, tower_depth: int,
                 feature_extractor: nn.Cell) -> None:
        super().__init__()
        self.multi_box = WeightSharedMultiBox(FPN_CHANNELS, anchors_per_location, len(LEVEL_STRIDES), tower_depth,
                                              num_classes, num_boxes)
        self.feature_extractor = feature_extractor

    @staticmethod
    def feature_map_sizes(side: int) -> list[int]:
        """Side of P3 .. P7 for an input side of ``side`` pixels (80 .. 5 at 640)."""
        return same_padded_sizes(side, LEVEL_STRIDES)

    def construct(self, x: ms.Tensor) -> tuple:
        pred_loc, pred_logits = self.multi_box(self.feature_extractor(x))
        return detection_outputs(pred_loc, pred_logits, self.training)


class SsdMobileNetV1Fpn(_SsdFpn):
    """``ssd_mobilenet_v1_fpn``."""

    BACKBONE_PATH = "feature_extractor.mobilenet_v1"

    def __init__(self, num_classes: int, num_boxes: int, anchors_per_location: int, tower_depth: int) -> None:
        super().__init__(num_classes, num_boxes, anchors_per_location, tower_depth, MobileNetV1Fpn())


class SsdResNet50Fpn(_SsdFpn):
    """``ssd_resnet50_fpn``."""

    BACKBONE_PATH = "feature_extractor.resnet"

    def __init__(self, num_classes: int, num_boxes: int, anchors_per_location: int, tower_depth: int) -> None:
        super().__init__(num_classes, num_boxes, anchors_per_location, tower_depth, ResNetV1Fpn())
