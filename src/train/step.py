"""One optimisation step with loss scaling, overflow skip and optional global-norm clipping.

Gradients are un-scaled inside the step (not by the optimiser's ``loss_scale``) so that weight
decay, clipping and the overflow check all see true gradients, whichever scaling is active:

* fixed scale (the model zoo's ``loss_scale``), with a step skipped if a gradient overflows;
* dynamic scale (``use_float16``): the scale halves on overflow and grows after 1000 clean steps;
* none on CPU in float32: float32 gradients do not overflow where float16 ones would, and scaling
  by the configured power of two and back changes no bit of them, while scaling and scan cost about
  1,300 small kernels per ssd300 step (an un-scaling Mul, IsFinite, LogicalNot, Cast and ReduceSum
  for each of 255 gradients): 25-27 ms of a 1.1-1.4 s step, measured. A non-finite gradient there means
  divergence, which the trainer's NaN guard stops at the next step's loss.

The scale, its update counters and the optimiser moments are Parameters of this cell, so a
checkpoint of it holds everything ``--resume`` needs (the same layout on every path).
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
    ``scale`` on each part), so the network runs forward once per step. With ``scaled=False`` the
    step neither scales the loss nor scans the gradients (``overflow`` is always False).
    """

    def __init__(self, network_with_loss: nn.Cell, optimizer: nn.Optimizer, scale_sense: Any,
                 use_global_norm: bool = False, clip_norm: float = 1.0, scaled: bool = True) -> None:
        super().__init__(network_with_loss, optimizer, scale_sense)
        self.loss_parts = LossParts(network_with_loss)
        # MindSpore's overflow check uses Ascend/GPU status kernels that the CPU backend lacks; on CPU
        # an inf/NaN scan of the (already all-reduced) gradients gives the same answer on every rank.
        self.scan_for_nonfinite = ms.get_context("device_target") == "CPU"
        self.use_global_norm = bool(use_global_norm)
        self.clip_norm = float(clip_norm)
        self.scaled = bool(scaled)
        self.no_overflow = ms.Tensor(False)

    def construct(self, *inputs):
        if not self.scaled:  # a Python constant: the graph holds one of the two paths
            return self._unscaled_step(*inputs)
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

    def _unscaled_step(self, *inputs):
        """The same step with a sens of 1, no overflow scan and an unconditional update."""
        class_loss, box_loss = self.loss_parts(*inputs)
        loss = class_loss + box_loss
        sens = ops.ones_like(loss)
        grads = self.grad(self.loss_parts, self.weights)(*inputs, (sens, sens))
        grads = self.grad_reducer(grads)
        if self.use_global_norm:
            grads = ops.clip_by_global_norm(grads, self.clip_norm)
        loss = ops.depend(loss, self.optimizer(grads))
        return loss, self.no_overflow, self.scale_sense, class_loss, box_loss


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


def needs_loss_scale(config: Any) -> bool:
    """Float16 needs a loss scale everywhere; float32 keeps the configured one on GPU/Ascend, not on CPU."""
    return bool(config.use_float16) or ms.get_context("device_target") != "CPU"


def build_train_step(network_with_loss: nn.Cell, optimizer: nn.Optimizer, config: Any) -> TrainingWrapper:
    """Wrap the loss cell: dynamic loss scaling with float16, the config's fixed scale in float32 on
    GPU/Ascend, none on CPU in float32 (a scale of 1 is kept, so checkpoints and logs say so)."""
    scaled = needs_loss_scale(config)
    if config.use_float16:
        scale = nn.DynamicLossScaleUpdateCell(loss_scale_value=float(config.loss_scale), scale_factor=2,
                                              scale_window=DYNAMIC_SCALE_WINDOW)
    else:
        scale = ms.Tensor([float(config.loss_scale) if scaled else 1.0], ms.float32)
    return TrainingWrapper(network_with_loss, optimizer, scale, use_global_norm=config.use_global_norm,
                           scaled=scaled)
