"""Box-aware training augmentation for SSD: IoU-constrained crop, zoom-out, flip (pure numpy/cv2).

Conventions: images are HWC uint8 RGB; boxes are float pixel corners [ymin, xmin, ymax, xmax] in
continuous coordinates (pixel row r covers [r, r+1)), so a box's edges are image-size invariant
under crop offsets and flips. Every random draw comes from the caller's `np.random.Generator`,
which makes a whole augmentation chain reproducible from one seed.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from src.box_utils import pairwise_iou

#: SSD paper §2.2 sampling options: None keeps the whole image, 0.0 is "any patch",
#: the others are the minimum Jaccard overlap the patch must have with the objects.
CROP_MIN_IOUS: tuple[float | None, ...] = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
_PATCH_SCALE = (0.3, 1.0)
_PATCH_ASPECT = (0.5, 2.0)  # patch height / width, in pixels


def drop_degenerate(boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove boxes with no area: they cannot be matched and would give log(0) size targets."""
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


def _sample_patches(height: int, width: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `count` candidate patches at once as int pixel rects [top, left, bottom, right].

    Drawing all trials in one call keeps the per-image Python work constant; candidates that break
    the aspect rule are marked with a zero-size rect so they can never be accepted.
    """
    scale = rng.uniform(*_PATCH_SCALE, size=(count, 2))
    ph = np.maximum((scale[:, 0] * height).astype(np.int64), 1)
    pw = np.maximum((scale[:, 1] * width).astype(np.int64), 1)
    pos = rng.uniform(0.0, 1.0, size=(count, 2))
    top = (pos[:, 0] * (height - ph)).astype(np.int64)
    left = (pos[:, 1] * (width - pw)).astype(np.int64)
    aspect = ph / pw
    ok = (aspect >= _PATCH_ASPECT[0]) & (aspect <= _PATCH_ASPECT[1])
    rects = np.stack([top, left, top + ph, left + pw], axis=1)
    rects[~ok] = 0
    return rects


def _centres_inside(boxes: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """(T, K) mask: box centre strictly inside the patch (the SSD rule for keeping a box)."""
    cy = 0.5 * (boxes[:, 0] + boxes[:, 2])[None, :]
    cx = 0.5 * (boxes[:, 1] + boxes[:, 3])[None, :]
    r = rects[:, None, :]
    return (cy > r[..., 0]) & (cy < r[..., 2]) & (cx > r[..., 1]) & (cx < r[..., 3])


def random_iou_crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                    rng: np.random.Generator, max_trials: int = 50,
                    min_ious: Sequence[float | None] = CROP_MIN_IOUS
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SSD "sample a patch" crop: teaches the detector partial objects and larger object scales.

    One option is drawn from `min_ious` (default: whole image, any patch, min IoU 0.1, 0.3, 0.5,
    0.7, 0.9). A patch of U[0.3, 1] of each side with height/width in [0.5, 2] is accepted when some
    box overlaps it with IoU >= the option (the rule of the paper's Caffe implementation and of
    torchvision; requiring it of EVERY touched box rejects most crops on crowded COCO images), and
    at least one box has its centre inside. Boxes with the centre inside are kept, clipped to the patch and
    shifted; the others are dropped. After `max_trials` rejected patches the input is returned
    unchanged.
    """
    min_iou = min_ious[int(rng.integers(len(min_ious)))]
    if min_iou is None or len(boxes) == 0:
        return image, boxes, labels
    height, width = image.shape[:2]
    rects = _sample_patches(height, width, max_trials, rng)
    iou = pairwise_iou(rects.astype(np.float64), boxes.astype(np.float64))
    inside = _centres_inside(boxes, rects)
    valid = (rects[:, 2] > rects[:, 0]) & (iou.max(axis=1) >= min_iou) & inside.any(axis=1)
    if not valid.any():
        return image, boxes, labels
    trial = int(np.argmax(valid))
    top, left, bottom, right = (int(v) for v in rects[trial])
    keep = inside[trial]
    kept = boxes[keep].copy()
    kept[:, 0::2] = np.clip(kept[:, 0::2], top, bottom) - top
    kept[:, 1::2] = np.clip(kept[:, 1::2], left, right) - left
    kept, kept_labels = drop_degenerate(kept, labels[keep])
    return image[top:bottom, left:right], kept, kept_labels


def random_expand(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                  max_ratio: float, fill: Sequence[float], p: float = 0.5
                  ) -> tuple[np.ndarray, np.ndarray]:
    """SSD300* "zoom out": place the image on a larger mean-coloured canvas with probability p.

    It creates small objects, which the plain crop never does; the canvas side is U[1, max_ratio]
    times the image side and the mean colour becomes zero after normalisation.
    """
    if max_ratio <= 1.0 or rng.random() >= p:
        return image, boxes
    height, width = image.shape[:2]
    ratio = rng.uniform(1.0, max_ratio)
    canvas_h, canvas_w = int(height * ratio), int(width * ratio)
    top = int(rng.uniform(0.0, canvas_h - height))
    left = int(rng.uniform(0.0, canvas_w - width))
    colour = np.clip(np.rint(np.asarray(fill, dtype=np.float64)), 0, 255).astype(image.dtype)
    canvas = np.empty((canvas_h, canvas_w, image.shape[2]), dtype=image.dtype)
    canvas[...] = colour
    canvas[top:top + height, left:left + width] = image
    shifted = boxes + np.array([top, left, top, left], dtype=boxes.dtype)
    return canvas, shifted


def horizontal_flip(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                    p: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right with probability p; x maps to width - x, so xmin and xmax swap roles."""
    if rng.random() >= p:
        return image, boxes
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 1] = width - boxes[:, 3]
    flipped[:, 3] = width - boxes[:, 1]
    return np.ascontiguousarray(image[:, ::-1]), flipped


def resize_with_boxes(image: np.ndarray, boxes: np.ndarray, size_hw: Sequence[int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear resize to (H, W) without keeping the aspect ratio (as the zoo's checkpoints expect)."""
    out_h, out_w = int(size_hw[0]), int(size_hw[1])
    height, width = image.shape[:2]
    resized = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    scale = np.array([out_h / height, out_w / width, out_h / height, out_w / width], dtype=np.float64)
    return resized, (boxes * scale).astype(boxes.dtype)


def normalise_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel corners -> [0, 1] corners (clipped), the form the box coder matches against anchors."""
    scale = np.array([height, width, height, width], dtype=np.float32)
    return np.clip(boxes.astype(np.float32) / scale, 0.0, 1.0)
