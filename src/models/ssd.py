"""What every SSD shares around its network: the backbone handle and the in-graph box decoder.

Every network returns ``(pred_loc (B,N,4), pred_label (B,N,C))`` in float32: class logits in
training mode and sigmoid scores after ``set_train(False)``. Each network class says where its
ImageNet backbone sits (``BACKBONE_PATH``) and which feature maps an input side gives
(``feature_map_sizes``), so freezing, pre-training and config checks need no per-network code.
Which network a config names, and with which arguments, is the registry's business
(``src.models.registry``).
"""
from __future__ import annotations

from typing import Sequence

import mindspore as ms
import numpy as np
from mindspore import nn, ops


def backbone_cell(network: nn.Cell) -> nn.Cell:
    """The sub-cell that holds the ImageNet backbone (``network.BACKBONE_PATH``)."""
    cell = network
    for attribute in type(network).BACKBONE_PATH.split("."):
        cell = getattr(cell, attribute)
    return cell


#: ``freeze_layer`` values -> the largest output stride of the backbone layers they freeze (None: all of it).
FROZEN_STRIDES = {"backbone": None, "backbone_stride4": 4, "backbone_stride8": 8, "backbone_stride16": 16}


def freeze_layers(network: nn.Cell, freeze_layer: str) -> list[nn.Cell]:
    """Exclude backbone layers from training as ``freeze_layer`` says; returns the frozen cells.

    ``backbone`` freezes the whole backbone, ``backbone_strideN`` the layers whose output stride is
    at most N: the high-resolution layers, which cost most of the backward pass and learn the most
    generic features. Run it before building the optimizer, which only collects
    ``trainable_params()``. Frozen BatchNorm layers normalise with their stored (pre-trained)
    statistics in training mode too, as torchvision's ``FrozenBatchNorm2d`` and MMDetection's
    ``norm_eval`` do: batch statistics would shift the features the frozen weights were trained on.
    """
    if freeze_layer == "None":
        return []
    backbone = backbone_cell(network)
    largest_stride = FROZEN_STRIDES[freeze_layer]
    frozen = [backbone] if largest_stride is None else [
        cell for stride, cell in backbone.stride_stages() if stride <= largest_stride]
    for cell in frozen:
        for param in cell.trainable_params():
            param.requires_grad = False
        for _, inner in cell.cells_and_names():
            if isinstance(inner, nn.BatchNorm2d):
                inner.use_batch_statistics = False
    return frozen


class BoxDecoder(nn.Cell):
    """Offsets (B,N,4) -> corners ``[ymin, xmin, ymax, xmax]`` (B,N,4) clipped to [0, 1].

    The in-graph twin of ``BoxCoder.decode`` so exported models output final boxes. The default
    boxes are a constant (not a Parameter) so they stay out of checkpoints.
    """

    def __init__(self, default_boxes_cyxhw: np.ndarray, prior_scaling: Sequence[float]) -> None:
        super().__init__()
        boxes = np.asarray(default_boxes_cyxhw, dtype=np.float32)
        self.anchor_yx = ms.Tensor(boxes[:, :2])
        self.anchor_hw = ms.Tensor(boxes[:, 2:])
        self.center_variance, self.size_variance = (float(v) for v in prior_scaling)

    def construct(self, loc: ms.Tensor) -> ms.Tensor:
        centre = loc[..., :2] * self.center_variance * self.anchor_hw + self.anchor_yx
        half_size = ops.exp(loc[..., 2:] * self.size_variance) * self.anchor_hw / 2.0
        corners = ops.concat((centre - half_size, centre + half_size), axis=-1)
        # One clamp, not maximum + minimum: it exports as a single ONNX Clip, which OpenCV's
        # importer runs, where it rejects Max/Min with a constant operand.
        return ops.clamp(corners, 0.0, 1.0)


class SsdInferWithDecoder(nn.Cell):
    """Eval/export network: image -> (boxes (B,N,4) yxyx in [0,1], scores (B,N,C)).

    Holds the detector as ``network`` so training checkpoints (``network.*``) load into it
    unchanged. Call ``set_train(False)`` on it (as eval does) to get sigmoid scores.
    """

    def __init__(self, network: nn.Cell, default_boxes_cyxhw: np.ndarray, prior_scaling: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.decoder = BoxDecoder(default_boxes_cyxhw, prior_scaling)

    def construct(self, x: ms.Tensor) -> tuple:
        pred_loc, scores = self.network(x)
        return self.decoder(pred_loc), scores
