"""Box geometry, anchor matching and the SSD box encoding, in pure numpy.

Conventions (shared with the model zoo's checkpoints): corners are ``[ymin, xmin, ymax, xmax]``
and centre form is ``[cy, cx, h, w]``, both normalised to [0, 1]. The encoder runs once per
training image inside the data pipeline (51150 anchors for the 640 px FPN networks), so it works
on float32 anchor columns, block by block, and skips the blocks a ground truth cannot touch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Smallest ratio allowed inside the log of the size encoding (a zero-size box would give -inf).
_MIN_SIZE_RATIO = 1e-6
#: Anchors per matching block: small enough that a block's (M, block) float32 IoU matrix stays in a
#: core's L2 cache, large enough that the per-block numpy calls cost little next to the arithmetic.
_ANCHOR_BLOCK = 2048


def center_to_corners(boxes: np.ndarray) -> np.ndarray:
    """``[cy, cx, h, w]`` -> ``[ymin, xmin, ymax, xmax]`` over the last axis."""
    half = boxes[..., 2:] / 2.0
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def corners_to_center(boxes: np.ndarray) -> np.ndarray:
    """``[ymin, xmin, ymax, xmax]`` -> ``[cy, cx, h, w]`` over the last axis."""
    size = boxes[..., 2:] - boxes[..., :2]
    return np.concatenate([boxes[..., :2] + size / 2.0, size], axis=-1)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Area of each corner box (..., 4) -> (...); inverted boxes count as empty.

    Either corner order works ([y0, x0, y1, x1] or [x0, y0, x1, y1]): the area is the same.
    """
    return np.maximum(boxes[..., 2] - boxes[..., 0], 0) * np.maximum(boxes[..., 3] - boxes[..., 1], 0)


def _iou_with_columns(boxes: np.ndarray, columns: np.ndarray, column_areas: np.ndarray) -> np.ndarray:
    """IoU (A, B) of corner boxes (A, 4) with boxes given as coordinate rows (4, B) and their areas (B,).

    One coordinate at a time into two reused (A, B) buffers: no (A, B, 2) temporaries, and the
    result keeps the inputs' precision (float32 in the encoder). Empty pairs give 0, never NaN.
    """
    ymin, xmin, ymax, xmax = (boxes[:, k:k + 1] for k in range(4))
    inter = np.minimum(ymax, columns[2])
    buffer = np.maximum(ymin, columns[0])
    np.subtract(inter, buffer, out=inter)
    np.maximum(inter, 0, out=inter)
    np.minimum(xmax, columns[3], out=buffer)
    np.subtract(buffer, np.maximum(xmin, columns[1]), out=buffer)
    np.maximum(buffer, 0, out=buffer)
    np.multiply(inter, buffer, out=inter)
    union = np.add(box_areas(boxes)[:, None], column_areas, out=buffer)
    np.subtract(union, inter, out=union)
    return np.divide(inter, union, out=inter, where=union > 0)


def pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix (A, B) between two sets of corner boxes; empty boxes give 0, never NaN."""
    boxes_a, boxes_b = np.asarray(boxes_a), np.asarray(boxes_b)
    return _iou_with_columns(boxes_a.reshape(-1, 4), boxes_b.reshape(-1, 4).T, box_areas(boxes_b))


class BoxCoder:
    """Matches ground truth to anchors and encodes/decodes SSD box offsets.

    Offsets are ``(g_yx - a_yx) / (a_hw * v0)`` and ``log(g_hw / a_hw) / v1`` with the
    variances ``prior_scaling = (v0, v1)`` = (0.1, 0.2) that the zoo's checkpoints expect.
    """

    def __init__(self, default_boxes: np.ndarray, prior_scaling: Sequence[float] = (0.1, 0.2),
                 match_threshold: float = 0.5) -> None:
        self.default_boxes = np.asarray(default_boxes, dtype=np.float32).reshape(-1, 4)
        if not (self.default_boxes[:, 2:] > 0).all():
            raise ValueError("default boxes need a positive height and width; check the anchor keys of the config "
                             "(min_scale, max_scale, aspect_ratios)")
        self.default_corners = center_to_corners(self.default_boxes)
        self.center_variance, self.size_variance = (float(v) for v in prior_scaling)
        self.match_threshold = float(match_threshold)
        starts = range(0, self.num_anchors, _ANCHOR_BLOCK)
        blocks = [self.default_corners[start:start + _ANCHOR_BLOCK] for start in starts]
        # Anchors are ordered level -> row -> column, so a block covers a band of the image; its
        # bounding box tells which ground truths can overlap any of its anchors at all.
        self._block_starts = list(starts)
        self._block_columns = [np.ascontiguousarray(block.T) for block in blocks]
        self._block_areas = [box_areas(block) for block in blocks]
        self._block_bounds = np.array([[block[:, 0].min(), block[:, 1].min(), block[:, 2].max(), block[:, 3].max()]
                                       for block in blocks], dtype=np.float32)

    @property
    def num_anchors(self) -> int:
        """N, the number of default boxes (and of rows the encoder returns)."""
        return int(self.default_boxes.shape[0])

    def match(self, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Assign anchors to ground truths; (matched_gt int64 (N,), positive bool (N,)).

        An anchor is positive when its best IoU exceeds ``match_threshold``; ``matched_gt`` is then
        the ground truth it overlaps most (ties: the earlier one) and is meaningful only where
        positive. Every ground truth also claims its single best anchor (so small or oddly shaped
        objects are never left without a positive); when two claim the same anchor the earlier
        ground truth gets it - the outcome of the model zoo's sequential loop. Ground truths that
        cannot touch a block of anchors skip it: their IoU there is exactly 0.
        """
        gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
        matched_gt = np.zeros(self.num_anchors, dtype=np.int64)
        best_iou = np.zeros(self.num_anchors, dtype=np.float32)
        if len(gt_boxes) == 0:
            return matched_gt, best_iou > 0
        bounds = self._block_bounds
        touches = ((gt_boxes[None, :, 0] < bounds[:, None, 2]) & (gt_boxes[None, :, 2] > bounds[:, None, 0])
                   & (gt_boxes[None, :, 1] < bounds[:, None, 3]) & (gt_boxes[None, :, 3] > bounds[:, None, 1]))
        # A ground truth that overlaps no anchor keeps anchor 0 as its best, as argmax over zeros would.
        gt_best_iou = np.zeros(len(gt_boxes), dtype=np.float32)
        gt_best_anchor = np.zeros(len(gt_boxes), dtype=np.int64)
        for start, columns, areas, candidates in zip(self._block_starts, self._block_columns, self._block_areas,
                                                     touches):
            gt_index = np.flatnonzero(candidates)
            if len(gt_index) == 0:
                continue
            iou = _iou_with_columns(gt_boxes[gt_index], columns, areas)
            local_gt = iou.argmax(axis=0)
            stop = start + iou.shape[1]
            matched_gt[start:stop] = gt_index[local_gt]
            best_iou[start:stop] = np.take_along_axis(iou, local_gt[None], axis=0)[0]
            local_anchor = iou.argmax(axis=1)
            value = iou[np.arange(len(gt_index)), local_anchor]
            better = value > gt_best_iou[gt_index]  # strict: the first block with the maximum keeps it
            gt_best_iou[gt_index[better]] = value[better]
            gt_best_anchor[gt_index[better]] = start + local_anchor[better]
        positive = best_iou > self.match_threshold
        claimed, first_claimant = np.unique(gt_best_anchor, return_index=True)
        matched_gt[claimed] = first_claimant
        positive[claimed] = True
        return matched_gt, positive

    def encode(self, gt_boxes: np.ndarray, gt_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training targets for one image: (loc (N,4) float32, labels (N,) int32, num_match (1,) int32).

        ``gt_boxes`` are normalised corners (M, 4), ``gt_labels`` class indices >= 1. Negative
        anchors get label 0 and zero offsets; an image without ground truth is all background.
        """
        gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels).reshape(-1)
        matched_gt, positive = self.match(gt_boxes)
        labels = np.zeros(self.num_anchors, dtype=np.int32)
        loc = np.zeros((self.num_anchors, 4), dtype=np.float32)
        anchor_index = np.flatnonzero(positive)
        if len(anchor_index):
            gt_index = matched_gt[anchor_index]
            labels[anchor_index] = gt_labels[gt_index]
            target = corners_to_center(gt_boxes)[gt_index]
            anchors = self.default_boxes[anchor_index]
            loc[anchor_index, :2] = (target[:, :2] - anchors[:, :2]) / (anchors[:, 2:] * self.center_variance)
            ratio = np.maximum(target[:, 2:] / anchors[:, 2:], _MIN_SIZE_RATIO)
            loc[anchor_index, 2:] = np.log(ratio) / self.size_variance
        return loc, labels, np.array([len(anchor_index)], dtype=np.int32)

    def decode(self, loc: np.ndarray) -> np.ndarray:
        """Offsets (..., N, 4) -> normalised corners (..., N, 4) clipped to [0, 1]."""
        loc = np.asarray(loc, dtype=np.float32)
        anchors = self.default_boxes
        centre = loc[..., :2] * self.center_variance * anchors[:, 2:] + anchors[:, :2]
        size = np.exp(loc[..., 2:] * self.size_variance) * anchors[:, 2:]
        return np.clip(center_to_corners(np.concatenate([centre, size], axis=-1)), 0.0, 1.0)
