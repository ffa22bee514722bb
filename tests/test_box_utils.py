"""Matching rules, encode/decode round trip and IoU edge cases of src.box_utils."""
import numpy as np

from src.anchor_generator import ssd_default_boxes
from src.box_utils import BoxCoder, center_to_corners, corners_to_center, match_anchors, pairwise_iou
from tests.test_anchors import SSD300


def test_center_corner_round_trip():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 1, (50, 4)).astype(np.float32)
    np.testing.assert_allclose(corners_to_center(center_to_corners(boxes)), boxes, atol=1e-6)


def test_pairwise_iou_values_and_empty_boxes():
    a = np.array([[0, 0, 1, 1], [0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[0, 0, 1, 1], [0.5, 0, 1, 1], [2, 2, 3, 3]], dtype=np.float32)
    iou = pairwise_iou(a, b)
    np.testing.assert_allclose(iou, [[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])


def test_match_threshold_is_strict_and_best_gt_wins():
    iou = np.array([[0.5, 0.7, 0.2, 0.1],
                    [0.4, 0.8, 0.6, 0.05]])
    matched, positive = match_anchors(iou, 0.5)
    # anchor 0: best IoU 0.5 is not > 0.5 and it is nobody's best -> negative
    assert not positive[0]
    # anchor 1 is the best anchor of both ground truths: forced matches tie, the earlier gt wins
    assert positive[1] and matched[1] == 0
    # anchor 2 passes the threshold only for gt1; anchor 3 overlaps nothing enough
    assert positive[2] and matched[2] == 1 and not positive[3]


def test_forced_match_gives_every_gt_an_anchor():
    iou = np.array([[0.1, 0.3, 0.2],
                    [0.05, 0.9, 0.1]])
    matched, positive = match_anchors(iou, 0.5)
    # gt0 overlaps nothing above threshold, but claims anchor 1... which gt1 claims as well:
    # both forced to 2.0 -> earlier gt wins the tie
    assert positive[1] and matched[1] == 0
    iou = np.array([[0.1, 0.3, 0.2], [0.05, 0.2, 0.9]])
    matched, positive = match_anchors(iou, 0.5)
    assert positive.tolist() == [False, True, True] and matched[1] == 0 and matched[2] == 1


def test_forced_match_steals_a_plain_match_of_an_earlier_gt():
    iou = np.array([[0.9, 0.7],
                    [0.1, 0.6]])
    matched, positive = match_anchors(iou, 0.5)
    # anchor 1 passes the threshold for gt0 (0.7 > 0.6) but is gt1's best anchor, so gt1 takes it
    assert matched.tolist() == [0, 1] and positive.all()


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
