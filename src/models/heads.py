"""Box/class prediction heads and the train/inference output convention shared by all SSDs."""
from __future__ import annotations

from typing import Sequence

import mindspore as ms
from mindspore import nn, ops

from src.models.layers import ConvBNReLU, FlattenConcat, conv2d, last_conv2d


class MultiBox(nn.Cell):
    """One depthwise-separable loc and cls predictor per feature level (ssd300, MobileNetV1, VGG16).

    ``level_channels[i]`` is the width of feature level i and ``anchors_per_level[i]`` the number
    of default boxes per location there; ``num_boxes`` is their total over all locations. Returns
    raw ``(loc (B,N,4), logits (B,N,num_classes))``; the caller decides on the sigmoid.
    """

    def __init__(self, level_channels: Sequence[int], anchors_per_level: Sequence[int], num_classes: int,
                 num_boxes: int) -> None:
        super().__init__()
        if len(level_channels) != len(anchors_per_level):
            raise ValueError(f"{len(level_channels)} feature levels (extras_out_channels) but anchor counts for "
                             f"{len(anchors_per_level)} (num_default); give one entry per feature level in both")
        pairs = list(zip(level_channels, anchors_per_level))
        self.multi_loc_layers = nn.CellList([last_conv2d(c, 4 * a) for c, a in pairs])
        self.multi_cls_layers = nn.CellList([last_conv2d(c, num_classes * a) for c, a in pairs])
        self.flatten_concat = FlattenConcat(num_boxes)

    def class_biases(self) -> list:
        """Bias of every class-score conv, (anchors x num_classes) values each, anchor-major."""
        return [layer[3].bias for layer in self.multi_cls_layers]

    def construct(self, features: tuple) -> tuple:
        locs, logits = (), ()
        for i, feature in enumerate(features):
            locs += (self.multi_loc_layers[i](feature),)
            logits += (self.multi_cls_layers[i](feature),)
        return self.flatten_concat(locs), self.flatten_concat(logits)


class WeightSharedMultiBox(nn.Cell):
    """RetinaNet-style head of the FPN SSDs: one loc and one cls tower shared by all levels.

    Each tower is ``tower_depth`` 3x3 convs (with bias) whose weights every level reuses, each
    followed by a BatchNorm of the level's own (``addition_layer_{loc,cls}[level]``): statistics
    differ between pyramid levels, weights need not. One 3x3 predictor per branch
    (``loc_layers.0``, ``cls_layers.0``) then serves every level, so every level must have the
    same ``channels`` and ``anchors_per_location``.
    """

    def __init__(self, channels: int, anchors_per_location: int, num_levels: int, tower_depth: int,
                 num_classes: int, num_boxes: int) -> None:
        super().__init__()
        self.addition_layer_loc = self._tower(channels, tower_depth, num_levels)
        self.addition_layer_cls = self._tower(channels, tower_depth, num_levels)
        self.loc_layers = nn.SequentialCell([conv2d(channels, 4 * anchors_per_location)])
        self.cls_layers = nn.SequentialCell([conv2d(channels, num_classes * anchors_per_location)])
        self.flatten_concat = FlattenConcat(num_boxes)

    @staticmethod
    def _tower(channels: int, depth: int, num_levels: int) -> nn.CellList:
        """Per level a SequentialCell of ConvBNReLU units; unit k of every level holds the same conv."""
        shared_convs = [conv2d(channels, channels) for _ in range(depth)]
        return nn.CellList([
            nn.SequentialCell([ConvBNReLU(channels, channels, shared_conv=conv) for conv in shared_convs])
            for _ in range(num_levels)
        ])

    def class_biases(self) -> list:
        """Bias of the shared class-score conv, (anchors x num_classes) values, anchor-major."""
        return [self.cls_layers[0].bias]

    def construct(self, features: tuple) -> tuple:
        locs, logits = (), ()
        for level, feature in enumerate(features):
            locs += (self.loc_layers(self.addition_layer_loc[level](feature)),)
            logits += (self.cls_layers(self.addition_layer_cls[level](feature)),)
        return self.flatten_concat(locs), self.flatten_concat(logits)


def detection_outputs(pred_loc: ms.Tensor, pred_logits: ms.Tensor, training: bool) -> tuple:
    """Float32 ``(loc, logits)`` while training, ``(loc, sigmoid scores)`` in inference mode.

    Every network calls this with its own ``self.training`` (set by ``set_train``), so one
    network object serves both the loss and the evaluator; the zoo's ssd300 fixed the choice in
    its constructor and so evaluated logits during training. Casting before the sigmoid keeps
    the scores float32 when the body runs in float16 (``to_float``).
    """
    pred_loc = ops.cast(pred_loc, ms.float32)
    pred_logits = ops.cast(pred_logits, ms.float32)
    if not training:
        pred_logits = ops.sigmoid(pred_logits)
    return pred_loc, pred_logits
