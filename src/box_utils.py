"""Box geometry, anchor matching and the SSD box encoding, in pure numpy.

Conventions (shared with the model zoo's checkpoints): corners are ``[ymin, xmin, ymax, xmax]``
and centre form is ``[cy, cx, h, w]``, both normalised to [0, 1]. The encoder runs once per
training image inside the data pipeline, so every function is vectorised over anchors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Smallest ratio allowed inside the log of the size encoding (a zero-size box would give -inf).
_MIN_SIZE_RATIO = 1e-6


def center_to_corners(boxes: np.ndarray) -> np.ndarray:
    """``[cy, cx, h, w]`` -> ``[ymin, xmin, ymax, xmax]`` over the last axis."""
    half = boxes[..., 2:] / 2.0
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def corners_to_center(boxes: np.ndarray) -> np.ndarray:
    """``[ymin, xmin, ymax, xmax]`` -> ``[cy, cx, h, w]`` over the last axis."""
    size = boxes[..., 2:] - boxes[..., :2]
    return np.concatenate([boxes[..., :2] + size / 2.0, size], axis=-1)


def pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix (A, B) between two sets of corner boxes; empty boxes give 0, never NaN."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=-1)
    area_a = np.prod(np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0.0, None), axis=-1)
    area_b = np.prod(np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0.0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_anchors(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Assign each anchor the ground truth it overlaps most; (matched_gt (N,), positive (N,)).

    An anchor is positive when its best IoU exceeds ``threshold``. Every ground truth also
    claims its single best anchor (so small or oddly shaped objects are never left without a
    positive). Ties go to the earlier ground truth, including two ground truths whose best
    anchor is the same one - the same outcome as the model zoo's sequential loop.
    """
    num_gt, num_anchors = iou.shape
    if num_gt == 0:
        return np.zeros(num_anchors, dtype=np.int64), np.zeros(num_anchors, dtype=bool)
    forced = iou.copy()
    forced[np.arange(num_gt), iou.argmax(axis=1)] = 2.0
    matched_gt = forced.argmax(axis=0)
    positive = forced[matched_gt, np.arange(num_anchors)] > threshold
    return matched_gt, positive


class BoxCoder:
    """Matches ground truth to anchors and encodes/decodes SSD box offsets.

    Offsets are ``(g_yx - a_yx) / (a_hw * v0)`` and ``log(g_hw / a_hw) / v1`` with the
    variances ``prior_scaling = (v0, v1)`` = (0.1, 0.2) that the zoo's checkpoints expect.
    """

    def __init__(self, default_boxes: np.ndarray, prior_scaling: Sequence[float] = (0.1, 0.2),
                 match_threshold: float = 0.5) -> None:
        self.default_boxes = np.asarray(default_boxes, dtype=np.float32)
        self.default_corners = center_to_corners(self.default_boxes)
        self.center_variance, self.size_variance = (float(v) for v in prior_scaling)
        self.match_threshold = float(match_threshold)

    @property
    def num_anchors(self) -> int:
        """N, the number of default boxes (and of rows the encoder returns)."""
        return int(self.default_boxes.shape[0])

    def encode(self, gt_boxes: np.ndarray, gt_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training targets for one image: (loc (N,4) float32, labels (N,) int32, num_match (1,) int32).

        ``gt_boxes`` are normalised corners (M, 4), ``gt_labels`` class indices >= 1. Negative
        anchors get label 0 and zero offsets; an image without ground truth is all background.
        """
        gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels).reshape(-1)
        matched_gt, positive = match_anchors(pairwise_iou(gt_boxes, self.default_corners), self.match_threshold)
        labels = np.zeros(self.num_anchors, dtype=np.int32)
        loc = np.zeros((self.num_anchors, 4), dtype=np.float32)
        if positive.any():
            labels[positive] = gt_labels[matched_gt[positive]]
            target = corners_to_center(gt_boxes[matched_gt[positive]])
            anchors = self.default_boxes[positive]
            loc[positive, :2] = (target[:, :2] - anchors[:, :2]) / (anchors[:, 2:] * self.center_variance)
            ratio = np.maximum(target[:, 2:] / anchors[:, 2:], _MIN_SIZE_RATIO)
            loc[positive, 2:] = np.log(ratio) / self.size_variance
        return loc, labels, np.array([positive.sum()], dtype=np.int32)

    def decode(self, loc: np.ndarray) -> np.ndarray:
        """Offsets (..., N, 4) -> normalised corners (..., N, 4) clipped to [0, 1]."""
        loc = np.asarray(loc, dtype=np.float32)
        anchors = self.default_boxes
        centre = loc[..., :2] * self.center_variance * anchors[:, 2:] + anchors[:, :2]
        size = np.exp(loc[..., 2:] * self.size_variance) * anchors[:, 2:]
        return np.clip(center_to_corners(np.concatenate([centre, size], axis=-1)), 0.0, 1.0)
