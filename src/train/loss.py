"""SSD training loss: sigmoid focal loss over all classes plus SmoothL1 on positive anchors.

Kept apart from the networks so that every SSD variant trains with the same objective. The
network is held as ``self.network`` so that checkpoint names carry the ``network.`` prefix the
model zoo's checkpoints use.
"""
from __future__ import annotations


import mindspore as ms
from mindspore import nn, ops


class SigmoidFocalLoss(nn.Cell):
    """Element-wise focal loss ``(1 - p_t)^gamma * alpha_t * BCE`` over every class column.

    All columns including background are scored as independent sigmoids (RetinaNet style, as
    in the model zoo), so ``alpha`` weights positives and ``1 - alpha`` the negatives.
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.75) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def construct(self, logits: ms.Tensor, labels: ms.Tensor) -> ms.Tensor:
        target = ops.one_hot(labels, logits.shape[-1], ops.ones((), logits.dtype), ops.zeros((), logits.dtype))
        bce = ops.binary_cross_entropy_with_logits(logits, target, ops.ones_like(logits), ops.ones_like(logits),
                                                   reduction="none")
        prob = ops.sigmoid(logits)
        p_t = target * prob + (1.0 - target) * (1.0 - prob)
        alpha_t = target * self.alpha + (1.0 - target) * (1.0 - self.alpha)
        return ops.pow(1.0 - p_t, self.gamma) * alpha_t * bce


class SSDWithLossCell(nn.Cell):
    """Network + loss: ``(images, gt_loc, gt_label, num_matched) -> scalar loss``.

    The sum of focal and box losses over the batch is divided by the batch's number of positive
    anchors; a batch without any positive (only possible with images lacking ground truth) is
    divided by 1 instead of 0, so its box loss is exactly zero rather than NaN. ``focal_gamma``
    and ``focal_alpha`` are the focal loss's focusing exponent and positive weight (the config's
    ``gamma`` and ``alpha``).
    """

    def __init__(self, network: nn.Cell, focal_gamma: float, focal_alpha: float) -> None:
        super().__init__()
        self.network = network
        self.focal = SigmoidFocalLoss(focal_gamma, focal_alpha)

    def loss_parts(self, images: ms.Tensor, gt_loc: ms.Tensor, gt_label: ms.Tensor,
                   num_matched: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
        """(class loss, box loss), both per positive anchor: the training log shows them apart,
        because a stalled box loss and a stalled class loss call for different fixes."""
        pred_loc, pred_label = self.network(images)
        positive = ops.cast(gt_label > 0, ms.float32)
        num_positive = ops.maximum(ops.cast(num_matched, ms.float32).sum(), 1.0)
        box_loss = ops.smooth_l1_loss(pred_loc, gt_loc, beta=1.0, reduction="none").sum(-1)
        box_loss = (box_loss * positive).sum()
        class_loss = self.focal(pred_label, gt_label).sum()
        return class_loss / num_positive, box_loss / num_positive

    def construct(self, images: ms.Tensor, gt_loc: ms.Tensor, gt_label: ms.Tensor,
                  num_matched: ms.Tensor) -> ms.Tensor:
        class_loss, box_loss = self.loss_parts(images, gt_loc, gt_label, num_matched)
        return class_loss + box_loss


class LossParts(nn.Cell):
    """``SSDWithLossCell.loss_parts`` as a cell, for the train step to call and differentiate.

    Logging the parts and differentiating their sum through ONE cell keeps the step at one
    forward pass (and one BatchNorm statistics update): two different entry points into the
    network are not merged by the graph compiler. ``auto_prefix=False`` leaves the parameter
    names (``network.*``, the model zoo's) untouched.
    """

    def __init__(self, loss_cell: SSDWithLossCell) -> None:
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell

    def construct(self, images: ms.Tensor, gt_loc: ms.Tensor, gt_label: ms.Tensor,
                  num_matched: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
        return self.loss_cell.loss_parts(images, gt_loc, gt_label, num_matched)
