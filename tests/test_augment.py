"""Invariants of the box-aware augmentation, checked against drawn pixels over many random seeds.

The test images carry their own coordinates (channel 0 = row, channel 1 = column, so any crop
reveals its offset) and the objects are painted 255 in channel 2, so the box a transform returns
can be compared with where the object's pixels actually went.
"""
import numpy as np
import pytest

from src.augment import (drop_degenerate, horizontal_flip, normalise_boxes, random_expand,
                         random_iou_crop, resize_with_boxes)
from src.box_utils import pairwise_iou

SEEDS = range(300)
FILL = (124, 116, 104)


def coordinate_image(height: int, width: int, boxes: np.ndarray) -> np.ndarray:
    """Rows/columns encoded in channels 0/1 (sizes < 256); objects painted 255 in channel 2."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.arange(height)[:, None]
    image[..., 1] = np.arange(width)[None, :]
    for ymin, xmin, ymax, xmax in boxes.astype(int):
        image[ymin:ymax, xmin:xmax, 2] = 255
    return image


def painted_box(image: np.ndarray) -> np.ndarray:
    """Pixel extent [ymin, xmin, ymax, xmax] of the painted object (continuous coordinates)."""
    rows, cols = np.nonzero(image[..., 2] == 255)
    return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], dtype=np.float32)


def random_scene(rng: np.random.Generator, height: int = 120, width: int = 160, count: int = 4):
    """A few integer boxes of random size anywhere in the image, with distinct labels."""
    y0 = rng.integers(0, height - 10, count)
    x0 = rng.integers(0, width - 10, count)
    y1 = np.minimum(y0 + rng.integers(5, height, count), height)
    x1 = np.minimum(x0 + rng.integers(5, width, count), width)
    boxes = np.stack([y0, x0, y1, x1], axis=1).astype(np.float32)
    return boxes, np.arange(1, count + 1, dtype=np.int32)


@pytest.mark.parametrize("seed", SEEDS)
def test_crop_keeps_centre_inside_boxes_clipped_and_honours_min_iou(seed):
    rng = np.random.default_rng(seed)
    boxes, labels = random_scene(rng, count=1 + seed // 6 % 3)
    image = coordinate_image(120, 160, np.zeros((0, 4)))
    min_iou = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9][seed % 6]
    out, kept, kept_labels = random_iou_crop(image, boxes, labels, rng, min_ious=(min_iou,))
    height, width = out.shape[:2]
    assert len(kept) == len(kept_labels) >= 1
    if out.shape == image.shape:  # every trial rejected: the input comes back untouched
        np.testing.assert_array_equal(kept, boxes)
        return
    top, left = int(out[0, 0, 0]), int(out[0, 0, 1])
    patch = np.array([[top, left, top + height, left + width]], dtype=np.float64)
    np.testing.assert_array_equal(out, image[top:top + height, left:left + width])
    assert 0.3 * 120 - 1 <= height and 0.3 * 160 - 1 <= width and 0.5 <= height / width <= 2.0
    iou = pairwise_iou(patch, boxes.astype(np.float64))[0]
    assert iou.max() >= min_iou
    cy, cx = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (cy > top) & (cy < top + height) & (cx > left) & (cx < left + width)
    np.testing.assert_array_equal(kept_labels, labels[inside])
    expected = boxes[inside].copy()
    expected[:, 0::2] = np.clip(expected[:, 0::2], top, top + height) - top
    expected[:, 1::2] = np.clip(expected[:, 1::2], left, left + width) - left
    np.testing.assert_allclose(kept, expected)
    assert (kept >= 0).all() and (kept[:, 0::2] <= height).all() and (kept[:, 1::2] <= width).all()


@pytest.mark.parametrize("min_iou", [0.5, 0.7, 0.9])
def test_crop_high_min_iou_patches_hug_a_large_object(min_iou):
    accepted = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        height, width = rng.integers(72, 121), rng.integers(96, 161)
        top, left = rng.integers(0, 121 - height), rng.integers(0, 161 - width)
        box = np.array([[top, left, top + height, left + width]], dtype=np.float32)
        out, kept, _ = random_iou_crop(coordinate_image(120, 160, box), box, np.array([1]), rng, min_ious=(min_iou,))
        if out.shape[:2] == (120, 160):
            continue
        accepted += 1
        top, left = int(out[0, 0, 0]), int(out[0, 0, 1])
        patch = np.array([[top, left, top + out.shape[0], left + out.shape[1]]], dtype=np.float64)
        assert pairwise_iou(patch, box.astype(np.float64))[0, 0] >= min_iou
        np.testing.assert_array_equal(kept[0], painted_box(out))
    assert accepted >= 5


def test_crop_options_include_whole_image_and_real_crops():
    shapes = set()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        boxes, labels = random_scene(rng)
        shapes.add(random_iou_crop(coordinate_image(120, 160, boxes), boxes, labels, rng)[0].shape)
    assert (120, 160, 3) in shapes and len(shapes) > 10


def test_crop_rejects_patches_no_box_overlaps_enough():
    """A patch is at least 0.3 x 0.3 of the image (36 x 48 px here), so a 20 x 20 px box overlaps
    any patch by IoU <= 400 / 1728 < 0.9: a min-IoU 0.9 draw must always fall back."""
    boxes = np.array([[10, 10, 30, 30], [80, 120, 100, 140]], dtype=np.float32)
    labels = np.array([1, 2], dtype=np.int32)
    image = coordinate_image(120, 160, boxes)
    for seed in range(50):
        out, kept, _ = random_iou_crop(image, boxes, labels, np.random.default_rng(seed), min_ious=(0.9,))
        assert out is image and kept is boxes


@pytest.mark.parametrize("seed", range(100))
def test_crop_box_matches_painted_pixels(seed):
    rng = np.random.default_rng(seed)
    boxes, labels = random_scene(rng, count=1)
    out, kept, _ = random_iou_crop(coordinate_image(120, 160, boxes), boxes, labels, rng)
    np.testing.assert_array_equal(kept[0], painted_box(out))


@pytest.mark.parametrize("seed", range(100))
def test_expand_keeps_object_pixels_and_shifts_boxes(seed):
    rng = np.random.default_rng(seed)
    boxes, _ = random_scene(rng, count=2)
    image = coordinate_image(120, 160, boxes[:1])
    out, shifted = random_expand(image, boxes, rng, max_ratio=4.0, fill=FILL)
    if out is image:
        np.testing.assert_array_equal(shifted, boxes)
        return
    assert 120 <= out.shape[0] <= 480 and 160 <= out.shape[1] <= 640 and out.dtype == np.uint8
    top, left = (shifted[0, :2] - boxes[0, :2]).astype(int)
    np.testing.assert_array_equal(shifted - boxes, np.tile([top, left], 2)[None].repeat(len(boxes), 0))
    np.testing.assert_array_equal(out[top:top + 120, left:left + 160], image)
    np.testing.assert_array_equal(shifted[0], painted_box(out))
    background = np.ones(out.shape[:2], dtype=bool)
    background[top:top + 120, left:left + 160] = False
    np.testing.assert_array_equal(out[background], np.tile(FILL, (background.sum(), 1)))


def test_expand_happens_about_half_the_time_and_not_at_ratio_one():
    image = coordinate_image(30, 40, np.zeros((0, 4)))
    boxes = np.array([[5, 5, 20, 20]], dtype=np.float32)
    expanded = sum(random_expand(image, boxes, np.random.default_rng(s), 4.0, FILL)[0] is not image
                   for s in range(400))
    assert 150 < expanded < 250
    assert all(random_expand(image, boxes, np.random.default_rng(s), 1.0, FILL)[0] is image for s in range(20))


@pytest.mark.parametrize("seed", range(40))
def test_flip_maps_x_and_matches_painted_pixels(seed):
    rng = np.random.default_rng(seed)
    boxes, _ = random_scene(rng, count=1)
    image = coordinate_image(120, 160, boxes)
    out, flipped = horizontal_flip(image, boxes, rng)
    if out is image:
        np.testing.assert_array_equal(flipped, boxes)
        return
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_array_equal(flipped[0], [boxes[0, 0], 160 - boxes[0, 3], boxes[0, 2], 160 - boxes[0, 1]])
    np.testing.assert_array_equal(flipped[0], painted_box(out))


def test_flip_probability_is_about_half():
    image = coordinate_image(8, 8, np.zeros((0, 4)))
    boxes = np.zeros((0, 4), dtype=np.float32)
    flips = sum(horizontal_flip(image, boxes, np.random.default_rng(s))[0] is not image for s in range(400))
    assert 150 < flips < 250


@pytest.mark.parametrize("seed", range(20))
def test_resize_scales_boxes_to_painted_pixels(seed):
    rng = np.random.default_rng(seed)
    boxes, _ = random_scene(rng, count=1)
    image = coordinate_image(120, 160, boxes)
    out, scaled = resize_with_boxes(image, boxes, (300, 300))
    assert out.shape == (300, 300, 3)
    rows, cols = np.nonzero(out[..., 2] >= 128)  # bilinear edges: half intensity marks the edge
    drawn = np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
    np.testing.assert_allclose(scaled[0], drawn, atol=2.0)


def test_normalise_and_drop_degenerate():
    boxes = np.array([[30, 40, 60, 160], [10, 10, 10, 20], [-5, 0, 130, 20]], dtype=np.float32)
    np.testing.assert_allclose(normalise_boxes(boxes, 120, 160),
                               [[0.25, 0.25, 0.5, 1.0], [10 / 120, 1 / 16, 10 / 120, 0.125], [0, 0, 1, 0.125]])
    kept, labels = drop_degenerate(boxes, np.array([1, 2, 3]))
    np.testing.assert_array_equal(labels, [1, 3])
    assert kept.shape == (2, 4)
