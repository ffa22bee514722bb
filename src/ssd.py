"""SSD300-MobileNetV2, the network registry and the in-graph box decoder for eval/export.

Every network built here returns ``(pred_loc (B,N,4), pred_label (B,N,C))`` in float32:
class logits in training mode and sigmoid scores after ``set_train(False)``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.heads import MultiBox, detection_outputs
from src.layers import InvertedResidual
from src.mobilenet_v2 import MobileNetV2Backbone


class SSD300MobileNetV2(nn.Cell):
    """The model zoo's ``ssd300``: MobileNetV2 features, 4 inverted-residual extras, MultiBox.

    The backbone gives the first two feature levels; extra level i (i >= 2) is
    ``InvertedResidual(extras_in_channels[i] -> extras_out_channels[i], extras_strides[i],
    extras_ratio[i])`` with a final ReLU6, applied to the previous level.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.backbone = MobileNetV2Backbone()
        num_backbone_levels = 2
        self.multi_residual = nn.CellList([
            InvertedResidual(config.extras_in_channels[i], config.extras_out_channels[i],
                             config.extras_strides[i], config.extras_ratio[i], last_relu=True)
            for i in range(num_backbone_levels, len(config.extras_in_channels))
        ])
        self.multi_box = MultiBox(config)

    def construct(self, x: ms.Tensor) -> tuple:
        features = self.backbone(x)
        feature = features[-1]
        for block in self.multi_residual:
            feature = block(feature)
            features += (feature,)
        pred_loc, pred_logits = self.multi_box(features)
        return detection_outputs(pred_loc, pred_logits, self.training)


#: ``config.model_name`` -> network constructor taking the config.
NETWORKS: dict[str, Callable[[Any], nn.Cell]] = {
    "ssd300": SSD300MobileNetV2,
}


def build_ssd(config: Any) -> nn.Cell:
    """The network named by ``config.model_name``; ValueError listing the known names otherwise."""
    name = getattr(config, "model_name", None)
    if name not in NETWORKS:
        raise ValueError(f"unknown model_name {name!r} in the config; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name](config)


def freeze_backbone(network: nn.Cell) -> None:
    """Exclude ``network.backbone`` from training (``freeze_layer: backbone``).

    Run it before building the optimizer, which only collects ``trainable_params()``. BatchNorm
    statistics inside the backbone still update in training mode.
    """
    for param in network.backbone.trainable_params():
        param.requires_grad = False


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
        return ops.minimum(ops.maximum(corners, 0.0), 1.0)


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
