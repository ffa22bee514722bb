"""Detection post-processing: per-image score threshold, exact class-aware NMS, top-k.

Pure numpy: the network is reached only through its decoded outputs (boxes, sigmoid scores), so
the same code serves a MindSpore network, an exported MINDIR, an onnxruntime session and the
C++ runner's result files.

Difference from the seed's ``COCOMetrics`` (REFERENCE_SSD.md §6), deliberate: at most
``max_boxes`` detections per IMAGE (the COCO protocol; COCOeval reads only the 100 best per
image anyway), instead of 100 per class (up to 8000 per image).
"""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import numpy as np

from src.boxes.coding import box_areas

# Candidates kept per class before NMS: bounds the greedy loop on 51150-anchor FPN outputs while
# staying far above the 100 detections an image may finally keep.
PRE_NMS_TOP_K = 400
# postprocess_image first runs NMS on only the best CANDIDATES_PER_DETECTION * max_boxes candidates of the
# image (enough for nearly every image: noise boxes rarely overlap) and continues over a PREFIX_GROWTH times
# longer ranked prefix while too few detections survive and more candidates exist.
CANDIDATES_PER_DETECTION = 4
PREFIX_GROWTH = 4
#: Candidates batched_nms examines per vectorised step (plus those kept so far): bounds its pair arrays.
NMS_WINDOW = 256


class Detections(NamedTuple):
    """Final detections of one image, best score first."""

    boxes_xyxy: np.ndarray  # (K, 4) float32 pixels [xmin, ymin, xmax, ymax]
    scores: np.ndarray  # (K,) float32
    labels: np.ndarray  # (K,) int64 training class index 1..C-1



def _paired_iou(boxes: np.ndarray, areas: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Continuous-area IoU of boxes[first[i]] with boxes[second[i]]; 0 when both boxes have no area."""
    box_a, box_b = boxes[first], boxes[second]
    inter_w = np.clip(np.minimum(box_a[:, 2], box_b[:, 2]) - np.maximum(box_a[:, 0], box_b[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box_a[:, 3], box_b[:, 3]) - np.maximum(box_a[:, 1], box_b[:, 1]), 0, None)
    inter = inter_w * inter_h
    union = areas[first] + areas[second] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _same_label_pairs(sorted_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), i < j, of equal entries of a sorted label array, ordered by i.

    Enumerated without a (n, n) matrix: entry i pairs with the rest of its run of equal labels,
    so the memory is the number of same-label pairs, not the square of the number of boxes.
    """
    run_end = np.searchsorted(sorted_labels, sorted_labels, side="right")
    partners = run_end - np.arange(sorted_labels.size) - 1
    first = np.repeat(np.arange(sorted_labels.size), partners)
    pair_starts = np.repeat(np.cumsum(partners) - partners, partners)
    return first, first + 1 + np.arange(first.size) - pair_starts


def _greedy_keep(boxes: np.ndarray, labels: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Greedy class-aware NMS of boxes already in descending score order: the first ``limit`` kept positions.

    Boxes of different labels never interact, so the boxes are regrouped by label (stable, so
    each group stays in score order), the IoU of every same-label pair is computed in one
    vectorised step, and the only Python loop is the sequential scan that greedy NMS needs:
    a box survives unless an earlier kept box of its group overlaps it.
    """
    by_label = np.argsort(labels, kind="stable")
    first, second = _same_label_pairs(labels[by_label])
    overlapping = _paired_iou(boxes, box_areas(boxes), by_label[first], by_label[second]) > iou_threshold
    first, second = first[overlapping], second[overlapping]
    bounds = np.searchsorted(first, np.arange(labels.size + 1)).tolist()
    suppressed = np.zeros(labels.size, dtype=bool)
    for position in range(labels.size):
        if not suppressed[position] and bounds[position] < bounds[position + 1]:
            suppressed[second[bounds[position]:bounds[position + 1]]] = True
    return np.sort(by_label[~suppressed])[:limit]


def batched_nms(boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Class-aware greedy NMS of all classes at once; returns kept indices, best score first.

    A box is suppressed by a higher-scoring kept box of the same label when their IoU is
    > iou_threshold; equal scores are ranked in input order. Because suppression only ever
    removes lower-scored boxes, the first ``max_keep`` picks in descending score order are exactly
    the ``max_keep`` best boxes the full NMS would keep: the candidates are examined
    ``NMS_WINDOW`` at a time in score order, each window together with the boxes kept so far
    (which never suppress each other), until ``max_keep`` are kept. Computed in float64 so the
    decisions do not depend on the caller's dtype.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    labels = np.asarray(labels)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    limit = order.size if max_keep is None else max_keep
    keep = order[:0]
    for start in range(0, order.size, NMS_WINDOW):
        if keep.size >= limit:
            break
        window = np.concatenate([keep, order[start:start + NMS_WINDOW]])
        keep = window[_greedy_keep(boxes[window], labels[window], iou_threshold, limit)]
    return keep


def _foreground_above(scores: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (ascending) into the (N, C) score matrix of the foreground scores > min_score, and those scores.

    One comparison and one nonzero over the whole matrix; the background column is cleared in the
    mask by a strided write, so no column slice of a 16 MB FPN score matrix is ever copied.
    """
    flat_scores = np.ascontiguousarray(scores).reshape(-1)
    passed = flat_scores > min_score
    passed[::scores.shape[1]] = False
    flat_index = np.flatnonzero(passed)
    return flat_index, flat_scores[flat_index]


def _best_first(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` highest values plus any tied with the count-th, highest first, ties by position.

    An O(n) partition finds the count-th value, so only the chosen few are sorted; taking every
    tie of the bar keeps the result a prefix of the full stable ranking.
    """
    if count < values.size:
        bar = np.partition(values, values.size - count)[values.size - count]
        chosen = np.flatnonzero(values >= bar)
    else:
        chosen = np.arange(values.size)
    return chosen[np.argsort(-values[chosen], kind="stable")]


def _first_k_per_label(labels: np.ndarray, top_k: int) -> np.ndarray:
    """Mask of the entries that are among the first ``top_k`` of their label (entries in ranking order)."""
    by_label = np.argsort(labels, kind="stable")
    sorted_labels = labels[by_label]
    rank = np.empty_like(by_label)
    rank[by_label] = np.arange(labels.size) - np.searchsorted(sorted_labels, sorted_labels)
    return rank < top_k


def _without_capped_classes(flat_index: np.ndarray, flat_scores: np.ndarray, ranked: np.ndarray,
                            ranked_labels: np.ndarray, num_classes: int, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidates minus those of classes that already have ``top_k`` in the ranked prefix.

    The per-class cap excludes those anyway; dropping them before a longer prefix is ranked keeps
    images where NMS leaves fewer than max_boxes (e.g. every class's boxes in one cluster) from
    ranking all of their millions of candidates again and again.
    """
    capped = np.bincount(ranked_labels, minlength=num_classes) >= top_k
    outside_prefix = np.ones(flat_index.size, dtype=bool)
    outside_prefix[ranked] = False
    kept = ~(outside_prefix & capped[flat_index % num_classes])
    return flat_index[kept], flat_scores[kept]


def _ranked_candidates(scores: np.ndarray, min_score: float, top_k: int,
                       first_count: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(anchor index, class, score) of the NMS candidates in ranking order, in batches of growing size.

    Candidates: foreground scores > min_score, ranked by descending score, equal scores by anchor
    index then class; a class contributes only its first ``top_k``. A candidate's rank in its class
    depends only on higher-ranked candidates, so each batch is the rest of a ranked prefix
    ``PREFIX_GROWTH`` times longer than the last, and only that prefix is ever sorted.
    """
    num_classes = scores.shape[1]
    flat_index, flat_scores = _foreground_above(scores, min_score)
    count, ranked_before = first_count, 0
    while True:
        ranked = _best_first(flat_scores, count)
        anchor_idx, labels = np.divmod(flat_index[ranked], num_classes)
        fresh = _first_k_per_label(labels, top_k)
        fresh[:ranked_before] = False
        yield anchor_idx[fresh], labels[fresh], flat_scores[ranked[fresh]]
        flat_index, flat_scores = _without_capped_classes(flat_index, flat_scores, ranked, labels, num_classes, top_k)
        if ranked.size == flat_scores.size:
            return
        count, ranked_before = count * PREFIX_GROWTH, ranked.size


def _pixel_xyxy(boxes_yxyx: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Normalised [ymin, xmin, ymax, xmax] -> float64 pixel [xmin, ymin, xmax, ymax]."""
    height, width = image_hw
    ymin, xmin, ymax, xmax = (boxes_yxyx.astype(np.float64) * [height, width, height, width]).T
    return np.stack([xmin, ymin, xmax, ymax], axis=1)


def postprocess_image(boxes_yxyx: np.ndarray, scores: np.ndarray, image_hw: tuple[int, int],
                      min_score: float, nms_threshold: float, max_boxes: int,
                      pre_nms_top_k: int = PRE_NMS_TOP_K) -> Detections:
    """Turn one image's decoded network output into at most ``max_boxes`` pixel detections.

    boxes_yxyx: (N, 4) normalised [ymin, xmin, ymax, xmax]; scores: (N, C) sigmoid scores with
    the background in column 0 (ignored). Candidates are the (anchor, class) pairs scoring
    > min_score (strict, as the seed), ranked by descending score, equal scores by anchor index,
    then class. Per class: its ``pre_nms_top_k`` first candidates, class-aware NMS (IoU >
    nms_threshold suppressed); then the ``max_boxes`` first survivors of the image.

    Greedy NMS decides each candidate from higher-ranked ones only, so it runs on the ranked
    candidates batch by batch (see _ranked_candidates), each batch after the survivors so far,
    and stops once ``max_boxes`` survive: an FPN image has ~300k candidates at min_score 0.01, yet
    its first ``CANDIDATES_PER_DETECTION * max_boxes`` nearly always suffice.

    IoU uses continuous areas (x2 - x1) * (y2 - y1), not the seed's +1-pixel areas: the +1 comes
    from Pascal VOC's inclusive integer pixel indices, while these boxes are continuous
    coordinates and COCOeval scores them with continuous areas; the +1 also inflates the IoU of
    small boxes, so NMS would disagree with the metric exactly where boxes are small.
    """
    boxes_yxyx = np.asarray(boxes_yxyx)
    scores = np.asarray(scores)
    if boxes_yxyx.ndim != 2 or boxes_yxyx.shape[1] != 4 or scores.ndim != 2 \
            or scores.shape[0] != boxes_yxyx.shape[0] or scores.shape[1] == 0:
        raise ValueError(f"postprocess_image expects boxes (N, 4) and scores (N, C) for the same N, "
                         f"got {boxes_yxyx.shape} and {scores.shape}")
    kept_boxes, kept_scores, kept_labels = np.zeros((0, 4)), np.zeros(0, scores.dtype), np.zeros(0, np.int64)
    for anchor_idx, labels, cand_scores in _ranked_candidates(scores, min_score, pre_nms_top_k,
                                                              CANDIDATES_PER_DETECTION * max(max_boxes, 1)):
        cand_boxes = np.concatenate([kept_boxes, _pixel_xyxy(boxes_yxyx[anchor_idx], image_hw)])
        cand_scores = np.concatenate([kept_scores, cand_scores])
        cand_labels = np.concatenate([kept_labels, labels])
        keep = batched_nms(cand_boxes, cand_scores, cand_labels, nms_threshold, max_boxes)
        kept_boxes, kept_scores, kept_labels = cand_boxes[keep], cand_scores[keep], cand_labels[keep]
        if keep.size == max_boxes:
            break
    return Detections(kept_boxes.astype(np.float32), kept_scores.astype(np.float32), kept_labels)


def finite_rows(boxes_yxyx: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mask of the anchors whose box and class scores are all finite.

    A diverged model or a broken export yields NaN/Inf, which would become NaN detections (not
    JSON, not drawable). Callers drop the other rows and report them; dropping whole rows keeps
    the remaining anchors' order, so finite outputs give exactly the same detections.
    """
    return np.isfinite(boxes_yxyx).all(axis=1) & np.isfinite(scores).all(axis=1)


def postprocess_with_config(boxes_yxyx: np.ndarray, scores: np.ndarray, image_hw: tuple[int, int],
                            config: Any) -> Detections:
    """``postprocess_image`` with the config's thresholds: the one call eval.py, eval_onnx.py and
    postprocess.py share, so the three cannot drift apart."""
    return postprocess_image(boxes_yxyx, scores, image_hw, float(config.min_score), float(config.nms_threshold),
                             int(config.max_boxes))


def check_outputs(boxes: np.ndarray, scores: np.ndarray, batch_size: int, num_classes: int,
                  num_boxes: int | None = None) -> None:
    """A model's batch output fits the config: shapes (B, N, 4) / (B, N, C), C = num_classes and, when
    given, N = num_boxes (predict.py gives it: a file exported from another network has another N)."""
    if boxes.ndim != 3 or boxes.shape[0] != batch_size or boxes.shape[2] != 4 \
            or scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise ValueError(f"the model must return boxes (B, N, 4) and scores (B, N, C) for B={batch_size}, "
                         f"got {boxes.shape} and {scores.shape}")
    if scores.shape[2] != num_classes:
        raise ValueError(f"the network scores {scores.shape[2]} classes but the class list has {num_classes} "
                         f"names: use the config the model was trained or exported with")
    if num_boxes is not None and boxes.shape[1] != num_boxes:
        raise ValueError(f"the model returns {boxes.shape[1]} boxes per image but the config's anchors give "
                         f"{num_boxes}: use the config the model was trained or exported with")

