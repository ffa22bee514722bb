"""Default boxes (anchors) for every SSD network, in pure numpy.

Two generators cover the five networks:

* ``ssd_default_boxes`` - the SSD paper's scale ladder used by the 300 px networks (ssd300,
  ssd_mobilenet_v1, ssd_vgg16), including the model zoo's hard-coded 0.1 box on level 0;
* ``grid_anchors`` - the RetinaNet-style octave/aspect grid used by the FPN networks.

Both return float32 arrays of shape (N, 4) with rows ``[cy, cx, h, w]`` normalised by the
image size, ordered level -> row -> column -> anchor, which is the order in which the heads
flatten their outputs. Nothing here depends on MindSpore or on a global config, so the exact
numbers can be tested on their own and computed once per run by whoever needs them.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: The FPN networks' fixed anchor grid parameters (model zoo ``GridAnchorGenerator`` call).
GRID_ANCHOR_SCALE = 4.0
GRID_SCALES_PER_OCTAVE = 2
GRID_ASPECT_RATIOS = (1.0, 2.0, 0.5)


def _level_sizes(level: int, scales: Sequence[float], aspect_ratios: Sequence[float]) -> list[tuple[float, float]]:
    """(w, h) of the boxes at one level, in the order the model zoo's checkpoints were trained with."""
    scale = scales[level]
    if level == 0 and not aspect_ratios:
        # The zoo replaces the usual square/2:1/1:2 triple of level 0 by a fixed small 0.1 box.
        root2 = math.sqrt(2.0)
        return [(0.1, 0.1), (scale * root2, scale / root2), (scale / root2, scale * root2)]
    sizes = [(scale, scale)]
    for ratio in aspect_ratios:
        root = math.sqrt(ratio)
        sizes += [(scale * root, scale / root), (scale / root, scale * root)]
    between = math.sqrt(scale * scales[level + 1])
    sizes.append((between, between))
    return sizes


def ssd_default_boxes(
    img_shape: Sequence[int],
    steps: Sequence[int],
    feature_size: Sequence[int],
    num_default: Sequence[int],
    aspect_ratios: Sequence[Sequence[float]],
    min_scale: float,
    max_scale: float,
) -> np.ndarray:
    """SSD default boxes ``[cy, cx, h, w]`` (N, 4); 1917 for the ssd300 configuration.

    Centres use ``img_shape[0] / step`` as the cell count even where the feature map has a
    different size (e.g. 18.75 for 19 cells); the model zoo's checkpoints were trained with
    exactly these stretched grids, so we keep them. Boxes are not clipped to the image.
    """
    num_levels = len(num_default)
    if not (len(steps) == len(feature_size) == len(aspect_ratios) == num_levels):
        raise ValueError(
            f"config lists disagree in length: steps {len(steps)}, feature_size {len(feature_size)}, "
            f"aspect_ratios {len(aspect_ratios)}, num_default {num_levels}; give one entry per feature level"
        )
    scale_step = (max_scale - min_scale) / (num_levels - 1) if num_levels > 1 else 0.0
    scales = [min_scale + i * scale_step for i in range(num_levels)] + [1.0]
    levels = []
    for level in range(num_levels):
        sizes = _level_sizes(level, scales, aspect_ratios[level])
        if len(sizes) != num_default[level]:
            raise ValueError(
                f"num_default[{level}] = {num_default[level]} but aspect_ratios[{level}] = "
                f"{list(aspect_ratios[level])} gives {len(sizes)} boxes per location; make them agree"
            )
        cells = img_shape[0] / steps[level]
        centres = (np.arange(feature_size[level], dtype=np.float64) + 0.5) / cells
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        wh = np.asarray(sizes, dtype=np.float64)
        grid = np.empty((feature_size[level], feature_size[level], len(sizes), 4))
        grid[..., 0] = cy[..., None]
        grid[..., 1] = cx[..., None]
        grid[..., 2] = wh[:, 1]
        grid[..., 3] = wh[:, 0]
        levels.append(grid.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def grid_anchors(
    img_shape: Sequence[int],
    steps: Sequence[int],
    scale: float = GRID_ANCHOR_SCALE,
    scales_per_octave: int = GRID_SCALES_PER_OCTAVE,
    aspect_ratios: Sequence[float] = GRID_ASPECT_RATIOS,
) -> np.ndarray:
    """FPN grid anchors ``[cy, cx, h, w]`` (N, 4); 51150 for 640 px and strides 8..128.

    Per location the order is aspect-major (ar 1: octave scales 1, sqrt 2; then ar 2; then ar
    0.5), the base size is ``scale * stride`` pixels and ``ar = w / h``.
    """
    height, width = img_shape
    # float32 throughout, in the zoo's order of operations: the anchors then equal the ones the
    # zoo's FPN checkpoints were trained and evaluated with to the last bit.
    octave = (2.0 ** (np.arange(scales_per_octave) / scales_per_octave)).astype(np.float32)
    ratios = np.sqrt(np.asarray(aspect_ratios, dtype=np.float32))
    image_scale = np.asarray([height, width, height, width], dtype=np.float32)
    levels = []
    for step in steps:
        if height % step or width % step:
            raise ValueError(f"img_shape {list(img_shape)} is not a multiple of the anchor stride {step}; "
                             "choose an img_shape divisible by every entry of steps")
        base = np.float32(scale * step)
        heights = (octave[None, :] / ratios[:, None] * base).ravel()
        widths = (octave[None, :] * ratios[:, None] * base).ravel()
        cy, cx = np.meshgrid(np.arange(height // step, dtype=np.float32) * step + step / 2.0,
                             np.arange(width // step, dtype=np.float32) * step + step / 2.0, indexing="ij")
        grid = np.empty(cy.shape + (len(heights), 4), dtype=np.float32)
        grid[..., 0] = cy[..., None]
        grid[..., 1] = cx[..., None]
        grid[..., 2] = heights
        grid[..., 3] = widths
        levels.append(grid.reshape(-1, 4) / image_scale)
    return np.concatenate(levels).astype(np.float32)


def default_boxes_from_config(config: Any) -> np.ndarray:
    """The anchors a configuration trains and evaluates with (grid anchors iff use_anchor_generator)."""
    if getattr(config, "use_anchor_generator", False):
        per_location = len(GRID_ASPECT_RATIOS) * GRID_SCALES_PER_OCTAVE
        if list(config.num_default) != [per_location] * len(config.steps):
            raise ValueError(f"num_default {list(config.num_default)} does not match the grid anchors "
                             f"(use_anchor_generator): {per_location} per location on each of the "
                             f"{len(config.steps)} levels of steps; set num_default to {[per_location] * len(config.steps)}")
        return grid_anchors(config.img_shape, config.steps)
    return ssd_default_boxes(config.img_shape, config.steps, config.feature_size, config.num_default,
                             config.aspect_ratios, config.min_scale, config.max_scale)


def count_default_boxes(config: Any) -> int:
    """Number of anchors, i.e. the value a ``num_ssd_boxes: -1`` resolves to."""
    return int(default_boxes_from_config(config).shape[0])
