"""One optimisation step with loss scaling, overflow skip and optional global-norm clipping.

Gradients are un-scaled inside the step (not by the optimiser's ``loss_scale``) so that weight
decay, clipping and the overflow check all see true gradients, whichever scaling is active:

* fixed scale (the model zoo's ``loss_scale``), with a step skipped if a gradient overflows;
* dynamic scale (``use_float16``): the scale halves on overflow and grows after 1000 clean steps.

The scale, its update counters and the optimiser moments are Parameters of this cell, so a
checkpoint of it holds everything ``--resume`` needs.
"""
from __future__ import annotations

from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from src.train.loss import LossParts

_unscale = ops.MultitypeFuncGraph("unscale")

#: Clean steps before a dynamic loss scale doubles again (MindSpore's customary window).
DYNAMIC_SCALE_WINDOW = 1000


@_unscale.register("Tensor", "Tensor")
def _unscale_tensor(scale: ms.Tensor, grad: ms.Tensor) -> ms.Tensor:
    return grad * ops.cast(ops.reciprocal(scale), ops.dtype(grad))


_count_nonfinite = ops.MultitypeFuncGraph("count_nonfinite")


@_count_nonfinite.register("Tensor")
def _count_nonfinite_tensor(grad: ms.Tensor) -> ms.Tensor:
    return ops.cast(ops.logical_not(ops.isfinite(grad)), ms.float32).sum()


class TrainingWrapper(nn.TrainOneStepWithLossScaleCell):
    """``(*inputs) -> (loss, overflow, loss_scale, class_loss, box_loss)``; no update when ``overflow``.

    ``network_with_loss`` is an ``SSDWithLossCell``: its ``loss_parts`` give the two terms the
    training log records apart; the gradient of their sum comes from the same call (a sens of
    ``scale`` on each part), so the network runs forward once per step.
    """

    def __init__(self, network_with_loss: nn.Cell, optimizer: nn.Optimizer, scale_sense: Any,
                 use_global_norm: bool = False, clip_norm: float = 1.0) -> None:
        super().__init__(network_with_loss, optimizer, scale_sense)
        self.loss_parts = LossParts(network_with_loss)
        # MindSpore's overflow check uses Ascend/GPU status kernels that the CPU backend lacks; on CPU
        # an inf/NaN scan of the (already all-reduced) gradients gives the same answer on every rank.
        self.scan_for_nonfinite = ms.get_context("device_target") == "CPU"
        self.use_global_norm = bool(use_global_norm)
        self.clip_norm = float(clip_norm)

    def construct(self, *inputs):
        weights = self.weights
        class_loss, box_loss = self.loss_parts(*inputs)
        loss = class_loss + box_loss
        scale = self.scale_sense
        status = ms.Tensor([0] * 8, ms.int32)
        sens = ops.ones_like(loss) * ops.cast(scale, ops.dtype(loss))
        grads = self.grad(self.loss_parts, weights)(*inputs, (sens, sens))
        grads = self.hyper_map(ops.partial(_unscale, scale), grads)
        grads = self.grad_reducer(grads)
        if self.scan_for_nonfinite:
            overflow_flag = ops.addn(self.hyper_map(_count_nonfinite, grads)) > 0
        else:
            overflow_flag = self.get_overflow_status(status, grads)
        overflow = self.process_loss_scale(overflow_flag)
        if self.use_global_norm:
            grads = ops.clip_by_global_norm(grads, self.clip_norm)
        if not overflow:
            loss = ops.depend(loss, self.optimizer(grads))
        return loss, overflow_flag, scale, class_loss, box_loss


def _decays(param: ms.Parameter) -> bool:
    """BatchNorm affine parameters and biases are exempt from weight decay by default."""
    leaf = param.name.rsplit(".", 1)[-1]
    return leaf not in ("gamma", "beta", "bias")


def build_optimizer(network: nn.Cell, lr_per_step: np.ndarray, config: Any) -> nn.Momentum:
    """Momentum over the trainable parameters, weight decay on conv/dense weights only.

    ``config.weight_decay_bn_bias`` restores the model zoo's behaviour of decaying biases too.
    """
    params = network.trainable_params()
    decay = [p for p in params if config.weight_decay_bn_bias or _decays(p)]
    no_decay = [p for p in params if not (config.weight_decay_bn_bias or _decays(p))]
    groups = [{"params": decay, "weight_decay": float(config.weight_decay)}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return nn.Momentum(groups, learning_rate=ms.Tensor(lr_per_step), momentum=float(config.momentum))


def build_train_step(network_with_loss: nn.Cell, optimizer: nn.Optimizer, config: Any) -> TrainingWrapper:
    """Wrap the loss cell: dynamic loss scaling with float16, the config's fixed scale otherwise."""
    if config.use_float16:
        scale = nn.DynamicLossScaleUpdateCell(loss_scale_value=float(config.loss_scale), scale_factor=2,
                                              scale_window=DYNAMIC_SCALE_WINDOW)
    else:
        scale = ms.Tensor([float(config.loss_scale)], ms.float32)
    return TrainingWrapper(network_with_loss, optimizer, scale, use_global_norm=config.use_global_norm)
