"""Training augmentation for SSD: zoom-out, IoU-constrained crop, resize, flip, colour jitter (numpy/cv2).

The geometric choices are made on rectangles and boxes; the pixels are then rendered once, at the
network's input size (`render_window`), so no zoom-out canvas or full-size crop is ever built.
Conventions: images are HWC uint8 RGB; boxes are float pixel corners [ymin, xmin, ymax, xmax] in
continuous coordinates (pixel row r covers [r, r+1)), so a box's edges are image-size invariant
under crop offsets and flips. Every random draw comes from the caller's `np.random.Generator`,
which makes a whole augmentation chain reproducible from one seed.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from src.boxes.coding import pairwise_iou

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


def sample_iou_crop(height: int, width: int, boxes: np.ndarray, labels: np.ndarray,
                    rng: np.random.Generator, max_trials: int = 50,
                    min_ious: Sequence[float | None] = CROP_MIN_IOUS
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SSD "sample a patch" crop of a (height, width) image: (rect, kept boxes, kept labels).

    It teaches the detector partial objects and larger object scales. One option is drawn from
    `min_ious` (default: whole image, any patch, min IoU 0.1, 0.3, 0.5, 0.7, 0.9). A patch of
    U[0.3, 1] of each side with height/width in [0.5, 2] is accepted when some box overlaps it
    with IoU >= the option (the rule of the paper's Caffe implementation and of torchvision;
    requiring it of EVERY touched box rejects most crops on crowded COCO images), and at least one
    box has its centre inside. Boxes with the centre inside are kept, clipped to the patch and
    shifted to its origin; the others are dropped. `rect` is the int patch [top, left, bottom,
    right]; the whole image, with the boxes returned as given, when the option is "whole image"
    or all `max_trials` patches are rejected. Only the rectangle is chosen here: the pixels are
    cut later, together with the resize (`render_window`).
    """
    whole = np.array([0, 0, height, width], dtype=np.int64)
    min_iou = min_ious[int(rng.integers(len(min_ious)))]
    if min_iou is None or len(boxes) == 0:
        return whole, boxes, labels
    rects = _sample_patches(height, width, max_trials, rng)
    iou = pairwise_iou(rects.astype(np.float64), boxes.astype(np.float64))
    inside = _centres_inside(boxes, rects)
    valid = (rects[:, 2] > rects[:, 0]) & (iou.max(axis=1) >= min_iou) & inside.any(axis=1)
    if not valid.any():
        return whole, boxes, labels
    trial = int(np.argmax(valid))
    rect = rects[trial]
    top, left, bottom, right = (int(v) for v in rect)
    keep = inside[trial]
    kept = boxes[keep].copy()
    kept[:, 0::2] = np.clip(kept[:, 0::2], top, bottom) - top
    kept[:, 1::2] = np.clip(kept[:, 1::2], left, right) - left
    kept, kept_labels = drop_degenerate(kept, labels[keep])
    return rect, kept, kept_labels


def sample_expand(height: int, width: int, rng: np.random.Generator, max_ratio: float, p: float = 0.5
                  ) -> tuple[int, int, int, int]:
    """SSD300* "zoom out": (top, left, canvas_h, canvas_w) placing the image on a larger canvas.

    With probability p the canvas side is U[1, max_ratio] times the image side; it creates small
    objects, which the plain crop never does. Otherwise the canvas is the image itself (0, 0, h, w).
    The canvas is never allocated: `render_window` fills whatever lies outside the image.
    """
    if max_ratio <= 1.0 or rng.random() >= p:
        return 0, 0, height, width
    ratio = rng.uniform(1.0, max_ratio)
    canvas_h, canvas_w = int(height * ratio), int(width * ratio)
    top = int(rng.uniform(0.0, canvas_h - height))
    left = int(rng.uniform(0.0, canvas_w - width))
    return top, left, canvas_h, canvas_w


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """Left-right mirror of pixel boxes in an image `width` wide: x -> width - x, so xmin and xmax swap."""
    flipped = boxes.copy()
    flipped[:, 1] = width - boxes[:, 3]
    flipped[:, 3] = width - boxes[:, 1]
    return flipped


def render_window(image: np.ndarray, window: Sequence[int], size_hw: Sequence[int], flip: bool,
                  fill: Sequence[float]) -> np.ndarray:
    """Pixels of `window` [top, left, bottom, right] of `image`, resized to (H, W), optionally mirrored.

    The window may reach outside the image (zoom-out); that part is filled with `fill`. The result
    equals cropping the filled canvas, a bilinear resize (cv2.resize's pixel-centre mapping, aspect
    ratio not kept, as the zoo's checkpoints expect) and a flip, without building the canvas: a
    window inside the image is a view resized by cv2.resize, one that leaves it goes through a
    single cv2.warpAffine with a constant border.
    """
    out_h, out_w = int(size_hw[0]), int(size_hw[1])
    top, left, bottom, right = (int(v) for v in window)
    height, width = image.shape[:2]
    if top >= 0 and left >= 0 and bottom <= height and right <= width:
        resized = cv2.resize(image[top:bottom, left:right], (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        return cv2.flip(resized, 1) if flip else resized
    scale_y, scale_x = (bottom - top) / out_h, (right - left) / out_w
    # Output pixel centre (c + 0.5) maps to window position (c + 0.5) * scale; -0.5 turns it into a pixel index.
    if flip:
        x_row = [-scale_x, 0.0, right - 0.5 * scale_x - 0.5]
    else:
        x_row = [scale_x, 0.0, left + 0.5 * scale_x - 0.5]
    output_to_source = np.array([x_row, [0.0, scale_y, top + 0.5 * scale_y - 0.5]], dtype=np.float64)
    colour = tuple(float(v) for v in np.clip(np.rint(np.asarray(fill, dtype=np.float64)), 0, 255))
    return cv2.warpAffine(image, output_to_source, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=colour)


def random_geometry(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                    size_hw: Sequence[int], expand_max_ratio: float, fill: Sequence[float]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zoom-out, IoU crop, resize to (H, W) and flip in one pass over the pixels: (image, boxes, labels).

    The random choices are made on rectangles first; the pixels are then rendered once at the
    output size, so the cost does not grow with the zoom-out canvas (up to 16x the image area).
    Returned boxes are output pixels; `expand_max_ratio` <= 1 disables the zoom-out.
    """
    height, width = image.shape[:2]
    top, left, canvas_h, canvas_w = sample_expand(height, width, rng, expand_max_ratio)
    shift = np.array([top, left, top, left], dtype=boxes.dtype)
    rect, boxes, labels = sample_iou_crop(canvas_h, canvas_w, boxes + shift, labels, rng)
    flip = bool(rng.random() < 0.5)
    out_h, out_w = int(size_hw[0]), int(size_hw[1])
    patch_h, patch_w = int(rect[2] - rect[0]), int(rect[3] - rect[1])
    scale = np.array([out_h / patch_h, out_w / patch_w, out_h / patch_h, out_w / patch_w], dtype=np.float64)
    boxes = (boxes * scale).astype(boxes.dtype)
    if flip:
        boxes = flip_boxes(boxes, out_w)
    rendered = render_window(image, rect - np.array([top, left, top, left]), (out_h, out_w), flip, fill)
    return rendered, boxes, labels


def random_colour_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                         saturation: float, hue: float) -> np.ndarray:
    """Photometric jitter of an RGB uint8 image, with the factor ranges of MindSpore's RandomColorAdjust.

    Brightness, contrast and saturation factors are drawn from [max(0, 1 - s), 1 + s] and hue from
    [-hue, hue] of the colour circle; a strength of 0 skips that step (and its draw). The factors
    come from the row's own generator rather than from a C++ random op, whose draws depend on
    which worker gets the row: so a seed gives the same images for any worker count. Every step is
    one or two saturating uint8 OpenCV calls, as cheap as the C++ op.
    """
    if brightness:
        image = cv2.convertScaleAbs(image, alpha=rng.uniform(max(0.0, 1.0 - brightness), 1.0 + brightness))
    if contrast:
        factor = rng.uniform(max(0.0, 1.0 - contrast), 1.0 + contrast)
        mean_grey = cv2.mean(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))[0]
        image = cv2.addWeighted(image, factor, image, 0.0, mean_grey * (1.0 - factor))
    if saturation:
        factor = rng.uniform(max(0.0, 1.0 - saturation), 1.0 + saturation)
        grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        image = cv2.addWeighted(image, factor, grey, 1.0 - factor, 0.0)
    if hue:
        shift = int(round(rng.uniform(-hue, hue) * 256))  # HSV_FULL stores the hue circle in 0..255
        table = np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 3))
        table[:, 0] = (np.arange(256) + shift) % 256
        hsv = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL), table[None])
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    return image


def normalise_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel corners -> [0, 1] corners (clipped), the form the box coder matches against anchors."""
    scale = np.array([height, width, height, width], dtype=np.float32)
    return np.clip(boxes.astype(np.float32) / scale, 0.0, 1.0)
