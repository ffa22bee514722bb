"""Anchor coverage: how well a set of default boxes can match the ground truth, in pure numpy.

A ground-truth box is covered when its best IoU with any default box reaches the matching threshold;
an uncovered box still claims its single best default box in training, but as that box's only
positive, with offsets the network learns poorly. The best IoU per box must be cheap for COCO
(860k boxes against 51150 FPN anchors, 4.4e10 pairs), so it uses the structure every anchor
generator here has: the default boxes of one size sit on a grid of centres. For a fixed anchor
size, the overlap along each axis only shrinks as the centres move apart, so the best anchor of that
size is the one whose centre is nearest along each axis separately; one IoU per box and per anchor
size is exact. A set of default boxes without that grid structure falls back to the blocked IoU
matrix of ``pairwise_iou``, a bounded block at a time.
"""
from __future__ import annotations

import numpy as np

from src.boxes.coding import box_areas, center_to_corners, pairwise_iou

#: Ground-truth boxes per pass: bounds the float64 temporaries (a few MB) whatever the dataset size.
_BOX_CHUNK = 65536
#: Largest IoU block (boxes x default boxes) of the fallback for default boxes without a grid.
_FALLBACK_BLOCK = 4_000_000


def _size_groups(default_boxes: np.ndarray) -> list[np.ndarray]:
    """Indices of the default boxes of each distinct (h, w)."""
    _, inverse = np.unique(default_boxes[:, 2:], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.diff(inverse[order], prepend=-1))
    return np.split(order, starts[1:])


def _grid_axes(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(sorted cy values, sorted cx values) when the centres are exactly their product grid, else None."""
    rows, cols = np.unique(centres[:, 0]), np.unique(centres[:, 1])
    if len(np.unique(centres, axis=0)) != len(rows) * len(cols):
        return None
    return rows, cols


def _nearest(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The element of sorted ``values`` nearest to each target."""
    right = np.clip(np.searchsorted(values, targets), 0, len(values) - 1)
    left = np.clip(right - 1, 0, len(values) - 1)
    closer_left = np.abs(values[left] - targets) < np.abs(values[right] - targets)
    return np.where(closer_left, values[left], values[right])


def _paired_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of each corner box with the box in the same row of ``others`` (M, 4) x (M, 4) -> (M,)."""
    height = np.minimum(boxes[:, 2], others[:, 2]) - np.maximum(boxes[:, 0], others[:, 0])
    width = np.minimum(boxes[:, 3], others[:, 3]) - np.maximum(boxes[:, 1], others[:, 1])
    inter = np.maximum(height, 0) * np.maximum(width, 0)
    union = box_areas(boxes) + box_areas(others) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _best_iou_on_grid(boxes: np.ndarray, size_hw: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Best IoU of each corner box with the anchors of one size placed on the grid rows x cols."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    anchor_centre = np.stack([_nearest(rows, centre[:, 0]), _nearest(cols, centre[:, 1])], axis=1)
    half = np.broadcast_to(size_hw / 2.0, anchor_centre.shape)
    return _paired_iou(boxes, np.concatenate([anchor_centre - half, anchor_centre + half], axis=1))


def _best_iou_blocked(boxes: np.ndarray, default_corners: np.ndarray) -> np.ndarray:
    """Best IoU of each corner box with any of ``default_corners``, one bounded IoU block at a time."""
    rows = max(1, _FALLBACK_BLOCK // max(len(default_corners), 1))
    return np.concatenate([pairwise_iou(boxes[start:start + rows], default_corners).max(axis=1)
                           for start in range(0, len(boxes), rows)])


def best_default_box_iou(gt_corners: np.ndarray, default_boxes: np.ndarray) -> np.ndarray:
    """The best IoU (M,) float64 of each ground-truth box with any default box.

    ``gt_corners`` are normalised ``[ymin, xmin, ymax, xmax]`` (M, 4), ``default_boxes`` the anchors'
    ``[cy, cx, h, w]`` (N, 4) as ``src.boxes.anchors`` builds them. Exact: equal to the maximum of
    ``pairwise_iou`` over all anchors, without its (M, N) matrix.
    """
    boxes = np.asarray(gt_corners, dtype=np.float64).reshape(-1, 4)
    anchors = np.asarray(default_boxes, dtype=np.float64).reshape(-1, 4)
    best = np.zeros(len(boxes))
    if len(boxes) == 0 or len(anchors) == 0:
        return best
    grids, scattered = [], []
    for group in _size_groups(anchors):
        axes = _grid_axes(anchors[group, :2])
        if axes is None:
            scattered.append(group)
        else:
            grids.append((anchors[group[0], 2:], *axes))
    scattered_corners = center_to_corners(anchors[np.concatenate(scattered)]) if scattered else None
    for start in range(0, len(boxes), _BOX_CHUNK):
        chunk, chunk_best = boxes[start:start + _BOX_CHUNK], best[start:start + _BOX_CHUNK]
        for size_hw, rows, cols in grids:
            np.maximum(chunk_best, _best_iou_on_grid(chunk, size_hw, rows, cols), out=chunk_best)
        if scattered_corners is not None:
            np.maximum(chunk_best, _best_iou_blocked(chunk, scattered_corners), out=chunk_best)
    return best


def distinct_sizes(default_boxes: np.ndarray) -> np.ndarray:
    """The distinct (h, w) rows of the default boxes (normalised), e.g. for a picture of the anchor sizes."""
    return np.unique(np.asarray(default_boxes, dtype=np.float64).reshape(-1, 4)[:, 2:], axis=0)
