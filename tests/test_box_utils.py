"""Matching rules, encode/decode round trip and IoU edge cases of src.boxes.coding.

The blockwise, prefiltered encoder is checked against a straightforward dense reference (one
float32 IoU matrix, the model zoo's "every ground truth claims its best anchor" loop) on random
boxes, for the 1917 anchors of SSD300 and the 51150 grid anchors of the 640 px FPN networks.
"""
import numpy as np
import pytest

from src.boxes.anchors import grid_anchors, ssd_default_boxes
from src.boxes.coding import BoxCoder, center_to_corners, corners_to_center, pairwise_iou
from tests.test_anchors import SSD300

FPN640 = dict(img_shape=[640, 640], steps=[8, 16, 32, 64, 128])


def reference_encode(anchors: np.ndarray, gt: np.ndarray, labels: np.ndarray, threshold: float = 0.5,
                     variances: tuple = (0.1, 0.2)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense IoU (M, N) with (M, N, 2) temporaries, then the zoo's sequential matching."""
    anchors = anchors.astype(np.float32)
    loc = np.zeros((len(anchors), 4), dtype=np.float32)
    out_labels = np.zeros(len(anchors), dtype=np.int32)
    if len(gt) == 0:
        return loc, out_labels, np.zeros(1, dtype=np.int32)
    corners = np.concatenate([anchors[:, :2] - anchors[:, 2:] / 2.0, anchors[:, :2] + anchors[:, 2:] / 2.0], 1)
    top_left = np.maximum(gt[:, None, :2], corners[None, :, :2])
    bottom_right = np.minimum(gt[:, None, 2:], corners[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=-1)
    area_gt = np.prod(np.clip(gt[:, 2:] - gt[:, :2], 0.0, None), axis=-1)
    area_anchor = np.prod(np.clip(corners[:, 2:] - corners[:, :2], 0.0, None), axis=-1)
    iou = inter / (area_gt[:, None] + area_anchor[None, :] - inter)
    matched, best = iou.argmax(axis=0), iou.max(axis=0)
    positive = best > threshold
    for g in range(len(gt)):  # in order, so a later claim of the same anchor does not win
        anchor = iou[g].argmax()
        if not any(iou[earlier].argmax() == anchor for earlier in range(g)):
            matched[anchor] = g
        positive[anchor] = True
    target = corners_to_center(gt[matched[positive]])
    prior = anchors[positive]
    loc[positive, :2] = (target[:, :2] - prior[:, :2]) / (prior[:, 2:] * variances[0])
    loc[positive, 2:] = np.log(np.maximum(target[:, 2:] / prior[:, 2:], 1e-6)) / variances[1]
    out_labels[positive] = labels[matched[positive]]
    return loc, out_labels, np.array([positive.sum()], dtype=np.int32)


def random_ground_truth(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes from a few pixels to most of the image, partly clipped at the border, some on top of others."""
    centre = rng.uniform(0.0, 1.0, (count, 2))
    size = rng.uniform(0.1, 0.9, (count, 2)) ** 2
    boxes = np.clip(np.concatenate([centre - size / 2, centre + size / 2], axis=1), 0.0, 1.0).astype(np.float32)
    if count > 2:
        boxes[-1] = boxes[0]  # an exact duplicate: both claim the same best anchor
    return boxes, rng.integers(1, 81, count)


@pytest.mark.parametrize("anchors", [ssd_default_boxes(**SSD300), grid_anchors(**FPN640)], ids=["1917", "51150"])
def test_encoder_equals_the_dense_reference_on_random_boxes(anchors):
    coder = BoxCoder(anchors)
    rng = np.random.default_rng(0)
    for count in [0, 1, 2, 3, 5, 8, 13, 21, 40]:
        for _ in range(3):
            gt, labels = random_ground_truth(rng, count)
            for ours, reference in zip(coder.encode(gt, labels), reference_encode(anchors, gt, labels)):
                assert ours.dtype == reference.dtype and ours.shape == reference.shape
                np.testing.assert_array_equal(ours, reference)


def test_center_corner_round_trip():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 1, (50, 4)).astype(np.float32)
    np.testing.assert_allclose(corners_to_center(center_to_corners(boxes)), boxes, atol=1e-6)


def test_pairwise_iou_values_empty_boxes_and_precision():
    a = np.array([[0, 0, 1, 1], [0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[0, 0, 1, 1], [0.5, 0, 1, 1], [2, 2, 3, 3]], dtype=np.float32)
    iou = pairwise_iou(a, b)
    assert iou.dtype == np.float32
    np.testing.assert_allclose(iou, [[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    assert pairwise_iou(a.astype(np.float64), b.astype(np.float64)).dtype == np.float64
    assert pairwise_iou(a, np.zeros((0, 4), np.float32)).shape == (2, 0)


def corner_anchors(*corners) -> np.ndarray:
    """Anchors given as corners, in the coder's [cy, cx, h, w] form."""
    return corners_to_center(np.array(corners, dtype=np.float32))


def test_match_threshold_is_strict_and_the_best_overlap_wins():
    coder = BoxCoder(corner_anchors([0, 0, 1, 1], [0, 0, 1, 0.5], [0, 0, 1, 0.75], [0, 0.5, 1, 1]))
    # gt0 = anchor 0 exactly; anchor 1 has IoU 0.5 with gt0 (not > 0.5); anchor 2 has 0.75 with gt0
    # but 1/3 with gt1; anchor 3 is gt1 itself
    matched, positive = coder.match(np.array([[0, 0, 1, 1], [0, 0.5, 1, 1]], dtype=np.float32))
    assert positive.tolist() == [True, False, True, True]
    assert matched[0] == 0 and matched[2] == 0 and matched[3] == 1


def test_every_gt_claims_its_best_anchor_even_below_threshold_and_the_earlier_gt_wins_a_shared_one():
    coder = BoxCoder(corner_anchors([0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0.5, 0.5, 1]))
    small = [0.0, 0.0, 0.1, 0.1]  # IoU 0.04 with anchor 0 and 0 with the others
    matched, positive = coder.match(np.array([small, [0, 0, 0.5, 0.45], small], dtype=np.float32))
    # gt0, gt1 (IoU 0.9) and gt2 all claim anchor 0: the first of them gets it
    assert positive.tolist() == [True, False, False] and matched[0] == 0


def test_a_claim_takes_an_anchor_from_a_plain_match():
    coder = BoxCoder(corner_anchors([0, 0, 1, 1], [0, 0, 1, 0.8]))
    # anchor 1: IoU 0.8 with gt0 (whose best is anchor 0) and 0.75 with gt1, whose best it is
    matched, positive = coder.match(np.array([[0, 0, 1, 1], [0, 0, 1, 0.6]], dtype=np.float32))
    assert positive.all() and matched.tolist() == [0, 1]


def test_ties_go_to_the_first_anchor_across_blocks_and_a_gt_touching_nothing_claims_anchor_0():
    """Thousands of identical anchors span several matching blocks: the first must win the claim."""
    coder = BoxCoder(np.array([[0.1, 0.1, 0.1, 0.1]] + [[0.5, 0.5, 0.4, 0.4]] * 9000, dtype=np.float32))
    # gt0 has IoU 0.04 / 0.16 = 0.25 with each copy, below the threshold: only its claim is positive
    matched, positive = coder.match(np.array([[0.4, 0.4, 0.6, 0.6], [0.9, 0.9, 1.0, 1.0]], dtype=np.float32))
    assert np.flatnonzero(positive).tolist() == [0, 1]
    assert matched[0] == 1 and matched[1] == 0  # gt1 overlaps no anchor: argmax over zeros picks anchor 0


def test_encode_decode_round_trip_and_counts():
    coder = BoxCoder(ssd_default_boxes(**SSD300))
    gt = np.array([[0.1, 0.2, 0.5, 0.6], [0.55, 0.05, 0.95, 0.35], [0.3, 0.7, 0.34, 0.74]], dtype=np.float32)
    loc, labels, num_match = coder.encode(gt, np.array([1, 5, 80]))
    assert loc.shape == (1917, 4) and labels.dtype == np.int32 and num_match.dtype == np.int32
    assert num_match[0] == (labels > 0).sum() and set(np.unique(labels)) == {0, 1, 5, 80}
    decoded = coder.decode(loc)
    for index, box in enumerate(gt):
        rows = decoded[labels == [1, 5, 80][index]]
        np.testing.assert_allclose(rows, np.broadcast_to(box, rows.shape), atol=1e-5)
    assert np.all(loc[labels == 0] == 0)


def test_encode_variances():
    anchors = np.array([[0.5, 0.5, 0.2, 0.4]], dtype=np.float32)
    coder = BoxCoder(anchors, prior_scaling=(0.1, 0.2), match_threshold=0.5)
    loc, labels, _ = coder.encode(np.array([[0.42, 0.32, 0.62, 0.72]]), np.array([3]))
    # centre (0.52, 0.52), size (0.2, 0.4): dy = 0.02 / (0.2 * 0.1), dx = 0.02 / (0.4 * 0.1), log 1 = 0
    np.testing.assert_allclose(loc[0], [1.0, 0.5, 0.0, 0.0], atol=1e-5)
    assert labels[0] == 3


def test_empty_ground_truth_is_all_background():
    coder = BoxCoder(ssd_default_boxes(**SSD300))
    loc, labels, num_match = coder.encode(np.zeros((0, 4)), np.zeros((0,), dtype=np.int32))
    assert num_match[0] == 0 and not labels.any() and not loc.any()


def test_anchors_without_size_are_refused():
    with pytest.raises(ValueError, match="positive height and width"):
        BoxCoder(np.array([[0.5, 0.5, 0.2, 0.0]], dtype=np.float32))
