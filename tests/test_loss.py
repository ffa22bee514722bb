"""Focal loss against a float64 numpy reference, loss normalisation, and the LR schedule."""
from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.train.loss import SigmoidFocalLoss, SSDWithLossCell
from src.train.lr_schedule import warmup_cosine_lr

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")


def focal_reference(logits: np.ndarray, labels: np.ndarray, gamma: float, alpha: float) -> np.ndarray:
    logits = logits.astype(np.float64)
    target = np.eye(logits.shape[-1])[labels]
    prob = 1.0 / (1.0 + np.exp(-logits))
    bce = -(target * np.log(prob) + (1 - target) * np.log(1 - prob))
    p_t = target * prob + (1 - target) * (1 - prob)
    alpha_t = target * alpha + (1 - target) * (1 - alpha)
    return (1 - p_t) ** gamma * alpha_t * bce


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.75), (2.0, 0.25), (0.0, 0.5), (1.5, 0.9)])
def test_focal_loss_matches_float64_reference(gamma, alpha):
    rng = np.random.default_rng(int(gamma * 10 + alpha * 100))
    logits = rng.normal(0, 3, (2, 50, 7)).astype(np.float32)
    labels = rng.integers(0, 7, (2, 50)).astype(np.int32)
    got = SigmoidFocalLoss(gamma, alpha)(ms.Tensor(logits), ms.Tensor(labels)).asnumpy()
    np.testing.assert_allclose(got, focal_reference(logits, labels, gamma, alpha), rtol=2e-5, atol=1e-6)


class FixedOutputs(nn.Cell):
    """A stand-in network returning given predictions, so the loss arithmetic can be checked exactly."""

    def __init__(self, loc: np.ndarray, logits: np.ndarray) -> None:
        super().__init__()
        self.loc = ms.Parameter(ms.Tensor(loc), name="loc")
        self.logits = ms.Parameter(ms.Tensor(logits), name="logits")

    def construct(self, images):
        return self.loc * 1.0, self.logits * 1.0


class LossParts(nn.Cell):
    """Calls ``loss_parts`` from a construct, as the train step does (a bare call would run eagerly)."""

    def __init__(self, loss_cell: SSDWithLossCell) -> None:
        super().__init__()
        self.loss_cell = loss_cell

    def construct(self, *inputs):
        return self.loss_cell.loss_parts(*inputs)


def smooth_l1(diff: np.ndarray) -> np.ndarray:
    diff = np.abs(diff.astype(np.float64))
    return np.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5)


def test_loss_is_sum_over_batch_divided_by_positives():
    rng = np.random.default_rng(0)
    loc = rng.normal(0, 1, (2, 30, 4)).astype(np.float32)
    logits = rng.normal(0, 2, (2, 30, 5)).astype(np.float32)
    gt_loc = rng.normal(0, 1, (2, 30, 4)).astype(np.float32)
    gt_label = np.zeros((2, 30), np.int32)
    gt_label[0, [1, 5, 9]] = [1, 2, 4]
    gt_label[1, [3]] = 3
    num_matched = np.array([[3], [1]], np.int32)
    config = SimpleNamespace(gamma=2.0, alpha=0.75)
    loss_cell = SSDWithLossCell(FixedOutputs(loc, logits), config.gamma, config.alpha)
    inputs = (ms.Tensor(np.zeros((2, 3, 8, 8), np.float32)), ms.Tensor(gt_loc), ms.Tensor(gt_label),
              ms.Tensor(num_matched))
    box = (smooth_l1(loc - gt_loc).sum(-1) * (gt_label > 0)).sum()
    cls = focal_reference(logits, gt_label, 2.0, 0.75).sum()
    np.testing.assert_allclose(float(loss_cell(*inputs).asnumpy()), (box + cls) / 4.0, rtol=1e-5)
    class_part, box_part = LossParts(loss_cell)(*inputs)  # what the training log records apart
    np.testing.assert_allclose([float(class_part.asnumpy()), float(box_part.asnumpy())], [cls / 4.0, box / 4.0],
                               rtol=1e-5)


def test_empty_ground_truth_gives_zero_box_loss_and_finite_loss():
    rng = np.random.default_rng(1)
    loc = rng.normal(0, 1, (1, 30, 4)).astype(np.float32)
    logits = rng.normal(0, 2, (1, 30, 5)).astype(np.float32)
    gt_label = np.zeros((1, 30), np.int32)
    config = SimpleNamespace(gamma=2.0, alpha=0.75)
    loss = SSDWithLossCell(FixedOutputs(loc, logits), config.gamma, config.alpha)(
        ms.Tensor(np.zeros((1, 3, 8, 8), np.float32)), ms.Tensor(np.ones((1, 30, 4), np.float32)),
        ms.Tensor(gt_label), ms.Tensor(np.zeros((1, 1), np.int32)))
    # no positives: the box term vanishes (targets of 1 are ignored), only the background focal term remains
    np.testing.assert_allclose(float(loss.asnumpy()), focal_reference(logits, gt_label, 2.0, 0.75).sum(), rtol=1e-5)


def test_lr_schedule_endpoints_and_shape():
    lr = warmup_cosine_lr(0.001, 0.05, 0.05 * 0.001, warmup_epochs=2, total_epochs=500, steps_per_epoch=458)
    assert lr.shape == (229000,) and lr.dtype == np.float32
    np.testing.assert_allclose(lr[0], 0.001)
    np.testing.assert_allclose(lr[916], 0.05, rtol=1e-6)
    assert np.all(np.diff(lr[:916]) > 0) and np.all(np.diff(lr[916:]) <= 0)
    np.testing.assert_allclose(lr[-1], 5e-5, rtol=1e-3)


def test_lr_schedule_without_warmup_starts_at_peak():
    lr = warmup_cosine_lr(0.001, 0.05, 0.0, warmup_epochs=0, total_epochs=3, steps_per_epoch=10)
    np.testing.assert_allclose(lr[0], 0.05)
    assert lr.min() >= 0
