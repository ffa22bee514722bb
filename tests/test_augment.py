"""Invariants of the box-aware augmentation, checked against drawn pixels over many random seeds.

The test images carry their own coordinates (channel 0 = row, channel 1 = column, so any crop
reveals its offset) and the objects are painted 255 in channel 2, so the box a transform returns
can be compared with where the object's pixels actually went. The one-pass renderer is compared
with the straightforward chain it replaces: build the zoom-out canvas, cut the patch, resize, flip.
"""
import cv2
import numpy as np
import pytest

from src.boxes.coding import pairwise_iou
from src.data.augment import (drop_degenerate, flip_boxes, normalise_boxes, random_colour_jitter, random_geometry,
                              render_window, sample_expand, sample_iou_crop)

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


def painted_box(image: np.ndarray, level: int = 255) -> np.ndarray:
    """Pixel extent [ymin, xmin, ymax, xmax] of the painted object (continuous coordinates)."""
    rows, cols = np.nonzero(image[..., 2] >= level)
    return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], dtype=np.float32)


def random_scene(rng: np.random.Generator, height: int = 120, width: int = 160, count: int = 4):
    """A few integer boxes of random size anywhere in the image, with distinct labels."""
    y0 = rng.integers(0, height - 10, count)
    x0 = rng.integers(0, width - 10, count)
    y1 = np.minimum(y0 + rng.integers(5, height, count), height)
    x1 = np.minimum(x0 + rng.integers(5, width, count), width)
    boxes = np.stack([y0, x0, y1, x1], axis=1).astype(np.float32)
    return boxes, np.arange(1, count + 1, dtype=np.int32)


def cut(image: np.ndarray, rect: np.ndarray) -> np.ndarray:
    top, left, bottom, right = (int(v) for v in rect)
    return image[top:bottom, left:right]


def reference_render(image: np.ndarray, canvas_placement: tuple, rect: np.ndarray, size_hw: tuple,
                     flip: bool) -> np.ndarray:
    """The chain render_window replaces: a real canvas, the patch cut from it, cv2.resize, a flip."""
    top, left, canvas_h, canvas_w = canvas_placement
    canvas = np.empty((canvas_h, canvas_w, 3), dtype=np.uint8)
    canvas[...] = FILL
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    resized = cv2.resize(cut(canvas, rect), size_hw[::-1], interpolation=cv2.INTER_LINEAR)
    return resized[:, ::-1] if flip else resized


@pytest.mark.parametrize("seed", SEEDS)
def test_crop_keeps_centre_inside_boxes_clipped_and_honours_min_iou(seed):
    rng = np.random.default_rng(seed)
    boxes, labels = random_scene(rng, count=1 + seed // 6 % 3)
    min_iou = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9][seed % 6]
    rect, kept, kept_labels = sample_iou_crop(120, 160, boxes, labels, rng, min_ious=(min_iou,))
    assert len(kept) == len(kept_labels) >= 1
    if rect.tolist() == [0, 0, 120, 160]:  # every trial rejected: the boxes come back untouched
        assert kept is boxes
        return
    top, left, bottom, right = (int(v) for v in rect)
    height, width = bottom - top, right - left
    assert 0 <= top < bottom <= 120 and 0 <= left < right <= 160
    assert 0.3 * 120 - 1 <= height and 0.3 * 160 - 1 <= width and 0.5 <= height / width <= 2.0
    iou = pairwise_iou(rect[None].astype(np.float64), boxes.astype(np.float64))[0]
    assert iou.max() >= min_iou
    cy, cx = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (cy > top) & (cy < bottom) & (cx > left) & (cx < right)
    np.testing.assert_array_equal(kept_labels, labels[inside])
    expected = boxes[inside].copy()
    expected[:, 0::2] = np.clip(expected[:, 0::2], top, bottom) - top
    expected[:, 1::2] = np.clip(expected[:, 1::2], left, right) - left
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
        rect, kept, _ = sample_iou_crop(120, 160, box, np.array([1]), rng, min_ious=(min_iou,))
        if rect.tolist() == [0, 0, 120, 160]:
            continue
        accepted += 1
        assert pairwise_iou(rect[None].astype(np.float64), box.astype(np.float64))[0, 0] >= min_iou
        np.testing.assert_array_equal(kept[0], painted_box(cut(coordinate_image(120, 160, box), rect)))
    assert accepted >= 5


def test_crop_options_include_whole_image_and_real_crops():
    sizes = set()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        boxes, labels = random_scene(rng)
        rect = sample_iou_crop(120, 160, boxes, labels, rng)[0]
        sizes.add((int(rect[2] - rect[0]), int(rect[3] - rect[1])))
    assert (120, 160) in sizes and len(sizes) > 10


def test_crop_rejects_patches_no_box_overlaps_enough():
    """A patch is at least 0.3 x 0.3 of the image (36 x 48 px here), so a 20 x 20 px box overlaps
    any patch by IoU <= 400 / 1728 < 0.9: a min-IoU 0.9 draw must always fall back."""
    boxes = np.array([[10, 10, 30, 30], [80, 120, 100, 140]], dtype=np.float32)
    labels = np.array([1, 2], dtype=np.int32)
    for seed in range(50):
        rect, kept, _ = sample_iou_crop(120, 160, boxes, labels, np.random.default_rng(seed), min_ious=(0.9,))
        assert rect.tolist() == [0, 0, 120, 160] and kept is boxes


@pytest.mark.parametrize("seed", range(100))
def test_crop_box_matches_painted_pixels(seed):
    rng = np.random.default_rng(seed)
    boxes, labels = random_scene(rng, count=1)
    rect, kept, _ = sample_iou_crop(120, 160, boxes, labels, rng)
    np.testing.assert_array_equal(kept[0], painted_box(cut(coordinate_image(120, 160, boxes), rect)))


@pytest.mark.parametrize("seed", range(100))
def test_expand_places_the_image_inside_a_canvas_up_to_max_ratio(seed):
    top, left, canvas_h, canvas_w = sample_expand(120, 160, np.random.default_rng(seed), max_ratio=4.0)
    assert 120 <= canvas_h <= 480 and 160 <= canvas_w <= 640
    assert 0 <= top <= canvas_h - 120 and 0 <= left <= canvas_w - 160
    assert abs(canvas_h / 120 - canvas_w / 160) < 0.02  # one ratio for both sides


def test_expand_happens_about_half_the_time_and_not_at_ratio_one():
    placements = [sample_expand(30, 40, np.random.default_rng(s), 4.0) for s in range(400)]
    expanded = sum(placement != (0, 0, 30, 40) for placement in placements)
    assert 150 < expanded < 250
    assert all(sample_expand(30, 40, np.random.default_rng(s), 1.0) == (0, 0, 30, 40) for s in range(20))


def test_flip_boxes_maps_x_to_width_minus_x():
    boxes = np.array([[10, 20, 50, 70], [0, 0, 5, 160]], dtype=np.float32)
    np.testing.assert_array_equal(flip_boxes(boxes, 160), [[10, 90, 50, 140], [0, 0, 5, 160]])


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("flip", [False, True])
def test_render_inside_the_image_is_exactly_crop_resize_flip(seed, flip):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    rect, _, _ = sample_iou_crop(120, 160, *random_scene(rng), rng, min_ious=(0.0,))
    rendered = render_window(image, rect, (300, 280), flip, FILL)
    assert rendered.shape == (300, 280, 3) and rendered.dtype == np.uint8
    np.testing.assert_array_equal(rendered, reference_render(image, (0, 0, 120, 160), rect, (300, 280), flip))


@pytest.mark.parametrize("seed", range(60))
def test_geometry_matches_the_canvas_crop_resize_flip_chain_and_the_painted_pixels(seed):
    """The one-pass render equals the canvas chain up to OpenCV's 1/32 px warp grid (1 grey level),
    and the returned boxes frame the object's pixels in the rendered image."""
    rng = np.random.default_rng(seed)
    boxes, labels = random_scene(rng, count=1)
    image = coordinate_image(120, 160, boxes)
    out, out_boxes, out_labels = random_geometry(image, boxes, labels, np.random.default_rng(seed), (300, 300),
                                                 4.0, FILL)
    replay = np.random.default_rng(seed)  # the same draws, in random_geometry's order
    placement = sample_expand(120, 160, replay, 4.0)
    top, left = placement[:2]
    rect, _, _ = sample_iou_crop(placement[2], placement[3], boxes + np.array([top, left, top, left], np.float32),
                                 labels, replay)
    flip = bool(replay.random() < 0.5)
    reference = reference_render(image, placement, rect, (300, 300), flip)
    assert np.abs(out.astype(int) - reference).max() <= 1
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_allclose(out_boxes[0], painted_box(out, level=128), atol=2.0)


def test_geometry_without_expand_never_leaves_the_image():
    for seed in range(100):
        rng = np.random.default_rng(seed)
        boxes, labels = random_scene(rng, count=2)
        image = coordinate_image(120, 160, boxes)
        out, _, _ = random_geometry(image, boxes, labels, rng, (90, 120), 1.0, FILL)
        assert out.shape == (90, 120, 3) and not (out == np.array(FILL, np.uint8)).all(axis=-1).any()


def test_colour_jitter_is_reproducible_and_off_at_zero_strength():
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    assert random_colour_jitter(image, np.random.default_rng(1), 0, 0, 0, 0) is image
    first = random_colour_jitter(image, np.random.default_rng(1), 0.4, 0.4, 0.4, 0.05)
    np.testing.assert_array_equal(first, random_colour_jitter(image, np.random.default_rng(1), 0.4, 0.4, 0.4, 0.05))
    assert first.shape == image.shape and first.dtype == np.uint8
    assert not np.array_equal(first, random_colour_jitter(image, np.random.default_rng(2), 0.4, 0.4, 0.4, 0.05))


def test_colour_jitter_steps_do_what_their_names_say():
    image = np.random.default_rng(0).integers(40, 200, (64, 80, 3), dtype=np.uint8)
    grey = np.full((64, 80, 3), 128, dtype=np.uint8)
    for seed in range(20):
        factor = np.random.default_rng(seed).uniform(0.6, 1.4)  # the first draw of each single-step jitter
        brighter = random_colour_jitter(image, np.random.default_rng(seed), 0.4, 0, 0, 0)
        np.testing.assert_allclose(brighter, np.clip(np.rint(image * factor), 0, 255), atol=1)
        contrasted = random_colour_jitter(image, np.random.default_rng(seed), 0, 0.4, 0, 0)
        mean_grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean()
        np.testing.assert_allclose(contrasted, np.clip(image * factor + mean_grey * (1 - factor), 0, 255), atol=1)
        saturated = random_colour_jitter(image, np.random.default_rng(seed), 0, 0, 0.4, 0)
        grey_of_image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None].astype(float)
        np.testing.assert_allclose(saturated, np.clip(image * factor + grey_of_image * (1 - factor), 0, 255), atol=1)
        # hue turns colours around the circle but leaves grey (no hue) alone
        np.testing.assert_array_equal(random_colour_jitter(grey, np.random.default_rng(seed), 0, 0, 0, 0.05), grey)
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 200
    shifted = random_colour_jitter(red, np.random.default_rng(0), 0, 0, 0, 0.1)
    hue = cv2.cvtColor(shifted, cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(int)
    expected = round(np.random.default_rng(0).uniform(-0.1, 0.1) * 256) % 256
    assert (np.minimum(abs(hue - expected), 256 - abs(hue - expected)) <= 2).all() and expected != 0


def test_normalise_and_drop_degenerate():
    boxes = np.array([[30, 40, 60, 160], [10, 10, 10, 20], [-5, 0, 130, 20]], dtype=np.float32)
    np.testing.assert_allclose(normalise_boxes(boxes, 120, 160),
                               [[0.25, 0.25, 0.5, 1.0], [10 / 120, 1 / 16, 10 / 120, 0.125], [0, 0, 1, 0.125]])
    kept, labels = drop_degenerate(boxes, np.array([1, 2, 3]))
    np.testing.assert_array_equal(labels, [1, 3])
    assert kept.shape == (2, 4)
